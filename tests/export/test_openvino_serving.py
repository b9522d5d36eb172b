"""Serving an OpenVINO export: as exported where the machine runs its recipe, and with the runner-up where it
cannot (forced by DISTILRANK_ISA), with a logged reason and exactly the runner-up's own scores; --provider choices."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.model_card import load_model_card

# real ONNX/OpenVINO exports of a tiny model: seconds each (make test-fast leaves them to make test)
pytestmark = pytest.mark.slow

pytest.importorskip("openvino")

PAIRS = [("what causes fever", "Fever is caused by pyrogens released by the immune system."),
         ("protein folding", "Chaperones assist the folding of nascent polypeptides in E. coli."),
         ("x", "token " * 300)]


def test_served_as_exported_where_the_machine_runs_it(openvino_bf16_export: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from export.scorers import openvino_scorer
    from ranker.runtime import RerankRuntime, RuntimeConfig

    monkeypatch.delenv("DISTILRANK_ISA", raising=False)
    card = load_model_card(openvino_bf16_export)
    runtime = RerankRuntime.load(openvino_bf16_export, RuntimeConfig(threads=1))
    assert runtime.warnings == [] and runtime.card.recipe == "openvino-bf16"
    assert "OpenVINO CPU (bf16" in runtime.providers[0] and runtime.session is None
    gated = openvino_scorer(openvino_bf16_export / card.onnx_file, openvino_bf16_export, card.token_caps, "bf16", 16, 1)
    np.testing.assert_allclose(runtime.score_pairs(*zip(*PAIRS, strict=True)), gated.score_pairs(PAIRS), atol=1e-6)


def test_machine_without_bf16_serves_the_runner_up_with_a_warning(openvino_bf16_export: Path,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from export.scorers import onnx_scorer
    from ranker.runtime import RerankRuntime, RuntimeConfig

    monkeypatch.setenv("DISTILRANK_ISA", "avx2")
    card = load_model_card(openvino_bf16_export)
    with caplog.at_level(logging.WARNING):
        runtime = RerankRuntime.load(openvino_bf16_export, RuntimeConfig(threads=1))
    assert "serving the runner-up recipe onnxruntime-fp32 instead of the card's openvino-bf16" in caplog.text
    assert "bf16 needs AMX or AVX512-BF16" in caplog.text and "DISTILRANK_ISA=avx2" in caplog.text
    assert len(runtime.warnings) == 1 and runtime.card.decision.startswith("serving the runner-up")
    from ranker.service import RerankService

    assert RerankService(runtime).info().warnings == runtime.warnings  # GET /info says so too
    assert (runtime.card.runtime, runtime.card.precision, runtime.card.onnx_file) == \
        ("onnxruntime", "fp32", card.runner_up.onnx_file)
    assert runtime.model_sha256 == card.files[card.runner_up.onnx_file]
    own = onnx_scorer(openvino_bf16_export / card.runner_up.onnx_file, openvino_bf16_export, card.token_caps, 16,
                      threads=1)
    served = runtime.score_pairs(*zip(*PAIRS, strict=True))
    np.testing.assert_allclose(served, own.score_pairs(PAIRS), atol=1e-6)


def test_provider_choices(openvino_bf16_export: Path, ranker_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ranker.runtime import RerankRuntime, RuntimeConfig

    monkeypatch.delenv("DISTILRANK_ISA", raising=False)
    cpu = RerankRuntime.load(openvino_bf16_export, RuntimeConfig(threads=1, provider="cpu"))
    assert cpu.card.recipe == "onnxruntime-fp32" and "provider=cpu runs onnxruntime recipes" in cpu.warnings[0]
    with pytest.raises(ConfigError, match="provider=openvino but the model card's recipe"):
        RerankRuntime.load(ranker_model_dir, RuntimeConfig(threads=1, provider="openvino"))
    monkeypatch.setenv("DISTILRANK_ISA", "avx512_vnni")
    with pytest.raises(MissingPrerequisiteError, match="provider=openvino cannot serve openvino-bf16: bf16 needs"):
        RerankRuntime.load(openvino_bf16_export, RuntimeConfig(threads=1, provider="openvino"))


def _card(precision: str, runtime: str, isa: str, runner_up: bool):
    from distill.core.cross_encoder import TokenCaps
    from distill.core.model_card import ModelCard, RunnerUp

    ru = RunnerUp("onnxruntime-fp32", "model_optimized.onnx", "fp32") if runner_up else None
    name = "openvino_model.xml" if runtime == "openvino" else "model_quantized.onnx"
    return ModelCard(onnx_file=name, precision=precision, runtime=runtime, token_caps=TokenCaps(64), isa=isa,
                     recipe=f"{runtime}-{precision}", runner_up=ru, decision="exported",
                     files={name: "a", "model_optimized.onnx": "b"})


@pytest.mark.parametrize(("isa", "runner_up", "served", "warned"), [
    ("avx512_vnni", True, "onnxruntime-int8", False),   # the CPU it was made for
    ("avx2", True, "onnxruntime-fp32", True),          # signed int8 weights without VNNI: the runner-up
    ("avx2", False, "onnxruntime-int8", True),         # no runner-up (an older card): served, with the warning
    ("amx", False, "onnxruntime-int8", False),
])
def test_signed_int8_without_vnni(isa: str, runner_up: bool, served: str, warned: bool,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ranker._recipe import served_card

    monkeypatch.setenv("DISTILRANK_ISA", isa)
    card, warnings = served_card(_card("int8", "onnxruntime", "avx512_vnni", runner_up), "auto")
    assert card.recipe == served and bool(warnings) == warned
    if warned:
        assert "can saturate without VNNI" in warnings[0] and "can saturate" in card.decision
    made_for_avx2, _ = served_card(_card("int8", "onnxruntime", "avx2", runner_up), "auto")
    assert made_for_avx2.recipe == "onnxruntime-int8"  # unsigned weights score alike everywhere


def test_openvino_card_without_runner_up_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from ranker._recipe import served_card

    monkeypatch.setenv("DISTILRANK_ISA", "avx2")
    with pytest.raises(MissingPrerequisiteError, match="cannot serve openvino-bf16: bf16 needs .* no runner-up"):
        served_card(_card("bf16", "openvino", "amx", False), "auto")
    with pytest.raises(ConfigError, match="provider='tpu': choose auto, cpu, cuda, openvino"):
        served_card(_card("bf16", "openvino", "amx", True), "tpu")
