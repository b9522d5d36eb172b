"""``model_card.json``: the contract between ``distilrank export`` and everything that loads an
exported model (the ranker service, benchmarks, load tests).

Fields (all written by export; ``files`` and ``onnx_file`` are required to load)::

    {
      "format_version": 1,
      "onnx_file": "model.onnx",            # the file the ranker runs (fp32 or int8)
      "precision": "fp32" | "int8",
      "max_seq_len": 256,                    # tokens; longer pairs are truncated (only_second)
      "score": "raw logit of a 1-label cross-encoder; higher = more relevant",
      "tokenizer": "tokenizer.json",
      "base_models": {...}, "training": {...}, "config_hash": "...",
      "metrics": {...}, "gates": {...}, "latency": {...}, "decision": "...",
      "files": {"model.onnx": "<sha256>", "tokenizer.json": "<sha256>", ...}   # every other file
    }

:func:`load_model_card` verifies the sha256 of every listed file (and that none is missing), so
a tampered, truncated or swapped file is refused with a clear error before any inference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.core.atomic_io import sha256_file, write_json
from distill.core.errors import DataError, MissingPrerequisiteError

__all__ = ["MODEL_CARD", "ModelCardError", "file_hashes", "load_model_card", "write_model_card"]

MODEL_CARD = "model_card.json"
FORMAT_VERSION = 1


class ModelCardError(DataError):
    """The exported artifact does not match its model card (tampered, truncated or incomplete)."""


def file_hashes(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every regular file under ``model_dir`` except the card itself (relative posix paths)."""
    root = Path(model_dir)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MODEL_CARD and not path.name.startswith("."):
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def write_model_card(model_dir: str | os.PathLike[str], card: Mapping[str, Any]) -> Path:
    """Write the card last, after every other file is in place, with fresh hashes of all files."""
    root = Path(model_dir)
    full = {"format_version": FORMAT_VERSION, **dict(card), "files": file_hashes(root)}
    if full.get("onnx_file") not in full["files"]:
        raise ValueError(f"model card names onnx_file={full.get('onnx_file')!r}, which is not in {root}")
    return write_json(root / MODEL_CARD, full)


def load_model_card(model_dir: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """Read the card; with ``verify`` check every file's sha256. Raises :class:`ModelCardError`."""
    root = Path(model_dir)
    path = root / MODEL_CARD
    if not path.exists():
        raise MissingPrerequisiteError(f"{root} has no {MODEL_CARD}; export the student first: distilrank export --model DIR --out {root}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict) or "onnx_file" not in card:
        raise ModelCardError('missing "files" or "onnx_file"', path=path, expected="a card written by distilrank export")
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelCardError(f"format_version {card.get('format_version')!r} is not {FORMAT_VERSION}", path=path)
    if verify:
        for name, digest in card["files"].items():
            file = root / name
            if not file.is_file():
                raise ModelCardError(f"file {name} listed in the model card is missing", path=root)
            actual = sha256_file(file)
            if actual != digest:
                raise ModelCardError(
                    f"checksum mismatch for {name}: card says {digest[:12]}..., file has {actual[:12]}... "
                    "(file modified, truncated or replaced); re-export the model", path=root)
    return card
