"""Compression report on the tiny student: every cell measured, files written, Pareto front correct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.core.errors import ConfigError
from export.report import ReportConfig, compression_report, pareto_front

# real ONNX/OpenVINO exports of a tiny model: seconds each (make test-fast leaves them to make test)
pytestmark = pytest.mark.slow


def test_pareto_front_keeps_only_undominated_points() -> None:
    pts = [(10.0, 0.5), (5.0, 0.4), (20.0, 0.6), (12.0, 0.45), (5.0, 0.3)]
    assert pareto_front(pts) == [1, 0, 2]


def test_report_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="precisions must be a subset"):
        ReportConfig(precisions=("fp16",))
    with pytest.raises(ConfigError, match="max_lens must be in"):
        ReportConfig(max_lens=(1024,))


def test_compression_report_on_tiny_student(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    cfg = ReportConfig(depths=(2, 1, 3), max_lens=(64,), n_passages=(20,), reps=1, eval_queries=4, prefix="t_")
    path = compression_report(tiny_cross_encoder_dir, tmp_path, cfg)
    data = json.loads(path.read_text())
    cells = {(r["layers"], r["precision"], r["max_len"]) for r in data["rows"]}
    assert cells == {(2, "fp32", 64), (2, "int8", 64), (1, "fp32", 64), (1, "int8", 64)}  # L3 > 2 layers: skipped
    for row in data["rows"]:
        assert 0.0 <= row["ndcg@10"] <= 1.0
        for mode in ("bucketed", "unbucketed"):
            assert row["latency"]["20"][mode]["p50_ms"] > 0
    md = (tmp_path / "t_report.md").read_text()
    assert md.count("\n| 1 |") == 2 and "nDCG@10" in md
    assert (tmp_path / "t_pareto.png").read_bytes()[:4] == b"\x89PNG"
