"""ONNX runtime: parity with PyTorch, length sorting keeps order and scores, truncation, checksums."""

from __future__ import annotations

import os

import numpy as np
import pytest

from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.model_card import ModelCardError
from ranker.runtime import RerankRuntime, RuntimeConfig, sigmoid

DOCS = ["a short doc", "a much longer document about cell biology and many other things " * 4, "x",
        "cells divide by mitosis " * 80, "mid size document here", "another one about proteins"]


def test_scores_match_pytorch_and_unsorted_single_pairs(ranker_runtime, ranker_model_dir, ranker_hf_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scores = ranker_runtime.score("what do cells do", DOCS)
    assert scores.shape == (len(DOCS),) and scores.dtype == np.float32
    # each pair alone (no padding at all) must give the same score as the sorted, padded chunks
    alone = np.array([ranker_runtime.score("what do cells do", [d])[0] for d in DOCS])
    np.testing.assert_allclose(scores, alone, rtol=1e-4, atol=1e-4)
    # and the ONNX graph agrees with the PyTorch model it came from
    tok = AutoTokenizer.from_pretrained(ranker_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(ranker_hf_dir).eval()
    enc = tok(["what do cells do"] * len(DOCS), DOCS, truncation="only_second", max_length=128, padding=True,
              return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-4)
    assert np.ptp(scores) > 1e-2, "fixture scores should be spread out"


def test_order_restored_under_permutation(ranker_runtime):
    scores = ranker_runtime.score("q", DOCS)
    perm = [3, 0, 5, 1, 4, 2]
    permuted = ranker_runtime.score("q", [DOCS[i] for i in perm])
    np.testing.assert_allclose(permuted, scores[perm], rtol=1e-5, atol=1e-5)


def test_overlong_texts_are_truncated_not_rejected(ranker_runtime):
    long_doc = "word " * 5000
    a = ranker_runtime.score("query", [long_doc])
    b = ranker_runtime.score("query", ["word " * 1000])  # same first max_seq_len tokens
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    long_query = ranker_runtime.score("query " * 500, ["doc"])  # query alone > max_seq_len: falls back
    assert np.isfinite(long_query).all()


def test_score_pairs_mixed_queries_and_empty(ranker_runtime):
    assert ranker_runtime.score_pairs([], []).shape == (0,)
    mixed = ranker_runtime.score_pairs(["q1", "q2"], ["d1", "d2"])
    np.testing.assert_allclose(mixed, [ranker_runtime.score("q1", ["d1"])[0], ranker_runtime.score("q2", ["d2"])[0]],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        ranker_runtime.score_pairs(["a", "b"], ["c"])


def test_checksum_mismatch_refuses_to_load(tampered_model_dir):
    with pytest.raises(ModelCardError, match="checksum mismatch for model.onnx"):
        RerankRuntime.load(tampered_model_dir)


def test_card_caps_pairs_per_onnx_call(ranker_model_dir, tmp_path):
    """A dynamic-int8 card says pairs_per_call 1: the runtime scores one pair per ONNX call whatever
    pairs_per_call asks for, and a malformed value is refused with the card's path."""
    import json
    import shutil

    from distill.core.model_card import load_model_card, write_model_card

    out = tmp_path / "per_call"
    shutil.copytree(ranker_model_dir, out)
    card = load_model_card(out)
    write_model_card(out, card.replace(pairs_per_call=1))
    rt = RerankRuntime.load(out, RuntimeConfig(threads=1, pairs_per_call=8))
    assert rt.scorer.pairs_per_call == 1
    assert RerankRuntime.load(ranker_model_dir, RuntimeConfig(threads=1, pairs_per_call=8)).scorer.pairs_per_call == 8
    for bad in (0, "1", True):
        raw = json.loads((out / "model_card.json").read_text())
        raw["pairs_per_call"] = bad
        (out / "model_card.json").write_text(json.dumps(raw))
        with pytest.raises(ModelCardError, match="pairs_per_call must be a positive integer"):
            RerankRuntime.load(out)


def test_missing_dir_and_card(tmp_path):
    with pytest.raises(MissingPrerequisiteError, match="does not exist"):
        RerankRuntime.load(tmp_path / "nope")
    with pytest.raises(MissingPrerequisiteError, match="no model_card.json"):
        RerankRuntime.load(tmp_path)


def test_runtime_config_validation():
    with pytest.raises(ConfigError, match="threads=0"):
        RuntimeConfig(threads=0)
    with pytest.raises(ConfigError, match="pairs_per_call=0"):
        RuntimeConfig(pairs_per_call=0)
    with pytest.raises(ConfigError, match="provider='tpu'"):
        RuntimeConfig(provider="tpu")


def test_sigmoid_stable():
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0], dtype=np.float32))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_pool_of_sessions_serves_the_gated_scores(ranker_model_dir, tmp_path):
    """A one-pair-per-call card opens one single-thread session per core by default (at least the two
    asked for here); the pool's scores equal one session's, alone and under two concurrent callers."""
    import shutil
    import threading

    from distill.core.model_card import load_model_card, write_model_card

    out = tmp_path / "per_call_1"
    shutil.copytree(ranker_model_dir, out)
    write_model_card(out, load_model_card(out).replace(pairs_per_call=1))
    one = RerankRuntime.load(out, RuntimeConfig(sessions=1, threads=1))
    pool = RerankRuntime.load(out, RuntimeConfig(sessions=3, threads=1))
    assert (one.n_sessions, pool.n_sessions, pool.scorer.pairs_per_call) == (1, 3, 1)
    try:
        expected = one.score("what do cells do", DOCS)
        np.testing.assert_array_equal(pool.score("what do cells do", DOCS), expected)
        got: list[np.ndarray] = []
        users = [threading.Thread(target=lambda: got.append(pool.score("what do cells do", DOCS))) for _ in range(2)]
        for u in users:
            u.start()
        for u in users:
            u.join()
        assert len(got) == 2 and all(np.array_equal(g, expected) for g in got)
        auto = RerankRuntime.load(out)
        assert auto.n_sessions == min(os.cpu_count() or 1, 8)
        assert RerankRuntime.load(ranker_model_dir).n_sessions == 1  # batches: one session with all cores
        auto.close()
    finally:
        pool.close()
    with pytest.raises(ConfigError, match="sessions=0"):
        RuntimeConfig(sessions=0)


@pytest.mark.parametrize(("build", "match"), [
    ("wrong_inputs_model", r"unknown input 'pixel_values'; no input 'input_ids'; no input 'attention_mask'"),
    ("two_logits_model", r"output 'logits' is tensor\(float\) \[batch, 2\]"),
])
def test_onnx_with_the_wrong_signature_is_refused_at_load(ranker_model_dir, tmp_path, build, match):
    """Not a KeyError or a shape error at the first request: a DataError (exit 4) naming the file and what a
    cross-encoder export must look like."""
    from distill.core.errors import DataError
    from tests.ranker import onnx_stubs

    out = getattr(onnx_stubs, build)(tmp_path / build, ranker_model_dir)
    with pytest.raises(DataError, match=match) as info:
        RerankRuntime.load(out, RuntimeConfig(threads=1))
    assert str(out / "model.onnx") in str(info.value)
    assert "Expected inputs input_ids and attention_mask" in str(info.value)


def test_nan_scores_are_refused_at_warmup_and_raised_per_pair(ranker_model_dir, tmp_path):
    from distill.core.errors import DataError
    from ranker.runtime import NonFiniteScoreError
    from tests.ranker.onnx_stubs import nan_on_token_model, token_id

    always = RerankRuntime.load(nan_on_token_model(tmp_path / "always", ranker_model_dir, 101),
                                RuntimeConfig(threads=1))
    with pytest.raises(DataError, match=r"model\.onnx: the model produced NaN or infinity for 2 of 2 pair\(s\) at "
                                        r"warm-up; the export is broken"):
        always.warmup()
    assert not always.warmed
    word = token_id(ranker_model_dir, "poison")
    some = RerankRuntime.load(nan_on_token_model(tmp_path / "some", ranker_model_dir, word), RuntimeConfig(threads=1))
    some.warmup()  # the warm-up texts do not hold the word
    assert np.isfinite(some.score("q", ["fine", "also fine"])).all()
    with pytest.raises(NonFiniteScoreError, match=r"NaN or infinity for 1 of 3 pair"):
        some.score("q", ["fine", "poison", "also fine"])
