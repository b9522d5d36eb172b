from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.errors import ConfigError
from distill.presets import resolve_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "out"
    assert main(["pipeline", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def test_tiny_pipeline_report_contract(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "report.json").read_text())
    for system in ("first_stage", "teacher", "student", "student_interpolated"):
        for metric in ("ndcg@10", "mrr@10"):
            value = report["metrics"][system][metric]
            assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert set(report["stage_wall_time_s"]) >= {"teacher_cpt", "teacher_sft", "teacher_label", "student", "eval_teacher"}
    for path in (report["artifacts"]["teacher"], report["artifacts"]["student"], report["artifacts"]["labels"],
                 *report["artifacts"]["runs"].values()):
        assert Path(path).exists(), path
    assert 0.0 <= report["interpolation"]["alpha_first_stage"] <= 1.0
    assert (tiny_run / "report.md").read_text().count("|") > 10
    assert (tiny_run / "report.png").read_bytes()[:4] == b"\x89PNG"
    for stage in ("teacher_cpt", "teacher_sft", "teacher_label", "student"):
        assert (tiny_run / stage / "manifest.json").exists(), stage


def test_rerun_skips_completed_stages(tiny_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")}
    first = json.loads((tiny_run / "report.json").read_text())
    assert main(["pipeline", "--preset", "tiny", "--out", str(tiny_run)]) == 0
    after = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")}
    assert before == after  # no stage redid its work
    assert json.loads((tiny_run / "report.json").read_text())["metrics"] == first["metrics"]


def test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_config("huge")
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['teachr'\]"):
        resolve_config("tiny", {"teachr": {}})
    bad = tmp_path / "cfg.json"
    bad.write_text('{"preset": "tiny", "cpt": {"max_lenght": 5}}')
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "max_lenght" in capsys.readouterr().err
    bad.write_text("{oops")  # one config loader: a malformed config file is a config error (exit 2), like an unknown key
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "cfg.json:1: invalid JSON" in capsys.readouterr().err
