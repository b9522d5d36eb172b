"""Resolved config + manifest written beside every artifact, so any result can be traced.

``manifest.json``: the stage, its config hash, input files with sha256, package versions,
metrics and wall time. A stage whose ``manifest.json`` exists with the same config hash is
complete; :mod:`distill.core.stage_runner` alone decides whether it is reused (the manifest is written last,
atomically).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.core.atomic_io import config_hash, sha256_file, write_json

__all__ = ["package_versions", "write_manifest"]

logger = logging.getLogger(__name__)

_PACKAGES = ("distilrank", "torch", "transformers", "sentence-transformers", "optimum-onnx", "onnxruntime", "bm25s",
             "ir-measures")


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(out_dir: str | Path, stage: str, config: Mapping[str, Any],
                   inputs: Mapping[str, str | Path] | None = None,
                   metrics: Mapping[str, Any] | None = None, wall_time_s: float | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / "config.json", dict(config))
    manifest = {
        "stage": stage,
        "config_hash": config_hash(dict(config)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {k: {"path": str(v), "sha256": sha256_file(v) if Path(v).is_file() else None}
                   for k, v in dict(inputs or {}).items()},
        "versions": package_versions(),
        "metrics": dict(metrics or {}),
        "wall_time_s": wall_time_s,
        **dict(extra or {}),
    }
    return write_json(out_dir / "manifest.json", manifest)
