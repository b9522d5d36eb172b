"""Stage builders from the labels to the served model: student, compress, serve (export, gate, choose, tune the
blend on the served model), and the evaluation of every system with the model that will be served."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_dir, write_json
from distill.core.errors import DataError
from distill.core.formats import (
    Qrels,
    Run,
    read_qrels,
    read_queries,
    read_run,
    write_qrels,
    write_queries,
    write_run,
)
from distill.core.interpolation import Interpolation, interpolate_runs
from distill.core.stage_runner import Stage, StageResult
from distill.pipeline.context import PipelineContext, ServedModel
from distill.pipeline.results import ServeCandidate

__all__ = ["step_compress", "step_eval", "step_serve", "step_student"]

logger = logging.getLogger(__name__)

SERVE_DIR = "serve"


def _student_config(ctx: PipelineContext) -> Any:
    return ctx.config.student_config(base=ctx.student_model)


def _dev_eligible(ctx: PipelineContext) -> set[str] | None:
    """With given and synthetic queries mixed, the dev split (checkpoint, blend, variant choice) uses the given ones."""
    if ctx.n_training_parts > 1 and ctx.inputs.train_queries:
        return set(read_queries(ctx.inputs.train_queries))
    return None


def _train(ctx: PipelineContext, cfg: Any, out: Path) -> Path:
    from distill.student.train import train_student

    labels = ctx.result("teacher_label").outputs["labels"]
    return train_student(cfg, labels, ctx.inputs.corpus, ctx.train_qrels, out, dev_run_path=ctx.train_run,
                         qrels_kind=ctx.qrels_kind, dev_eligible=_dev_eligible(ctx)).model_dir


def step_student(ctx: PipelineContext) -> None:
    cfg = _student_config(ctx)
    student = ctx.runner.run(Stage(
        "student", {**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "base": ctx.config.student_model},
                    "qrels_kind": ctx.qrels_kind, "dev_from_given_queries": _dev_eligible(ctx) is not None},
        lambda d: {"model": _train(ctx, cfg, d)},
        inputs={"corpus": ctx.inputs.corpus, "train_qrels": ctx.train_qrels},
        upstream=[ctx.result("teacher_label"), ctx.result("first_stage_train")]))
    ctx.variants = {f"L{_layers(student.outputs['model'])}": student.outputs["model"]}


#: how the stages score with the served model: each query's window in calls of its own, as the ranker scores one
#: rescore request (part of those stages' keys: runs scored another way are scored again)
SCORING = "per_query"


def _rerank_as_served(ctx: PipelineContext, runtime: Any, queries: Mapping[str, Any], window: Run) -> Run:
    """The served model's scores of each query's window, in calls of its own (:data:`SCORING`)."""
    return runtime.scorer.rerank(ctx.corpus, queries, window, ctx.config.eval.top_k, per_query=True)


def _layers(model_dir: Path) -> int:
    import json

    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def step_compress(ctx: PipelineContext) -> None:
    """Each configured depth: the student cut to that many layers, then distilled again on the same labels."""
    comp = ctx.config.compress
    if not comp.layers:
        return
    from export.layers import keep_layers

    base_cfg = _student_config(ctx)
    student = ctx.result("student")
    for n in comp.layers:
        cfg = replace(base_cfg, model=replace(base_cfg.model, base="cut", num_layers=None), max_steps=comp.max_steps)

        def run(d: Path, n: int = n, cfg: Any = cfg) -> dict[str, Path]:
            cut = keep_layers(student.outputs["model"], n, d / "cut")
            return {"model": _train(ctx, replace(cfg, model=replace(cfg.model, base=str(cut))), d / "distilled")}

        res = ctx.runner.run(Stage(f"compress_l{n}", {"layers": n, "student": cfg.to_dict()}, run,
                                   upstream=[student, ctx.result("teacher_label"), ctx.result("first_stage_train")]))
        ctx.variants[f"L{n}"] = res.outputs["model"]


def _dev_split(ctx: PipelineContext, labels: list[Any]) -> Any:
    from distill.student.train import build_dev_split

    return build_dev_split(labels, read_qrels(ctx.train_qrels), _student_config(ctx), _dev_eligible(ctx),
                           ctx.train_run)


def _gate_data(ctx: PipelineContext, dev: Any, d: Path) -> Any:
    """The dev split as files for the export's nDCG gate (queries with at least 10 candidates)."""
    from export.exporter import EvalData

    run = {q: docs for q, docs in dev.first_stage.items() if len(docs) >= 10}
    if not run:
        raise DataError("no dev query has 10 first-stage candidates; the export gates need 10 per query",
                        path=ctx.train_run)
    gate = d / "gate_data"
    return EvalData(write_queries(gate / "queries.tsv", [dev.queries[q] for q in run]),
                    write_qrels(gate / "qrels.txt", {q: dev.qrels[q] for q in run if q in dev.qrels}),
                    write_run(gate / "run.trec", run, tag="dev"), ctx.inputs.corpus)


def _calibration_data(ctx: PipelineContext, labels: list[Any], dev: Any, d: Path) -> Any:
    """The int8 recipes' calibration lists: the training queries (dev queries left out), each with the window the
    served model will rerank -- the first stage's top ``eval.top_k`` -- so that activation ranges are measured on
    the collection and the candidates the model will serve, not on the exporter's bundled SciFact sample. A query
    the first-stage run lacks gets its labelled candidates, in the teacher's order. Written under
    ``d/calibration_data``."""
    from distill.core.cross_encoder import top_candidates
    from distill.core.formats import Query
    from export import eval_candidates

    labels = [q for q in labels if q.qid not in dev.queries and q.docs]
    if not labels:
        return None  # every labelled query is a dev query: the exporter's bundled lists calibrate
    first = read_run(ctx.train_run)
    depth = ctx.config.eval.top_k
    windows = {}
    for q in labels:
        docs = first.get(q.qid) or {doc.doc_id: doc.score for doc in q.docs}
        windows[q.qid] = {doc: docs[doc] for doc in top_candidates(q.qid, docs, depth)}
    calib = d / "calibration_data"
    queries = write_queries(calib / "queries.tsv", [Query(q.qid, q.query) for q in labels])
    run = write_run(calib / "run.trec", windows, tag="calibration")
    return eval_candidates(queries, None, run, ctx.inputs.corpus,
                           source=f"training queries' first-stage top {depth} ({len(labels)} queries, dev left out)")


def _tune(ctx: PipelineContext, dev: Any, served_run: Run) -> tuple[Interpolation, dict[str, float]]:
    """The blend for this candidate on the dev split, with its own (served) scores; dev nDCG@10 of the blend,
    the student alone and the first stage alone."""
    from distill.core.evaluation import evaluate
    from distill.student.interpolate import InterpolationConfig, tune_alpha

    depth = ctx.config.eval.top_k
    dev_qrels: Qrels = {q: r for q, r in dev.qrels.items() if q in served_run}
    if ctx.qrels_kind == "real" and dev.signal == "qrels":
        res = tune_alpha(dev_qrels, dev.first_stage, served_run, InterpolationConfig())
        spec = Interpolation(res.alpha, res.first_stage_norm, res.student_norm, "dev_qrels", depth,
                             dev_metric=res.dev_metric, dev_score=res.dev_score)  # type: ignore[arg-type]
    else:
        spec = Interpolation.conservative(depth)

    def ndcg(run: Run) -> float:
        return float(evaluate(dev_qrels, run, ["ndcg@10"]).metrics["ndcg@10"])

    from distill.core.cross_encoder import top_candidates

    # the window the served model reranked (the scorer's cut, ties by a fixed hash, never by doc id)
    first = {q: {d: dev.first_stage[q][d] for d in top_candidates(q, dev.first_stage[q], depth)} for q in served_run}
    scores = {"interpolated": ndcg(interpolate_runs(first, served_run, spec)), "student": ndcg(served_run),
              "first_stage": ndcg(first)}
    return replace(spec, dev_metric="ndcg@10", dev_score=scores["interpolated"]), scores


def _served(model_dir: Path) -> Any:
    """The model exactly as ``distilrank serve`` runs it on this machine: its card's recipe (or the runner-up
    where this machine cannot run it), token caps, pairs per call and sessions."""
    from ranker.runtime import RerankRuntime

    return RerankRuntime.load(model_dir)


#: how serve_select times its candidates (part of the stage key: a change re-runs the stage)
TIMING = "interleaved"
#: the dev queries are timed in this many blocks, each block reranked by every candidate in turn
TIMING_BLOCKS = 8


def _time_interleaved(ctx: PipelineContext, runtimes: Mapping[str, Any], dev: Any) -> tuple[dict[str, Run],
                                                                                         dict[str, float]]:
    """Every candidate's served run of the dev split and its pairs/s, timed side by side (:data:`TIMING`): the
    queries are split in blocks, and each block is reranked by every candidate in a rotating order, so that the
    machine's speed drifting over the stage (other load, frequency) falls on all of them alike rather than on
    whichever ran last. A query's scores do not depend on its block (each window is scored in calls of its own)."""
    import time

    names = list(runtimes)
    qids = list(dev.first_stage)
    blocks = [qids[k::TIMING_BLOCKS] for k in range(min(TIMING_BLOCKS, len(qids)))]
    runs: dict[str, Run] = {n: {} for n in names}
    seconds = dict.fromkeys(names, 0.0)
    for k, block in enumerate(blocks):
        window = {q: dev.first_stage[q] for q in block}
        for name in names[k % len(names):] + names[:k % len(names)]:
            t0 = time.perf_counter()
            runs[name].update(_rerank_as_served(ctx, runtimes[name], dev.queries, window))
            seconds[name] += time.perf_counter() - t0
    pairs = {n: sum(len(d) for d in runs[n].values()) for n in names}
    return runs, {n: pairs[n] / max(seconds[n], 1e-9) for n in names}


def _candidates(ctx: PipelineContext, exports: Mapping[str, Path], dev: Any) -> list[ServeCandidate]:
    """Every exported variant loaded as the ranker serves it, timed side by side on the dev split, with its blend
    tuned on its own scores."""
    runtimes = {name: _served(export_dir) for name, export_dir in exports.items()}
    try:
        for runtime in runtimes.values():
            runtime.warmup()
        runs, pairs_per_s = _time_interleaved(ctx, runtimes, dev)
    finally:
        for runtime in runtimes.values():
            runtime.close()
    out = []
    for name, export_dir in exports.items():
        card = runtimes[name].card
        spec, scores = _tune(ctx, dev, runs[name])
        out.append(ServeCandidate(variant=name, dir=str(export_dir.relative_to(ctx.out)), precision=card.precision,
                                  layers=card.layers, dev_ndcg10_interpolated=scores["interpolated"],
                                  dev_ndcg10_student=scores["student"], dev_ndcg10_first_stage=scores["first_stage"],
                                  pairs_per_s=pairs_per_s[name], interpolation=spec, decision=card.decision))
    return out


def choose_candidate(candidates: list[ServeCandidate], max_drop_points: float) -> int:
    """Index of the fastest candidate whose interpolated dev nDCG@10 is within ``max_drop_points`` of the best;
    ties in speed go to the better dev score. Every candidate's ``decision`` says why it was kept or not."""
    best = max(c.dev_ndcg10_interpolated for c in candidates)
    floor = best - max_drop_points / 100.0
    ok = [i for i, c in enumerate(candidates) if c.dev_ndcg10_interpolated >= floor - 1e-12]
    kept = max(ok, key=lambda i: (candidates[i].pairs_per_s, candidates[i].dev_ndcg10_interpolated))
    for i, c in enumerate(candidates):
        c.kept = i == kept
        c.decision = ("kept: the fastest within the tolerance" if i == kept else
                      "not kept: slower than the kept candidate" if i in ok else
                      f"not kept: dev nDCG@10 {c.dev_ndcg10_interpolated:.4f} is more than "
                      f"{max_drop_points:g} point(s) below the best {best:.4f}")
    return kept


def _serve(ctx: PipelineContext, d: Path) -> dict[str, Path]:
    from distill.core.label_files import read_labels
    from distill.core.model_card import set_interpolation
    from export.exporter import export_model

    labels = read_labels(ctx.result("teacher_label").outputs["labels"])
    dev = _dev_split(ctx, labels)
    gate = _gate_data(ctx, dev, d)
    calibration = _calibration_data(ctx, labels, dev, d) if ctx.config.serve.export.quantize != "none" else None
    exports = {}
    for name, model_dir in ctx.variants.items():
        export_dir = exports[name] = d / "exports" / name
        if not (export_dir / "model_card.json").is_file():  # resume: an export finished before a kill is kept
            export_model(model_dir, export_dir, ctx.config.serve.export, eval_data=gate, calibration=calibration)
    candidates = _candidates(ctx, exports, dev)
    kept = candidates[choose_candidate(candidates, ctx.config.serve.max_drop_points)]
    with atomic_dir(d / SERVE_DIR) as stage:
        stage.rmdir()
        shutil.copytree(ctx.out / kept.dir, stage)
        set_interpolation(stage, kept.interpolation)
    write_json(d / "candidates.json", [c.to_dict() for c in candidates])
    return {"serve": d / SERVE_DIR, "candidates": d / "candidates.json"}


def step_serve(ctx: PipelineContext) -> None:
    """Export and gate every variant, keep the fastest within the dev tolerance, tune its blend with its own
    scores, and publish it as ``OUT/serve`` (what ``distilrank serve --model OUT/serve`` takes as is)."""
    from distill.core.model_card import load_model_card

    upstream = [ctx.result("student"), *[r for n, r in ctx.runner.results.items() if n.startswith("compress_")]]
    res = ctx.runner.run(Stage("serve_select", {"serve": ctx.config.serve.export.to_dict(),
                                                "max_drop_points": ctx.config.serve.max_drop_points,
                                                "depth": ctx.config.eval.top_k, "qrels_kind": ctx.qrels_kind,
                                                "scoring": SCORING, "timing": TIMING,
                                                "calibration": "training_first_stage"},
                               lambda d: _serve(ctx, d), upstream=upstream,
                               load=lambda outputs: ServeCandidate.read_all(outputs["candidates"])))
    served = ctx.out / SERVE_DIR
    _publish(res.outputs["serve"], served)
    card = load_model_card(served)
    assert card.interpolation is not None
    ctx.served = ServedModel(served, card.interpolation, res.value)


def _publish(src: Path, dst: Path) -> None:
    """``OUT/serve``: a copy of the stage's chosen export, replaced atomically when it differs."""
    from distill.core.stage_runner import content_hash

    if dst.exists() and content_hash(dst) == content_hash(src):
        return
    with atomic_dir(dst) as stage:
        stage.rmdir()
        shutil.copytree(src, stage)


def _eval_teacher(ctx: PipelineContext, d: Path) -> dict[str, Path]:
    from distill.teacher.sources import EnsembleSource

    tcfg, factory, top_k = ctx.label_cfg, ctx.factory, ctx.config.eval.teacher_top_k
    assert tcfg is not None and ctx.teacher is not None  # the label stage ran
    if tcfg.source == "ensemble":
        weights = ctx.teacher.positive_weights()
        source: Any = EnsembleSource({m: factory.build(m) for m in tcfg.members if m in weights}, weights=weights)
    else:
        source = factory.build(tcfg.source)
    cands = {q: [doc for doc, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
             for q, docs in ctx.first_stage.items() if docs}
    try:
        run: Run = {}
        for qid, docs in cands.items():
            run.update(source.score({qid: ctx.eval_queries[qid]}, {qid: docs}))
    except DataError as exc:  # a teacher run that does not cover the eval queries
        logger.warning("teacher evaluation skipped: %s", exc)
        return {}
    return {"run": write_run(d / "run.trec", run, tag="teacher")}


def _eval_served(ctx: PipelineContext, d: Path) -> dict[str, Path]:
    """The served model (ONNX, its card's caps and pairs per call) reranks the eval first stage; the card's blend
    gives ``student_interpolated``: exactly what the ranker and the plugin serve."""
    assert ctx.served is not None
    runtime = _served(ctx.served.dir)
    run = _rerank_as_served(ctx, runtime, ctx.eval_queries, eval_window(ctx))
    runtime.close()
    blended = interpolate_runs(ctx.first_stage, run, ctx.served.interpolation)
    return {"run": write_run(d / "run.trec", run, tag="student"),
            "interpolated": write_run(d / "interpolated.trec", blended, tag="student_interpolated")}


def eval_window(ctx: PipelineContext) -> Run:
    """The hits the served model rescores per eval query: the first stage's top ``eval.top_k``. From OpenSearch
    that is its first hits in the engine's own order (ties included), exactly the window the plugin sees."""
    from distill.core.cross_encoder import top_candidates

    depth = ctx.config.eval.top_k
    if ctx.config.first_stage.kind == "opensearch" and ctx.inputs.eval_run is None:
        return {q: dict(list(docs.items())[:depth]) for q, docs in ctx.first_stage.items()}
    return {q: {d: docs[d] for d in top_candidates(q, docs, depth)} for q, docs in ctx.first_stage.items()}


def step_eval(ctx: PipelineContext) -> tuple[StageResult, StageResult]:
    ev, qids = ctx.config.eval, sorted(ctx.eval_queries)
    fs = ctx.result("first_stage")
    teacher = ctx.runner.run(Stage("eval_teacher", {"top_k": ev.teacher_top_k, "qids": qids,
                                                    "drop_self_hits": ctx.drop_ids},
                                   lambda d: _eval_teacher(ctx, d), inputs={"eval_queries": ctx.inputs.eval_queries},
                                   upstream=[ctx.result("teacher_label"), fs]))
    student = ctx.runner.run(Stage("eval_student", {"top_k": ev.top_k, "qids": qids, "drop_self_hits": ctx.drop_ids,
                                                    "scoring": SCORING},
                                   lambda d: _eval_served(ctx, d), inputs={"eval_queries": ctx.inputs.eval_queries},
                                   upstream=[ctx.result("serve_select"), fs]))
    return teacher, student


def read_eval_runs(teacher: StageResult, student: StageResult) -> dict[str, Run | None]:
    return {"teacher": read_run(teacher.outputs["run"]) if "run" in teacher.outputs else None,
            "student": read_run(student.outputs["run"]),
            "student_interpolated": read_run(student.outputs["interpolated"])}
