"""The exporter's per-machine choice on a tiny student: OpenVINO recipes built, gated and timed beside ONNX
Runtime's; the served recipe, the ISA it was chosen on and an ONNX Runtime runner-up recorded in the card, with the
runner-up's files shipped; recipes a (forced) ISA cannot run skipped with their reason."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from distill.core.errors import ConfigError, GateFailedError
from distill.core.isa import machine_isa
from distill.core.model_card import load_model_card
from export.config import ExportConfig
from tests.export_fixtures import OV_FAST, TINY_OV_GATES

# real ONNX/OpenVINO exports of a tiny model: seconds each (make test-fast leaves them to make test)
pytestmark = pytest.mark.slow

pytest.importorskip("openvino")

PAIRS = [("what causes fever", "Fever is caused by pyrogens released by the immune system."),
         ("protein folding", "Chaperones assist the folding of nascent polypeptides in E. coli.")]


def test_card_records_recipe_isa_runner_up_and_ships_its_files(openvino_bf16_export: Path) -> None:
    card = load_model_card(openvino_bf16_export)
    assert (card.recipe, card.runtime, card.precision, card.onnx_file) == \
        ("openvino-bf16", "openvino", "bf16", "openvino_model.xml")
    assert card.isa == machine_isa().isa and card.runner_up is not None
    assert (card.runner_up.recipe, card.runner_up.runtime, card.runner_up.onnx_file) == \
        ("onnxruntime-fp32", "onnxruntime", "model_optimized.onnx")
    assert {"openvino_model.xml", "openvino_model.bin", "model_optimized.onnx"} <= set(card.files)
    trials = card.recipe_trials
    assert trials["onnxruntime-fp32"]["passed"] and trials["openvino-fp32"]["passed"]
    assert trials["openvino-bf16"]["passed"] and trials["openvino-bf16"]["latency"]["p50_ms"] > 0
    for gate in ("openvino_bf16_vs_pytorch_max_rel_diff", "openvino_bf16_spearman_median",
                 "openvino_bf16_batch_invariance_max_rel_diff", "onnx_vs_pytorch_max_abs_diff"):
        assert card.gates[gate]["passed"], card.gates[gate]
    assert card.gates["openvino_bf16_vs_pytorch_max_rel_diff"]["threshold"] == 0.5
    assert "openvino-bf16" in card.decision and "runner-up onnxruntime-fp32" in card.decision


def test_forced_isa_without_bf16_gates_openvino_f32_and_nncf_int8(openvino_student: Path, tmp_path: Path) -> None:
    """An export for an AVX2 machine: bf16 is not built (its reason recorded), OpenVINO f32 and NNCF int8 are gated
    (int8 with the int8 gates, unchanged, and no parity gate), the fastest passing one is served."""
    pytest.importorskip("nncf")
    from export._candidates import demo_candidates
    from export.exporter import export_model

    # calibration lists of the caller's own (here: scifact_mini's test lists, standing in for a user's collection)
    own = replace(demo_candidates("test", 20), qrels=None, source="the caller's lists")
    cfg = ExportConfig(runtime="openvino", quantize="auto", isa="avx2", gates=TINY_OV_GATES, **OV_FAST)
    card = load_model_card(export_model(openvino_student, tmp_path / "avx2", cfg, calibration=own))
    trials = card.recipe_trials
    assert card.isa == "avx2" and "no native bf16" in trials["openvino-bf16"]["skipped"]
    assert not trials["openvino-bf16"]["passed"] and "onnxruntime-int8-dynamic-per_channel" not in trials
    assert trials["openvino-fp32"]["passed"] and card.recipe in ("openvino-fp32", "openvino-int8")
    assert card.runner_up is not None and card.runner_up.recipe == "onnxruntime-fp32"
    int8 = trials["openvino-int8"]
    assert int8["quantization"]["tool"] == "nncf" and "openvino_int8_vs_pytorch_max_abs_diff" not in int8["gates"]
    assert int8["quantization"]["calibration"] == "the caller's lists"
    tol = TINY_OV_GATES
    thresholds = {"spearman_median": tol.spearman_median_min, "spearman_worst": tol.spearman_worst_min,
                  "top10_overlap_mean": tol.top10_overlap_mean_min,
                  "batch_invariance_max_rel_diff": tol.batch_invariance_max_rel_diff}
    for suffix, threshold in thresholds.items():
        assert int8["gates"][f"openvino_int8_{suffix}"]["threshold"] == threshold
    assert int8["passed"], int8["gates"]
    files = set(card.files)
    assert card.onnx_file in files and "model_optimized.onnx" in files
    assert ("openvino_model_int8.xml" in files) == (card.recipe == "openvino-int8")


def test_a_recipe_the_machine_cannot_run_is_refused_before_any_work(openvino_student: Path, tmp_path: Path) -> None:
    from export.exporter import export_model

    cfg = ExportConfig(runtime="openvino", recipes=("openvino-bf16",), isa="avx2", gates=TINY_OV_GATES, **OV_FAST)
    with pytest.raises(ConfigError, match=r"this machine \(avx2, from export config\) has no native bf16"):
        export_model(openvino_student, tmp_path / "none", cfg)
    assert not (tmp_path / "none").exists()


def test_no_servable_recipe_passing_fails_the_gates(openvino_bf16_export: Path) -> None:
    from export._recipes import Trial, choose
    from export.gates import GateResult

    failed = Trial("openvino-bf16", "openvino", "bf16", gates=[GateResult("openvino_bf16_x", 1.0, 0.5, "<=", False)])
    skipped = Trial("openvino-fp32", "openvino", "fp32", skipped="openvino is not installed")
    with pytest.raises(GateFailedError, match="openvino-bf16: failed openvino_bf16_x; openvino-fp32: openvino is not"):
        choose([failed, skipped], ExportConfig(runtime="openvino"), PAIRS)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="recipes=.*choose among"):
        ExportConfig(runtime="auto", recipes=("openvino-fp16",))
    with pytest.raises(ConfigError, match="set runtime to openvino or auto"):
        ExportConfig(recipes=("openvino-bf16",))
    with pytest.raises(ConfigError, match="runtime='tvm' is not one of"):
        ExportConfig(runtime="tvm")  # type: ignore[arg-type]


def test_without_nncf_only_the_openvino_int8_recipe_is_skipped(openvino_student: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from export.exporter import export_model

    monkeypatch.setitem(sys.modules, "nncf", None)
    cfg = ExportConfig(runtime="openvino", quantize="auto", isa="avx2", gates=TINY_OV_GATES, **OV_FAST)
    card = load_model_card(export_model(openvino_student, tmp_path / "no_nncf", cfg))
    assert "pip install 'distilrank[export,openvino]'" in card.recipe_trials["openvino-int8"]["skipped"]
    assert card.recipe == "openvino-fp32" and card.recipe_trials["openvino-fp32"]["passed"]
