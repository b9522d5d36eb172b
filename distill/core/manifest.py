"""Resolved config + manifest written beside every artifact, so any result can be traced.

``manifest.json``: the stage, its config hash, input files with sha256, package versions,
metrics and wall time. A stage whose ``manifest.json`` exists with the same config hash is
complete and is skipped on the next run (the manifest is written last, atomically).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.core.atomic_io import config_hash, sha256_file, write_json

__all__ = ["is_complete", "package_versions", "skip_if_finished", "write_manifest"]

logger = logging.getLogger(__name__)

_PACKAGES = ("distilrank", "torch", "transformers", "sentence-transformers", "optimum-onnx", "onnxruntime", "bm25s", "ir-measures")


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(out_dir: str | Path, stage: str, config: Mapping[str, Any], inputs: Mapping[str, str | Path] = (),
                   metrics: Mapping[str, Any] | None = None, wall_time_s: float | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / "config.json", dict(config))
    manifest = {
        "stage": stage,
        "config_hash": config_hash(dict(config)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {k: {"path": str(v), "sha256": sha256_file(v) if Path(v).is_file() else None} for k, v in dict(inputs).items()},
        "versions": package_versions(),
        "metrics": dict(metrics or {}),
        "wall_time_s": wall_time_s,
        **dict(extra or {}),
    }
    return write_json(out_dir / "manifest.json", manifest)


def is_complete(out_dir: str | Path, config: Mapping[str, Any]) -> bool:
    path = Path(out_dir) / "manifest.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text())["config_hash"] == config_hash(dict(config))
    except (json.JSONDecodeError, KeyError):
        return False


def skip_if_finished(stage: str, out_dir: str | Path, config: Mapping[str, Any], *artifacts: str | Path) -> bool:
    """True (and a log line) when ``out_dir`` holds a manifest for this config and every artifact exists.

    The one skip check of the standalone stage commands (``teacher cpt|sft|synthesize|label``); inside the
    pipeline the stage runner checks its own stage directory the same way.
    """
    if is_complete(out_dir, config) and all(Path(a).exists() for a in artifacts):
        logger.info("%s: %s is complete for this config; skipping", stage, out_dir)
        return True
    return False
