"""Fixtures for the OpenVINO export and serving tests: a tiny student and its export that serves OpenVINO bf16 with
an ONNX Runtime runner-up (built once for the session).

Registered once by ``pytest_plugins`` in conftest.py; test modules import its plain helpers (``TINY_OV_GATES``,
``OV_FAST``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from export.config import GateTolerances

# A random 2-layer model's scores sit far from 0 with a small spread, so bf16 rounding (8 significant bits of each
# logit) weighs far more against that spread than on a trained student; this bf16 tolerance is for the tiny model
# only (the default, 0.1, is about twice what a trained MiniLM-L6 head showed: docs/results.md). The ranking
# tolerances are the tiny model's int8 ones (tests/export/test_pipeline.py).
TINY_OV_GATES = replace(GateTolerances(spearman_median_min=0.9, spearman_worst_min=0.5, top10_overlap_mean_min=0.7),
                        parity_bf16_max_rel_diff=0.5)
OV_FAST = dict(gate_queries=10, latency_reps=2, calibration_pairs=32)


@pytest.fixture(scope="session")
def openvino_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.export.test_pipeline import _tiny

    return _tiny(tmp_path_factory.mktemp("ov_student"))


@pytest.fixture(scope="session")
def openvino_bf16_export(openvino_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export that serves OpenVINO bf16 (the recipe narrowed to it), gated and timed beside the others."""
    pytest.importorskip("openvino")
    from distill.core.isa import machine_isa

    if not machine_isa().bf16:
        pytest.skip("this CPU has no native bf16 (AMX or AVX512-BF16): the exporter does not build the bf16 recipe")
    from export.config import ExportConfig
    from export.exporter import export_model

    cfg = ExportConfig(runtime="openvino", recipes=("openvino-bf16",), gates=TINY_OV_GATES, **OV_FAST)
    return export_model(openvino_student, tmp_path_factory.mktemp("ov_art") / "bf16", cfg)
