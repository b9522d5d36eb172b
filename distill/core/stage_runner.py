"""The one place that decides whether a stage runs, resumes or is reused: the pipeline's stages and the
standalone stage commands (``distilrank teacher cpt|sft|label|synthesize``) alike. Stage bodies never skip
themselves.

A stage's key is its resolved config, the **content hashes** of its input files and the keys of the
stages it depends on; paths are not part of any key, so ``--out`` relative or absolute (or a copied
``OUT``) is the same run. A stage whose ``manifest.json`` records the same key is reused only after its
outputs are **verified**: the manifest records, for each output, its path relative to ``OUT`` and the
content hash of the file (or of every file of a directory). An output that is missing or whose content
changed makes the stage run again, with a log line naming the file; the stages after it then see the
restored outputs. A stage interrupted under the same key resumes from its own checkpoints; a stage
directory left by another key is wiped first, so stale checkpoints never leak into a new run.

A stage's typed result (``Stage.load``: its outputs → a value, e.g. a dataclass) is built from its verified
output files, the same way whether the stage ran now or was reused: the stages after it read ``value``, never
the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core import distributed
from distill.core.atomic_io import config_hash, sha256_file, write_json
from distill.core.fault_injection import fault_point
from distill.core.manifest import write_manifest

__all__ = ["Stage", "StageResult", "StageRunner", "content_hash", "run_standalone"]

logger = logging.getLogger(__name__)

_KEY_FILE = "stage_key.json"


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's sorted (relative path, file hash) list (hidden files ignored)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


@dataclass
class StageResult:
    name: str
    dir: Path
    key_hash: str
    outputs: dict[str, Path]
    skipped: bool
    wall_time_s: float
    #: content hash of each output, as verified or written: the stages after it key on these
    output_hashes: dict[str, str] = field(default_factory=dict)
    #: the stage's typed result (``Stage.load`` of its outputs), None when the stage has no loader
    value: Any = None


@dataclass
class Stage:
    """``run(stage_dir) -> {output name: path}``; ``config`` and ``inputs`` (files, hashed by content) and
    ``upstream`` (results of earlier stages: their keys and the content hashes of their outputs) make its key.
    Outputs must lie inside the run's ``OUT``. ``load(outputs)`` builds the stage's typed result from its
    verified outputs (``StageResult.value``), after a run and after a reuse alike."""

    name: str
    config: Mapping[str, Any]
    run: Callable[[Path], Mapping[str, Path]]
    inputs: Mapping[str, Path] = field(default_factory=dict)
    upstream: Sequence[StageResult] = ()
    load: Callable[[Mapping[str, Path]], Any] | None = None

    def key(self, hashes: Callable[[Path], str]) -> dict[str, Any]:
        return {"config": dict(self.config), "inputs": {k: hashes(Path(p)) for k, p in sorted(self.inputs.items())},
                "upstream": {u.name: {"key": u.key_hash, "outputs": dict(sorted(u.output_hashes.items()))}
                             for u in self.upstream}}


class StageRunner:
    """Runs stages under ``out``; the single place where a finished stage is recognised, verified and reused."""

    def __init__(self, out: Path, wipe_stale: bool = True):
        """``wipe_stale``: a stage directory left by another key (or holding changed outputs) is deleted before the
        stage runs. The pipeline owns its ``OUT`` and wipes; a standalone command leaves the user's directory to
        the stage body, which resumes or refuses (e.g. labels begun by another teacher: exit 2)."""
        self.out = out
        self.wipe_stale = wipe_stale
        self.results: dict[str, StageResult] = {}
        self._hashes: dict[Path, str] = {}

    def content_hash(self, path: Path) -> str:
        path = path.resolve()
        if path not in self._hashes:
            self._hashes[path] = content_hash(path)
        return self._hashes[path]

    def run(self, stage: Stage) -> StageResult:
        res = self._run(stage)
        if stage.load is not None:
            res.value = stage.load(res.outputs)
        self.results[stage.name] = res
        return res

    def _run(self, stage: Stage) -> StageResult:
        stage_dir = self.out / stage.name
        key = stage.key(self.content_hash)
        h = config_hash(key)
        reused, tampered = self._reuse(stage.name, stage_dir, h)
        distributed.barrier()  # under torchrun every rank decides from the same files, then rank 0 writes
        if reused is not None:
            return reused
        with distributed.main_first() as main:
            if main and tampered and self.wipe_stale:  # a resume would build on the changed files: start afresh
                shutil.rmtree(stage_dir)
            if main:
                self._prepare(stage.name, stage_dir, h)
        logger.info("stage %s: starting", stage.name)
        fault_point(f"{stage.name}:start")
        t0 = time.perf_counter()
        outputs = {k: Path(v) for k, v in stage.run(stage_dir).items()}
        wall = round(time.perf_counter() - t0, 2)
        fault_point(f"{stage.name}:outputs")
        recorded = {k: {"path": self._relative(stage.name, p), "sha256": content_hash(p)} for k, p in outputs.items()}
        # what the body recorded in its own manifest (metrics, provenance) is kept inside the runner's
        body = _read_manifest(stage_dir / "manifest.json")
        # the manifest is written last: a stage without one is unfinished, whatever else its directory holds
        with distributed.main_first() as main:
            if main:
                write_manifest(stage_dir, stage.name, key, inputs=dict(stage.inputs), wall_time_s=wall,
                               metrics=(body or {}).get("metrics"),
                               extra={"key_hash": h, "outputs": recorded, "stage_record": body})
        logger.info("stage %s: done in %.1f s", stage.name, wall)
        return StageResult(stage.name, stage_dir, h, outputs, False, wall,
                           {k: rec["sha256"] for k, rec in recorded.items()})

    def _relative(self, stage: str, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError as exc:
            raise RuntimeError(f"stage {stage} wrote {path}, outside the run directory {self.out}") from exc

    def _reuse(self, name: str, stage_dir: Path, h: str) -> tuple[StageResult | None, bool]:
        """``(result, False)`` when the manifest has this key and every output verifies; ``(None, True)`` when a
        finished stage's output is missing or changed (logged); ``(None, False)`` when it never finished."""
        manifest = _read_manifest(stage_dir / "manifest.json")
        if manifest is None or manifest.get("key_hash") != h:
            return None, False
        outputs: dict[str, Path] = {}
        hashes: dict[str, str] = {}
        for out_name, rec in manifest.get("outputs", {}).items():
            path = self.out / rec["path"]
            if not path.exists():
                logger.warning("stage %s: output %s is missing; running the stage again", name, path)
                return None, True
            if content_hash(path) != rec["sha256"]:
                logger.warning("stage %s: output %s changed since the stage finished (content hash differs); "
                               "running the stage again", name, path)
                return None, True
            outputs[out_name], hashes[out_name] = path, rec["sha256"]
        logger.info("stage %s: finished earlier with the same inputs (outputs verified); reused", name)
        return StageResult(name, stage_dir, h, outputs, True, 0.0, hashes), False

    def _prepare(self, name: str, stage_dir: Path, h: str) -> None:
        key_file = stage_dir / _KEY_FILE
        if stage_dir.exists():
            previous = _read_manifest(key_file)
            if (previous or {}).get("hash") != h and self.wipe_stale:
                logger.info("stage %s: inputs or config changed since the last run; starting it afresh", name)
                shutil.rmtree(stage_dir)
            elif (previous or {}).get("hash") != h:
                (stage_dir / "manifest.json").unlink(missing_ok=True)
                logger.info("stage %s: inputs or config changed since the last run; %s is left to the stage",
                            name, stage_dir)
            else:
                (stage_dir / "manifest.json").unlink(missing_ok=True)
                logger.info("stage %s: resuming an interrupted run", name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(key_file, {"hash": h})


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def run_standalone(out_dir: str | Path, config: Mapping[str, Any], body: Callable[[Path], Mapping[str, Path]],
                   inputs: Mapping[str, str | Path | None] | None = None) -> dict[str, Path]:
    """One stage in ``out_dir`` itself (a standalone command's ``--out``): reused when finished with the same
    config and input contents, resumed when interrupted, run afresh when either changed."""
    out = Path(out_dir).expanduser().resolve()
    files = {k: Path(v) for k, v in (inputs or {}).items() if v and Path(v).is_file()}
    return StageRunner(out.parent, wipe_stale=False).run(Stage(out.name, config, body, inputs=files)).outputs
