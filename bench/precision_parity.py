"""Each precision's score error against the PyTorch student: ORT fp32, OpenVINO f32 and bf16.

The measurement behind the export's per-precision parity tolerances (``GateTolerances.parity_max_abs_diff`` for f32
paths, ``parity_bf16_max_rel_diff`` for bf16).

For one student, BM25's top ``--depth`` of the first ``--max-queries`` SciFact test queries are scored by PyTorch
(fp32, the reference), ONNX Runtime fp32 (the O2 graph the exporter gates), OpenVINO f32 and OpenVINO bf16 (the IR
the exporter ships), through the one scorer. Per path: max and mean |logit difference| to PyTorch, the max in units
of the PyTorch scores' standard deviation (the bf16 gate's unit), batch invariance (each pair alone vs in batches of
16, same unit), per-query Spearman with PyTorch (median, worst) and nDCG@10.

    python -m bench precision_parity --student L6=runs/probe_l6 --max-queries 40

Writes bench/results/precision_parity.{json,md}.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.cross_encoder import load_caps
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries

logger = logging.getLogger("bench.precision_parity")
REPO = Path(__file__).resolve().parent.parent


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else 1.0


def measure(name: str, scorer: Any, ref: np.ndarray, flat: list[tuple[str, str]], sizes: list[int],
            qids: list[str], ids: dict[str, list[str]], qrels: Any) -> dict[str, Any]:
    """One path's scores against the PyTorch reference ``ref`` (same pair order)."""
    scores = scorer.score_pairs(flat)
    alone = scorer.with_pairs_per_call(1).score_pairs(flat[:64])
    std = float(ref.std())
    diff = np.abs(scores.astype(np.float64) - ref)
    split = np.split(scores, np.cumsum(sizes)[:-1])
    split_ref = np.split(ref, np.cumsum(sizes)[:-1])
    rho = np.asarray([_spearman(a, b) for a, b in zip(split_ref, split, strict=True)])
    run = {q: dict(zip(ids[q], map(float, s), strict=True)) for q, s in zip(qids, split, strict=True)}
    return {"path": name, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / std), "p99_rel_diff": float(np.percentile(diff, 99) / std),
            "batch_invariance_rel": float(np.abs(alone - scores[:64]).max() / std),
            "spearman_median": float(np.median(rho)), "spearman_worst": float(rho.min()),
            "ndcg@10": evaluate({q: qrels[q] for q in qids}, run, ["ndcg@10"]).metrics["ndcg@10"],
            "score_std": std, "score_range": float(np.ptp(ref))}


@command(__doc__)
@click.option("--student", multiple=True, required=True, metavar="NAME=DIR",
              help="a student (HF dir with scoring.json)")
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--max-queries", type=int, default=40)
@click.option("--depth", type=int, default=20)
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
def main(student: tuple[str, ...], data: Path, max_queries: int, depth: int, out: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    meta, rows = parity_rows(student, data, max_queries, depth)
    md = _markdown(rows, meta)
    write_results(out / "precision_parity", {"meta": meta, "rows": rows}, md)
    print(md)
    return 0


def parity_rows(students: tuple[str, ...], data: Path, max_queries: int,
                depth: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every path of every student measured on the same pairs."""
    from distill.core.bm25 import BM25Index
    from distill.core.isa import machine_isa
    from export import convert_to_ir, export_fp32, optimize
    from export.scorers import onnx_scorer, openvino_scorer, torch_scorer

    corpus = read_corpus(data / "corpus.jsonl")
    queries, qrels = read_queries(data / "queries.test.tsv"), read_qrels(data / "qrels.test.txt")
    qids = [q for q in sorted(queries) if q in qrels][: max_queries]
    first = BM25Index(corpus).search({q: queries[q] for q in qids}, top_k=depth)
    qids = [q for q in qids if first[q]]
    ids = {q: list(first[q])[: depth] for q in qids}
    flat = [(queries[q].text, corpus[d].full_text) for q in qids for d in ids[q]]
    sizes = [len(ids[q]) for q in qids]
    rows = []
    with tempfile.TemporaryDirectory(prefix=".parity-") as tmp:
        for spec in students:
            name, src = spec.split("=", 1)
            src_dir, work = Path(src), Path(tmp) / name
            caps = load_caps(src_dir)
            raw = export_fp32(src_dir, work / "raw")
            o2 = optimize(raw.parent, "O2", work / "o2")
            ir = convert_to_ir(raw, work / "ov")
            ref = torch_scorer(src_dir, caps, 16).score_pairs(flat).astype(np.float64)
            paths = {"onnxruntime fp32 (O2)": onnx_scorer(o2, src_dir, caps, 16),
                     "openvino fp32": openvino_scorer(ir, src_dir, caps, "fp32", 16)}
            if machine_isa().bf16:
                paths["openvino bf16"] = openvino_scorer(ir, src_dir, caps, "bf16", 16)
            for path, scorer in paths.items():
                rows.append({"student": name, **measure(path, scorer, ref, flat, sizes, qids, ids, qrels)})
                logger.info("%s %s: %s", name, path, rows[-1])
            run = {q: dict(zip(ids[q], map(float, s), strict=True))
                   for q, s in zip(qids, np.split(ref, np.cumsum(sizes)[:-1]), strict=True)}
            rows.append({"student": name, "path": "pytorch fp32 (reference)", "score_std": float(ref.std()),
                         "ndcg@10": evaluate({q: qrels[q] for q in qids}, run, ["ndcg@10"]).metrics["ndcg@10"]})
    return {"queries": len(qids), "pairs": len(flat), "depth": depth, "machine": machine_isa().to_dict()}, rows


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Precision parity ({meta['queries']} SciFact test queries x BM25 top {meta['depth']}, "
             f"{meta['pairs']} pairs; machine {meta['machine']})\n",
             "Differences are to the PyTorch fp32 scores; rel = in units of their standard deviation.\n",
             "| student | path | max abs | mean abs | max rel | p99 rel | batch inv. rel "
             "| Spearman med/worst | nDCG@10 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "max_abs_diff" not in r:
            lines.append(f"| {r['student']} | {r['path']} | | | | | | | {r['ndcg@10']:.4f} |")
            continue
        lines.append(f"| {r['student']} | {r['path']} | {r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | "
                     f"{r['max_rel_diff']:.4f} | {r['p99_rel_diff']:.4f} | {r['batch_invariance_rel']:.4f} | "
                     f"{r['spearman_median']:.4f}/{r['spearman_worst']:.4f} | {r['ndcg@10']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench import run

    run(main)
