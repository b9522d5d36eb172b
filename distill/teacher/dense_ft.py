"""Fine-tune the dense bi-encoder on the training qrels, so that the ``dense`` teacher source knows the domain.

A CPU-sized way to a stronger teacher when no large LLM is at hand: all-MiniLM-L6-v2 (or any local
sentence-transformers dir) is trained for one epoch with the multiple-negatives ranking loss (in-batch
negatives plus one BM25 hard negative per pair, scale 20, the sentence-transformers recipe), on
(query, judged positive) pairs of the training queries. The queries that fit the ensemble weights are
left out (``exclude``), so the weights are fitted on queries the tuned model has not seen.

On SciFact (2 CPU cores) one epoch over ~650 queries takes a few minutes; there are no mid-training
checkpoints: a killed run starts this stage again. The model is written atomically with a manifest.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_dir, write_json
from distill.core.config import from_mapping, to_dict
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Document, Qrels, Query
from distill.core.manifest import write_manifest

__all__ = ["DENSE_MODEL_SUBDIR", "TRAIN_INFO", "DenseFineTuneConfig", "fine_tune_dense", "training_triples"]

logger = logging.getLogger(__name__)

DENSE_MODEL_SUBDIR = "model"
#: what the fine-tuning did (triples, steps, loss), beside the model; the pipeline report shows it
TRAIN_INFO = "dense_ft.json"


@dataclass(frozen=True)
class DenseFineTuneConfig:
    #: fine-tune the dense teacher source before labelling (pipeline; needs real training qrels)
    enabled: bool = False
    #: the bi-encoder to start from: "default" (all-MiniLM-L6-v2 from its PyPI package) or a local dir
    base: str = "default"
    epochs: int = 1
    learning_rate: float = 2e-5
    batch_size: int = 32
    max_seq_length: int = 256
    #: one hard negative per pair, drawn from BM25's top ``hard_negative_depth`` that are not judged relevant
    hard_negative_depth: int = 20
    #: cosine similarities are multiplied by this before the softmax (sentence-transformers' default)
    scale: float = 20.0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"dense_ft.enabled must be true or false, got {self.enabled!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.max_seq_length < 8 or self.hard_negative_depth < 1:
            raise ConfigError("dense_ft needs epochs >= 1, batch_size >= 2 (in-batch negatives), max_seq_length >= 8 "
                              "and hard_negative_depth >= 1")
        if not self.learning_rate > 0 or not self.scale > 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError("dense_ft needs learning_rate > 0, scale > 0 and 0 <= warmup_ratio < 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DenseFineTuneConfig:
        return from_mapping(cls, data, "dense_ft")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def training_triples(queries: Mapping[str, Query], qrels: Qrels, corpus: Mapping[str, Document], bm25: Any,
                     config: DenseFineTuneConfig, exclude: Collection[str] = ()) -> list[tuple[str, str, str]]:
    """(query, judged positive, BM25 hard negative) texts, one per judged pair of the non-excluded queries."""
    qids = sorted(q for q in queries
                  if q not in set(exclude) and any(r >= 1 and d in corpus for d, r in qrels.get(q, {}).items()))
    run = bm25.search({q: queries[q] for q in qids}, top_k=config.hard_negative_depth + 10) if qids else {}
    rng = random.Random(config.seed)
    triples = []
    for q in qids:
        judged = qrels[q]
        negatives = [d for d in run.get(q, {}) if judged.get(d, 0) < 1][: config.hard_negative_depth]
        if not negatives:
            continue
        for d, rel in sorted(judged.items()):
            if rel >= 1 and d in corpus:
                triples.append((queries[q].text, corpus[d].full_text, corpus[rng.choice(negatives)].full_text))
    return triples


def fine_tune_dense(config: DenseFineTuneConfig, queries: Mapping[str, Query], qrels: Qrels,
                    corpus: Mapping[str, Document], out_dir: str | Path, exclude: Collection[str] = (),
                    bm25: Any = None) -> Path:
    """Train (or skip if complete) and return the sentence-transformers dir ``out_dir/model``."""
    import torch
    from sentence_transformers import SentenceTransformer

    from distill.core.base_models import resolve_student_base

    out_dir = Path(out_dir)
    model_dir = out_dir / DENSE_MODEL_SUBDIR
    resolved = {**config.to_dict(), "exclude": sorted(exclude), "queries": sorted(queries)}
    started = time.perf_counter()
    if bm25 is None:
        from distill.core.bm25 import BM25Index

        bm25 = BM25Index(corpus)
    triples = training_triples(queries, qrels, corpus, bm25, config, exclude)
    if len(triples) < config.batch_size:
        raise DataError(f"dense_ft: {len(triples)} (query, judged positive) pairs outside the excluded queries, fewer "
                        f"than one batch of {config.batch_size}; give more judged training queries or disable dense_ft")
    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(resolve_student_base(config.base)),
                                device="cpu" if not torch.cuda.is_available() else None)
    model.max_seq_length = config.max_seq_length
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 5.x renamed it
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = -(-len(triples) // config.batch_size)
    steps = config.epochs * per_epoch
    warmup = max(1, int(config.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    rng = random.Random(config.seed)
    logger.info("dense_ft: %d (query, positive, hard negative) triples, %d steps of %d", len(triples), steps,
                config.batch_size)
    model.train()
    losses = []
    for epoch in range(config.epochs):
        order = triples[:]
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            if len(batch) < 2:
                continue
            embs = []
            for texts in zip(*batch, strict=True):
                features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                            for k, v in tokenize(list(texts)).items()}
                embs.append(torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1))
            q, docs = embs[0], torch.cat(embs[1:])  # positives first: row i's positive is column i
            loss = torch.nn.functional.cross_entropy(config.scale * q @ docs.T,
                                                     torch.arange(len(batch), device=q.device))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            if len(losses) % 10 == 0:
                logger.info("dense_ft: epoch %d step %d/%d loss %.4f", epoch + 1, len(losses), steps, losses[-1])
    model.eval()
    with atomic_dir(model_dir) as tmp:
        model.save(str(tmp))
    wall = time.perf_counter() - started
    info = {"triples": len(triples), "steps": len(losses), "held_out_queries": len(set(exclude)),
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4), "wall_time_s": round(wall, 1)}
    write_json(out_dir / TRAIN_INFO, info)
    write_manifest(out_dir, "dense_ft", resolved, metrics=info, wall_time_s=wall)
    logger.info("dense_ft: %d steps in %.0fs (loss %.3f -> %.3f); model at %s", len(losses), wall, losses[0],
                losses[-1], model_dir)
    return model_dir
