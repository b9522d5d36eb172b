"""``distilrank pipeline``: data -> (synthesize) -> first stage -> teacher (CPT -> SFT) -> label -> student ->
(compress) -> serve -> evaluate.

The pipeline is a list of steps over one typed :class:`~distill.pipeline.context.PipelineContext`; each step
builds its :class:`~distill.core.stage_runner.Stage` and runs it through one
:class:`~distill.core.stage_runner.StageRunner`, which alone decides what is finished (and verifies it) and what
resumes. A stage's key is its resolved config, the content hashes of its input files and the keys and output
hashes of the stages it depends on, so changing the teacher's config re-runs labels, student, serving and
evaluation, while spelling ``--out`` relative or absolute changes nothing.

The pipeline ends in a servable model: ``OUT/serve/`` (``report.json``'s ``artifacts.serve``), which
``distilrank serve --model OUT/serve`` takes as is. Its model card carries the blend with the first stage,
tuned on the dev split with the served model's own scores; ``student`` and ``student_interpolated`` in the
report are measured with that served model, so the report's figures are what the ranker and the OpenSearch
plugin return.

Safety gate: when the interpolated student is not above the first stage on the dev split, the first line of
``report.md`` says so and the CLI exits 5 unless ``allow_regression`` is set.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_write, write_json
from distill.core.formats import Run, read_corpus, read_qrels, read_queries
from distill.core.stage_runner import Stage, StageResult, StageRunner
from distill.pipeline.context import PipelineContext, PipelineInputs
from distill.pipeline.data_stages import (
    step_first_stage,
    step_first_stage_train,
    step_label,
    step_teacher,
    step_training_data,
)
from distill.pipeline.model_stages import read_eval_runs, step_compress, step_eval, step_serve, step_student
from distill.pipeline.report import METRICS, SYSTEMS, PipelineReport
from distill.pipeline.results import ServeCandidate
from distill.presets import PipelineConfig

__all__ = ["METRICS", "STEPS", "SYSTEMS", "PipelineContext", "PipelineInputs", "PipelineReport", "Stage",
           "StageResult", "StageRunner", "run_pipeline"]

logger = logging.getLogger(__name__)

#: the stages in order; each reads only what the ones before it recorded on the context
STEPS = (step_training_data, step_first_stage, step_first_stage_train, step_teacher, step_label, step_student,
         step_compress, step_serve)


def _context(inputs: PipelineInputs, config: PipelineConfig, out: Path) -> PipelineContext:
    from distill.teacher.label import SourceFactory

    teacher_model, student_model = config.teacher_model, config.student_model
    if "tiny" in (teacher_model, student_model):
        from distill.tiny_models import build_tiny_cross_encoder, build_tiny_decoder

        teacher_model = str(build_tiny_decoder(out / "tiny_models" / "decoder")) if teacher_model == "tiny" \
            else teacher_model
        student_model = str(build_tiny_cross_encoder(out / "tiny_models" / "encoder")) if student_model == "tiny" \
            else student_model
    corpus = read_corpus(inputs.corpus)
    eval_queries, eval_qrels = read_queries(inputs.eval_queries), read_qrels(inputs.eval_qrels)
    if config.eval.max_queries:
        keep = [q for q in eval_queries if q in eval_qrels][: config.eval.max_queries]
        eval_queries, eval_qrels = {q: eval_queries[q] for q in keep}, {q: eval_qrels[q] for q in keep}
    label_base = replace(config.label, corpus=str(inputs.corpus),
                         dense_model=student_model if config.student_model == "tiny" else "default")
    factory = SourceFactory(label_base, corpus, out / "cache")  # one BM25 and one dense index for the whole run
    return PipelineContext(inputs, config, out, StageRunner(out), corpus, eval_queries, eval_qrels, teacher_model,
                           student_model, factory, label_base)


def run_pipeline(inputs: PipelineInputs, config: PipelineConfig, out: str | Path) -> PipelineReport:
    """Run (or resume) the whole pipeline; returns the report (also written to ``OUT/report.json``)."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pipeline_config.json", config.to_dict())
    t_start = time.perf_counter()
    ctx = _context(inputs, config, out)
    for step in STEPS:
        step(ctx)
    teacher, student = step_eval(ctx)
    report = _report(ctx, {"first_stage": ctx.first_stage, **read_eval_runs(teacher, student)}, teacher, student,
                     round(time.perf_counter() - t_start, 2))
    _write_report(out, report)
    return report


def _metrics(ctx: PipelineContext, systems: dict[str, Run | None]) -> tuple[dict[str, dict[str, float | None]], Any]:
    from distill.core.evaluation import EvalConventions, evaluate

    metrics: dict[str, dict[str, float | None]] = {}
    conventions = EvalConventions(1, ctx.drop_ids, ctx.drop_reason)
    for name, run in systems.items():
        if run is None:
            metrics[name] = dict.fromkeys(METRICS, None)
            continue
        res = evaluate(ctx.eval_qrels, run, METRICS, ignore_identical_ids=ctx.drop_ids,
                       identical_ids_reason=ctx.drop_reason)
        metrics[name] = dict(res.metrics)
        conventions = res.conventions if name == "first_stage" else conventions
    return metrics, conventions


def _verdict(ctx: PipelineContext, kept: ServeCandidate) -> tuple[bool, str]:
    dev, first = kept.dev_ndcg10_interpolated, kept.dev_ndcg10_first_stage
    labels = "real qrels" if ctx.qrels_kind == "real" else f"{ctx.qrels_kind} dev labels"
    if not dev > first:
        return True, (f"REGRESSION: on the dev split ({labels}) the interpolated served model scores nDCG@10 "
                      f"{dev:.4f}, not above the first stage's {first:.4f}; do not ship this student")
    return False, (f"OK: on the dev split ({labels}) the interpolated served model scores nDCG@10 {dev:.4f} vs "
                   f"the first stage's {first:.4f}")


def _report(ctx: PipelineContext, systems: dict[str, Run | None], teacher: StageResult, student: StageResult,
            wall: float) -> PipelineReport:
    assert ctx.served is not None
    metrics, conventions = _metrics(ctx, systems)
    kept = ctx.served.kept
    regression, verdict = _verdict(ctx, kept)
    t_ndcg, s_ndcg = metrics["teacher"]["ndcg@10"], metrics["student"]["ndcg@10"]
    runs = {"first_stage": ctx.result("first_stage").outputs["run"], "student": student.outputs["run"],
            "student_interpolated": student.outputs["interpolated"], **teacher.outputs}
    runner = ctx.runner
    return PipelineReport(
        preset=ctx.config.preset, verdict=verdict, regression=regression, metrics=metrics,
        retention={"student_over_teacher_ndcg@10": s_ndcg / t_ndcg if t_ndcg and s_ndcg is not None else None},
        teacher=ctx.teacher.to_dict() if ctx.teacher is not None else {},
        interpolation={**ctx.served.interpolation.to_dict(), "dev_ndcg@10": kept.dev_ndcg10_interpolated,
                       "dev_ndcg@10_first_stage": kept.dev_ndcg10_first_stage,
                       "dev_ndcg@10_student": kept.dev_ndcg10_student},
        synthetic_queries=ctx.synth_info, conventions={**conventions.to_json(), "describe": conventions.describe()},
        n_eval_queries=len(ctx.eval_qrels),
        rerank_depth={"teacher": ctx.config.eval.teacher_top_k, "student": ctx.config.eval.top_k},
        stage_wall_time_s={n: r.wall_time_s for n, r in runner.results.items()},
        stages_skipped=[n for n, r in runner.results.items() if r.skipped], total_wall_time_s=wall,
        artifacts={"serve": str(ctx.served.dir), "teacher_llm": {k: str(v) for k, v in ctx.llm_dirs.items()},
                   "labels": str(ctx.result("teacher_label").outputs["labels"]),
                   "student": str(ctx.result("student").outputs["model"]),
                   "variants": {k: str(v) for k, v in ctx.variants.items()},
                   "train_queries": str(ctx.train_queries), "train_qrels": str(ctx.train_qrels),
                   "runs": {k: str(v) for k, v in runs.items()}},
        serve_candidates=[c.to_dict() for c in ctx.served.candidates], models=_models(ctx),
        first_stage={"kind": ctx.config.first_stage.kind, "index": ctx.config.first_stage.index})


def _models(ctx: PipelineContext) -> dict[str, Any]:
    """The base models as resolved: name, revision (a Hub commit, or the PyPI package and version), source, path."""
    from distill.core.base_models import resolve_base

    return {"teacher_base": resolve_base(ctx.teacher_model, "teacher").to_dict() if ctx.config.uses_llm() else None,
            "student_base": resolve_base(ctx.student_model, "student").to_dict()}


def _write_report(out: Path, report: PipelineReport) -> None:
    from distill.core.evaluation import plot_metrics

    write_json(out / "report.json", report.to_dict())
    with atomic_write(out / "report.md") as fh:
        fh.write(report.markdown())
    plot_metrics({s: {m: v or 0.0 for m, v in ms.items()} for s, ms in report.metrics.items()}, out / "report.png",
                 title=f"distilrank pipeline ({report.preset})")
    logger.info("report: %s", json.dumps(report.metrics))
