"""Stage builders for the data and the teacher: synthesize, train_data, first stages, CPT, SFT, dense fine-tuning,
labels. Each ``step_<stage>(ctx)`` builds its :class:`~distill.core.stage_runner.Stage` (or decides the stage does
not apply), runs it through the one runner and records its typed result on the context."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from distill.core.atomic_io import write_json
from distill.core.errors import ConfigError, DataError
from distill.core.formats import (
    Qrels,
    Query,
    Run,
    read_qrels,
    read_queries,
    write_qrels,
    write_queries,
    write_run,
)
from distill.core.stage_runner import Stage
from distill.pipeline.context import PipelineContext
from distill.pipeline.results import TeacherFit, read_json_object
from distill.teacher.config import LabelConfig

__all__ = ["step_first_stage", "step_first_stage_train", "step_label", "step_teacher", "step_training_data"]

logger = logging.getLogger(__name__)


def _key(config: Mapping[str, Any], *paths: str) -> dict[str, Any]:
    """A stage config for its key: fields holding paths are blanked (their content is hashed as inputs)."""
    return {**config, **dict.fromkeys(paths)}


def _combine_training_sets(parts: Sequence[tuple[Path, Path]], out: Path) -> dict[str, Path]:
    queries: dict[str, Query] = {}
    qrels: Qrels = {}
    for q_path, r_path in parts:
        for qid, q in read_queries(q_path).items():
            if qid in queries:
                raise DataError(f"query id {qid!r} is both a given and a synthetic training query; "
                                "set synth.qid_prefix to something unused", path=q_path)
            queries[qid] = q
        qrels.update(read_qrels(r_path))
    return {"queries": write_queries(out / "queries.tsv", queries.values()),
            "qrels": write_qrels(out / "qrels.txt", qrels)}


def build_synthesize(ctx: PipelineContext) -> Stage:
    from distill.teacher.synthesize import synthesize_queries

    synth_cfg = replace(ctx.config.synth, corpus=str(ctx.inputs.corpus), generator=ctx.teacher_model)
    factory, label_base = ctx.factory, ctx.label_base
    dense = factory.dense_retriever if label_base.n_dense or "dense" in label_base.members else None

    def run(d: Path) -> dict[str, Path]:
        queries, qrels = synthesize_queries(synth_cfg, d, corpus=ctx.corpus, bm25=factory.bm25_index, dense=dense)
        return {"queries": queries, "qrels": qrels, "report": d / "synth_report.json"}

    return Stage("synthesize", {**_key(synth_cfg.to_dict(), "corpus"), "generator": ctx.config.teacher_model}, run,
                 inputs={"corpus": ctx.inputs.corpus}, load=lambda outputs: read_json_object(outputs["report"]))


def step_training_data(ctx: PipelineContext) -> None:
    """Training queries: given, synthesized, or both (then combined in one ``train_data`` stage)."""
    parts: list[tuple[Path, Path]] = []
    if ctx.inputs.train_queries is not None and ctx.inputs.train_qrels is not None:
        parts.append((ctx.inputs.train_queries, ctx.inputs.train_qrels))
    if ctx.config.synthesize == "always" or (ctx.config.synthesize == "auto" and not parts):
        synth = ctx.runner.run(build_synthesize(ctx))
        ctx.synth_info = synth.value
        parts.append((synth.outputs["queries"], synth.outputs["qrels"]))
        ctx.data_upstream = [synth]
        if len(parts) == 1:
            ctx.qrels_kind = "synthetic"
    if not parts:
        raise ConfigError("no training queries: pass --train-queries/--train-qrels or let the pipeline synthesize "
                          "(synthesize: auto or always)")
    ctx.n_training_parts = len(parts)
    if len(parts) > 1:
        inputs = {f"part{i}_{k}": p for i, part in enumerate(parts) for k, p in zip(("q", "r"), part, strict=True)}
        train = ctx.runner.run(Stage("train_data", {"parts": len(parts)}, lambda d: _combine_training_sets(parts, d),
                                     inputs=inputs, upstream=ctx.data_upstream))
        ctx.train_queries, ctx.train_qrels = train.outputs["queries"], train.outputs["qrels"]
        ctx.data_upstream = [train]
    else:
        ctx.train_queries, ctx.train_qrels = parts[0]


def _first_stage_config(ctx: PipelineContext, top_k: int) -> dict[str, Any]:
    fs = ctx.config.first_stage
    if fs.kind == "opensearch":
        return {"opensearch": {"index": fs.index}, "top_k": top_k}
    return {"bm25": asdict(ctx.factory.bm25_config), "top_k": top_k}


def _retrieve(ctx: PipelineContext, queries: Mapping[str, Query], top_k: int) -> Run:
    fs = ctx.config.first_stage
    if fs.kind == "opensearch":
        from opensearch_plugin import ensure_index, index_exists, retrieve_run

        if not index_exists(str(fs.url), str(fs.index)):  # a missing index is built from the corpus; one that
            ensure_index(str(fs.url), str(fs.index), ctx.inputs.corpus)  # exists is the user's: used as it is
        return retrieve_run(str(fs.url), str(fs.index), queries, top_k)
    return ctx.factory.bm25_index.search(queries, top_k=top_k)


def _write_first_stage(d: Path, run: Run, tag: str) -> dict[str, Path]:
    """The run as TREC, and as JSON with every score exactly and each query's hits in the first stage's own order
    (the engine's, ties included), which is the window the plugin rescores."""
    return {"run": write_run(d / "run.trec", run, tag=tag),
            "ordered": write_json(d / "run.json", {q: list(docs.items()) for q, docs in run.items()})}


def _read_first_stage(outputs: Mapping[str, Path]) -> Run:
    from distill.core.formats import read_run

    if "ordered" in outputs:
        return {q: dict(hits) for q, hits in json.loads(outputs["ordered"].read_text()).items()}
    return read_run(outputs["run"])


def step_first_stage(ctx: PipelineContext) -> None:
    """The eval queries' first stage (a given run, bm25s or the OpenSearch index); self hits dropped when BEIR's
    rule applies."""
    from distill.core.evaluation import drop_self_hits, resolve_identical_ids
    from distill.core.formats import read_run

    qids = sorted(ctx.eval_queries)
    if ctx.inputs.eval_run is not None:
        given = read_run(ctx.inputs.eval_run)
        stage = Stage("first_stage", {"given_run": True, "qids": qids},
                      lambda d: {"run": write_run(d / "run.trec", {q: given.get(q, {}) for q in ctx.eval_queries},
                                                  tag="given")},
                      inputs={"run": ctx.inputs.eval_run})
    else:
        top_k, tag = ctx.config.first_stage.top_k, ctx.config.first_stage.kind
        stage = Stage("first_stage", {**_first_stage_config(ctx, top_k), "qids": qids},
                      lambda d: _write_first_stage(d, _retrieve(ctx, ctx.eval_queries, top_k), tag),
                      inputs={"corpus": ctx.inputs.corpus, "eval_queries": ctx.inputs.eval_queries})
    fs = ctx.runner.run(stage)
    run = _read_first_stage(fs.outputs)
    first_stage = {q: run.get(q, {}) for q in ctx.eval_queries}
    ctx.drop_ids, ctx.drop_reason = resolve_identical_ids(ctx.config.eval.ignore_identical_ids, [first_stage],
                                                          ctx.eval_qrels, ctx.corpus)
    if ctx.drop_ids:
        first_stage, _ = drop_self_hits(first_stage)
    ctx.first_stage = first_stage


def step_first_stage_train(ctx: PipelineContext) -> None:
    """The training queries' first stage: the candidates the teacher labels and the dev split reranks."""
    top_k, tag = ctx.config.first_stage.train_top_k, ctx.config.first_stage.kind
    train_q = ctx.train_queries
    assert train_q is not None
    ctx.runner.run(Stage(
        "first_stage_train", _first_stage_config(ctx, top_k),
        lambda d: {"run": write_run(d / "run.trec", _retrieve(ctx, read_queries(train_q), top_k), tag=tag)},
        inputs=ctx.train_inputs, upstream=ctx.data_upstream))


def step_teacher(ctx: PipelineContext) -> None:
    """CPT -> SFT of the LLM teacher, only when the teacher source uses the LLM."""
    if not ctx.config.uses_llm():
        return
    from distill.teacher import run_cpt, run_sft

    train_q, train_qrels, corpus = str(ctx.train_queries), str(ctx.train_qrels), str(ctx.inputs.corpus)
    cpt_cfg = replace(ctx.config.cpt, base_model=ctx.teacher_model, queries=train_q, qrels=train_qrels, corpus=corpus)
    cpt = ctx.runner.run(Stage("teacher_cpt", {**_key(cpt_cfg.to_dict(), "queries", "qrels", "corpus"),
                                               "base_model": ctx.config.teacher_model},
                               lambda d: {"model": run_cpt(cpt_cfg, d)}, inputs=ctx.train_inputs,
                               upstream=ctx.data_upstream))
    sft_cfg = replace(ctx.config.sft, base_model=str(cpt.outputs["model"]), queries=train_q, qrels=train_qrels,
                      corpus=corpus, run=str(ctx.train_run))
    sft = ctx.runner.run(Stage("teacher_sft",
                               _key(sft_cfg.to_dict(), "base_model", "queries", "qrels", "corpus", "run"),
                               lambda d: {"model": run_sft(sft_cfg, d)},
                               inputs=ctx.train_inputs, upstream=[cpt, ctx.result("first_stage_train")]))
    ctx.llm_dirs = {"cpt": cpt.outputs["model"], "sft": sft.outputs["model"]}
    ctx.teacher_upstream = [cpt, sft]


def _label_config(ctx: PipelineContext) -> LabelConfig:
    llm_dir = ctx.llm_dirs.get("sft" if ctx.config.label.llm_score == "head" else "cpt")
    return replace(ctx.config.label, teacher=str(llm_dir or "unused"), queries=str(ctx.train_queries),
                   corpus=str(ctx.inputs.corpus), qrels=str(ctx.train_qrels), qrels_kind=ctx.qrels_kind,  # type: ignore[arg-type]
                   dense_model=ctx.label_base.dense_model)


def step_dense_ft(ctx: PipelineContext, label_cfg: LabelConfig) -> LabelConfig:
    """Fine-tune the dense member on real training qrels (the ensemble's fit queries held out); returns the label
    config pointing at the tuned model, or ``label_cfg`` unchanged when the stage does not apply."""
    dense_ft = ctx.config.dense_ft
    if not (dense_ft.enabled and "dense" in label_cfg.used_sources):
        return label_cfg
    if ctx.qrels_kind != "real":
        logger.warning("dense_ft: the training qrels are synthetic; the dense teacher is not fine-tuned on them")
        return label_cfg
    from distill.teacher.dense_ft import fine_tune_dense
    from distill.teacher.label import label_fit_qids

    queries, judged = read_queries(ctx.train_queries), read_qrels(ctx.train_qrels)
    held_out = label_fit_qids(label_cfg, queries, judged)  # the ensemble fits its weights on these
    # "default" is the pipeline's dense model (all-MiniLM-L6-v2; the tiny student in the tiny preset)
    ft_cfg = replace(dense_ft, base=ctx.label_base.dense_model) if dense_ft.base == "default" else dense_ft
    bm25 = ctx.factory.bm25_index
    tuned = ctx.runner.run(Stage("teacher_dense", {**dense_ft.to_dict(), "student_model": ctx.config.student_model,
                                                   "held_out": held_out},
                                 lambda d: {"model": fine_tune_dense(ft_cfg, queries, judged, ctx.corpus, d, held_out,
                                                                     bm25)},
                                 inputs=ctx.train_inputs, upstream=ctx.data_upstream))
    ctx.teacher_upstream = [*ctx.teacher_upstream, tuned]
    return replace(label_cfg, dense_model=str(tuned.outputs["model"]))


def step_label(ctx: PipelineContext) -> None:
    """Labels of the training queries' candidates from the configured teacher source."""
    from distill.teacher.dense_ft import TRAIN_INFO
    from distill.teacher.label import run_label

    label_cfg = step_dense_ft(ctx, _label_config(ctx))
    ctx.factory.config = label_cfg
    ctx.label_cfg = label_cfg
    inputs = dict(ctx.train_inputs) | ({"teacher_run": Path(label_cfg.run)} if label_cfg.run else {})
    dense_info = ctx.result("teacher_dense").dir / TRAIN_INFO if ctx.has("teacher_dense") else None
    # the fit (ensemble.json) and, with the LLM alone, the check whether an ensemble would have done better on dev
    label = ctx.runner.run(Stage(
        "teacher_label", _key(label_cfg.to_dict(), "teacher", "queries", "corpus", "qrels", "run", "dense_model"),
        lambda d: {"labels": run_label(label_cfg, d, corpus=ctx.corpus, factory=ctx.factory)},
        inputs=inputs, upstream=[*ctx.data_upstream, *ctx.teacher_upstream],
        load=lambda outputs: TeacherFit.read(outputs["labels"].parent, label_cfg.source, dense_info)))
    ctx.teacher = label.value
