"""``distilrank pipeline``: data -> (synthesize) -> first stage -> teacher (CPT -> SFT) -> label -> student -> evaluate.

The pipeline is a list of :class:`Stage` objects run by one :class:`StageRunner`, which owns the only
skip-if-finished logic. A stage's key is its resolved config, the **content hashes** of its input
files and the keys of the stages it depends on; a stage whose ``manifest.json`` records the same key
is skipped. So changing the teacher's config re-runs labels, student and evaluation, while spelling
``--out`` relative or absolute changes nothing (paths are not part of any key). A stage that was
interrupted resumes from its own checkpoints when its key is unchanged; a stage directory left by
another key is wiped before the stage runs, so stale checkpoints never leak into a new run.

Output contract: :class:`PipelineReport`, returned, printed by the CLI and written as ``OUT/report.json``
(+ ``report.md``, ``report.png``), with ``metrics.<system>.<metric>`` for ``first_stage``, ``teacher``,
``student`` and ``student_interpolated``. All systems are evaluated on the same eval queries;
rerankers rescore the first stage's top ``eval.top_k`` (the teacher its top ``eval.teacher_top_k``).

Safety gate: when the interpolated student is not above the first stage on the dev split, the first
line of ``report.md`` says so and the CLI exits 5 unless ``allow_regression`` is set.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_write, config_hash, sha256_file, write_json
from distill.core.formats import (
    Qrels,
    Query,
    Run,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    write_qrels,
    write_queries,
    write_run,
)
from distill.core.errors import ConfigError, DataError
from distill.core.fault_injection import fault_point
from distill.core.manifest import is_complete, write_manifest
from distill.presets import PipelineConfig

__all__ = ["METRICS", "SYSTEMS", "PipelineInputs", "PipelineReport", "Stage", "StageResult", "StageRunner", "run_pipeline"]

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr@10")
SYSTEMS = ("first_stage", "teacher", "student", "student_interpolated")
_KEY_FILE = "stage_key.json"


@dataclass(frozen=True)
class PipelineInputs:
    corpus: Path
    eval_queries: Path
    eval_qrels: Path
    train_queries: Path | None = None
    train_qrels: Path | None = None
    eval_run: Path | None = None

    def __post_init__(self) -> None:
        if (self.train_queries is None) != (self.train_qrels is None):
            raise ConfigError("give both --train-queries and --train-qrels, or neither (then queries are synthesized)")
        for name in ("corpus", "eval_queries", "eval_qrels", "train_queries", "train_qrels", "eval_run"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().resolve())


@dataclass
class StageResult:
    name: str
    dir: Path
    key_hash: str
    outputs: dict[str, Path]
    skipped: bool
    wall_time_s: float


@dataclass
class Stage:
    """``run(stage_dir) -> {output name: path}``; ``config`` and ``inputs`` (files, hashed by content) and
    ``upstream`` (results of earlier stages) make its key."""

    name: str
    config: Mapping[str, Any]
    run: Callable[[Path], Mapping[str, Path]]
    inputs: Mapping[str, Path] = field(default_factory=dict)
    upstream: Sequence[StageResult] = ()

    def key(self, hashes: Callable[[Path], str]) -> dict[str, Any]:
        return {"config": dict(self.config), "inputs": {k: hashes(Path(p)) for k, p in sorted(self.inputs.items())},
                "upstream": {u.name: u.key_hash for u in self.upstream}}


class StageRunner:
    """Runs stages under ``out``; the single place where a finished stage is recognised and skipped."""

    def __init__(self, out: Path):
        self.out = out
        self.results: dict[str, StageResult] = {}
        self._hashes: dict[Path, str] = {}

    def content_hash(self, path: Path) -> str:
        path = path.resolve()
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]

    def run(self, stage: Stage) -> StageResult:
        stage_dir = self.out / stage.name
        key = stage.key(self.content_hash)
        h = config_hash(key)
        manifest = stage_dir / "manifest.json"
        if is_complete(stage_dir, key):
            outputs = {k: Path(v) for k, v in json.loads(manifest.read_text()).get("outputs", {}).items()}
            if all(p.exists() for p in outputs.values()):
                logger.info("stage %s: finished earlier with the same inputs; skipped", stage.name)
                res = StageResult(stage.name, stage_dir, h, outputs, True, 0.0)
                self.results[stage.name] = res
                return res
        key_file = stage_dir / _KEY_FILE
        if stage_dir.exists():
            previous = json.loads(key_file.read_text()).get("hash") if key_file.exists() else None
            if previous != h:
                logger.info("stage %s: inputs or config changed since the last run; starting it afresh", stage.name)
                shutil.rmtree(stage_dir)
            else:
                logger.info("stage %s: resuming an interrupted run", stage.name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(key_file, {"hash": h})
        logger.info("stage %s: starting", stage.name)
        fault_point(f"{stage.name}:start")
        t0 = time.perf_counter()
        outputs = {k: Path(v) for k, v in stage.run(stage_dir).items()}
        wall = round(time.perf_counter() - t0, 2)
        fault_point(f"{stage.name}:outputs")
        # this manifest replaces any a stage function wrote: the runner's key is the one that decides skipping
        write_manifest(stage_dir, stage.name, key, inputs=dict(stage.inputs), wall_time_s=wall,
                       extra={"outputs": {k: str(v) for k, v in outputs.items()}})
        logger.info("stage %s: done in %.1f s", stage.name, wall)
        res = StageResult(stage.name, stage_dir, h, outputs, False, wall)
        self.results[stage.name] = res
        return res


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        from distill.core.evaluation import format_markdown

        rows = {s: {m: (v if v is not None else float("nan")) for m, v in self.metrics[s].items()} for s in self.metrics}
        weights = self.teacher.get("weights")
        lines = [f"**{self.verdict}**", "", f"# distilrank pipeline report (preset `{self.preset}`)", "",
                 f"{self.n_eval_queries} eval queries; the teacher reranks the first stage's top "
                 f"{self.rerank_depth['teacher']}, the student its top {self.rerank_depth['student']}; "
                 f"{self.conventions.get('describe', '')}.", "",
                 f"Teacher: `{self.teacher['source']}`" + (f", weights {weights}" if weights else "")
                 + (f" (fitted on {self.teacher['fitted_on']})" if self.teacher.get("fitted_on") else "")
                 + (f"; each member's dev nDCG@10: {self.teacher['dev_ndcg10_alone']}" if self.teacher.get("dev_ndcg10_alone") else "")
                 + ".", "",
                 *([f"Dense member fine-tuned on the training qrels: {ft['triples']} (query, positive, hard negative) "
                    f"triples, {ft['steps']} steps, loss {ft['first_loss']} -> {ft['last_loss']}; the "
                    f"{ft['held_out_queries']} queries that fit the ensemble weights were held out.", ""]
                   if (ft := self.teacher.get("dense_fine_tuned")) else []),
                 *([f"Note: on the dev queries an ensemble of the LLM, dense and BM25 scored nDCG@10 "
                    f"{self.teacher['ensemble_check']['dev_ndcg10_ensemble']:.4f} vs the LLM alone "
                    f"{self.teacher['ensemble_check']['dev_ndcg10_alone']['llm']:.4f}: consider label.source = ensemble.", ""]
                   if self.teacher.get("ensemble_check", {}).get("favours_ensemble") else []),
                 f"Interpolation: a = {self.interpolation['alpha_first_stage']:.2f} ({self.interpolation['tuned_on']}).", "",
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
        lines += ["| stage | wall time (s) |", "|---|---:|", *[f"| {k} | {v:.1f} |" for k, v in self.stage_wall_time_s.items()]]
        return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _key(config: Mapping[str, Any], *paths: str) -> dict[str, Any]:
    """A stage config for its key: fields holding paths are blanked (their content is hashed as inputs)."""
    return {**config, **dict.fromkeys(paths)}


def _tiny_models(out: Path) -> tuple[str, str]:
    """Random 2-layer decoder and BERT built from configs with the real tokenizers (the ``tiny`` preset)."""
    from distill.tiny_models import build_tiny_cross_encoder, build_tiny_decoder

    return str(build_tiny_decoder(out / "decoder")), str(build_tiny_cross_encoder(out / "encoder"))


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
    return {"queries": write_queries(out / "queries.tsv", queries.values()), "qrels": write_qrels(out / "qrels.txt", qrels)}


def run_pipeline(inputs: PipelineInputs, config: PipelineConfig, out: str | Path) -> PipelineReport:
    """Run (or resume) the whole pipeline; returns the report (also written to ``OUT/report.json``)."""
    from distill.core.evaluation import EvalConventions, evaluate, plot_metrics, resolve_identical_ids
    from distill.student.interpolate import InterpolationConfig, interpolate_runs, load_interpolation
    from distill.teacher.label import ENSEMBLE_FILE, SourceFactory

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pipeline_config.json", config.to_dict())
    runner = StageRunner(out)
    t_start = time.perf_counter()
    ev = config.eval

    teacher_model, student_model = config.teacher_model, config.student_model
    if "tiny" in (teacher_model, student_model):
        dec, enc = _tiny_models(out / "tiny_models")
        teacher_model = dec if teacher_model == "tiny" else teacher_model
        student_model = enc if student_model == "tiny" else student_model

    corpus = read_corpus(inputs.corpus)
    eval_queries = read_queries(inputs.eval_queries)
    eval_qrels = read_qrels(inputs.eval_qrels)
    if ev.max_queries:
        keep = [q for q in eval_queries if q in eval_qrels][: ev.max_queries]
        eval_queries = {q: eval_queries[q] for q in keep}
        eval_qrels = {q: eval_qrels[q] for q in keep}

    label_base = config.stage_config("label", teacher="pending", queries="pending", corpus=str(inputs.corpus),
                                     dense_model=student_model if config.student_model == "tiny" else "default")
    factory = SourceFactory(label_base, corpus, out / "cache")  # one BM25 and one dense index for the whole run

    # training queries: given, synthesized, or both
    synth_info: dict[str, Any] | None = None
    parts: list[tuple[Path, Path]] = []
    qrels_kind = "real"
    if inputs.train_queries is not None:
        parts.append((inputs.train_queries, inputs.train_qrels))  # type: ignore[arg-type]
    if config.synthesize == "always" or (config.synthesize == "auto" and not parts):
        from distill.teacher.synthesize import synthesize_queries

        synth_cfg = config.stage_config("synth", corpus=str(inputs.corpus), generator=teacher_model)
        synth = runner.run(Stage("synthesize", {**_key(synth_cfg.to_dict(), "corpus"), "generator": config.teacher_model},
                                 lambda d: dict(zip(("queries", "qrels"), synthesize_queries(
                                     synth_cfg, d, corpus=corpus, bm25=factory.bm25_index,
                                     dense=factory.dense_retriever if label_base.n_dense or "dense" in label_base.members
                                     else None), strict=True)),
                                 inputs={"corpus": inputs.corpus}))
        synth_info = json.loads((synth.dir / "synth_report.json").read_text())
        parts.append((synth.outputs["queries"], synth.outputs["qrels"]))
        if len(parts) == 1:
            qrels_kind = "synthetic"
    if not parts:
        raise ConfigError("no training queries: pass --train-queries/--train-qrels or let the pipeline synthesize "
                          "(synthesize: auto or always)")
    upstream_data = [runner.results["synthesize"]] if "synthesize" in runner.results else []
    if len(parts) > 1:
        train = runner.run(Stage("train_data", {"parts": len(parts)}, lambda d: _combine_training_sets(parts, d),
                                 inputs={f"part{i}_{k}": p for i, part in enumerate(parts) for k, p in zip(("q", "r"), part, strict=True)},
                                 upstream=upstream_data))
        train_q, train_qrels = train.outputs["queries"], train.outputs["qrels"]
        upstream_data = [train]
    else:
        train_q, train_qrels = parts[0]
    train_inputs = {"corpus": inputs.corpus, "train_queries": train_q, "train_qrels": train_qrels}

    # first stage of the eval queries (BM25 unless a run is given), self hits dropped when BEIR's rule applies
    if inputs.eval_run is not None:
        given = read_run(inputs.eval_run)
        fs_stage = Stage("first_stage", {"given_run": True, "qids": sorted(eval_queries)},
                         lambda d: {"run": write_run(d / "run.trec", {q: given.get(q, {}) for q in eval_queries}, tag="given")},
                         inputs={"run": inputs.eval_run})
    else:
        fs_stage = Stage("first_stage", {"bm25": asdict(factory.bm25_config), "top_k": 100, "qids": sorted(eval_queries)},
                         lambda d: {"run": write_run(d / "run.trec", factory.bm25_index.search(eval_queries, top_k=100), tag="bm25")},
                         inputs={"corpus": inputs.corpus, "eval_queries": inputs.eval_queries})
    fs = runner.run(fs_stage)
    first_stage = read_run(fs.outputs["run"])
    first_stage = {q: first_stage.get(q, {}) for q in eval_queries}
    drop_ids, drop_reason = resolve_identical_ids(ev.ignore_identical_ids, [first_stage], eval_qrels, corpus)
    if drop_ids:
        from distill.core.evaluation import drop_self_hits

        first_stage, _ = drop_self_hits(first_stage)

    fs_train = runner.run(Stage(
        "first_stage_train", {"bm25": asdict(factory.bm25_config), "top_k": 50},
        lambda d: {"run": write_run(d / "run.trec", factory.bm25_index.search(read_queries(train_q), top_k=50), tag="bm25")},
        inputs=train_inputs, upstream=upstream_data))
    train_run = fs_train.outputs["run"]

    # teacher: CPT -> SFT (only when the teacher source uses the LLM)
    llm_dirs: dict[str, Path] = {}
    teacher_upstream: list[StageResult] = []
    if config.uses_llm():
        from distill.teacher import run_cpt, run_sft

        cpt_cfg = config.stage_config("cpt", base_model=teacher_model, queries=str(train_q), qrels=str(train_qrels),
                                      corpus=str(inputs.corpus))
        cpt = runner.run(Stage("teacher_cpt", {**_key(cpt_cfg.to_dict(), "queries", "qrels", "corpus"),
                                               "base_model": config.teacher_model},
                               lambda d: {"model": run_cpt(cpt_cfg, d)}, inputs=train_inputs, upstream=upstream_data))
        sft_cfg = config.stage_config("sft", base_model=str(cpt.outputs["model"]), queries=str(train_q),
                                      qrels=str(train_qrels), corpus=str(inputs.corpus), run=str(train_run))
        sft = runner.run(Stage("teacher_sft", _key(sft_cfg.to_dict(), "base_model", "queries", "qrels", "corpus", "run"),
                               lambda d: {"model": run_sft(sft_cfg, d)},
                               inputs=train_inputs, upstream=[cpt, fs_train]))
        llm_dirs = {"cpt": cpt.outputs["model"], "sft": sft.outputs["model"]}
        teacher_upstream = [cpt, sft]

    # labels of the training queries' candidates, from the configured teacher source
    from distill.teacher.label import run_label

    llm_dir = llm_dirs.get("sft" if config.label.get("llm_score", "head") == "head" else "cpt")
    label_cfg = config.stage_config("label", teacher=str(llm_dir or "unused"), queries=str(train_q), corpus=str(inputs.corpus),
                                    qrels=str(train_qrels), qrels_kind=qrels_kind,
                                    dense_model=label_base.dense_model)
    dense_ft = config.stage_config("dense_ft")
    uses_dense = "dense" in label_cfg.used_sources
    if dense_ft.enabled and uses_dense and qrels_kind != "real":
        logger.warning("dense_ft: the training qrels are synthetic; the dense teacher is not fine-tuned on them")
    elif dense_ft.enabled and uses_dense:
        from distill.teacher.dense_ft import fine_tune_dense
        from distill.teacher.label import label_fit_qids

        train_queries, train_judged = read_queries(train_q), read_qrels(train_qrels)
        held_out = label_fit_qids(label_cfg, train_queries, train_judged)  # the ensemble fits its weights on these
        # "default" is the pipeline's dense model (all-MiniLM-L6-v2; the tiny student in the tiny preset)
        ft_cfg = replace(dense_ft, base=label_base.dense_model) if dense_ft.base == "default" else dense_ft
        tuned = runner.run(Stage("teacher_dense", {**dense_ft.to_dict(), "student_model": config.student_model,
                                                   "held_out": held_out},
                                 lambda d: {"model": fine_tune_dense(ft_cfg, train_queries, train_judged, corpus, d,
                                                                     held_out, factory.bm25_index)},
                                 inputs=train_inputs, upstream=upstream_data))
        label_cfg = replace(label_cfg, dense_model=str(tuned.outputs["model"]))
        teacher_upstream = [*teacher_upstream, tuned]
    factory.config = label_cfg
    label_inputs = dict(train_inputs) | ({"teacher_run": Path(label_cfg.run)} if label_cfg.run else {})
    label = runner.run(Stage("teacher_label", _key(label_cfg.to_dict(), "teacher", "queries", "corpus", "qrels", "run",
                                                   "dense_model"),
                             lambda d: {"labels": run_label(label_cfg, d, corpus=corpus, factory=factory)},
                             inputs=label_inputs, upstream=[*upstream_data, *teacher_upstream]))
    ensemble_path = label.dir / ENSEMBLE_FILE
    teacher_info: dict[str, Any] = {"source": label_cfg.source}
    if ensemble_path.exists():
        teacher_info.update({k: v for k, v in json.loads(ensemble_path.read_text()).items() if k != "fit_key"})
    if "teacher_dense" in runner.results:
        from distill.teacher.dense_ft import TRAIN_INFO

        teacher_info["dense_fine_tuned"] = json.loads((runner.results["teacher_dense"].dir / TRAIN_INFO).read_text())
    if (label.dir / "ensemble_check.json").exists():  # the LLM alone: would the ensemble have done better on dev?
        teacher_info["ensemble_check"] = json.loads((label.dir / "ensemble_check.json").read_text())

    # student distillation
    from distill.student.train import train_student

    student_cfg = config.stage_config("student", base=student_model)
    # with given and synthetic queries mixed, the dev split (checkpoint choice, interpolation) uses the given ones only
    dev_eligible = set(read_queries(inputs.train_queries)) if len(parts) > 1 and inputs.train_queries else None
    student = runner.run(Stage(
        "student", {**student_cfg.to_dict(), "model": {**student_cfg.to_dict()["model"], "base": config.student_model},
                    "qrels_kind": qrels_kind, "dev_from_given_queries": dev_eligible is not None},
        lambda d: {"model": train_student(student_cfg, label.outputs["labels"], inputs.corpus, train_qrels, d,
                                          dev_run_path=train_run, qrels_kind=qrels_kind,
                                          dev_eligible=dev_eligible).model_dir},
        inputs={"corpus": inputs.corpus, "train_qrels": train_qrels}, upstream=[label, fs_train]))
    student_dir = student.outputs["model"]

    # evaluation: every system on the same eval queries
    def teacher_rerank(d: Path) -> dict[str, Path]:
        from distill.teacher.sources import EnsembleSource

        tcfg = label_cfg
        if tcfg.source == "ensemble":
            weights = teacher_info["weights"]
            source: Any = EnsembleSource({m: factory.build(m) for m in tcfg.members if weights.get(m, 0) > 0}, weights={
                m: w for m, w in weights.items() if w > 0})
        else:
            source = factory.build(tcfg.source)
        cands = {q: [doc for doc, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[: ev.teacher_top_k]]
                 for q, docs in first_stage.items() if docs}
        try:
            run = {}
            for qid, docs in cands.items():
                run.update(source.score({qid: eval_queries[qid]}, {qid: docs}))
        except DataError as exc:  # a teacher run that does not cover the eval queries
            logger.warning("teacher evaluation skipped: %s", exc)
            return {}
        return {"run": write_run(d / "run.trec", run, tag="teacher")}

    teacher_eval = runner.run(Stage("eval_teacher", {"top_k": ev.teacher_top_k, "qids": sorted(eval_queries),
                                                     "drop_self_hits": drop_ids},
                                    teacher_rerank, inputs={"eval_queries": inputs.eval_queries}, upstream=[label, fs]))

    def student_rerank(d: Path) -> dict[str, Path]:
        from distill.student.model import student_scorer

        run = student_scorer(student_dir, batch_size=32).rerank(corpus, eval_queries, first_stage, ev.top_k)
        return {"run": write_run(d / "run.trec", run, tag="student")}

    student_eval = runner.run(Stage("eval_student", {"top_k": ev.top_k, "qids": sorted(eval_queries), "drop_self_hits": drop_ids},
                                    student_rerank, inputs={"eval_queries": inputs.eval_queries}, upstream=[student, fs]))
    student_run = read_run(student_eval.outputs["run"])

    interp_path = Path(student_dir) / "interpolation.json"
    interp = load_interpolation(interp_path)
    icfg = InterpolationConfig(first_stage_norm=interp.first_stage_norm, student_norm=interp.student_norm)  # type: ignore[arg-type]
    interpolated = interpolate_runs(first_stage, student_run, interp.alpha, icfg)
    interp_run_path = write_run(student_eval.dir / "interpolated.trec", interpolated, tag="student_interpolated")

    systems: dict[str, Run | None] = {"first_stage": first_stage,
                                      "teacher": read_run(teacher_eval.outputs["run"]) if "run" in teacher_eval.outputs else None,
                                      "student": student_run, "student_interpolated": interpolated}
    metrics: dict[str, dict[str, float | None]] = {}
    conventions = EvalConventions(1, drop_ids, drop_reason)
    for name, run in systems.items():
        if run is None:
            metrics[name] = dict.fromkeys(METRICS, None)
            continue
        res = evaluate(eval_qrels, run, METRICS, ignore_identical_ids=drop_ids, identical_ids_reason=drop_reason)
        metrics[name] = dict(res.metrics)
        conventions = res.conventions if name == "first_stage" else conventions
    t_ndcg = metrics["teacher"]["ndcg@10"]
    s_ndcg = metrics["student"]["ndcg@10"]
    regression = not interp.dev_score > interp.dev_score_first_stage_only
    dev_labels = "real qrels" if qrels_kind == "real" else f"{qrels_kind} dev labels"
    verdict = (f"REGRESSION: on the dev split ({dev_labels}) the interpolated student scores nDCG@10 "
               f"{interp.dev_score:.4f}, not above the first stage's {interp.dev_score_first_stage_only:.4f}; "
               "do not ship this student" if regression else
               f"OK: on the dev split ({dev_labels}) the interpolated student scores nDCG@10 {interp.dev_score:.4f} "
               f"vs the first stage's {interp.dev_score_first_stage_only:.4f}")
    report = PipelineReport(
        preset=config.preset, verdict=verdict, regression=regression,
        metrics=metrics,
        retention={"student_over_teacher_ndcg@10": s_ndcg / t_ndcg if t_ndcg and s_ndcg is not None else None},
        teacher=teacher_info,
        interpolation={"alpha_first_stage": interp.alpha, "tuned_on": interp.tuned_on,
                       "first_stage_norm": interp.first_stage_norm, "student_norm": interp.student_norm,
                       "dev_ndcg@10": interp.dev_score, "dev_ndcg@10_first_stage": interp.dev_score_first_stage_only,
                       "dev_ndcg@10_student": interp.dev_score_student_only, "n_dev_queries": interp.n_dev_queries},
        synthetic_queries=synth_info,
        conventions={**conventions.to_json(), "describe": conventions.describe()},
        n_eval_queries=len(eval_qrels),
        rerank_depth={"teacher": ev.teacher_top_k, "student": ev.top_k},
        stage_wall_time_s={n: r.wall_time_s for n, r in runner.results.items()},
        stages_skipped=[n for n, r in runner.results.items() if r.skipped],
        total_wall_time_s=round(time.perf_counter() - t_start, 2),
        artifacts={"teacher_llm": {k: str(v) for k, v in llm_dirs.items()}, "labels": str(label.outputs["labels"]),
                   "student": str(student_dir), "train_queries": str(train_q), "train_qrels": str(train_qrels),
                   "runs": {"first_stage": str(fs.outputs["run"]), "student": str(student_eval.outputs["run"]),
                            "student_interpolated": str(interp_run_path),
                            **({"teacher": str(teacher_eval.outputs["run"])} if "run" in teacher_eval.outputs else {})}},
    )
    write_json(out / "report.json", report.to_dict())
    with atomic_write(out / "report.md") as fh:
        fh.write(report.markdown())
    plot_metrics({s: {m: v or 0.0 for m, v in ms.items()} for s, ms in metrics.items()}, out / "report.png",
                 title=f"distilrank pipeline ({config.preset})")
    logger.info("report: %s", json.dumps(metrics))
    return report
