"""Ranking metrics through ir-measures (pytrec_eval / trec_eval definitions); no hand-written nDCG.

Metric names are lower-case ``name@k``: ``ndcg@10``, ``mrr@10``, ``recall@100``, ``map``,
``map@100``, ``p@10``. nDCG uses the graded relevance as gain with a log2 discount, exactly as
trec_eval's ``ndcg_cut``. MRR, recall, MAP and precision count a document as relevant when
``rel >= rel_threshold`` (default 1; use 2 for TREC DL-style graded qrels).

Averages are taken over every query in the qrels that has at least one relevant document; a query
the run does not answer counts as 0 (trec_eval ``-c``), so dropping hard queries cannot raise a score.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.atomic_io import atomic_write, write_json
from distill.data import Qrels, Run
from distill.errors import ConfigError, DataError, MissingPrerequisiteError

__all__ = ["DEFAULT_METRICS", "EvalResult", "evaluate", "evaluate_runs", "format_markdown", "plot_metrics", "to_ir_measure"]

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")


def to_ir_measure(name: str, rel_threshold: int = 1):  # -> ir_measures.Measure
    import ir_measures

    key = name.strip().lower()
    base, _, cut = key.partition("@")
    if cut and not cut.isdigit():
        raise ConfigError(f"metric {name!r}: the cut-off after '@' must be an integer, e.g. ndcg@10")
    table = {
        "ndcg": lambda: ir_measures.nDCG,
        "mrr": lambda: ir_measures.RR(rel=rel_threshold),
        "rr": lambda: ir_measures.RR(rel=rel_threshold),
        "recall": lambda: ir_measures.R(rel=rel_threshold),
        "r": lambda: ir_measures.R(rel=rel_threshold),
        "map": lambda: ir_measures.AP(rel=rel_threshold),
        "p": lambda: ir_measures.P(rel=rel_threshold),
    }
    if base not in table:
        raise ConfigError(f"unknown metric {name!r}; choose from ndcg@k, mrr@k, recall@k, map[@k], p@k")
    measure = table[base]()
    if cut:
        measure = measure @ int(cut)
    elif base in {"ndcg", "mrr", "rr", "recall", "r", "p"}:
        raise ConfigError(f"metric {name!r} needs a cut-off, e.g. {base}@10")
    return measure


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int
    n_unanswered: int


def evaluate(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS, rel_threshold: int = 1) -> EvalResult:
    """Mean of each metric over judged queries (see module docstring for the conventions)."""
    import ir_measures

    judged = [qid for qid, docs in qrels.items() if any(rel >= 1 for rel in docs.values())]
    if not judged:
        raise DataError("the qrels contain no relevant judgment (rel >= 1)")
    measures = {name: to_ir_measure(name, rel_threshold) for name in metrics}
    by_measure = {m: name for name, m in measures.items()}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(measures, 0.0) for qid in judged}
    run_judged = {qid: docs for qid, docs in run.items() if qid in per_query and docs}
    if run_judged:
        qrels_judged = {qid: qrels[qid] for qid in judged}
        for m in ir_measures.iter_calc(list(measures.values()), qrels_judged, run_judged):
            per_query[m.query_id][by_measure[m.measure]] = float(m.value)
    n_unanswered = len(judged) - len(run_judged)
    if n_unanswered:
        logger.warning("%d of %d judged queries have no results in the run; they count as 0", n_unanswered, len(judged))
    means = {name: sum(pq[name] for pq in per_query.values()) / len(judged) for name in measures}
    return EvalResult(means, per_query, len(judged), n_unanswered)


def evaluate_runs(qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str] = DEFAULT_METRICS,
                  rel_threshold: int = 1) -> dict[str, EvalResult]:
    return {name: evaluate(qrels, run, metrics, rel_threshold) for name, run in runs.items()}


def format_markdown(results: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """A Markdown table: one row per system, one column per metric."""
    if not results:
        return ""
    metrics = list(next(iter(results.values())).keys())
    lines = ["| system | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for system, vals in results.items():
        lines.append(f"| {system} | " + " | ".join(f"{vals[m]:.{digits}f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(results: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str], title: str = "") -> Path:
    """Grouped bar chart (metrics on the x axis, one bar per system), written atomically as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise MissingPrerequisiteError("plots need matplotlib: pip install matplotlib") from exc
    import numpy as np

    systems = list(results)
    metrics = list(next(iter(results.values())).keys())
    x = np.arange(len(metrics))
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(metrics) * max(1, len(systems) / 2)), 3.8))
    for i, system in enumerate(systems):
        vals = [results[system][m] for m in metrics]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, vals, width, label=system)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, min(1.05, max(max(v.values()) for v in results.values()) * 1.2 + 0.02))
    ax.set_ylabel("score")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


def write_reports(results: Mapping[str, Mapping[str, float]], json_path: str | None, md_path: str | None,
                  plot_path: str | None, *, single: bool) -> None:
    if json_path:
        write_json(json_path, next(iter(results.values())) if single else results)
    if md_path:
        with atomic_write(md_path) as fh:
            fh.write(format_markdown(results))
    if plot_path:
        plot_metrics(results, plot_path)
