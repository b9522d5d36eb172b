"""The pipeline's report: ``OUT/report.json`` (+ ``report.md``), the output contract of ``distilrank pipeline``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["METRICS", "SYSTEMS", "PipelineReport"]

METRICS = ("ndcg@10", "mrr@10")
SYSTEMS = ("first_stage", "teacher", "student", "student_interpolated")


@dataclass
class PipelineReport:
    preset: str
    verdict: str
    regression: bool
    metrics: dict[str, dict[str, float | None]]
    retention: dict[str, float | None]
    teacher: dict[str, Any]
    interpolation: dict[str, Any]
    synthetic_queries: dict[str, Any] | None
    conventions: dict[str, Any]
    n_eval_queries: int
    rerank_depth: dict[str, int]
    stage_wall_time_s: dict[str, float]
    stages_skipped: list[str]
    total_wall_time_s: float
    artifacts: dict[str, Any]
    #: every served-model candidate (variant x recipe): dev nDCG@10 interpolated, pairs/s, kept or why not
    serve_candidates: list[dict[str, Any]] = field(default_factory=list)
    #: the first stage the student was trained and evaluated on (bm25s or the serving OpenSearch index)
    first_stage: dict[str, Any] = field(default_factory=dict)
    #: the base models as resolved (name, revision, source, path)
    models: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        from distill.core.evaluation import format_markdown

        rows = {s: {m: (v if v is not None else float("nan")) for m, v in self.metrics[s].items()}
                for s in self.metrics}
        weights = self.teacher.get("weights")
        lines = [f"**{self.verdict}**", "", f"# distilrank pipeline report (preset `{self.preset}`)", "",
                 f"{self.n_eval_queries} eval queries; the teacher reranks the first stage's top "
                 f"{self.rerank_depth['teacher']}, the student its top {self.rerank_depth['student']}; "
                 f"{self.conventions.get('describe', '')}.", "",
                 f"Teacher: `{self.teacher['source']}`" + (f", weights {weights}" if weights else "")
                 + (f" (fitted on {self.teacher['fitted_on']})" if self.teacher.get("fitted_on") else "")
                 + (f"; each member's dev nDCG@10: {self.teacher['dev_ndcg10_alone']}"
                    if self.teacher.get("dev_ndcg10_alone") else "")
                 + ".", "",
                 *([f"Dense member fine-tuned on the training qrels: {ft['triples']} (query, positive, hard negative) "
                    f"triples, {ft['steps']} steps, loss {ft['first_loss']} -> {ft['last_loss']}; the "
                    f"{ft['held_out_queries']} queries that fit the ensemble weights were held out.", ""]
                   if (ft := self.teacher.get("dense_fine_tuned")) else []),
                 *([f"Note: on the dev queries an ensemble of the LLM, dense and BM25 scored nDCG@10 "
                    f"{self.teacher['ensemble_check']['dev_ndcg10_ensemble']:.4f} vs the LLM alone "
                    f"{self.teacher['ensemble_check']['dev_ndcg10_alone']['llm']:.4f}: "
                    "consider label.source = ensemble.", ""]
                   if self.teacher.get("ensemble_check", {}).get("favours_ensemble") else []),
                 _interpolation_line(self.interpolation), "",
                 format_markdown(rows),
                 f"Retention (student / teacher nDCG@10): {_fmt(self.retention['student_over_teacher_ndcg@10'])}.", ""]
        if self.synthetic_queries:
            sq = self.synthetic_queries
            lines += ["## Synthetic queries", "",
                      f"{sq.get('kept_generated', sq['kept'])} generated queries kept of {sq['generated']}, plus "
                      f"{sq.get('cropped', 0)} cropped queries for the rejected documents ({sq['kept']} training "
                      "queries in all); rejected: "
                      + ", ".join(f"{k} {v}" for k, v in sq.get("rejected", {}).items()), "",
                      *[f"- {q}" for q in sq.get("samples", [])[:10]], ""]
        lines += _serve_lines(self.serve_candidates, self.artifacts.get("serve"))
        lines += ["| stage | wall time (s) |", "|---|---:|",
                  *[f"| {k} | {v:.1f} |" for k, v in self.stage_wall_time_s.items()]]
        return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _interpolation_line(interp: dict[str, Any]) -> str:
    how = ("tuned on the dev split's real qrels" if interp.get("chosen_by") == "dev_qrels"
           else "not tuned: the conservative default (no real dev judgments)")
    return (f"Interpolation (served, in the model card): first-stage weight {interp['first_stage_weight']:.2f} on "
            f"{interp['first_stage_norm']} BM25 + {interp['ranker_norm']} {interp['score_convention']} student "
            f"scores over the top {interp['depth']} ({how}); measured with the served model.")


def _serve_lines(candidates: list[dict[str, Any]], serve_dir: str | None) -> list[str]:
    if not candidates:
        return []
    rows = [f"| {c['variant']} | {c['precision']} | {c['dev_ndcg@10_interpolated']:.4f} | {c['pairs_per_s']:.1f} | "
            f"{c['decision']} |" for c in candidates]
    return ["## Served model", "", f"`distilrank serve --model {serve_dir}` serves the kept candidate: the fastest "
            "whose interpolated dev nDCG@10 is within the tolerance of the best.", "",
            "| candidate | precision | dev nDCG@10 (interpolated) | pairs/s | decision |", "|---|---|---:|---:|---|",
            *rows, ""]
