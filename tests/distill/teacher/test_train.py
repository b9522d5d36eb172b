from __future__ import annotations

import json
import math

import pytest
import torch

from distill.core.config import load_config
from distill.core.errors import ConfigError
from distill.teacher import _train
from distill.teacher._training_pairs import QueryDocPair
from distill.teacher.config import CPTConfig, SFTConfig
from distill.teacher.cpt import IGNORE, build_cpt_example, collate_cpt, run_cpt
from distill.teacher.decoder_ranker import TeacherScorer, load_teacher
from distill.teacher.sft import (
    ListwiseSoftmaxCE,
    build_sft_examples,
    listwise_softmax_ce,
    masked_lm_loss,
    run_sft,
    token_kl,
)
from tests.teacher_data import write_mini


@pytest.fixture(scope="module")
def mini(demo_data, tmp_path_factory):
    return write_mini(demo_data, tmp_path_factory.mktemp("mini"), n_queries=4)


def _tiny_train(**kw) -> dict:
    base = {"max_length": 48, "batch_size": 2, "epochs": 1, "device": "cpu", "checkpoint_every": 1, "warmup_ratio": 0.0}
    base.update(kw)
    return base


def test_cpt_labels_mask_prompt_and_padding(tiny_decoder_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    pairs = [QueryDocPair("vitamin c scurvy", "Scurvy", "Caused by lack of vitamin C."),
             QueryDocPair("a much longer query about protein folding", "", "Short.")]
    exs = [build_cpt_example(tok, p, "Query: {query}\nRelevant document:\n", "{title}\n{text}", 64, end_id=2)
           for p in pairs]
    batch = collate_cpt(exs, tok.pad_token_id)
    for i, e in enumerate(exs):
        labels, ids, mask = batch["labels"][i], batch["input_ids"][i], batch["attention_mask"][i]
        assert (labels[: e.n_prompt] == IGNORE).all()
        assert (labels[mask == 0] == IGNORE).all()
        target = labels[e.n_prompt:len(e.input_ids)]
        assert (target == ids[e.n_prompt:len(e.input_ids)]).all() and target[-1] == 2
        assert tok.decode(ids[: e.n_prompt]).rstrip().endswith("Relevant document:")
    assert (batch["attention_mask"][1] == 0).any()  # the shorter row really is padded


def test_listwise_loss_matches_hand_computed_value():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    row1 = -2.0 + math.log(math.exp(2) + 1 + math.exp(-1))
    row2 = -0.0 + math.log(1 + 2 * math.e)
    assert listwise_softmax_ce(scores).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    # temperature 2 halves the scores before the softmax
    row1_t = -1.0 + math.log(math.exp(1) + 1 + math.exp(-0.5))
    assert ListwiseSoftmaxCE(2.0)(scores[:1]).item() == pytest.approx(row1_t, rel=1e-6)
    with pytest.raises(ValueError, match=r"\[batch, 1 \+ k\]"):
        ListwiseSoftmaxCE()(torch.zeros(3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ListwiseSoftmaxCE(0.0)


def test_masked_lm_loss_and_kl_on_tiny_tensors():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = math.log(3.0)  # position 1 predicts token at position 2: p(2) = 3/6
    ids = torch.tensor([[0, 1, 2]])
    target = torch.tensor([[0, 0, 1]])  # only the last token is a target
    assert masked_lm_loss(logits, ids, target).item() == pytest.approx(-math.log(0.5), rel=1e-6)
    assert token_kl(logits, logits, target).item() == pytest.approx(0.0, abs=1e-7)
    assert token_kl(logits, torch.zeros(1, 3, 4), target).item() > 0


def test_sft_negatives_never_judged_positive():
    from distill.core.formats import Document, Query

    corpus = {d: Document(d, "", d) for d in "abcdefg"}
    qrels = {"q": {"a": 1, "b": 2, "c": 0}}
    run = {"q": {d: 10.0 - i for i, d in enumerate("abcdefg")}}
    exs = build_sft_examples({"q": Query("q", "text")}, qrels, corpus, run, num_negatives=3, negative_depth=5, seed=1)
    assert len(exs) == 2  # one per positive
    for ex in exs:
        negs = {text for _, text in ex.docs[1:]}
        assert len(negs) == 3 and not negs & {"a", "b"} and negs <= {"c", "d", "e"}
    assert {ex.docs[0][1] for ex in exs} == {"a", "b"}


def test_configs_validate_and_load(tmp_path):
    with pytest.raises(ConfigError, match="exactly one data source"):
        CPTConfig().require_data()
    with pytest.raises(ConfigError, match="negative_depth .* must be >= num_negatives"):
        SFTConfig(queries="q", qrels="r", corpus="c", num_negatives=5, negative_depth=3)
    with pytest.raises(ConfigError, match="device must be one of"):
        SFTConfig(queries="q", qrels="r", corpus="c", device="tpu")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pairs": "p.jsonl", "lr": 1e-4, "lora": {"enabled": True, "r": 4}}))
    cfg = load_config(CPTConfig, path, {"max_steps": 3, "seed": None})
    assert cfg.lr == 1e-4 and cfg.max_steps == 3 and cfg.lora.r == 4 and cfg.seed == 13
    path.write_text(json.dumps({"pairs": "p.jsonl", "learning_rate": 1}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\]"):
        load_config(CPTConfig, path)


def test_micro_batches_are_a_function_of_step():
    cfg = SFTConfig(queries="q", qrels="r", corpus="c", batch_size=2, grad_accum=2, seed=3)
    per_epoch, total = _train.schedule_steps(10, cfg)
    assert (per_epoch, total) == (3, 3)
    epoch0 = [i for s in range(per_epoch) for b in _train.micro_batches(10, s, cfg) for i in b]
    assert sorted(epoch0) == list(range(10))
    assert _train.micro_batches(10, 1, cfg) == _train.micro_batches(10, 1, cfg)


def test_cpt_resumes_from_checkpoint_instead_of_restarting(tiny_decoder_dir, mini, tmp_path, monkeypatch):
    cfg = CPTConfig(base_model=str(tiny_decoder_dir), queries=str(mini["queries"]), qrels=str(mini["qrels"]),
                    corpus=str(mini["corpus"]), **_tiny_train(max_steps=3))
    calls: list[int] = []

    def crash(step: int) -> None:
        calls.append(step)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_train, "_after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        run_cpt(cfg, tmp_path)
    assert (tmp_path / "checkpoints" / "step-2" / "state.json").exists()
    assert not (tmp_path / "manifest.json").exists()
    calls.clear()
    model_dir = run_cpt(cfg, tmp_path)
    assert calls == [3]  # only the remaining step ran
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from_step"] == 2 and manifest["metrics"]["steps"] == 3
    assert (model_dir / "model.safetensors").exists() and not (tmp_path / "checkpoints").exists()
    calls.clear()
    from distill.core.stage_runner import run_standalone

    # whether a finished stage is reused is the stage runner's decision (the `teacher cpt` command goes through it)
    monkeypatch.setattr(_train, "_after_step", calls.append)
    first = run_standalone(tmp_path / "cpt", cfg.to_dict(), lambda d: {"model": run_cpt(cfg, d)})["model"]
    calls.clear()
    assert run_standalone(tmp_path / "cpt", cfg.to_dict(), lambda d: {"model": run_cpt(cfg, d)})["model"] == first
    assert calls == []  # finished: reused


def test_sft_end_to_end_tiny(tiny_decoder_dir, mini, tmp_path):
    cfg = SFTConfig(base_model=str(tiny_decoder_dir), queries=str(mini["queries"]), qrels=str(mini["qrels"]),
                    corpus=str(mini["corpus"]), num_negatives=2, negative_depth=8, gen_weight=0.1, kl_weight=0.1,
                    **_tiny_train(max_steps=2, lr=1e-3))
    teacher = run_sft(cfg, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stage"] == "teacher-sft" and math.isfinite(manifest["metrics"]["final_loss"])
    assert json.loads((tmp_path / "config.json").read_text())["kl_weight"] == 0.1
    ranker, tok, spec = load_teacher(teacher)
    assert spec.end_token_id is not None and ranker.model.config.pad_token_id == tok.pad_token_id
    scores = TeacherScorer(teacher, device="cpu").score([("q", "a"), ("q", "a much longer document")])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_sft_with_lora_merges_adapters_into_saved_weights(tiny_decoder_dir, mini, tmp_path):
    from safetensors.torch import load_file

    cfg = SFTConfig(base_model=str(tiny_decoder_dir), queries=str(mini["queries"]), qrels=str(mini["qrels"]),
                    corpus=str(mini["corpus"]), num_negatives=2, negative_depth=8, gradient_checkpointing=True,
                    lora={"enabled": True, "r": 2, "alpha": 4}, **_tiny_train(max_steps=1, lr=1e-2))
    teacher = run_sft(cfg, tmp_path)
    saved = load_file(str(teacher / "model.safetensors"))
    assert not any("lora" in k for k in saved)  # merged, plain HF weights
    base = load_file(str(tiny_decoder_dir / "model.safetensors"))
    key = next(k for k in saved if k.endswith("self_attn.q_proj.weight"))
    assert not torch.equal(saved[key], base[key])  # the merged adapter changed the projection
    assert TeacherScorer(teacher, device="cpu").score([("q", "d")])
