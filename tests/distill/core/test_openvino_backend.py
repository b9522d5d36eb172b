"""The OpenVINO backend behind the one scorer: same tokenisation, caps and batches as ONNX Runtime, scores equal to
ONNX Runtime fp32 in f32 and close in bf16, batch-invariant, thread-safe; the ISA detection it is chosen by; and
the serving import path stays free of torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from distill.core.cross_encoder import CrossEncoderScorer, OnnxBackend, PairEncoder, TokenCaps
from distill.core.errors import ConfigError, MissingExtraError
from distill.core.isa import detect_isa, machine_isa

REPO = Path(__file__).resolve().parents[3]
CAPS = TokenCaps(max_seq_len=64, max_query_tokens=16, max_doc_tokens=None)
PAIRS = [(f"what causes fever {i}", "Fever is caused by pyrogens. " + "immune " * (3 * i)) for i in range(12)]
PAIRS += [("protein folding", "Chaperones assist folding of nascent polypeptides " * 8), ("x", "y")]


def _scorer(backend, model_dir: Path, pairs_per_call: int = 4, replicas=()) -> CrossEncoderScorer:
    return CrossEncoderScorer(PairEncoder(model_dir, CAPS), backend, pairs_per_call, replicas)


@pytest.fixture(scope="module")
def ov_backend():
    pytest.importorskip("openvino")
    from distill.core.openvino_backend import OpenVinoBackend

    return OpenVinoBackend


@pytest.fixture(scope="module")
def ort_scores(ranker_model_dir: Path) -> np.ndarray:
    scores = _scorer(OnnxBackend.load(ranker_model_dir / "model.onnx", 1), ranker_model_dir).score_pairs(PAIRS)
    assert np.ptp(scores) > 1e-2, "fixture scores should be spread out"
    return scores


def test_fp32_scores_equal_onnxruntime_fp32(ov_backend, ranker_model_dir: Path, ort_scores: np.ndarray) -> None:
    backend = ov_backend.load(ranker_model_dir / "model.onnx", "fp32", threads=1)
    got = _scorer(backend, ranker_model_dir).score_pairs(PAIRS)
    np.testing.assert_allclose(got, ort_scores, atol=1e-4 * float(np.ptp(ort_scores)) + 1e-5, rtol=0)
    assert list(np.argsort(-got)) == list(np.argsort(-ort_scores))
    assert "f32" in backend.providers[0] and "fp32" in backend.providers[0]
    from distill.core.cross_encoder import OpenVinoBackend  # the third backend beside torch and ONNX Runtime

    assert OpenVinoBackend is ov_backend


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batch_invariance_and_order(ov_backend, ranker_model_dir: Path, ort_scores: np.ndarray, precision: str) -> None:
    if precision == "bf16" and not machine_isa().bf16:
        pytest.skip("this CPU has no native bf16 (AMX or AVX512-BF16)")
    scorer = _scorer(ov_backend.load(ranker_model_dir / "model.onnx", precision, threads=1), ranker_model_dir, 16)
    batched = scorer.score_pairs(PAIRS)
    alone = scorer.with_pairs_per_call(1).score_pairs(PAIRS)
    std = float(np.std(ort_scores))
    assert np.abs(alone - batched).max() / std <= 0.02  # the export's batch-invariance tolerance
    reversed_ = scorer.score_pairs(PAIRS[::-1])[::-1]
    np.testing.assert_allclose(reversed_, batched, atol=1e-6 * std + 1e-6)
    if precision == "bf16":
        # bf16 keeps 8 significant bits: ~3 digits of each logit. The tiny random model's logits sit far from 0 with
        # a small spread, so only the magnitude bounds the error here; the export's gate judges it against the
        # spread of a trained student's scores (GateTolerances.parity_bf16_max_rel_diff)
        assert 0 < np.abs(batched - ort_scores).max() <= 2 ** -6 * np.abs(ort_scores).max()


def test_pool_of_streams_scores_as_one_and_is_thread_safe(ov_backend, ranker_model_dir: Path,
                                                          ort_scores: np.ndarray) -> None:
    pool = ov_backend.load_pool(ranker_model_dir / "model.onnx", 2, 1, "fp32")
    assert len(pool) == 2 and pool[0].compiled is pool[1].compiled and pool[0].streams == 2
    scorer = _scorer(pool[0], ranker_model_dir, 2, pool[1:])
    np.testing.assert_allclose(scorer.score_pairs(PAIRS), ort_scores, atol=1e-4 * float(np.ptp(ort_scores)) + 1e-5)
    single = _scorer(pool[0], ranker_model_dir, 3)  # one backend shared by several threads
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: single.score_pairs(PAIRS), range(8)))
    for r in results:
        np.testing.assert_array_equal(r, results[0])
    scorer.close()


def test_errors_name_the_extra_and_the_precision(ov_backend, ranker_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.core.errors import DataError

    with pytest.raises(ConfigError, match="runs fp32, bf16, int8"):
        ov_backend.load(ranker_model_dir / "model.onnx", "fp16")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="openvino cannot load the model"):
        ov_backend.load(bad)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'distilrank\[openvino\]'"):
        ov_backend.load(ranker_model_dir / "model.onnx")


def test_isa_levels_from_flags_and_the_forcing_variable(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("flags: avx2 avx512f avx512bw avx512_vnni amx_tile amx_bf16 amx_int8 avx512_bf16\n")
    assert detect_isa(info) == "amx"
    assert machine_isa(info, env={}, ask_openvino=False).bf16
    info.write_text("flags: avx2 avx512f avx512bw avx512_vnni avx512_bf16\n")  # Zen 4: bf16 without AMX
    found = machine_isa(info, env={}, ask_openvino=False)
    assert (found.isa, found.bf16) == ("avx512_vnni", True)
    info.write_text("flags: avx2 avx512f avx512bw avx512_vnni\n")
    assert not machine_isa(info, env={}, ask_openvino=False).bf16
    forced = machine_isa(info, env={"DISTILRANK_ISA": "avx2"})
    assert (forced.isa, forced.bf16, forced.source) == ("avx2", False, "DISTILRANK_ISA=avx2")
    assert machine_isa(info, env={"DISTILRANK_ISA": "amx"}).bf16
    with pytest.raises(ConfigError, match="DISTILRANK_ISA='sse4' is not one of amx"):
        machine_isa(info, env={"DISTILRANK_ISA": "sse4"})


def test_serving_an_openvino_model_imports_no_torch(ov_backend, ranker_model_dir: Path) -> None:
    """The ``[serve,openvino]`` path: the backend, the serving-recipe choice and a scored batch, in a fresh
    interpreter, leave no training or export dependency loaded."""
    forbidden = ("torch", "transformers", "optimum", "onnx", "nncf", "sentence_transformers", "matplotlib")
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from distill.core.cross_encoder import CrossEncoderScorer, PairEncoder, TokenCaps
        from distill.core.openvino_backend import OpenVinoBackend
        import ranker._recipe, distill.core.isa
        d = Path({str(ranker_model_dir)!r})
        s = CrossEncoderScorer(PairEncoder(d, TokenCaps(64)), OpenVinoBackend.load(d / "model.onnx", "fp32", 1), 4)
        s.score_pairs([("q", "a document")])
        distill.core.isa.machine_isa()
        print(json.dumps(sorted(set({forbidden!r}) & set(sys.modules))))
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
