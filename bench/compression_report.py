"""Export-time sweep of one student: layers kept (L6/L3/L2) x precision x max length (128/256).

    nice -n 10 python -m bench compression_report --model STUDENT_DIR [--out bench/results/export_sweep] [--reps 7]

Writes OUT/compression_report.{json,md} and compression_pareto.png (see export.report; ``distilrank export
--report`` writes the same). It scores the bundled scifact_mini test set and only cuts layers. The compression
report in docs/results.md ("Compression report: depth x precision": distilled students beside cut ones, on the
full SciFact test set) is ``python -m bench speed`` with ``--drop``; its command is there.
Without --model it builds a stand-in: all-MiniLM-L6-v2 with a fresh seeded 1-logit head. Its nDCG is
meaningless (the head is untrained); use it only for latency until a distilled student exists.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click

from bench import command, stamp_results

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

logger = logging.getLogger(__name__)


def stand_in_student(out: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2 encoder + a fresh seeded 1-logit head (an *untrained* cross-encoder)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.core.base_models import resolve_student_base

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    base = resolve_student_base("default")
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


@command(__doc__)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None, help="Distilled student dir.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              default=str(REPO / "bench" / "results" / "export_sweep"))
@click.option("--reps", default=7, show_default=True, type=int)
@click.option("--eval-queries", default=None, type=int, help="Use only the first N test queries (default all 60).")
def main(model_dir: str | None, out_dir: str, reps: int, eval_queries: int | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from export.report import ReportConfig, compression_report

    if model_dir is None:
        model_dir = str(stand_in_student(Path(tempfile.gettempdir()) / "distilrank_stand_in_student"))
        logger.warning("no --model: using an untrained stand-in student (nDCG meaningless): %s", model_dir)
    path = compression_report(model_dir, out_dir, ReportConfig(reps=reps, eval_queries=eval_queries))
    stamp_results(path, path.with_suffix(".md"))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    from bench import run

    run(main)
