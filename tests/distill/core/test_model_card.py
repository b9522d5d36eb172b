"""The typed model card and the one blend: validation, legacy cards, interpolation round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.core.cross_encoder import TokenCaps
from distill.core.errors import ConfigError
from distill.core.interpolation import Interpolation, blend, interpolate_runs, rank_blended
from distill.core.model_card import (
    ModelCard,
    ModelCardError,
    load_model_card,
    set_interpolation,
    write_model_card,
)


def make_dir(tmp_path: Path, interpolation: Interpolation | None = None) -> Path:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "tokenizer.json").write_text("{}")
    write_model_card(tmp_path, ModelCard(onnx_file="model.onnx", precision="fp32", token_caps=TokenCaps(128, 32),
                                         pairs_per_call=1, interpolation=interpolation))
    return tmp_path


def edit(tmp_path: Path, **fields: object) -> None:
    raw = json.loads((tmp_path / "model_card.json").read_text())
    raw.update(fields)
    (tmp_path / "model_card.json").write_text(json.dumps(raw))


def test_round_trip_keeps_every_serving_field(tmp_path):
    spec = Interpolation(0.3, "minmax", "zscore", "dev_qrels", 50, "raw_logit", "ndcg@10", 0.7)
    card = load_model_card(make_dir(tmp_path, spec))
    assert card.token_caps == TokenCaps(128, 32) and card.pairs_per_call == 1 and card.interpolation == spec
    assert set(card.files) == {"model.onnx", "tokenizer.json"} and card.onnx_sha256 == card.files["model.onnx"]


def test_format_1_cards_load_with_legacy_keys(tmp_path):
    make_dir(tmp_path)
    raw = json.loads((tmp_path / "model_card.json").read_text())
    for key in ("token_caps", "pairs_per_call", "interpolation", "runtime"):
        raw.pop(key)
    raw.update(format_version=1, max_seq_len=200, max_pairs_per_call=1)
    (tmp_path / "model_card.json").write_text(json.dumps(raw))
    card = load_model_card(tmp_path)
    assert card.token_caps == TokenCaps(200, max_query_tokens=None) and card.pairs_per_call == 1
    assert card.interpolation is None and card.runtime == "onnxruntime"


@pytest.mark.parametrize(("fields", "match"), [
    ({"files": {"model.onnx": 5}}, "sha256 strings"),
    ({"files": {"../outside.onnx": "ab", "model.onnx": "ab"}}, "not a relative path inside"),
    ({"files": {"/etc/passwd": "ab", "model.onnx": "ab"}}, "not a relative path inside"),
    ({"onnx_file": "other.onnx"}, "not one of the card's files"),
    ({"pairs_per_call": True}, "pairs_per_call must be a positive integer"),
    ({"format_version": 9}, "format_version 9"),
    ({"interpolation": {"first_stage_weight": 2.0}}, "first_stage_weight must be a number in"),
    ({"interpolation": {"first_stage_weight": 0.5, "colour": "red"}}, "unknown keys"),
])
def test_malformed_cards_are_refused_with_the_card_path(tmp_path, fields, match):
    make_dir(tmp_path)
    edit(tmp_path, **fields)
    with pytest.raises(ModelCardError, match=match) as info:
        load_model_card(tmp_path, verify=False)
    assert "model_card.json" in str(info.value)


def test_a_card_that_is_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "model_card.json").mkdir()
    with pytest.raises(ModelCardError, match="not a regular file"):
        load_model_card(tmp_path)


def test_set_interpolation_rewrites_only_the_card(tmp_path):
    make_dir(tmp_path)
    before = load_model_card(tmp_path)
    after = set_interpolation(tmp_path, Interpolation.conservative(30))
    assert after.files == before.files and load_model_card(tmp_path).interpolation == Interpolation.conservative(30)


def test_blend_normalises_the_window_and_weighs_both_sides():
    spec = Interpolation(0.25, "minmax", "none")
    assert blend([10.0, 5.0, 0.0], [1.0, 2.0, 3.0], spec) == [0.25 + 0.75, 0.125 + 1.5, 2.25]
    assert blend([3.0, 3.0], [0.0, 0.0], Interpolation(0.5, "zscore", "zscore")) == [0.0, 0.0]
    with pytest.raises(ValueError, match="2 first-stage scores but 1"):
        blend([1.0, 2.0], [1.0], spec)


def test_exact_ties_are_broken_by_doc_id():
    assert rank_blended(["d9", "d1", "d5"], [1.0, 1.0, 2.0]) == [2, 1, 0]


def test_interpolate_runs_blends_the_ranker_window_only():
    first = {"q": {"a": 2.0, "b": 1.0, "c": 0.5}}
    ranker = {"q": {"a": 0.0, "b": 1.0}}
    out = interpolate_runs(first, ranker, Interpolation(0.5, "minmax", "minmax"))
    assert out == {"q": {"a": 0.5, "b": 0.5}}


def test_interpolation_validation():
    with pytest.raises(ConfigError, match="depth must be a positive integer"):
        Interpolation(0.5, depth=0)
    with pytest.raises(ConfigError, match="score_convention"):
        Interpolation(0.5, score_convention="probability")  # type: ignore[arg-type]


def test_recipe_and_runner_up_round_trip_and_serve_the_runner_up(tmp_path):
    from distill.core.model_card import RunnerUp

    (tmp_path / "openvino_model.xml").write_text("<net/>")
    (tmp_path / "openvino_model.bin").write_bytes(b"w")
    (tmp_path / "model_optimized.onnx").write_bytes(b"onnx")
    runner_up = RunnerUp("onnxruntime-fp32", "model_optimized.onnx", "fp32")
    write_model_card(tmp_path, ModelCard(onnx_file="openvino_model.xml", precision="bf16", runtime="openvino",
                                         token_caps=TokenCaps(128, 32), isa="amx", recipe="openvino-bf16",
                                         runner_up=runner_up, recipe_trials={"openvino-bf16": {"passed": True}}))
    card = load_model_card(tmp_path)
    assert (card.recipe, card.runner_up, card.isa) == ("openvino-bf16", runner_up, "amx")
    assert card.recipe_trials["openvino-bf16"]["passed"] and "openvino_model.bin" in card.files
    served = card.served_by_runner_up()
    assert (served.onnx_file, served.precision, served.runtime, served.recipe, served.runner_up) == \
        ("model_optimized.onnx", "fp32", "onnxruntime", "onnxruntime-fp32", None)
    assert served.onnx_sha256 == card.files["model_optimized.onnx"]
    with pytest.raises(ValueError, match="no runner_up"):
        served.served_by_runner_up()


def test_cards_without_recipe_fields_still_load(tmp_path):
    make_dir(tmp_path)
    raw = json.loads((tmp_path / "model_card.json").read_text())
    for key in ("recipe", "runner_up", "recipe_trials"):
        raw.pop(key)
    (tmp_path / "model_card.json").write_text(json.dumps(raw))
    card = load_model_card(tmp_path)
    assert card.recipe is None and card.runner_up is None and card.recipe_trials == {}


@pytest.mark.parametrize(("runner_up", "match"), [
    ({"recipe": "onnxruntime-fp32", "onnx_file": "absent.onnx", "precision": "fp32"}, "runner_up.onnx_file"),
    ({"recipe": "", "onnx_file": "model.onnx", "precision": "fp32"}, "runner_up.recipe must be"),
    ({"recipe": "x", "onnx_file": "model.onnx", "precision": "fp32", "runtime": "tvm"}, "runner_up.runtime must be"),
    ({"recipe": "x", "onnx_file": "model.onnx", "precision": "fp32", "pairs_per_call": 0}, "runner_up.pairs_per_call"),
    (["model.onnx"], "runner_up must be a JSON object"),
])
def test_malformed_runner_up_is_refused(tmp_path, runner_up, match):
    make_dir(tmp_path)
    edit(tmp_path, runner_up=runner_up)
    with pytest.raises(ModelCardError, match=match):
        load_model_card(tmp_path, verify=False)
