"""``distilrank pipeline``: data -> (synthesize) -> teacher CPT -> SFT -> label -> student -> evaluate.

Each stage works in its own directory under ``OUT`` and writes ``config.json`` + ``manifest.json``
last; a stage whose manifest matches its config hash is skipped, so a crash or Ctrl-C resumes at the
stage that was running (and the training stages resume from their last checkpoint).

Output contract: ``OUT/report.json`` with ``metrics.<system>.<metric>`` for the systems
``first_stage``, ``teacher``, ``student``, ``student_interpolated`` (metrics ndcg@10, mrr@10), stage
wall times and artifact paths; ``OUT/report.md`` (table) and ``OUT/report.png`` (chart). All systems
are evaluated on the same eval queries; rerankers rescore the first stage's top ``eval.top_k``
(the teacher its top ``eval.teacher_top_k``, which costs ~10x a student pair on a CPU).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.atomic_io import atomic_write, config_hash, write_json
from distill.data import Qrels, Run, read_corpus, read_qrels, read_queries, read_run, write_run
from distill.errors import ConfigError
from distill.manifest import is_complete, write_manifest

__all__ = ["PipelineInputs", "run_pipeline"]

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr@10")
SYSTEMS = ("first_stage", "teacher", "student", "student_interpolated")


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


def _tiny_models(out: Path) -> tuple[str, str]:
    """Random 2-layer decoder and BERT built from configs with the real tokenizers (the ``tiny`` preset)."""
    from distill.tiny_models import build_tiny_cross_encoder, build_tiny_decoder

    return str(build_tiny_decoder(out / "decoder")), str(build_tiny_cross_encoder(out / "encoder"))


def _run_hash(run: Run) -> str:
    # rounded like a TREC file, so a run re-read from disk hashes the same as when it was computed
    return config_hash({q: {d: round(s, 4) for d, s in docs.items()} for q, docs in run.items()})


def _build(cls: type, where: str, **kwargs: Any) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"config section {where!r}: {exc}") from exc


class _Stages:
    """Runs named stages, records wall times, skips completed ones."""

    def __init__(self, out: Path):
        self.out = out
        self.times: dict[str, float] = {}
        self.skipped: list[str] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        logger.info("stage %s: starting", name)
        result = fn()
        self.times[name] = round(time.perf_counter() - t0, 2)
        logger.info("stage %s: done in %.1f s", name, self.times[name])
        return result


def _cached_run(stage_dir: Path, config: dict[str, Any], compute: Callable[[], Run], tag: str) -> Run:
    """A run file made by ``compute`` unless one with the same config already exists."""
    path = stage_dir / "run.trec"
    if is_complete(stage_dir, config) and path.exists():
        return read_run(path)
    write_run(path, compute(), tag=tag)
    write_manifest(stage_dir, tag, config)
    return read_run(path)  # as later runs will see it, so hashes of it agree across resumes


def run_pipeline(inputs: PipelineInputs, config: dict[str, Any], out: str | Path) -> Path:
    """Run (or resume) the whole pipeline; returns the path of ``report.json``."""
    from distill.bm25 import BM25Index
    from distill.evaluation import evaluate, format_markdown, plot_metrics
    from distill.student.interpolate import InterpolationConfig, interpolate_runs, load_interpolation
    from distill.student.model import load_student, rerank_with_student
    from distill.student.train import StudentTrainConfig, train_student
    from distill.teacher import (
        CPTConfig,
        LabelConfig,
        SFTConfig,
        SynthConfig,
        rerank_run,
        run_cpt,
        run_label,
        run_sft,
        synthesize_queries,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pipeline_config.json", config)
    stages = _Stages(out)
    t_start = time.perf_counter()

    teacher_model, student_model = config["teacher_model"], config["student_model"]
    if "tiny" in (teacher_model, student_model):
        dec, enc = _tiny_models(out / "tiny_models")
        teacher_model = dec if teacher_model == "tiny" else teacher_model
        student_model = enc if student_model == "tiny" else student_model

    corpus_path = str(inputs.corpus)
    corpus = stages.run("data", lambda: read_corpus(inputs.corpus))
    eval_queries = read_queries(inputs.eval_queries)
    eval_qrels: Qrels = read_qrels(inputs.eval_qrels)
    ev = config["eval"]
    if ev.get("max_queries"):
        keep = [q for q in eval_queries if q in eval_qrels][: ev["max_queries"]]
        eval_queries = {q: eval_queries[q] for q in keep}
        eval_qrels = {q: eval_qrels[q] for q in keep}

    # training queries: given, or synthesized from the corpus
    if inputs.train_queries is None:
        synth_cfg = _build(SynthConfig, "synth", corpus=corpus_path, generator=teacher_model, **config.get("synth", {}))
        train_q_path, train_qrels_path = stages.run("synthesize", lambda: synthesize_queries(synth_cfg, out / "synthesize"))
    else:
        train_q_path, train_qrels_path = inputs.train_queries, inputs.train_qrels
    train_q_path, train_qrels_path = str(train_q_path), str(train_qrels_path)

    # first stage for the eval queries (BM25 unless a run is given) and for the training queries
    if inputs.eval_run is not None:
        first_stage = read_run(inputs.eval_run)
        first_stage = {q: first_stage.get(q, {}) for q in eval_queries}
    else:
        fs_cfg = {"bm25": "default", "corpus": corpus_path, "queries": str(inputs.eval_queries), "top_k": 100,
                  "qids": sorted(eval_queries)}
        index: list[BM25Index] = []

        def bm25_eval() -> Run:
            index.append(BM25Index(corpus))
            return index[0].search(eval_queries, top_k=100)

        first_stage = stages.run("first_stage", lambda: _cached_run(out / "first_stage", fs_cfg, bm25_eval, "bm25"))

    def bm25_train() -> Run:
        idx = BM25Index(corpus)
        return idx.search(read_queries(train_q_path), top_k=50)

    train_run_cfg = {"bm25": "default", "corpus": corpus_path, "queries": train_q_path, "top_k": 50}
    stages.run("first_stage_train", lambda: _cached_run(out / "first_stage_train", train_run_cfg, bm25_train, "bm25"))
    train_run_path = out / "first_stage_train" / "run.trec"

    # teacher: CPT -> SFT
    cpt_cfg = _build(CPTConfig, "cpt", base_model=teacher_model, queries=train_q_path, qrels=train_qrels_path, corpus=corpus_path,
                        **config["cpt"])
    cpt_dir = stages.run("teacher_cpt", lambda: run_cpt(cpt_cfg, out / "teacher_cpt"))
    sft_cfg = _build(SFTConfig, "sft", base_model=str(cpt_dir), queries=train_q_path, qrels=train_qrels_path, corpus=corpus_path,
                        run=str(train_run_path), **config["sft"])
    teacher_dir = stages.run("teacher_sft", lambda: run_sft(sft_cfg, out / "teacher_sft"))

    # label candidates of the training queries
    label_cfg = _build(LabelConfig, "label", teacher=str(teacher_dir), queries=train_q_path, corpus=corpus_path, qrels=train_qrels_path,
                            dense_model=student_model if config["student_model"] == "tiny" else "default",
                            **config["label"])
    labels = stages.run("teacher_label", lambda: run_label(label_cfg, out / "teacher_label"))

    # student distillation
    student_cfg = StudentTrainConfig.from_dict(
        {**config["student"], "model": {**config["student"].get("model", {}), "base": student_model}})
    student_dir = out / "student"

    def train() -> Path:
        if is_complete(student_dir, student_cfg.to_dict()) and (student_dir / "model" / "config.json").exists():
            stages.skipped.append("student")
            return student_dir / "model"
        return train_student(student_cfg, labels, corpus_path, train_qrels_path, student_dir,
                             dev_run_path=train_run_path).model_dir

    student_model_dir = stages.run("student", train)

    # evaluation: every system on the same eval queries
    t_cfg = {"teacher": str(teacher_dir), "teacher_hash": config_hash(sft_cfg.to_dict()), "top_k": ev["teacher_top_k"],
             "qids": sorted(eval_queries), "first_stage": _run_hash(first_stage)}
    teacher_run = stages.run("eval_teacher", lambda: _cached_run(
        out / "eval_teacher", t_cfg,
        lambda: rerank_run(teacher_dir, corpus, eval_queries, first_stage, top_k=ev["teacher_top_k"],
                           batch_size=ev["teacher_batch_size"], max_length=sft_cfg.max_length), "teacher"))

    def student_rerank() -> Run:
        model, tok = load_student(student_model_dir)
        return rerank_with_student(model, tok, corpus, eval_queries, first_stage, top_k=ev["top_k"],
                                   max_len=student_cfg.model.max_seq_len)

    s_cfg = {"student": str(student_model_dir), "student_hash": config_hash(student_cfg.to_dict()), "top_k": ev["top_k"],
             "qids": sorted(eval_queries), "first_stage": _run_hash(first_stage)}
    student_run = stages.run("eval_student", lambda: _cached_run(out / "eval_student", s_cfg, student_rerank, "student"))

    interp_path = Path(student_model_dir) / "interpolation.json"
    interp = load_interpolation(interp_path) if interp_path.exists() else None
    alpha = interp.alpha if interp else 0.5
    icfg = InterpolationConfig(first_stage_norm=interp.first_stage_norm if interp else "minmax",
                               student_norm=interp.student_norm if interp else "none")
    interpolated = interpolate_runs(first_stage, student_run, alpha, icfg)
    write_run(out / "eval_student" / "interpolated.trec", interpolated, tag="student_interpolated")

    systems = {"first_stage": first_stage, "teacher": teacher_run, "student": student_run,
               "student_interpolated": interpolated}
    metrics = {name: evaluate(eval_qrels, run, METRICS).metrics for name, run in systems.items()}
    teacher_ndcg = metrics["teacher"]["ndcg@10"]
    report = {
        "preset": config["preset"],
        "metrics": metrics,
        "retention": {"student_over_teacher_ndcg@10": metrics["student"]["ndcg@10"] / teacher_ndcg if teacher_ndcg else None},
        "interpolation": {"alpha_first_stage": alpha, "tuned_on": "dev split of the training queries" if interp else
                          "not tuned (no interpolation.json): 0.5", "first_stage_norm": icfg.first_stage_norm,
                          "student_norm": icfg.student_norm},
        "n_eval_queries": len(eval_qrels),
        "rerank_depth": {"teacher": ev["teacher_top_k"], "student": ev["top_k"]},
        "stage_wall_time_s": stages.times,
        "total_wall_time_s": round(time.perf_counter() - t_start, 2),
        "artifacts": {"teacher_cpt": str(cpt_dir), "teacher": str(teacher_dir), "labels": str(labels),
                      "student": str(student_model_dir), "train_queries": train_q_path, "train_qrels": train_qrels_path,
                      "runs": {"first_stage": str(out / "first_stage" / "run.trec") if inputs.eval_run is None else str(inputs.eval_run),
                               "teacher": str(out / "eval_teacher" / "run.trec"),
                               "student": str(out / "eval_student" / "run.trec"),
                               "student_interpolated": str(out / "eval_student" / "interpolated.trec")}},
    }
    write_json(out / "report.json", report)
    md = (f"# distilrank pipeline report (preset `{config['preset']}`)\n\n"
          f"{len(eval_qrels)} eval queries; teacher reranks the first stage's top {ev['teacher_top_k']}, "
          f"the student its top {ev['top_k']}; interpolation weight of the first stage a = {alpha:.2f}.\n\n"
          + format_markdown(metrics)
          + "\n| stage | wall time (s) |\n|---|---:|\n"
          + "".join(f"| {k} | {v:.1f} |\n" for k, v in stages.times.items()))
    with atomic_write(out / "report.md") as fh:
        fh.write(md)
    plot_metrics(metrics, out / "report.png", title=f"distilrank pipeline ({config['preset']})")
    logger.info("report: %s", json.dumps(metrics))
    return out / "report.json"
