"""`student train` under torchrun: two CPU processes (gloo) finish, only rank 0 writes, and the final training loss
is within 5% of a single-process run with the same global batch and seed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.student_data import make_labels

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("torchrun") is None
                                and not Path(sys.executable).with_name("torchrun").exists(),
                                reason="torchrun is not installed")]


def _train(cmd: list[str], data: dict[str, Path], base: Path, out: Path, batch_size: int) -> dict[str, object]:
    cfg = out.parent / f"{out.name}.json"
    cfg.write_text(json.dumps({"model": {"base": str(base), "max_seq_len": 64},
                               "pairs": {"n_negatives": 3, "groups_per_query": 2}, "batch_size": batch_size,
                               "max_steps": 8, "eval_steps": 4, "learning_rate": 1e-3, "dev_top_k": 8, "seed": 3,
                               "warmup": {"mode": "off"}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, "-m", "distill.cli", "student", "train", "--labels", str(data["labels"]),
                           "--corpus", str(data["corpus"]), "--qrels", str(data["qrels"]), "--dev-run",
                           str(data["run"]), "--config", str(cfg), "--allow-regression", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def test_two_processes_train_like_one_with_the_same_global_batch(demo_data: Path, tiny_cross_encoder_dir: Path,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    data = make_labels(demo_data, tmp_path / "labels")
    torchrun = str(Path(sys.executable).with_name("torchrun")) if Path(sys.executable).with_name("torchrun").exists() \
        else "torchrun"
    single = _train([sys.executable], data, tiny_cross_encoder_dir, tmp_path / "one", batch_size=4)
    double = _train([torchrun, "--standalone", "--nproc_per_node", "2"], data, tiny_cross_encoder_dir,
                    tmp_path / "two", batch_size=2)
    assert (single["world_size"], double["world_size"]) == (1, 2)
    assert double["steps"] == single["steps"] == 8
    a, b = float(single["train_loss_last"]), float(double["train_loss_last"])  # type: ignore[arg-type]
    assert abs(a - b) <= 0.05 * abs(a), (a, b)
    model = tmp_path / "two" / "model"
    assert (model / "model.safetensors").is_file() and (tmp_path / "two" / "student_report.json").is_file()
    assert not list((tmp_path / "two").glob("*.tmp*")) and not list(tmp_path.glob("two/.model*"))


def _sft(cmd: list[str], mini: dict[str, Path], base: Path, out: Path) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, "-m", "distill.cli", "teacher", "sft", "--out", str(out), "--base-model", str(base),
                           "--queries", str(mini["queries"]), "--qrels", str(mini["qrels"]), "--corpus",
                           str(mini["corpus"]), "--max-steps", "4", "--batch-size", "4", "--num-negatives", "2",
                           "--negative-depth", "6", "--max-length", "48", "--device", "cpu", "--seed", "5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def test_the_sft_stage_under_two_processes_makes_the_same_updates(demo_data: Path, tiny_decoder_dir: Path,
                                                                   tmp_path: Path) -> None:
    """The teacher's loop splits every micro-batch over the ranks and sums their gradients: two processes make the
    one-process update on the same global batch, so the losses agree closely; rank 0 alone writes the teacher."""
    from tests.teacher_data import write_mini

    mini = write_mini(demo_data, tmp_path / "data", n_queries=6, n_extra_docs=20)
    torchrun = str(Path(sys.executable).with_name("torchrun")) if Path(sys.executable).with_name("torchrun").exists() \
        else "torchrun"
    one = _sft([sys.executable], mini, tiny_decoder_dir, tmp_path / "one")
    two = _sft([torchrun, "--standalone", "--nproc_per_node", "2"], mini, tiny_decoder_dir, tmp_path / "two")
    a, b = float(one["metrics"]["final_loss"]), float(two["metrics"]["final_loss"])  # type: ignore[index]
    assert abs(a - b) <= 0.05 * abs(a), (a, b)
    assert (tmp_path / "two" / "teacher" / "teacher.json").is_file() and not (tmp_path / "two" / "checkpoints").exists()
