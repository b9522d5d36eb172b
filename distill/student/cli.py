"""``distilrank student train|rerank``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from distill.core.config import choices, default
from distill.student.warmup import WarmupConfig

if TYPE_CHECKING:
    from distill.student.train import StudentTrainConfig

logger = logging.getLogger(__name__)

_FILE = click.Path(dir_okay=False)


@click.group()
def student() -> None:
    """Distil teacher labels into a BERT cross-encoder, and rerank with it."""


@student.command("train")
@click.option("--labels", required=True, type=_FILE, help="Teacher labels JSONL (distill.core.label_files contract).")
@click.option("--corpus", required=True, type=_FILE, help="Corpus the labels refer to.")
@click.option("--qrels", type=_FILE, help="Training qrels: positives for pairs and the dev split.")
@click.option("--dev-run", type=_FILE,
              help="First-stage run of the training queries: dev reranking, interpolation and the "
                   "never-regress guard.")
@click.option("--config", "config_file", type=_FILE,
              help="JSON/TOML file with the student config (see StudentTrainConfig).")
@click.option("--base", help="Student base: 'default' (all-MiniLM-L6-v2) or a local HF encoder dir.")
@click.option("--num-layers", type=click.IntRange(min=1),
              help="Keep this many encoder layers (spread incl. first+last).")
@click.option("--max-seq-len", type=click.IntRange(min=8), help="Tokens per (query, document) pair.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Optimiser steps.")
@click.option("--warmup", type=click.Choice(choices(WarmupConfig, "mode")),
              help="Warm-up on weak pairs from the corpus before distillation (warmup.mode; default "
                   f"{default(WarmupConfig, 'mode')}; auto: on below warmup.auto_below_queries training queries).")
@click.option("--allow-regression", is_flag=True,
              help="Exit 0 even when neither the student nor the interpolated student beats the first stage on dev "
                   "(default: exit 5; needs --dev-run).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output dir; the student lands in OUT/model.")
@click.option("--no-resume", is_flag=True, help="Ignore existing checkpoints in OUT/checkpoints.")
def train_cmd(labels: str, corpus: str, qrels: str | None, dev_run: str | None, config_file: str | None,
              base: str | None, num_layers: int | None, max_seq_len: int | None, max_steps: int | None,
              warmup: str | None, allow_regression: bool, out: str, no_resume: bool) -> None:
    """Train the student (hybrid pointwise + margin-MSE loss, or listwise by config); keeps the dev-chosen checkpoint.

    With --dev-run it compares the student and the interpolated student with the first stage on dev, writes
    OUT/student_report.{json,md}, and exits 5 when neither beats the first stage (unless --allow-regression).
    """
    from distill.core.errors import GateFailedError
    from distill.student.train import train_student

    config = _train_config(config_file, {"base": base, "num_layers": num_layers, "max_seq_len": max_seq_len},
                           max_steps, warmup)
    res = train_student(config, labels, corpus, qrels, out, dev_run_path=dev_run, resume=not no_resume)
    click.echo(f"student saved to {res.model_dir} after {res.steps} steps; dev {res.dev_metrics}; "
               f"report {res.report_path}")
    if res.verdict:
        click.echo(res.verdict)
    if res.regression and not allow_regression:
        raise GateFailedError(f"{res.verdict}. The student and its report are written to {out}; pass "
                              "--allow-regression to accept it anyway")


def _train_config(config_file: str | None, model_flags: dict[str, object], max_steps: int | None,
                  warmup: str | None) -> StudentTrainConfig:
    from distill.core.config import read_config_file
    from distill.student.train import StudentTrainConfig

    data = read_config_file(config_file) if config_file else {}
    data = dict(data.get("student", data))
    data["model"] = {**dict(data.get("model", {})), **{k: v for k, v in model_flags.items() if v is not None}}
    if max_steps is not None:
        data["max_steps"] = max_steps
    if warmup is not None:
        data["warmup"] = {**dict(data.get("warmup", {})), "mode": warmup}
    return StudentTrainConfig.from_dict(data)


@student.command("rerank")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Trained student dir.")
@click.option("--corpus", required=True, type=_FILE)
@click.option("--queries", required=True, type=_FILE)
@click.option("--run", "run_path", required=True, type=_FILE, help="First-stage TREC run to rerank.")
@click.option("--top-k", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--pairs-per-call", default=32, show_default=True, type=click.IntRange(min=1),
              help="(query, passage) pairs scored in one model call.")
@click.option("--interpolate", is_flag=True, help="Combine with the first stage using MODEL/interpolation.json.")
@click.option("--out", required=True, type=_FILE, help="TREC run to write.")
def rerank_cmd(model_dir: str, corpus: str, queries: str, run_path: str, top_k: int, pairs_per_call: int,
               interpolate: bool, out: str) -> None:
    """Rerank a first-stage run with a trained student (raw logits, or interpolated)."""
    from distill.core.errors import MissingPrerequisiteError
    from distill.core.formats import read_corpus, read_queries, read_run, write_run
    from distill.student.interpolate import InterpolationConfig, interpolate_runs, load_interpolation
    from distill.student.model import student_scorer

    first = read_run(run_path)
    run = student_scorer(model_dir, pairs_per_call=pairs_per_call).rerank(read_corpus(corpus), read_queries(queries),
                                                                          first, top_k)
    tag = "student"
    if interpolate:
        path = Path(model_dir) / "interpolation.json"
        if not path.exists():
            raise MissingPrerequisiteError(f"{path} not found; train with --dev-run to tune the interpolation weight")
        interp = load_interpolation(path)
        cfg = InterpolationConfig(first_stage_norm=interp.first_stage_norm, student_norm=interp.student_norm)  # type: ignore[arg-type]
        run = interpolate_runs(first, run, interp.alpha, cfg)
        tag = f"student_interp_a{interp.alpha:.2f}"
    write_run(out, run, tag=tag)
    click.echo(f"wrote {sum(len(v) for v in run.values())} results for {len(run)} queries to {out}", file=sys.stderr)
