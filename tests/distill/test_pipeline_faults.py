"""Kill-and-resume suite: SIGINT or SIGKILL at stage boundaries and mid-stage (an optimiser step, a labelled
query, a student checkpoint just written), then a plain rerun must finish and report exactly the metrics of
an uninterrupted run. One table row per kill point; each runs the real CLI in a subprocess on the tiny preset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.fault_injection import ENV

pytestmark = [pytest.mark.faults, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _pipeline(out: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    return subprocess.run([sys.executable, "-m", "distill.cli", "pipeline", "--preset", "tiny", "--allow-regression",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return {s: {m: round(v, 10) for m, v in ms.items()} for s, ms in report["metrics"].items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    proc = _pipeline(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _metrics(out)


@pytest.mark.parametrize(("point", "signal", "code"), [
    ("teacher_sft:start", "INT", 130),       # Ctrl-C as SFT starts (the reported case: the head was seeded late)
    ("cpt:step", "KILL", -9),                # killed after CPT's first optimiser step
    ("sft:step", "KILL", -9),                # ... and SFT's
    ("label:query", "KILL", -9),             # killed with one query labelled
    ("teacher_label:outputs", "INT", 130),   # labels complete, manifest not yet written
    ("student:checkpoint", "KILL", -9),      # killed right after the student wrote a checkpoint
    ("eval_teacher:outputs", "KILL", -9),    # evaluation run written, manifest not yet
])
def test_killed_then_resumed_equals_uninterrupted(point: str, signal: str, code: int, reference: dict,  # noqa: ANN001
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = _pipeline(out, f"{point}:{signal}")
    assert killed.returncode == code, killed.stderr[-2000:]
    assert "Traceback" not in killed.stderr
    assert not (out / "report.json").exists()
    resumed = _pipeline(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert _metrics(out) == reference
