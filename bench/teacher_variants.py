"""Cheaper ways to a stronger CPU teacher, measured on dev only: dense variants and the student.

On the trained student's own dev queries (held out of its training; read from ``DIR/student/model/
dev_run.student.trec`` of a finished ``--preset small`` run), BM25's top 20 are scored by:

* ``dense256`` / ``dense128``: all-MiniLM-L6-v2 cosine, document cut at 256 / 128 tokens (the teacher's
  dense member uses 256; the model was trained at 128);
* ``maxp`` / ``meanp``: the best / mean cosine over 128-token windows of the abstract (stride 96, title in
  every window), so the whole of a long abstract counts;
* ``student``: the trained L6 student's scores on those queries (its checkpoint was *chosen* on them, so
  any fusion with it is optimistic here);

and per-query z-score fusions of BM25 with each, at a few fixed weights. No test query is touched.

    python -m bench teacher_variants --run runs/small-scifact

Writes OUT/teacher_variants.{json,md}; current figures: docs/results.md, "Stronger CPU teachers (dev only, not
adopted)".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.errors import DataError
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries, read_run
from distill.core.normalization import zscore_run

REPO = Path(__file__).resolve().parent.parent


def _dense_runs(corpus: dict, queries: dict, dev: list[str], cands: dict[str, list[str]]) -> tuple[dict, int]:
    """The dense variants' runs (``dense256``, ``dense128``, ``maxp``, ``meanp``) and the number of windows."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from distill.core.base_models import resolve_student_base

    runs = {}
    model = SentenceTransformer(str(resolve_student_base("default")), device="cpu")
    tok = model.tokenizer
    docs = sorted({d for q in dev for d in cands[q]})
    q_emb = dict(zip(dev, model.encode([queries[q].text for q in dev], normalize_embeddings=True), strict=True))
    for length in (128, 256):
        model.max_seq_length = length
        emb = dict(zip(docs, model.encode([corpus[d].full_text for d in docs], normalize_embeddings=True,
                                          batch_size=32), strict=True))
        runs[f"dense{length}"] = {q: {d: float(emb[d] @ q_emb[q]) for d in cands[q]} for q in dev}
    model.max_seq_length = 128
    windows, owner = [], []
    for d in docs:
        doc = corpus[d]
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        title_len = len(tok(doc.title, add_special_tokens=False)["input_ids"]) if doc.title else 0
        width = max(32, 120 - title_len)
        for start in range(0, max(1, len(ids)), 96):
            windows.append((doc.title + " " if doc.title else "") + tok.decode(ids[start:start + width]))
            owner.append(d)
            if start + width >= len(ids):
                break
    by_doc: dict[str, list] = {}
    for e, d in zip(model.encode(windows, normalize_embeddings=True, batch_size=32), owner, strict=True):
        by_doc.setdefault(d, []).append(e)
    for name, agg in (("maxp", np.max), ("meanp", np.mean)):
        runs[name] = {q: {d: float(agg(np.stack(by_doc[d]) @ q_emb[q])) for d in cands[q]} for q in dev}
    return runs, len(windows)


def _markdown(result: dict) -> str:
    alone, fused, three = result["alone"], result["fused_with_bm25"], result["with_student"]
    return (f"# CPU teacher variants on {result['dev_queries']} dev training queries (BM25 top {result['depth']}; "
            "dev only)\n\n| member | alone | " + " | ".join(f"BM25 w {w}" for w in (0.4, 0.5, 0.56, 0.6))
            + " |\n|---|---:|---:|---:|---:|---:|\n"
            + "".join(f"| {m} | {alone[m]:.4f} | " + " | ".join(f"{v:.4f}" for v in fused[m].values()) + " |\n"
                      for m in fused)
            + f"\nBM25 alone {alone['bm25']:.4f}; the student alone {alone['student']:.4f} (its checkpoint was chosen "
            "on these queries).\n\n| three members (z-score weights) | nDCG@10 |\n|---|---:|\n"
            + "".join(f"| {k} | {v:.4f} |\n" for k, v in three.items())
            + f"\n{result['windows']} windows; {result['wall_time_s']:.0f} s.\n")


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=REPO / "runs" / "small-scifact",
              help="a finished --preset small run")
@click.option("--depth", type=int, default=20)
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
def main(data: Path, run_dir: Path, depth: int, out: Path) -> int:
    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.train.tsv")
    qrels = read_qrels(data / "qrels.train.txt")
    student_run = run_dir / "student" / "model" / "dev_run.student.trec"
    if not student_run.exists():
        raise DataError("no student dev run here; give a finished --preset small run dir as --run", path=student_run)
    student = read_run(student_run)
    bm25 = read_run(run_dir / "first_stage_train" / "run.trec")

    started = time.perf_counter()
    dev = sorted(student)
    cands = {q: sorted(bm25[q], key=bm25[q].get, reverse=True)[:depth] for q in dev}
    runs = {"bm25": {q: {d: bm25[q][d] for d in cands[q]} for q in dev},
            "student": {q: {d: student[q].get(d, -1e9) for d in cands[q]} for q in dev}}
    dense, n_windows = _dense_runs(corpus, queries, dev, cands)
    runs.update(dense)

    z = {k: zscore_run(v) for k, v in runs.items()}
    judged = {q: qrels[q] for q in dev if q in qrels}

    def ndcg(weights: dict[str, float]) -> float:
        fused = {q: {d: sum(w * z[k][q][d] for k, w in weights.items()) for d in cands[q]} for q in dev}
        return evaluate(judged, fused, ["ndcg@10"]).metrics["ndcg@10"]

    alone = {k: ndcg({k: 1.0}) for k in runs}
    fused = {m: {w: ndcg({"bm25": w, m: 1 - w}) for w in (0.4, 0.5, 0.56, 0.6)}
             for m in ("dense256", "dense128", "maxp", "meanp")}
    three = {f"bm25 {w} + dense256 {1 - w - s:.1f} + student {s}": ndcg({"bm25": w, "dense256": 1 - w - s,
                                                                         "student": s})
             for w in (0.3, 0.4, 0.5) for s in (0.1, 0.2, 0.3)}
    wall = time.perf_counter() - started
    result = {"run": str(run_dir), "dev_queries": len(dev), "depth": depth, "windows": n_windows, "alone": alone,
              "fused_with_bm25": fused, "with_student": three, "wall_time_s": round(wall, 1)}
    md = _markdown(result)
    write_results(out / "teacher_variants", result, md)
    print(md)
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
