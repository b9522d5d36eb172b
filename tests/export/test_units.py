"""Unit tests of export's config, gates, ISA detection, layer keeping and CLI argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main
from distill.core.errors import ConfigError, GateFailedError
from export._isa import detect_isa
from export.config import ExportConfig, GateTolerances
from export.gates import batch_invariance_gate, ndcg_gate, parity_gate, raise_if_failed, ranking_agreement


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"quantize='fp16' is not one of none, int8, auto"):
        ExportConfig(quantize="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_seq_len=1024 exceeds"):
        ExportConfig(max_seq_len=1024)
    with pytest.raises(ConfigError, match="gate_candidates must be >= 10"):
        ExportConfig(gate_candidates=5)
    with pytest.raises(ConfigError, match="spearman_median_min must be in"):
        GateTolerances(spearman_median_min=1.5)
    with pytest.raises(ConfigError, match="parity_max_abs_diff must be >= 0"):
        GateTolerances(parity_max_abs_diff=-1)
    assert ExportConfig(op_types=("MatMul",)).to_dict()["op_types"] == ["MatMul"]


def test_config_names_the_renamed_pairs_per_call_key() -> None:
    """An export section that still says batch_size is refused (exit 2) with the key to use instead."""
    from distill.presets import resolve_config

    assert resolve_config("tiny", {"serve": {"export": {"pairs_per_call": 8}}}).serve.export.pairs_per_call == 8
    with pytest.raises(ConfigError, match=r"serve\.export: unknown key\(s\) \['batch_size'\]; 'batch_size' is now "
                                          r"called 'pairs_per_call': rename it"):
        resolve_config("tiny", {"serve": {"export": {"batch_size": 8}}})


def test_ranking_agreement_detects_a_scrambled_ranking() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=20) for _ in range(5)]
    same = ranking_agreement(ref, [r + 1e-4 * rng.normal(size=20) for r in ref], 0.95, 0.7, 0.8)
    assert all(g.passed for g in same) and same[0].value > 0.99
    scrambled = ranking_agreement(ref, [rng.permutation(r) for r in ref], 0.95, 0.7, 0.8)
    assert not any(g.passed for g in scrambled[:2])
    with pytest.raises(GateFailedError, match=r"int8 failed .*int8_spearman_median: .* FAILED by"):
        raise_if_failed(scrambled, "int8")


def test_parity_ndcg_and_batch_invariance_gates() -> None:
    g = parity_gate(np.array([1.0, 2.0]), np.array([1.0, 2.01]), 2e-3)
    assert not g.passed and g.value == pytest.approx(0.01) and "FAILED by 0.008" in g.describe()
    assert ndcg_gate(0.70, 0.697, 0.5).passed and not ndcg_gate(0.70, 0.69, 0.5).passed
    b = batch_invariance_gate(np.array([0.0, 1.0]), np.array([0.0, 1.1]), score_std=2.0, max_rel_diff=0.02)
    assert b.value == pytest.approx(0.05) and not b.passed
    assert not parity_gate(np.array([1.0]), np.array([np.nan]), 1.0).passed


def test_detect_isa_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    assert detect_isa(info) == "avx2"
    info.write_text("flags: avx2 avx512f avx512bw avx512_vnni\n")
    assert detect_isa(info) == "avx512_vnni"
    info.write_text("flags: avx2 avx512f avx512bw\n")
    assert detect_isa(info) == "avx512"
    assert detect_isa(tmp_path / "absent") == "avx2"


def test_scorer_buckets_by_length_and_keeps_input_order(tiny_cross_encoder_dir: Path) -> None:
    """Batches are cut from the pairs sorted longest first, each padded to its own longest pair; scores
    come back in input order (the recording backend returns each row's real length as its score)."""
    import numpy as np

    from distill.core.cross_encoder import CrossEncoderScorer, PairEncoder, TokenCaps

    widths: list[int] = []

    def backend(batch: dict[str, np.ndarray]) -> np.ndarray:
        widths.append(batch["input_ids"].shape[1])
        return batch["attention_mask"].sum(axis=1).astype(np.float32)

    scorer = CrossEncoderScorer(PairEncoder(tiny_cross_encoder_dir, TokenCaps(64)), backend, pairs_per_call=2)
    docs = ["a " * 3, "a " * 30, "a", "a " * 10]
    lengths = scorer.score(["q"] * 4, docs)
    assert list(lengths) == [1 + 3 + 3, 1 + 30 + 3, 1 + 1 + 3, 1 + 10 + 3]  # query + document + [CLS] [SEP] [SEP]
    assert widths == [34, 7]  # [30-word, 10-word] then [3-word, 1-word]


def test_keep_layers_keeps_spread_layers(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from export.layers import keep_layers

    out = keep_layers(tiny_cross_encoder_dir, 1, tmp_path / "l1")
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    full = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir)
    cut = AutoModelForSequenceClassification.from_pretrained(out)
    # keeping 1 of 2 layers keeps the last one
    assert torch.equal(cut.bert.encoder.layer[0].output.dense.weight, full.bert.encoder.layer[1].output.dense.weight)
    with pytest.raises(ConfigError, match="cannot keep 3 of 2 layers"):
        keep_layers(tiny_cross_encoder_dir, 3, tmp_path / "l3")


def test_cli_argument_errors(tmp_path: Path, tiny_cross_encoder_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 3
    assert "does not exist" in capsys.readouterr().err
    code = main(["export", "--model", str(tiny_cross_encoder_dir), "--out", str(tmp_path / "o"), "--eval-run", "x.run"])
    assert code == 2 and "go together" in capsys.readouterr().err
    run = tmp_path / "calib.run"
    run.write_text("q1 Q0 d1 1 1.0 x\n")
    code = main(["export", "--model", str(tiny_cross_encoder_dir), "--out", str(tmp_path / "o"),
                 "--calibration-run", str(run), "--calibration-queries", str(run)])
    assert code == 2 and "--calibration-queries, --calibration-run and --corpus go together" in capsys.readouterr().err
    two = tmp_path / "two_labels"
    two.mkdir()
    (two / "config.json").write_text(json.dumps({"num_labels": 2, "id2label": {"0": "a", "1": "b"}}))
    assert main(["export", "--model", str(two), "--out", str(tmp_path / "o")]) == 2
    assert "num_labels=1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_card_names_student_base_from_training_config(tmp_path) -> None:
    import json

    from export.exporter import _provenance

    model = tmp_path / "student" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model.parent / "manifest.json").write_text(json.dumps({"stage": "student", "config_hash": "abc", "inputs": {}}))
    hf = {"_name_or_path": "/tmp/somewhere", "architectures": ["BertForSequenceClassification"], "num_hidden_layers": 6}
    (model.parent / "config.json").write_text(json.dumps({"model": {"base": "default"}}))
    assert _provenance(model, hf)[0]["student_base"] == "all-MiniLM-L6-v2"
    (model.parent / "config.json").write_text(json.dumps({"model": {"base": "/models/my-encoder"}}))
    base, training = _provenance(model, hf)
    assert base["student_base"] == "/models/my-encoder" and training["config_hash"] == "abc"
    (model.parent / "config.json").unlink()
    assert _provenance(model, hf)[0]["student_base"] == "/tmp/somewhere"


def test_calibration_pairs_spread_over_queries_and_both_ends() -> None:
    from distill.core.formats import Document, Query
    from export import calibration_pairs

    corpus = {f"d{i}": Document(f"d{i}", "", f"text {i}") for i in range(10)}
    queries = {f"q{j}": Query(f"q{j}", f"query {j}") for j in range(6)}
    run = {q: {f"d{i}": float(10 - i) for i in range(10)} for q in queries}
    pairs = calibration_pairs({q: [(queries[q].text, corpus[d].text) for d in run[q]] for q in queries}, 12)
    assert len(pairs) == 12
    assert {q for q, _ in pairs} == {f"query {j}" for j in range(6)}  # every query, not the first two lists
    assert ("query 0", "text 0") in pairs and ("query 0", "text 9") in pairs  # top and bottom candidate


def test_keep_edges_leaves_first_last_layer_and_attention_products_fp32(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from export._onnx import sensitive_nodes

    nodes, names = [], []
    for layer in range(4):
        for part in ("attention/self/query/MatMul", "attention/self/MatMul", "intermediate/dense/MatMul"):
            names.append(f"/bert/encoder/layer.{layer}/{part}")
            nodes.append(helper.make_node("MatMul", ["x", "w"], [f"y{len(nodes)}"], name=names[-1]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
                                            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 2])])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    kept = set(sensitive_nodes(tmp_path / "m.onnx"))
    assert {n for n in names if "layer.0/" in n or "layer.3/" in n} <= kept
    assert {n for n in names if "/attention/self/MatMul" in n} <= kept
    assert "/bert/encoder/layer.1/intermediate/dense/MatMul" not in kept
    assert "/bert/encoder/layer.2/attention/self/query/MatMul" not in kept


def test_export_ndcg_counts_only_the_eval_run_queries() -> None:
    """A qrels file judging more queries than the eval run (a whole train split) must not average in zeros:
    that shrank nDCG, and every drop the int8 nDCG gate compared to its tolerance, by the same factor."""
    from distill.core.formats import Document, Query
    from export._candidates import CandidateLists
    from export.exporter import _ndcg

    class Lexical:  # scores a pair by whether the query word is in the passage
        def score_pairs(self, pairs):  # noqa: ANN001, ANN202
            return np.array([float(q.split()[-1] in d) for q, d in pairs], dtype=np.float32)

    corpus = {f"d{i}": Document(f"d{i}", "", f"w{i}x") for i in range(12)}
    queries = {f"q{i}": Query(f"q{i}", f"find w{i}x") for i in range(12)}
    run = {f"q{i}": {f"d{j}": float(-j) for j in range(12)} for i in range(2)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(12)}  # 12 judged queries, 2 in the run
    ndcg = _ndcg(Lexical(), CandidateLists(queries, corpus, run, qrels, "t"), ExportConfig())
    assert ndcg == pytest.approx(1.0)


def test_bf16_parity_gate_is_in_units_of_the_score_spread() -> None:
    from export.config import GateTolerances
    from export.gates import relative_parity_gate

    ref = np.array([0.0, 1.0, 2.0, 3.0])
    tol = GateTolerances().parity_bf16_max_rel_diff
    near = relative_parity_gate(ref, ref + 0.05, float(ref.std()), tol, "openvino_bf16_vs_pytorch")
    assert near.passed and near.name == "openvino_bf16_vs_pytorch_max_rel_diff"
    assert near.value == pytest.approx(0.05 / ref.std()) and near.detail["max_abs_diff"] == pytest.approx(0.05)
    scaled = relative_parity_gate(10 * ref, 10 * (ref + 0.05), float(10 * ref.std()), tol, "x")
    assert scaled.value == pytest.approx(near.value)  # the same error relative to the spread, whatever the scale
    assert not relative_parity_gate(ref, ref + 0.2, float(ref.std()), tol, "x").passed
    assert not relative_parity_gate(ref, ref + 0.1, 0.0, tol, "x").passed


def test_interleaved_latency_warms_and_rotates_every_scorer() -> None:
    from export.latency import measure_interleaved

    calls: list[str] = []

    class Recording:
        pairs_per_call = 4

        def __init__(self, name: str):
            self.name = name

        def score_pairs(self, pairs):
            calls.append(self.name)
            return np.zeros(len(pairs))

    out = measure_interleaved({"a": Recording("a"), "b": Recording("b")}, [("q", "d")], reps=3, warmup=2)
    assert calls == ["a", "b", "a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(out) == {"a", "b"} and out["a"]["reps"] == 3 and out["b"]["pairs_per_call"] == 4
    assert measure_interleaved({}, [("q", "d")], 2) == {}


def test_choice_serves_the_fastest_passing_recipe_and_a_portable_runner_up() -> None:
    """The runner-up is the fastest passing recipe that scores as gated on any CPU (ONNX Runtime fp32, or int8 with
    unsigned weights), shipped only when the served recipe is not one."""
    from export._recipes import Trial, choose
    from export.gates import GateResult

    ok = [GateResult("g", 0.0, 1.0, "<=", True)]

    class Timed:
        def __init__(self, ms: float):
            self.ms, self.pairs_per_call = ms, 16

        def score_pairs(self, pairs):
            import time

            time.sleep(self.ms / 1000)
            return np.zeros(len(pairs))

    def trial(name: str, ms: float, portable: bool = False, passed: bool = True) -> Trial:
        runtime, precision = name.split("-")[0], name.split("-")[1]
        gates = ok if passed else [GateResult("g", 2.0, 1.0, "<=", False)]
        return Trial(name, runtime, precision, scorer=Timed(ms), gates=gates, portable=portable)

    fp32, int8 = trial("onnxruntime-fp32", 30, portable=True), trial("onnxruntime-int8-dynamic-per_channel", 8)
    bf16, broken = trial("openvino-bf16", 2), trial("openvino-int8", 1, passed=False)
    served, runner_up, decision = choose([fp32, int8, bf16, broken], ExportConfig(runtime="auto", latency_reps=3),
                                         [("q", "d")])
    assert (served.name, runner_up.name) == ("openvino-bf16", "onnxruntime-fp32")  # signed int8 is not portable
    assert "not served: openvino-int8 (failed)" in decision and broken.latency is None
    served, runner_up, _ = choose([fp32, int8], ExportConfig(runtime="auto", latency_reps=3), [("q", "d")])
    assert served is int8 and runner_up is fp32
    int8.portable = True  # made for avx2: unsigned weights
    served, runner_up, _ = choose([fp32, int8], ExportConfig(runtime="auto", latency_reps=3), [("q", "d")])
    assert served is int8 and runner_up is None
    served, _, _ = choose([fp32, int8, bf16], ExportConfig(runtime="openvino", latency_reps=3), [("q", "d")])
    assert served is bf16
