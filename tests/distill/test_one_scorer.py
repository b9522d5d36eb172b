"""One scorer, four paths: the student's dev evaluation (in-memory model), ``student rerank`` (saved dir),
the export gates (torch and ONNX) and the ranker runtime score the same pairs identically, long query
and long document included, because they share :mod:`distill.core.cross_encoder`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from distill.core.cross_encoder import PairEncoder, TokenCaps

LONG_QUERY = " ".join(f"word{i}" for i in range(200))
PAIRS = [
    ("what causes fever", "Fever is caused by pyrogens released by the immune system."),
    (LONG_QUERY, "A short document."),
    ("x", "token " * 600),
    (LONG_QUERY, "another " * 600),
    ("protein folding in bacteria", "Chaperones assist the folding of nascent polypeptides in E. coli."),
]
CAPS = TokenCaps(max_seq_len=48, max_query_tokens=12, max_doc_tokens=30)


def test_truncation_rule(tiny_cross_encoder_dir: Path) -> None:
    enc = PairEncoder(tiny_cross_encoder_dir, CAPS)
    rows = enc.encode([q for q, _ in PAIRS], [d for _, d in PAIRS])
    for ids, types in rows:
        assert len(ids) <= CAPS.max_seq_len
        n_query = types.index(1) - 2  # [CLS] q [SEP] | d [SEP]
        assert n_query <= CAPS.max_query_tokens
        assert len(ids) - n_query - 3 <= CAPS.max_doc_tokens
    assert len(rows[3][0]) == 3 + 12 + 30  # both sides capped


@pytest.fixture(scope="module")
def student_dir(ranker_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from distill.student.model import load_student, save_student

    out = tmp_path_factory.mktemp("student")
    model, tok = load_student(ranker_hf_dir)
    with torch.no_grad():  # spread the random model's scores so an order check means something
        model.classifier.weight.mul_(100.0)
    return save_student(model, tok, out, CAPS)


def test_four_paths_score_alike(student_dir: Path, tmp_path: Path) -> None:
    from distill.student.model import load_student, student_scorer
    from export.scorers import export_caps, onnx_scorer, torch_scorer
    from ranker.runtime import RerankRuntime, RuntimeConfig
    from tests.ranker_fixtures import export_onnx_dir

    model, tok = load_student(student_dir)
    dev_eval = student_scorer(model, tok, CAPS, pairs_per_call=2).score_pairs(PAIRS)   # training's dev evaluation
    rerank_cmd = student_scorer(student_dir, pairs_per_call=32).score_pairs(PAIRS)      # `distilrank student rerank`
    caps = export_caps(student_dir, None)
    assert caps == CAPS
    gate_torch = torch_scorer(student_dir, caps, 3).score_pairs(PAIRS)                  # export gate, PyTorch side
    onnx_dir = export_onnx_dir(student_dir, tmp_path / "onnx", token_caps=CAPS)
    gate_onnx = onnx_scorer(onnx_dir / "model.onnx", onnx_dir, caps, 4).score_pairs(PAIRS)  # export gate, ONNX side
    runtime = RerankRuntime.load(onnx_dir, RuntimeConfig(threads=1, pairs_per_call=2))
    served = runtime.score_pairs([q for q, _ in PAIRS], [d for _, d in PAIRS])          # the ranker service
    paths = [rerank_cmd, gate_torch, gate_onnx, served]
    if importlib.util.find_spec("openvino") is not None:  # the [openvino] extra: the export gate's OpenVINO side
        from export.scorers import openvino_scorer

        paths.append(openvino_scorer(onnx_dir / "model.onnx", onnx_dir, caps, "fp32", 4).score_pairs(PAIRS))
    gaps = np.abs(np.diff(np.sort(dev_eval)))
    assert gaps.min() > 1e-2  # distinct scores: the order check means something
    for other in paths:
        np.testing.assert_allclose(other, dev_eval, atol=1e-4 * float(np.ptp(dev_eval)) + 1e-5, rtol=0)
        assert list(np.argsort(-other)) == list(np.argsort(-dev_eval))


def _shape_sensitive(batch: dict[str, np.ndarray]) -> np.ndarray:
    """A backend whose scores move with the batch they are padded into, as bf16 and int8 kernels' do: each
    pair's own score plus a small term from the batch's width and its other pairs."""
    own = (batch["input_ids"] * batch["attention_mask"]).sum(axis=1) / 1000.0
    return (own + 1e-3 * batch["input_ids"].shape[1] + 1e-4 * own.sum()).astype(np.float32)


def test_a_query_scores_the_same_with_or_without_other_queries_when_scored_per_query(
        tiny_cross_encoder_dir: Path) -> None:
    from types import SimpleNamespace

    from distill.core.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(PairEncoder(tiny_cross_encoder_dir, CAPS), _shape_sensitive, pairs_per_call=2)
    corpus = {f"d{i}": SimpleNamespace(full_text=d) for i, (_, d) in enumerate(PAIRS)}
    queries = {"a": SimpleNamespace(text="what causes fever"), "b": SimpleNamespace(text=LONG_QUERY)}
    run = {q: {d: 1.0 / (i + 1) for i, d in enumerate(corpus)} for q in queries}
    alone = scorer.rerank(corpus, {"a": queries["a"]}, {"a": run["a"]}, 5)["a"]
    assert scorer.rerank(corpus, queries, run, 5, per_query=True)["a"] == alone
    assert scorer.rerank(corpus, queries, run, 5)["a"] != alone  # batched across queries, the scores move
    # the batches depend on the set of pairs, not on their order: a window sent in another order scores alike
    ds = [f"{word} " * 100 for word in ("alpha", "beta", "gamma")] + [d for _, d in PAIRS]  # three of one length
    qs = [queries["a"].text] * len(ds)
    np.testing.assert_array_equal(scorer.score(qs[::-1], ds[::-1])[::-1], scorer.score(qs, ds))
