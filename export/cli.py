"""``distilrank export``: student dir -> gated ONNX artifact (+ optional compression report)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from distill.core.config import choices, default
from export.config import RECIPE_NAMES, ExportConfig

logger = logging.getLogger(__name__)


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Trained student dir (HF, 1 label).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Artifact dir to write (atomically).")
@click.option("--optimize", type=click.Choice(choices(ExportConfig, "optimize")),
              default=default(ExportConfig, "optimize"), show_default=True,
              help="ORTOptimizer level (O3 adds a GELU approximation).")
@click.option("--quantize", type=click.Choice(choices(ExportConfig, "quantize")),
              default=default(ExportConfig, "quantize"), show_default=True,
              help="int8: fail (exit 5) unless an int8 recipe passes the gates; "
                   "auto: keep int8 only if it passes and is faster.")
@click.option("--int8-mode", type=click.Choice(choices(ExportConfig, "int8_mode")),
              default=default(ExportConfig, "int8_mode"), show_default=True,
              help="First int8 recipe to try; static is calibrated on --calibration-run (default: bundled "
                   "scifact_mini train pairs).")
@click.option("--per-channel/--per-tensor", default=default(ExportConfig, "per_channel"), show_default=True,
              help="Weight quantisation granularity.")
@click.option("--op-types", default=None, help="Comma-separated ONNX op types to quantise (default: onnxruntime's).")
@click.option("--no-fallback", is_flag=True,
              help="Try only the requested int8 recipe (no static/per-channel fallback).")
@click.option("--isa", type=click.Choice(choices(ExportConfig, "isa")), default=default(ExportConfig, "isa"),
              show_default=True,
              help="CPU the recipes are made for; auto reads /proc/cpuinfo (or DISTILRANK_ISA). A level pretends a "
                   "typical CPU of it (amx with bf16, the others without).")
@click.option("--runtime", type=click.Choice(choices(ExportConfig, "runtime")),
              default=default(ExportConfig, "runtime"), show_default=True,
              help="onnxruntime: today's recipes; openvino or auto: build, gate and time every recipe this machine "
                   "runs (ONNX Runtime, OpenVINO f32/bf16/int8) and serve the fastest that passes (openvino: an "
                   "OpenVINO one), with an ONNX Runtime runner-up beside an OpenVINO winner.")
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(RECIPE_NAMES),
              help="With --runtime openvino|auto: only these recipes may be served (repeat the option).")
@click.option("--max-seq-len", type=click.IntRange(8, 512),
              help="Override the student's token budget (default: its scoring.json).")
@click.option("--max-query-tokens", type=click.IntRange(1, 512),
              help="Override the query cap (see bench/token_budget.py).")
@click.option("--max-doc-tokens", type=click.IntRange(1, 512), help="Override the document cap.")
@click.option("--eval-queries", type=click.Path(dir_okay=False),
              help="Eval queries (with --eval-qrels/--eval-run/--corpus).")
@click.option("--eval-qrels", type=click.Path(dir_okay=False))
@click.option("--eval-run", type=click.Path(dir_okay=False), help="First-stage run whose candidates are reranked.")
@click.option("--corpus", type=click.Path(dir_okay=False),
              help="Corpus of the eval and calibration runs (BEIR JSONL / MS MARCO TSV).")
@click.option("--calibration-queries", type=click.Path(exists=True, dir_okay=False),
              help="Queries whose candidates calibrate static int8 (with --calibration-run and --corpus): take "
                   "training queries of your own collection, not the eval queries.")
@click.option("--calibration-run", type=click.Path(exists=True, dir_okay=False),
              help="First-stage run of --calibration-queries (TREC run file).")
@click.option("--spearman-median-min", type=float, default=None, help="Override the int8 Spearman median gate.")
@click.option("--ndcg-drop-max", type=float, default=None, help="Override the nDCG@10 drop gate (points).")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Also write the compression report (depth x precision x length) into this dir.")
def export_cmd(model_dir: str, out_dir: str, optimize: str, quantize: str, int8_mode: str, per_channel: bool,
               op_types: str | None, no_fallback: bool, isa: str, runtime: str, recipes: tuple[str, ...],
               max_seq_len: int | None, max_query_tokens: int | None,
               max_doc_tokens: int | None, eval_queries: str | None,
               eval_qrels: str | None, eval_run: str | None, corpus: str | None, calibration_queries: str | None,
               calibration_run: str | None, spearman_median_min: float | None, ndcg_drop_max: float | None,
               report_dir: str | None) -> None:
    """Export a student to ONNX (or OpenVINO) with graph optimisation and gated int8 or bf16; write model_card.json.

    \b
    Exit 5 when a gate fails (the message names the gate and by how much); nothing is written then.
    """
    from dataclasses import replace

    from distill.core.errors import ConfigError
    from distill.core.model_card import load_model_card
    from export.config import GateTolerances
    from export.exporter import EvalData, export_model

    given = [eval_queries, eval_qrels, eval_run]
    if any(given) and not (all(given) and corpus):
        raise ConfigError("--eval-queries, --eval-qrels, --eval-run and --corpus go together; pass all four or none")
    calibrate = [calibration_queries, calibration_run]
    if any(calibrate) and not (all(calibrate) and corpus):
        raise ConfigError("--calibration-queries, --calibration-run and --corpus go together; pass all three or none")
    gates = GateTolerances()
    if spearman_median_min is not None:
        gates = replace(gates, spearman_median_min=spearman_median_min)
    if ndcg_drop_max is not None:
        gates = replace(gates, ndcg_drop_max_points=ndcg_drop_max)
    cfg = ExportConfig(optimize=optimize, quantize=quantize, int8_mode=int8_mode, per_channel=per_channel,  # type: ignore[arg-type]
                       isa=isa, runtime=runtime, recipes=recipes or None,  # type: ignore[arg-type]
                       op_types=tuple(t.strip() for t in op_types.split(",") if t.strip()) if op_types else None,
                       int8_fallback=not no_fallback, max_seq_len=max_seq_len, max_query_tokens=max_query_tokens,
                       max_doc_tokens=max_doc_tokens, gates=gates)
    eval_data = EvalData(Path(eval_queries), Path(eval_qrels), Path(eval_run), Path(corpus)) if all(given) else None  # type: ignore[arg-type]
    calibration = None
    if all(calibrate):
        from export._candidates import eval_candidates

        calibration = eval_candidates(Path(calibration_queries), None, Path(calibration_run), Path(corpus),  # type: ignore[arg-type]
                                      source=f"calibration run {calibration_run}")
    path = export_model(model_dir, out_dir, cfg, eval_data, calibration=calibration)
    card = load_model_card(path)
    click.echo(f"exported {card.onnx_file} ({card.recipe or card.precision}, {card.runtime}) to {path}")
    if card.runner_up is not None:
        click.echo(f"runner-up: {card.runner_up.onnx_file} ({card.runner_up.recipe}), served where {card.recipe} "
                   "cannot run")
    click.echo(f"decision: {card.decision}")
    for gate in card.gates.values():
        click.echo(f"  gate {gate['name']}: {gate['value']:.4g} {gate['op']} {gate['threshold']:.4g} ok")
    if report_dir:
        from export.report import ReportConfig, compression_report

        out = compression_report(model_dir, report_dir, ReportConfig())
        click.echo(f"compression report: {out}")
