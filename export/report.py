"""Compression report: student depth x precision x max length -> nDCG@10 and request latency.

For each depth (layers kept from the student, see :mod:`export.layers`), precision (fp32 = O2
graph; int8 = calibrated static per-channel, the batch-invariant recipe) and max length, it reranks
BM25 top-20 of the bundled scifact_mini test queries for nDCG@10, and times one request of 1 query x
20 and x 50 passages, unbucketed (the request as one batch padded to its longest pair) and bucketed
(pairs sorted by length, cut into batches of ``bucket_pairs_per_call``). Writes JSON, Markdown and a
quality-vs-latency Pareto PNG. Latency on a shared machine is noisy: compare rows of one report only.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.atomic_io import atomic_write, write_json
from distill.core.errors import ConfigError

__all__ = ["ReportConfig", "compression_report", "pareto_front"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    depths: tuple[int, ...] = (6, 3, 2)
    precisions: tuple[str, ...] = ("fp32", "int8")
    max_lens: tuple[int, ...] = (128, 256)
    n_passages: tuple[int, ...] = (20, 50)
    eval_top_k: int = 20
    eval_queries: int | None = None  # None = all 60 scifact_mini test queries
    bucket_pairs_per_call: int = 8
    reps: int = 7
    isa: str = "auto"
    prefix: str = "compression_"

    def __post_init__(self) -> None:
        if not self.depths or any(d < 1 for d in self.depths):
            raise ConfigError(f"depths must be positive layer counts, got {self.depths}")
        if set(self.precisions) - {"fp32", "int8"} or not self.precisions:
            raise ConfigError(f"precisions must be a subset of fp32, int8; got {self.precisions}")
        if any(not 8 <= m <= 512 for m in self.max_lens):
            raise ConfigError(f"max_lens must be in [8, 512], got {self.max_lens}")
        if self.reps < 1 or self.bucket_pairs_per_call < 1 or self.eval_top_k < 10:
            raise ConfigError("reps and bucket_pairs_per_call must be >= 1 and eval_top_k >= 10")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower latency x, higher quality y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _markdown(rows: list[dict[str, Any]], cfg: ReportConfig, meta: dict[str, Any]) -> str:
    head = ["layers", "precision", "max_len", "nDCG@10"]
    for n in cfg.n_passages:
        head += [f"x{n} p50 ms", f"x{n} p95 ms", f"x{n} bucketed p50", f"x{n} bucketed p95"]
    lines = [f"Student: `{meta['student']}`; eval: {meta['eval']}; CPU: {meta['cpu']} ({meta['isa']}); "
             f"int8 = static per-channel; bucketed batches of {cfg.bucket_pairs_per_call}; {cfg.reps} reps.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["layers"]), r["precision"], str(r["max_len"]), f"{r['ndcg@10']:.4f}"]
        for n in cfg.n_passages:
            lat = r["latency"][str(n)]
            cells += [f"{lat['unbucketed']['p50_ms']:.1f}", f"{lat['unbucketed']['p95_ms']:.1f}",
                      f"{lat['bucketed']['p50_ms']:.1f}", f"{lat['bucketed']['p95_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path, n: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["latency"][str(n)]["bucketed"]["p50_ms"], r["ndcg@10"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, (x, y) in zip(rows, pts, strict=True):
        ax.scatter(x, y, marker="o" if r["precision"] == "fp32" else "s", c="C0" if r["max_len"] == 128 else "C1")
        ax.annotate(f"L{r['layers']} {r['precision']} {r['max_len']}", (x, y), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front = pareto_front(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel(f"p50 latency, 1 query x {n} passages, bucketed (ms)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def compression_report(model_dir: str | Path, out_dir: str | Path, config: ReportConfig | None = None) -> Path:
    """Measure every (depth, precision, max_len) cell; returns the JSON path (MD and PNG beside it)."""
    import json

    from distill.core.evaluation import evaluate
    from export._candidates import demo_candidates
    from export._isa import resolve_isa
    from export._onnx import export_fp32, optimize, quantize_static_int8
    from export.exporter import calibration_batches, calibration_pairs
    from export.latency import measure_latency
    from export.layers import keep_layers
    from export.scorers import export_caps, onnx_scorer

    cfg = config or ReportConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    total = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    isa = resolve_isa(cfg.isa)
    lists = demo_candidates("test", cfg.eval_top_k)
    if cfg.eval_queries:
        lists = lists.subset(cfg.eval_queries, cfg.eval_top_k)
    lat_lists = demo_candidates("test", max(cfg.n_passages))
    lat_qid = next(q for q in sorted(lat_lists.run) if len(lat_lists.run[q]) >= max(cfg.n_passages))
    lat_pairs = lat_lists.pairs(lat_qid)[1]
    calib = demo_candidates("train", cfg.eval_top_k)
    calib_pairs = calibration_pairs(calib.pairs_by_query(), 128)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".report-") as tmp:
        work = Path(tmp)
        for depth in cfg.depths:
            if depth > total:
                logger.warning("skipping L%d: the student has only %d layers", depth, total)
                continue
            src = model_dir if depth == total else keep_layers(model_dir, depth, work / f"L{depth}")
            raw = export_fp32(src, work / f"L{depth}_onnx")
            paths = {"fp32": optimize(raw.parent, "O2", work / f"L{depth}_o2")}
            if "int8" in cfg.precisions:
                batches = calibration_batches(onnx_scorer(paths["fp32"], src, export_caps(src, 256)), calib_pairs)
                paths["int8"] = quantize_static_int8(raw, work / f"L{depth}_int8.onnx", isa, True, ("MatMul",), batches)
            for precision in cfg.precisions:
                for max_len in cfg.max_lens:
                    scorer = onnx_scorer(paths[precision], src, export_caps(src, max_len), 32)
                    run = {}
                    for qid in lists.run:
                        ids, ps = lists.pairs(qid)
                        run[qid] = dict(zip(ids, map(float, scorer.score_pairs(ps)), strict=True))
                    ndcg = evaluate(lists.qrels or {}, run, ["ndcg@10"]).metrics["ndcg@10"]
                    # "unbucketed": the whole request as one batch padded to its longest pair
                    latency = {str(n): {mode: measure_latency(scorer, lat_pairs[:n],
                                                              n if mode == "unbucketed" else cfg.bucket_pairs_per_call,
                                                              cfg.reps)
                                        for mode in ("unbucketed", "bucketed")} for n in cfg.n_passages}
                    rows.append({"layers": depth, "precision": precision, "max_len": max_len, "ndcg@10": ndcg,
                                 "latency": latency})
                    logger.info("L%d %s len %d: nDCG@10 %.4f, x20 bucketed p50 %.1f ms", depth, precision, max_len,
                                ndcg, latency[str(cfg.n_passages[0])]["bucketed"]["p50_ms"])
    meta = {"student": str(model_dir), "eval": f"{lists.source}, {len(lists.run)} queries", "isa": isa,
            "cpu": platform.processor() or platform.machine(), "wall_time_s": round(time.perf_counter() - t0, 1),
            "latency_query": lat_qid, "config": asdict(cfg),
            "note": "latency measured on a shared, busy machine; compare rows of this report only"}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out_dir / f"{cfg.prefix}report.json", {"meta": meta, "rows": rows})
    with atomic_write(out_dir / f"{cfg.prefix}report.md") as fh:
        fh.write(_markdown(rows, cfg, meta))
    _plot(rows, out_dir / f"{cfg.prefix}pareto.png", cfg.n_passages[0], f"{model_dir.name}: nDCG@10 vs latency")
    return json_path
