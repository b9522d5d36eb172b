from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.student.train import StudentTrainConfig, train_student
from tests.student_data import make_labels


@pytest.fixture(scope="module")
def label_files(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_labels(demo_data, tmp_path_factory.mktemp("labels"))


def _config(base: Path, **over: object) -> StudentTrainConfig:
    data = {"model": {"base": str(base), "max_seq_len": 64}, "pairs": {"n_negatives": 3, "groups_per_query": 2},
            "batch_size": 4, "max_steps": 6, "eval_steps": 3, "learning_rate": 1e-3, "dev_top_k": 8,
            "dev_fraction": 0.25, "warmup": {"mode": "off"}}
    data.update(over)
    return StudentTrainConfig.from_dict(data)


@pytest.fixture(scope="module")
def trained(label_files: dict[str, Path], tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("student")
    res = train_student(_config(tiny_cross_encoder_dir), label_files["labels"], label_files["corpus"],
                        label_files["qrels"], out, dev_run_path=label_files["run"])
    return out, res


def test_train_writes_student_manifest_and_interpolation(trained) -> None:  # noqa: ANN001
    out, res = trained
    assert res.model_dir == out / "model"
    assert res.steps == 6
    assert 0.0 <= res.dev_metrics["ndcg@10"] <= 1.0
    cfg = json.loads((res.model_dir / "config.json").read_text())
    assert cfg["num_labels"] == 1 if "num_labels" in cfg else len(cfg["id2label"]) == 1
    assert cfg["sentence_transformers"]["activation_fn"] == "torch.nn.modules.linear.Identity"
    interp = json.loads(res.interpolation_path.read_text())
    assert 0.0 <= interp["alpha"] <= 1.0 and interp["first_stage_norm"] == "minmax"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["stage"] == "student"
            and manifest["metrics"]["dev_ndcg@10"] == pytest.approx(res.dev_metrics["ndcg@10"]))
    # best checkpoint chosen among the evaluated ones
    assert (out / "checkpoints").exists()


def test_crossencoder_loads_and_scores_identically(trained) -> None:  # noqa: ANN001
    from sentence_transformers import CrossEncoder

    from distill.student.model import student_scorer

    _, res = trained
    pairs = [("what causes fever", "Fever is caused by pyrogens released by the immune system."),
             ("a much longer query about protein folding in bacteria", "Short doc."),
             ("x", "word " * 200)]
    ours = student_scorer(res.model_dir).score_pairs(pairs).tolist()
    ce = CrossEncoder(str(res.model_dir), device="cpu")
    theirs = ce.predict(pairs, convert_to_numpy=True).tolist()
    assert theirs == pytest.approx(ours, abs=1e-5)
    identity = ce.predict(pairs, activation_fn=torch.nn.Identity()).tolist()
    assert identity == pytest.approx(ours, abs=1e-5)


def test_training_lowers_the_distillation_loss(label_files: dict[str, Path], tiny_cross_encoder_dir: Path,
                                               tmp_path: Path) -> None:
    from distill.core.formats import read_corpus, read_qrels
    from distill.core.label_files import read_labels
    from distill.student.loss import HybridDistillLoss
    from distill.student.model import student_scorer
    from distill.student.normalize import NormalizationConfig
    from distill.student.pairs import PairConfig, build_groups

    cfg = _config(tiny_cross_encoder_dir, max_steps=12, eval_steps=12)
    res = train_student(cfg, label_files["labels"], label_files["corpus"], label_files["qrels"], tmp_path)
    corpus = read_corpus(label_files["corpus"])
    groups = build_groups(read_labels(label_files["labels"]), read_qrels(label_files["qrels"]),
                          PairConfig(n_negatives=3), NormalizationConfig())

    def loss_of(model_dir: Path) -> float:
        pairs = [(g.query, corpus[d].full_text) for g in groups for d in g.doc_ids]
        s = torch.from_numpy(student_scorer(model_dir, caps=cfg.model.caps).score_pairs(pairs)).view(len(groups), 4)
        return HybridDistillLoss()(s, torch.tensor([g.teacher_scores for g in groups])).item()

    assert loss_of(res.model_dir) < loss_of(tiny_cross_encoder_dir)


def test_resume_continues_from_checkpoint(label_files: dict[str, Path], tiny_cross_encoder_dir: Path,
                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(tiny_cross_encoder_dir, max_steps=4, eval_steps=2)
    train_student(cfg, label_files["labels"], label_files["corpus"], label_files["qrels"], tmp_path)
    # simulate a crash after step 2: drop the final checkpoint, keep step 2
    import shutil

    for ck in (tmp_path / "checkpoints").glob("checkpoint-4"):
        shutil.rmtree(ck)
    caplog.set_level("INFO", logger="distill.student.train")
    res = train_student(cfg, label_files["labels"], label_files["corpus"], label_files["qrels"], tmp_path)
    assert any("resuming student training from" in r.message and "checkpoint-2" in r.message for r in caplog.records)
    assert res.steps == 4


def test_torn_checkpoint_is_skipped_on_resume(label_files: dict[str, Path], tiny_cross_encoder_dir: Path,
                                              tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A kill while checkpoint-4 was being written leaves a torn directory: resume skips it and uses checkpoint-2."""
    cfg = _config(tiny_cross_encoder_dir, max_steps=4, eval_steps=2)
    train_student(cfg, label_files["labels"], label_files["corpus"], label_files["qrels"], tmp_path)
    torn = tmp_path / "checkpoints" / "checkpoint-4"
    (torn / "trainer_state.json").unlink()  # written last by the Trainer: a kill mid-write never has it
    (torn / "model.safetensors").write_bytes(b"\0" * 100)
    caplog.set_level("INFO", logger="distill.student.train")
    res = train_student(cfg, label_files["labels"], label_files["corpus"], label_files["qrels"], tmp_path)
    assert any("checkpoint-4 is incomplete" in r.message for r in caplog.records)
    assert any("resuming student training from" in r.message and "checkpoint-2" in r.message for r in caplog.records)
    assert res.steps == 4


def test_train_without_qrels_uses_the_teacher_ranking_as_dev(label_files: dict[str, Path], tiny_cross_encoder_dir: Path,
                                                             tmp_path: Path) -> None:
    """Labels from a teacher alone (no judgments): training works, the dev signal says so, and the
    interpolation weight is the documented conservative one, not tuned on teacher-made labels."""
    from distill.student.train import CONSERVATIVE_ALPHA

    cfg = _config(tiny_cross_encoder_dir, max_steps=4, eval_steps=2)
    res = train_student(cfg, label_files["labels"], label_files["corpus"], None, tmp_path,
                        dev_run_path=label_files["run"])
    assert res.dev_signal == "teacher ranking (top 3)"
    interp = json.loads(res.interpolation_path.read_text())
    assert interp["alpha"] == CONSERVATIVE_ALPHA and interp["tuned_on"].startswith("not tuned")
    assert json.loads((tmp_path / "manifest.json").read_text())["dev_signal"] == "teacher ranking (top 3)"


def test_bad_config_is_a_config_error(tiny_cross_encoder_dir: Path) -> None:
    from distill.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"student: unknown key\(s\) \['lr'\]"):
        StudentTrainConfig.from_dict({"lr": 1.0})
    with pytest.raises(ConfigError, match="n_negatives must be >= 1"):
        StudentTrainConfig.from_dict({"pairs": {"n_negatives": 0}})
    with pytest.raises(ConfigError, match=r"student.model: unknown key"):
        StudentTrainConfig.from_dict({"model": {"layers": 3}})


def test_missing_labels_file_is_a_data_error(tiny_cross_encoder_dir: Path, demo_data: Path, tmp_path: Path) -> None:
    from distill.core.errors import DataError

    with pytest.raises(DataError, match="label file not found"):
        train_student(_config(tiny_cross_encoder_dir), tmp_path / "nope.jsonl", demo_data / "corpus.jsonl",
                      demo_data / "qrels.train.txt", tmp_path / "out")


def test_dev_split_is_drawn_from_eligible_queries_only() -> None:
    """Given and synthetic training queries mixed: the dev split (checkpoint choice, interpolation weight)
    uses the given (real) queries only."""
    from distill.core.label_files import LabeledDoc, LabeledQuery
    from distill.student.train import choose_dev

    labels = [LabeledQuery(q, q, (LabeledDoc("d", 1.0, "bm25"),)) for q in [*(f"real{i}" for i in range(40)),
                                                                             *(f"syn{i}" for i in range(200))]]
    qrels = {lq.qid: {"d": 1} for lq in labels}
    cfg = StudentTrainConfig.from_dict({"dev_fraction": 0.2, "dev_min_queries": 5})
    dev, dev_qrels, signal = choose_dev(labels, qrels, cfg, eligible={f"real{i}" for i in range(40)})
    assert dev and all(q.startswith("real") for q in dev) and set(dev_qrels) == dev and signal == "qrels"
    assert len(choose_dev(labels, qrels, cfg)[0]) == 48  # without the restriction: 20% of all 240


def test_with_a_dev_run_the_report_compares_the_student_with_the_first_stage(trained) -> None:  # noqa: ANN001
    out, res = trained
    report = json.loads((out / "student_report.json").read_text())
    assert isinstance(res.regression, bool) and report["regression"] == res.regression
    assert report["verdict"] == res.verdict and res.verdict.startswith(("OK: on dev", "REGRESSION"))
    assert "first stage" in res.verdict and (out / "student_report.md").read_text().startswith(f"**{res.verdict}**")
    assert res.checkpoint["rule"] == "best" and res.checkpoint["step"] in (3, 6)  # qrels: the best mean
    assert set(res.dev_check) == {"ndcg10", "random_ndcg10", "se", "z", "n_queries"}


def test_without_a_dev_run_every_labelled_candidate_is_reranked_and_the_final_model_is_kept_on_noise(
        label_files: dict[str, Path], tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    """No dev run, no qrels: the dev signal is the teacher's ranking over every labelled candidate (not the 8 the
    dev_top_k would cut), checkpoints are chosen by last_unless_beaten, and nothing is compared or gated."""
    cfg = _config(tiny_cross_encoder_dir, max_steps=4, eval_steps=2)
    res = train_student(cfg, label_files["labels"], label_files["corpus"], None, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["dev_candidates"] == "every labelled candidate"
    from distill.core.formats import read_run
    from distill.core.label_files import read_labels

    n_labelled = {lq.qid: len(lq.docs) for lq in read_labels(label_files["labels"])}
    dev_run = read_run(res.model_dir / "dev_run.student.trec")
    assert dev_run and all(len(docs) == n_labelled[q] > 8 for q, docs in dev_run.items())
    assert res.checkpoint["rule"] == "last_unless_beaten" and res.checkpoint["step"] in (2, 4)
    assert res.regression is None and res.interpolation_path is None
    assert manifest["checkpoint"] == res.checkpoint and manifest["dev_check"] == res.dev_check
    assert json.loads((tmp_path / "checkpoints" / "dev_history.json").read_text()).keys() == {"2", "4"}


def _fake_result(tmp_path: Path, regression: bool):  # noqa: ANN202
    from distill.student.train import TrainResult

    return TrainResult(tmp_path / "model", {"ndcg@10": 0.1}, None, 4, 1.0, regression=regression,
                       verdict="REGRESSION: neither ..." if regression else "OK: on dev ...",
                       report_path=tmp_path / "student_report.json")


@pytest.mark.parametrize(("regression", "flags", "code"), [(True, [], 5), (True, ["--allow-regression"], 0),
                                                          (False, [], 0)])
def test_student_train_exits_5_on_a_dev_regression_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  regression: bool, flags: list[str],
                                                                  code: int) -> None:
    import distill.student.train as train_mod
    from distill.cli import main

    seen = {}

    def fake_train(config, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["warmup"] = config.warmup.mode
        return _fake_result(tmp_path, regression)

    monkeypatch.setattr(train_mod, "train_student", fake_train)
    for name in ("labels.jsonl", "corpus.jsonl", "run.trec"):
        (tmp_path / name).write_text("")
    argv = ["student", "train", "--labels", str(tmp_path / "labels.jsonl"), "--corpus", str(tmp_path / "corpus.jsonl"),
            "--dev-run", str(tmp_path / "run.trec"), "--warmup", "auto", "--out", str(tmp_path / "out"), *flags]
    assert main(argv) == code
    assert seen["warmup"] == "auto"
    err = capsys.readouterr().err
    assert ("pass --allow-regression to accept it anyway" in err) == (code == 5)
