"""``distilrank pipeline``."""

from __future__ import annotations

from pathlib import Path

import click

from distill.pipeline import METRICS, SYSTEMS

__all__ = ["pipeline"]

_FILE = click.Path(dir_okay=False, path_type=Path)
_DEMO = Path(__file__).resolve().parent / "datasets" / "scifact_mini"


@click.command("pipeline")
@click.option("--corpus", type=_FILE, help="Corpus (BEIR JSONL / MS MARCO TSV). Default: bundled scifact_mini.")
@click.option("--train-queries", type=_FILE, help="Training queries; synthesized from the corpus when absent.")
@click.option("--train-qrels", type=_FILE, help="Training qrels (with --train-queries).")
@click.option("--eval-queries", type=_FILE, help="Evaluation queries.")
@click.option("--eval-qrels", type=_FILE, help="Evaluation qrels.")
@click.option("--eval-run", type=_FILE, help="First-stage run of the eval queries (BM25 when absent).")
@click.option("--preset", type=click.Choice(["tiny", "demo", "small", "full"]), help="Size preset [default: demo].")
@click.option("--config", "config_file", type=_FILE, help="JSON/TOML config: preset + per-stage overrides.")
@click.option("--teacher-model", help="Teacher base: 'default' (SmolLM2-135M-Instruct) or a local HF causal-LM dir.")
@click.option("--student-model", help="Student base: 'default' (all-MiniLM-L6-v2) or a local HF encoder dir.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
def pipeline(corpus: Path | None, train_queries: Path | None, train_qrels: Path | None, eval_queries: Path | None,
             eval_qrels: Path | None, eval_run: Path | None, preset: str | None, config_file: Path | None,
             teacher_model: str | None, student_model: str | None, out: Path) -> None:
    """Distil end to end: (synthesize) -> teacher CPT -> SFT -> label -> student -> evaluate.

    Without data flags it runs on the bundled scifact_mini. Completed stages are skipped on re-run.
    """
    from distill.config import read_config_file
    from distill.evaluation import format_markdown
    from distill.pipeline import PipelineInputs, run_pipeline
    from distill.presets import resolve_config

    if corpus is None:
        if any(p is not None for p in (train_queries, train_qrels, eval_queries, eval_qrels, eval_run)):
            raise click.UsageError("data flags need --corpus too")
        corpus, train_queries, train_qrels = _DEMO / "corpus.jsonl", _DEMO / "queries.train.tsv", _DEMO / "qrels.train.txt"
        eval_queries, eval_qrels = _DEMO / "queries.test.tsv", _DEMO / "qrels.test.txt"
    if eval_queries is None or eval_qrels is None:
        raise click.UsageError("--eval-queries and --eval-qrels are required with --corpus")
    overrides = read_config_file(config_file) if config_file else {}
    if teacher_model:
        overrides["teacher_model"] = teacher_model
    if student_model:
        overrides["student_model"] = student_model
    config = resolve_config(preset, overrides)
    inputs = PipelineInputs(corpus=corpus, eval_queries=eval_queries, eval_qrels=eval_qrels, train_queries=train_queries,
                            train_qrels=train_qrels, eval_run=eval_run)
    report_path = run_pipeline(inputs, config, out)
    import json

    report = json.loads(report_path.read_text())
    click.echo(format_markdown({s: {m: report["metrics"][s][m] for m in METRICS} for s in SYSTEMS}), nl=False)
    click.echo(f"\nreport: {report_path} (+ report.md, report.png); total {report['total_wall_time_s']:.0f} s")
