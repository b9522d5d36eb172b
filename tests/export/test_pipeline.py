"""End-to-end export on tiny students: gates, loaders, tampering, a damaged model, the CLI exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main
from distill.core.model_card import ModelCardError, load_model_card
from export.config import ExportConfig, GateTolerances

# real ONNX/OpenVINO exports of a tiny model: seconds each (make test-fast leaves them to make test)
pytestmark = pytest.mark.slow

# A random 2-layer model is not a ranker: its scores spread little, so int8 noise weighs more than on
# a trained student. These tolerances are for the tiny model only; the defaults are for real students.
TINY_GATES = GateTolerances(spearman_median_min=0.9, spearman_worst_min=0.5, top10_overlap_mean_min=0.7)
FAST = dict(gate_queries=10, latency_reps=2, calibration_pairs=32)


def _tiny(out: Path, damage: bool = False) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from distill.core.base_models import resolve_student_base

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve_student_base("default"))
    # initializer_range 0.2 (not BERT's 0.02) so the random model's scores actually vary across passages
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.2)
    model = BertForSequenceClassification(cfg).eval()
    if damage:
        # One huge activation channel (as in outlier features of real transformers): fp32 copes, but
        # any per-tensor 8-bit activation scale spends all its levels on the outlier.
        with torch.no_grad():
            model.bert.embeddings.LayerNorm.bias[0] = 300.0
            model.bert.encoder.layer[0].output.LayerNorm.bias[0] = 300.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("damaged"), damage=True)


@pytest.fixture(scope="module")
def int8_artifact(student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.exporter import export_model

    cfg = ExportConfig(quantize="int8", int8_mode="static", gates=TINY_GATES, **FAST)
    return export_model(student, tmp_path_factory.mktemp("art") / "int8", cfg)


def test_int8_export_passes_gates_and_writes_card(int8_artifact: Path, student: Path) -> None:
    card = load_model_card(int8_artifact)
    assert card.precision == "int8" and card.onnx_file == "model_quantized.onnx"
    assert card.quantization["mode"] == "static"
    assert card.score.startswith("raw logit") and card.max_seq_len == 256
    for name in ("onnx_vs_pytorch_max_abs_diff", "fp32_batch_invariance_max_rel_diff", "int8_spearman_median",
                 "int8_spearman_worst", "int8_top10_overlap_mean", "int8_batch_invariance_max_rel_diff"):
        assert card.gates[name]["passed"], card.gates[name]
    assert card.gates["onnx_vs_pytorch_max_abs_diff"]["value"] < 2e-3
    assert card.latency["int8"]["p50_ms"] > 0 and card.latency["fp32"]["p50_ms"] > 0
    assert card.training["model_config_sha256"] and card.base_models["num_hidden_layers"] == 2
    assert set(card.files) >= {"model_quantized.onnx", "config.json", "tokenizer.json", "provenance/export_config.json",
                              "README.md"}
    from huggingface_hub import ModelCard as HubCard

    readme = HubCard.load(int8_artifact / "README.md")  # the Hub's own reader parses its front matter
    assert "distilrank serve --model" in readme.text and readme.data.to_dict()
    assert [p.name for p in int8_artifact.rglob("*.onnx")] == ["model_quantized.onnx"]


def test_artifact_loads_with_optimum_and_sentence_transformers(int8_artifact: Path) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    from export.scorers import onnx_scorer

    card = load_model_card(int8_artifact)
    pairs = [("what causes fever", "Fever is caused by pyrogens released during infection."),
             ("what causes fever", "The stock market closed higher on Tuesday."),
             ("protein folding", "Chaperones assist the folding of nascent polypeptides.")]
    expected = onnx_scorer(int8_artifact / card.onnx_file, int8_artifact, card.token_caps, 1).score_pairs(pairs)

    ort_model = ORTModelForSequenceClassification.from_pretrained(int8_artifact, file_name=card.onnx_file)
    tok = AutoTokenizer.from_pretrained(int8_artifact)
    got = []
    for q, p in pairs:  # one pair per call: static int8 is batch-invariant, but keep the comparison exact
        enc = tok(q, p, truncation="only_second", max_length=256, return_tensors="pt")
        got.append(float(ort_model(**enc).logits[0, 0]))
    np.testing.assert_allclose(got, expected, atol=1e-5)

    ce = CrossEncoder(str(int8_artifact), backend="onnx", model_kwargs={"file_name": card.onnx_file},
                      activation_fn=__import__("torch").nn.Identity())
    np.testing.assert_allclose(ce.predict(pairs, batch_size=1), expected, atol=1e-4)


def test_tampered_or_truncated_artifact_is_refused(int8_artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(int8_artifact, bad)
    onnx = bad / "model_quantized.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    with pytest.raises(ModelCardError, match=r"checksum mismatch for model_quantized\.onnx"):
        load_model_card(bad)

    swapped = tmp_path / "swapped"
    shutil.copytree(int8_artifact, swapped)
    cfg = json.loads((swapped / "config.json").read_text())
    cfg["num_hidden_layers"] = 12
    (swapped / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelCardError, match=r"checksum mismatch for config\.json"):
        load_model_card(swapped)

    missing = tmp_path / "missing"
    shutil.copytree(int8_artifact, missing)
    (missing / "tokenizer.json").unlink()
    with pytest.raises(ModelCardError, match=r"tokenizer\.json listed in the model card is missing"):
        load_model_card(missing)


def test_damaged_model_fails_int8_gate_with_exit_5(damaged: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exported"
    code = main(["export", "--model", str(damaged), "--out", str(out), "--quantize", "int8", "--int8-mode", "static"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "int8 refused" in err and "int8_spearman_median" in err and "FAILED by" in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "no half-written artifact or work dir may remain"


def test_dynamic_int8_is_gated_and_served_one_pair_per_call(student: Path, tmp_path: Path) -> None:
    """Dynamic int8 quantises each ONNX call's activations with one scale, so in a batch a pair's score depends
    on its batch mates. The exporter gates it one pair per call and the card makes the ranker serve it so."""
    from export.exporter import export_model
    from export.scorers import onnx_scorer
    from ranker.runtime import RerankRuntime, RuntimeConfig

    cfg = ExportConfig(quantize="int8", int8_mode="dynamic", int8_fallback=False, gates=TINY_GATES, **FAST)
    art = export_model(student, tmp_path / "dyn", cfg)
    card = load_model_card(art)
    assert card.precision == "int8" and card.quantization["recipe"] == "dynamic-per_channel"
    assert card.pairs_per_call == 1 and card.gates["int8_batch_invariance_max_rel_diff"]["passed"]
    assert card.latency["int8"]["pairs_per_call"] == 1

    caps = card.token_caps
    pairs = [("what do cells do", "cells divide " * k) for k in (1, 5, 30, 60)] + [("protein folding", "x")]
    alone = onnx_scorer(art / card.onnx_file, art, caps, 1)
    batched = alone.with_pairs_per_call(len(pairs)).score_pairs(pairs)
    one_by_one = alone.score_pairs(pairs)
    assert np.abs(batched - one_by_one).max() > 1e-4, "batched dynamic int8 should depend on batch mates"
    runtime = RerankRuntime.load(art, RuntimeConfig(threads=1, pairs_per_call=16))
    np.testing.assert_array_equal(runtime.score_pairs(*map(list, zip(*pairs, strict=True))), one_by_one)


def test_auto_with_eval_data_records_decision_and_ndcg(student: Path, demo_data: Path, tmp_path: Path) -> None:
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_corpus, read_queries, write_run
    from export.exporter import EvalData, export_model

    queries = read_queries(demo_data / "queries.test.tsv")
    small = dict(list(queries.items())[:12])
    run = write_run(tmp_path / "bm25.run", BM25Index(read_corpus(demo_data / "corpus.jsonl")).search(small, top_k=20))
    ev = EvalData(demo_data / "queries.test.tsv", demo_data / "qrels.test.txt", run, demo_data / "corpus.jsonl")
    # a lenient nDCG tolerance: a random model's nDCG is near zero either way; the gate must be computed
    cfg = ExportConfig(quantize="auto", int8_mode="static", gates=TINY_GATES, **FAST)
    art = export_model(student, tmp_path / "auto", cfg, eval_data=ev)
    card = load_model_card(art)
    assert "ndcg@10_fp32" in card.metrics
    trial = card.int8_trials["static-per_channel"]
    assert "int8_ndcg@10_drop_points" in trial["gates"]
    if card.precision == "int8":
        assert card.latency["int8"]["p50_ms"] < card.latency["fp32"]["p50_ms"]
        assert card.decision.startswith("int8")
    else:
        assert card.decision.startswith("fp32") and card.onnx_file == "model_optimized.onnx"
