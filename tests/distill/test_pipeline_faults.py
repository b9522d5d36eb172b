"""Kill-and-resume suite: SIGINT or SIGKILL at stage boundaries and mid-stage (an optimiser step, a labelled
query, a student checkpoint just written). Each kill point must end its run with the signal's exit code and no
traceback, and the run that follows must resume from what the killed one left. The kill points are chained in
stage order in one output directory (run k is killed at point k, and also resumes from the kill at point k-1),
so every resume starts from a killed state, some from a state that was itself resumed; the last, plain run must
report exactly the metrics of an uninterrupted run. One chain does the pipeline's work about once instead of
once per kill point.
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


#: (point, signal, exit code), in the order the pipeline reaches them
KILL_CHAIN = [
    ("cpt:step", "KILL", -9),                # killed after CPT's first optimiser step
    ("teacher_sft:start", "INT", 130),       # Ctrl-C as SFT starts (the reported case: the head was seeded late)
    ("sft:step", "KILL", -9),                # killed after SFT's first optimiser step
    ("label:query", "KILL", -9),             # killed with one query labelled
    ("teacher_label:outputs", "INT", 130),   # labels complete, manifest not yet written
    ("student:checkpoint", "KILL", -9),      # killed right after the student wrote a checkpoint
    ("eval_teacher:outputs", "KILL", -9),    # evaluation run written, manifest not yet
]


def test_killed_then_resumed_equals_uninterrupted(reference: dict, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    for point, signal, code in KILL_CHAIN:
        killed = _pipeline(out, f"{point}:{signal}")
        assert killed.returncode == code, f"kill at {point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
        assert "Traceback" not in killed.stderr, point
        assert not (out / "report.json").exists(), point
    resumed = _pipeline(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert _metrics(out) == reference
