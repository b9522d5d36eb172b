"""Ranking metrics through ir-measures (pytrec_eval / trec_eval definitions); no hand-written nDCG.

Metric names are lower-case ``name@k``: ``ndcg@10``, ``mrr@10``, ``recall@100``, ``map``,
``map@100``, ``p@10``. nDCG uses the graded relevance as gain with a log2 discount, exactly as
trec_eval's ``ndcg_cut``. MRR, recall, MAP and precision count a document as relevant when
``rel >= rel_threshold`` (default 1; use 2 for TREC DL-style graded qrels).

Averages are taken over every query in the qrels that has at least one relevant document; a query
the run does not answer counts as 0 (trec_eval ``-c``), so dropping hard queries cannot raise a score.

Self hits (BEIR's ``ignore_identical_ids``): where queries are themselves documents (BEIR ArguAna,
Quora, CQADupStack), a query retrieves its own document first. BEIR removes every (qid, doc_id)
pair with ``doc_id == qid`` from the run -- not from the qrels -- before trec_eval ranks it, and
:func:`drop_self_hits` does exactly that. Whether to do it is a convention of the data set, so the
CLI decides it once per invocation with :func:`resolve_identical_ids` (explicit flag, else the rule
documented there) and records it in an :class:`EvalConventions`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.core.atomic_io import atomic_write, write_json
from distill.core.errors import ConfigError, DataError, MissingExtraError
from distill.core.formats import Qrels, Run
from distill.core.params import INT32_MAX, count

__all__ = [
    "DEFAULT_METRICS",
    "EvalConventions",
    "EvalResult",
    "drop_self_hits",
    "evaluate",
    "evaluate_runs",
    "format_markdown",
    "parse_metrics",
    "plot_metrics",
    "resolve_identical_ids",
    "to_ir_measure",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")
_MAX_CUTOFF = INT32_MAX


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """``"ndcg@10, mrr@10"`` (or a list) -> validated metric names; an empty list is a ConfigError."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    metrics = [m.strip() for m in names if m.strip()]
    if not metrics:
        raise ConfigError(f"no metric given in {spec!r}; e.g. --metrics ndcg@10,mrr@10,recall@100")
    for name in metrics:
        to_ir_measure(name)
    return metrics


@dataclass(frozen=True)
class EvalConventions:
    """How a number was computed, recorded next to it (``evaluate --json``, pipeline reports).

    ``identical_ids_reason`` says why ``ignore_identical_ids`` has its value (flag or auto rule).
    """

    rel_threshold: int = 1
    ignore_identical_ids: bool = False
    identical_ids_reason: str = "default (off)"
    self_hits_dropped: int = 0
    averaging: str = "mean over qrels queries with a relevant document; unanswered queries count 0"
    backend: str = "ir-measures / pytrec_eval (trec_eval definitions)"

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        ids = "dropped" if self.ignore_identical_ids else "kept"
        return (f"conventions: rel_threshold={self.rel_threshold}; hits whose doc id equals the query id {ids} "
                f"({self.identical_ids_reason}; {self.self_hits_dropped} dropped)")


def drop_self_hits(run: Mapping[str, Mapping[str, float]]) -> tuple[Run, int]:
    """A copy of ``run`` without the (qid, doc_id) pairs where ``doc_id == qid``, and how many were removed.

    Exactly BEIR's ``EvaluateRetrieval.evaluate(..., ignore_identical_ids=True)``: the run loses the
    entry, the qrels stay as they are, and the remaining documents keep their scores (so each moves
    up one rank below the removed one).
    """
    out: Run = {}
    dropped = 0
    for qid, docs in run.items():
        if qid in docs:
            dropped += 1
            out[qid] = {d: s for d, s in docs.items() if d != qid}
        else:
            out[qid] = dict(docs)
    return out, dropped


def resolve_identical_ids(setting: bool | None, runs: Iterable[Mapping[str, Mapping[str, float]]],
                          qrels: Qrels | None = None, doc_ids: Iterable[str] | None = None) -> tuple[bool, str]:
    """Decide whether to drop self hits: ``setting`` if given, else the auto rule; returns (on, why).

    Auto rule -- drop when the queries look like documents, i.e. when of the queries whose id is
    also a document id (in ``doc_ids`` when given, else among the doc ids of the runs and qrels), at
    least half have that very document ranked first. That is what happens on BEIR's
    queries-are-documents sets (ArguAna, Quora, CQADupStack), where BEIR's evaluator drops self hits;
    ids that collide by accident (Cranfield's query "1" and document "1") almost never rank first,
    so plain numeric ids do not switch it on. A file-format test ("the corpus is BEIR JSONL") was
    rejected: classic collections are distributed as BEIR JSONL too. Never on when the qrels judge a
    query's own id relevant, since dropping would hide a judged relevant document.
    """
    if setting is not None:
        return setting, "--ignore-identical-ids" if setting else "--keep-identical-ids"
    runs = list(runs)
    if qrels is not None:
        self_judged = [q for q, docs in qrels.items() if docs.get(q, 0) > 0]
        if self_judged:
            return False, f"auto: the qrels judge {len(self_judged)} queries' own id relevant (e.g. {self_judged[0]!r})"
    if doc_ids is not None:
        known = set(doc_ids)
    else:
        known = {d for run in runs for docs in run.values() for d in docs}
        if qrels is not None:
            known.update(d for docs in qrels.values() for d in docs)
    qids = {q for run in runs for q in run}
    colliding = qids & known
    if not colliding:
        return False, "auto: no query id is also a document id"
    first = sum(1 for run in runs for q, docs in run.items()
                if q in colliding and docs and max(docs, key=lambda d: (docs[d], d)) == q)
    n = len(colliding) * max(len(runs), 1)
    on = first * 2 >= n
    why = (f"auto: {first} of {n} query rankings whose query id is also a document id rank that document first; "
           + ("queries look like documents, as in BEIR's ArguAna/Quora" if on else "ids collide by accident"))
    return on, why


def to_ir_measure(name: str, rel_threshold: int = 1):  # -> ir_measures.Measure
    import ir_measures

    key = name.strip().lower()
    base, at, cut = key.partition("@")
    # ASCII only: str.isdigit() and int() also take "１０" (full-width) or "١٠" (Arabic-Indic)
    if at and not (cut.isascii() and cut.isdigit()):
        raise ConfigError(f"metric {name!r}: the cut-off after '@' must be an integer in ASCII digits, e.g. ndcg@10")
    # trec_eval aborts the whole process (SIGABRT) on a cut-off of 0; it stores cut-offs as C ints
    if at and not 1 <= int(cut) <= _MAX_CUTOFF:
        raise ConfigError(f"metric {name!r}: the cut-off must be between 1 and {_MAX_CUTOFF}, e.g. ndcg@10")
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
    conventions: EvalConventions = field(default_factory=EvalConventions)


def evaluate(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS, rel_threshold: int = 1, *,
             ignore_identical_ids: bool = False, identical_ids_reason: str | None = None) -> EvalResult:
    """Mean of each metric over judged queries (see module docstring for the conventions).

    ``ignore_identical_ids`` drops self hits first (:func:`drop_self_hits`, BEIR's rule);
    ``identical_ids_reason`` is recorded in the result's :class:`EvalConventions`.
    """
    import ir_measures

    if not metrics:
        raise ConfigError("no metric given; e.g. ndcg@10,mrr@10,recall@100")
    dropped = 0
    if ignore_identical_ids:
        run, dropped = drop_self_hits(run)
    reason = identical_ids_reason or ("requested" if ignore_identical_ids else "default (off)")
    conventions = EvalConventions(rel_threshold, ignore_identical_ids, reason, dropped)
    judged = [qid for qid, docs in qrels.items() if any(rel >= 1 for rel in docs.values())]
    if not judged:
        raise DataError("the qrels contain no relevant judgment (rel >= 1)")
    rel_threshold = count("rel_threshold", rel_threshold, 1, INT32_MAX)  # trec_eval holds it in a C int
    measures = {name: to_ir_measure(name, rel_threshold) for name in metrics}
    # several names can spell one measure (ndcg@10 and NDCG@10, mrr@10 and rr@10): each gets its value
    by_measure: dict[object, list[str]] = {}
    for name, measure in measures.items():
        by_measure.setdefault(measure, []).append(name)
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(measures, 0.0) for qid in judged}
    run_judged = {qid: docs for qid, docs in run.items() if qid in per_query and docs}
    if run_judged:
        qrels_judged = {qid: qrels[qid] for qid in judged}
        for m in ir_measures.iter_calc(list(by_measure), qrels_judged, run_judged):  # type: ignore[arg-type]
            for name in by_measure[m.measure]:
                per_query[m.query_id][name] = float(m.value)
    n_unanswered = len(judged) - len(run_judged)
    if n_unanswered:
        logger.warning("%d of %d judged queries have no results in the run; they count as 0", n_unanswered, len(judged))
    means = {name: sum(pq[name] for pq in per_query.values()) / len(judged) for name in measures}
    return EvalResult(means, per_query, len(judged), n_unanswered, conventions)


def evaluate_runs(qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str] = DEFAULT_METRICS,
                  rel_threshold: int = 1, *, ignore_identical_ids: bool = False,
                  identical_ids_reason: str | None = None) -> dict[str, EvalResult]:
    return {name: evaluate(qrels, run, metrics, rel_threshold, ignore_identical_ids=ignore_identical_ids,
                           identical_ids_reason=identical_ids_reason) for name, run in runs.items()}


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
    except ImportError as exc:  # matplotlib is the [plot] extra, not a core requirement
        raise MissingExtraError("plots need matplotlib: pip install 'distilrank[plot]'", name=exc.name) from exc
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
                  plot_path: str | None, *, single: bool, conventions: EvalConventions | None = None) -> None:
    """JSON (flat metrics for one system, ``{system: metrics}`` otherwise, plus a ``conventions`` block
    when given), Markdown and PNG, each written atomically (missing parent folders are created)."""
    if json_path:
        payload: dict[str, object] = dict(next(iter(results.values())) if single else results)
        if conventions is not None:
            payload["conventions"] = conventions.to_json()
        write_json(json_path, payload)
    if md_path:
        with atomic_write(md_path) as fh:
            fh.write(format_markdown(results))
    if plot_path:
        plot_metrics(results, plot_path)
