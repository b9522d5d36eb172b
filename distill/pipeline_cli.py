"""``distilrank pipeline``."""

from __future__ import annotations

from pathlib import Path

import click

from distill.core.datasets import bundled_dataset
from distill.pipeline import METRICS, SYSTEMS
from distill.presets import PRESETS

__all__ = ["pipeline"]

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("pipeline")
@click.option("--corpus", type=_FILE, help="Corpus (BEIR JSONL / MS MARCO TSV). Default: bundled scifact_mini.")
@click.option("--train-queries", type=_FILE, help="Training queries; synthesized from the corpus when absent.")
@click.option("--train-qrels", type=_FILE, help="Training qrels (with --train-queries).")
@click.option("--eval-queries", type=_FILE, help="Evaluation queries.")
@click.option("--eval-qrels", type=_FILE, help="Evaluation qrels.")
@click.option("--eval-run", type=_FILE, help="First-stage run of the eval queries (BM25 when absent).")
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Size preset [default: demo].")
@click.option("--config", "config_file", type=_FILE, help="JSON/TOML config: preset + per-stage overrides.")
@click.option("--teacher-model", help="Teacher base: 'default' (SmolLM2-135M-Instruct) or a local HF causal-LM dir.")
@click.option("--student-model", help="Student base: 'default' (all-MiniLM-L6-v2) or a local HF encoder dir.")
@click.option("--synthesize", type=click.Choice(["auto", "always", "never"]),
              help="Synthesize training queries: auto (only without --train-queries), always (also beside them), "
                   "never.")
@click.option("--first-stage", type=click.Choice(["bm25", "opensearch"]),
              help="Where candidates come from: in-process bm25s, or the OpenSearch index that will serve "
                   "(--opensearch-url, --index) [default: bm25].")
@click.option("--opensearch-url", help="OpenSearch URL for --first-stage opensearch, e.g. http://127.0.0.1:9200.")
@click.option("--index", help="The index of --first-stage opensearch (it must hold the corpus).")
@click.option("--allow-regression", is_flag=True, default=None,
              help="Exit 0 even when the interpolated student does not beat the first stage on dev (default: exit 5).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
def pipeline(corpus: Path | None, train_queries: Path | None, train_qrels: Path | None, eval_queries: Path | None,
             eval_qrels: Path | None, eval_run: Path | None, preset: str | None, config_file: Path | None,
             teacher_model: str | None, student_model: str | None, synthesize: str | None, first_stage: str | None,
             opensearch_url: str | None, index: str | None, allow_regression: bool | None, out: Path) -> None:
    """Distil end to end: (synthesize) -> teacher CPT -> SFT -> label -> student -> (compress) -> serve -> evaluate.

    Without data flags it runs on the bundled scifact_mini. Completed stages are skipped on re-run.
    Exit 5 when the interpolated student is not above the first stage on the dev split (the report is
    written first; --allow-regression exits 0).
    """
    from distill.core.config import read_config_file
    from distill.core.errors import GateFailedError
    from distill.core.evaluation import format_markdown
    from distill.pipeline import PipelineInputs, run_pipeline
    from distill.presets import resolve_config

    if corpus is None:
        if any(p is not None for p in (train_queries, train_qrels, eval_queries, eval_qrels, eval_run)):
            raise click.UsageError("data flags need --corpus too")
        demo = bundled_dataset()
        corpus, train_queries, train_qrels = demo.corpus, demo.train_queries, demo.train_qrels
        eval_queries, eval_qrels = demo.test_queries, demo.test_qrels
    if eval_queries is None or eval_qrels is None:
        raise click.UsageError("--eval-queries and --eval-qrels are required with --corpus")
    overrides = read_config_file(config_file) if config_file else {}
    if teacher_model:
        overrides["teacher_model"] = teacher_model
    if student_model:
        overrides["student_model"] = student_model
    if synthesize:
        overrides["synthesize"] = synthesize
    if allow_regression is not None:
        overrides["allow_regression"] = allow_regression
    fs = {k: v for k, v in (("kind", first_stage), ("url", opensearch_url), ("index", index)) if v}
    if fs:
        overrides["first_stage"] = {**overrides.get("first_stage", {}), **fs}
    config = resolve_config(preset, overrides)
    inputs = PipelineInputs(corpus=corpus, eval_queries=eval_queries, eval_qrels=eval_qrels,
                            train_queries=train_queries, train_qrels=train_qrels, eval_run=eval_run)
    report = run_pipeline(inputs, config, out)
    click.echo(report.verdict)
    click.echo(format_markdown({s: {m: report.metrics[s][m] if report.metrics[s][m] is not None else float("nan")
                                    for m in METRICS} for s in SYSTEMS}), nl=False)
    click.echo(f"\nreport: {Path(out) / 'report.json'} (+ report.md, report.png); "
               f"total {report.total_wall_time_s:.0f} s")
    _next_steps(report)
    if report.regression and not config.allow_regression:
        raise GateFailedError("the interpolated student is not above the first stage on the dev split (see report.md); "
                              "pass --allow-regression to accept it anyway")


def _next_steps(report: object) -> None:
    """How to serve the result and put it behind OpenSearch: the commands, with this run's paths."""
    serve = report.artifacts["serve"]  # type: ignore[attr-defined]
    interp = report.interpolation  # type: ignore[attr-defined]
    click.echo(f"\nserve it:      distilrank serve --model {serve} --port 8080")
    click.echo("rescore clause: distilrank opensearch rescore-clause --ranker-url http://127.0.0.1:8080")
    click.echo(f"  (the plugin blends first stage and ranker as the report measured: first-stage weight "
               f"{interp['first_stage_weight']:.2f}, {interp['first_stage_norm']}/{interp['ranker_norm']}, "
               f"window {interp['depth']})")
