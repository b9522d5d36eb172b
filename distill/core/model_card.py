"""``model_card.json``: the typed contract between ``distilrank export`` and everything that loads an
exported model (the ranker service, the OpenSearch plugin through ``/info``, benchmarks, load tests).

What serving needs travels inside the artifact, never typed again on a command line:

* ``onnx_file`` (the file the ranker runs: an ``.onnx``, or an OpenVINO IR ``.xml`` whose weights are the
  ``.bin`` beside it), ``precision`` (fp32, bf16, int8), ``runtime`` (onnxruntime, openvino);
* ``token_caps`` (the one truncation rule: ``max_seq_len``, ``max_query_tokens``, ``max_doc_tokens``);
* ``pairs_per_call``: the most pairs one inference call may hold for the scores to equal the gated ones
  (1 for dynamic int8, whose activation scales span the call; null = any number);
* ``interpolation``: the blend with the first stage that the pipeline measured
  (:class:`~distill.core.interpolation.Interpolation`); null when the export was made outside a pipeline;
* ``recipe``: the name of the gated recipe ``onnx_file`` holds (``onnxruntime-fp32``, ``openvino-bf16``, ...), chosen
  on the machine whose ISA level ``isa`` names; ``runner_up`` (:class:`RunnerUp`): a recipe that every machine with
  the ``[serve]`` extra runs and scores as it was gated (ONNX Runtime fp32, or int8 with unsigned weights), its
  files shipped in the same directory and gated in the same export, which the ranker serves (with a warning) where
  the card's own recipe cannot run, e.g. bf16 on a CPU without AMX or AVX512-BF16. Null when the card's own recipe
  runs everywhere; ``recipe_trials`` holds every recipe's gates and latency;
* ``files``: the sha256 of every other file in the directory. :func:`load_model_card` verifies them (and
  that none is missing, and that none lies outside the directory), so a tampered, truncated or swapped
  file is refused with a clear error before any inference.

The rest is provenance and evidence: base models, training, the export config, gates, metrics, latency,
the decision and its reasons. ``format_version`` 1 cards (written before the card was typed: no
``interpolation``, ``max_pairs_per_call`` for ``pairs_per_call``, sometimes only ``max_seq_len``) load as
version 2 with ``interpolation`` null; cards written before recipes were chosen per machine load with ``recipe``
and ``runner_up`` null.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from distill.core.atomic_io import sha256_file, write_json
from distill.core.cross_encoder import TokenCaps
from distill.core.errors import ConfigError, DataError, MissingPrerequisiteError
from distill.core.interpolation import Interpolation

__all__ = ["MODEL_CARD", "SCORE_SEMANTICS", "ModelCard", "ModelCardError", "RunnerUp", "file_hashes",
           "load_model_card", "set_interpolation", "write_model_card"]

MODEL_CARD = "model_card.json"
FORMAT_VERSION = 2
SCORE_SEMANTICS = "raw logit of a 1-label cross-encoder; higher = more relevant"
Runtime = Literal["onnxruntime", "openvino"]


class ModelCardError(DataError):
    """The exported artifact does not match its model card (tampered, truncated, incomplete or malformed)."""


@dataclass(frozen=True)
class RunnerUp:
    """The recipe served where the card's own cannot run: the serving fields of a card, for other files."""

    recipe: str
    onnx_file: str
    precision: str
    runtime: Runtime = "onnxruntime"
    pairs_per_call: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunnerUp:
        if not isinstance(data, Mapping):
            raise TypeError(f"runner_up must be a JSON object or null, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelCard:
    """One exported model. ``files`` is filled by :func:`write_model_card`; leave it empty when building one."""

    onnx_file: str
    precision: str
    token_caps: TokenCaps
    pairs_per_call: int | None = None
    runtime: Runtime = "onnxruntime"
    interpolation: Interpolation | None = None
    name: str | None = None
    layers: int | None = None
    score: str = SCORE_SEMANTICS
    tokenizer: str = "tokenizer.json"
    isa: str | None = None
    optimization: str | None = None
    quantization: dict[str, Any] | None = None
    base_models: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    config_hash: str | None = None
    export_config: dict[str, Any] = field(default_factory=dict)
    gate_data: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    int8_trials: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    decision: str = ""
    export_wall_time_s: float | None = None
    recipe: str | None = None
    runner_up: RunnerUp | None = None
    recipe_trials: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def max_seq_len(self) -> int:
        return self.token_caps.max_seq_len

    @property
    def onnx_sha256(self) -> str:
        return self.files[self.onnx_file]

    def display_name(self, model_dir: str | os.PathLike[str]) -> str:
        return self.name or Path(model_dir).name

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def served_by_runner_up(self) -> ModelCard:
        """This card with the runner-up's serving fields in place of its own (``runner_up`` then null)."""
        if self.runner_up is None:
            raise ValueError("the model card has no runner_up recipe")
        ru = self.runner_up
        return self.replace(onnx_file=ru.onnx_file, precision=ru.precision, runtime=ru.runtime,
                            pairs_per_call=ru.pairs_per_call, recipe=ru.recipe, runner_up=None)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["token_caps"] = self.token_caps.to_dict()
        out["interpolation"] = self.interpolation.to_dict() if self.interpolation else None
        out["runner_up"] = self.runner_up.to_dict() if self.runner_up else None
        out["max_seq_len"] = self.max_seq_len  # for readers of format 1
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> ModelCard:
        """Validate a card's JSON object; every problem is a :class:`ModelCardError` naming ``path``."""
        try:
            return cls(**_normalised(data))
        except (ConfigError, TypeError, ValueError) as exc:
            raise ModelCardError(f"invalid model card ({exc})", path=path,
                                 expected="a card written by distilrank export; re-export the model") from exc


def _normalised(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`ModelCard` from a card of format 1 or 2 (legacy keys mapped)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"the card must be a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"format_version {version!r} is not 1 or {FORMAT_VERSION}")
    raw = dict(data)
    raw["format_version"] = FORMAT_VERSION
    if "max_pairs_per_call" in raw:
        raw.setdefault("pairs_per_call", raw.pop("max_pairs_per_call"))
    caps = raw.get("token_caps")
    if not isinstance(caps, Mapping):
        # format 1 cards with only max_seq_len were gated with no separate query cap
        caps = {"max_seq_len": int(raw.get("max_seq_len") or 512), "max_query_tokens": None}
    raw["token_caps"] = TokenCaps.from_dict(caps)
    raw.pop("max_seq_len", None)
    if raw.get("interpolation") is not None:
        raw["interpolation"] = Interpolation.from_dict(raw["interpolation"])
    if raw.get("runner_up") is not None:
        raw["runner_up"] = RunnerUp.from_dict(raw["runner_up"])
    known = {f.name for f in dataclasses.fields(ModelCard)}
    kwargs = {k: v for k, v in raw.items() if k in known}
    _check_types(kwargs)
    return kwargs


def _check_types(kwargs: Mapping[str, Any]) -> None:
    for name in ("onnx_file", "precision"):
        if not isinstance(kwargs.get(name), str) or not kwargs[name]:
            raise ValueError(f"{name} must be a non-empty string, got {kwargs.get(name)!r}")
    files = kwargs.get("files")
    if not isinstance(files, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ValueError('"files" must map file names to sha256 strings')
    for name in files:
        _check_inside(name)
    if kwargs["onnx_file"] not in files:
        raise ValueError(f"onnx_file {kwargs['onnx_file']!r} is not one of the card's files")
    _check_serving(kwargs.get("pairs_per_call"), kwargs.get("runtime", "onnxruntime"))
    runner_up = kwargs.get("runner_up")
    if runner_up is not None:
        for name in ("recipe", "onnx_file", "precision"):
            if not isinstance(getattr(runner_up, name), str) or not getattr(runner_up, name):
                raise ValueError(f"runner_up.{name} must be a non-empty string, got {getattr(runner_up, name)!r}")
        if runner_up.onnx_file not in files:
            raise ValueError(f"runner_up.onnx_file {runner_up.onnx_file!r} is not one of the card's files")
        _check_serving(runner_up.pairs_per_call, runner_up.runtime, "runner_up.")


def _check_serving(per_call: object, runtime: object, where: str = "") -> None:
    if per_call is not None and (isinstance(per_call, bool) or not isinstance(per_call, int) or per_call < 1):
        raise ValueError(f"{where}pairs_per_call must be a positive integer or null, got {per_call!r}")
    if runtime not in ("onnxruntime", "openvino"):
        raise ValueError(f"{where}runtime must be onnxruntime or openvino, got {runtime!r}")


def _check_inside(name: str) -> None:
    """A file a card names must lie inside the model directory (relative, no '..')."""
    posix = PurePosixPath(name)
    if not name or posix.is_absolute() or ".." in posix.parts or "\\" in name or ":" in name:
        raise ValueError(f"file {name!r} is not a relative path inside the model directory")


def file_hashes(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every regular file under ``model_dir`` except the card itself (relative posix paths)."""
    root = Path(model_dir)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MODEL_CARD and not path.name.startswith("."):
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def write_model_card(model_dir: str | os.PathLike[str], card: ModelCard) -> Path:
    """Write the card last, after every other file is in place, with fresh hashes of all files."""
    root = Path(model_dir)
    full = card.replace(files=file_hashes(root), format_version=FORMAT_VERSION)
    for name in (full.onnx_file, full.runner_up.onnx_file if full.runner_up else full.onnx_file):
        if name not in full.files:
            raise ValueError(f"model card names the model file {name!r}, which is not in {root}")
    return write_json(root / MODEL_CARD, full.to_dict())


def load_model_card(model_dir: str | os.PathLike[str], verify: bool = True) -> ModelCard:
    """Read and validate the card; with ``verify`` check every file's sha256. Raises :class:`ModelCardError`."""
    root = Path(model_dir)
    path = root / MODEL_CARD
    if not path.exists():
        raise MissingPrerequisiteError(f"{root} has no {MODEL_CARD}; export the student first: "
                                       f"distilrank export --model DIR --out {root}")
    if not path.is_file():
        raise ModelCardError(f"{MODEL_CARD} is not a regular file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelCardError(f"cannot read the card ({exc})", path=path) from exc
    card = ModelCard.from_dict(data, path)
    if verify:
        _verify_files(root, card)
    return card


def _verify_files(root: Path, card: ModelCard) -> None:
    for name, digest in card.files.items():
        file = root / name
        if not file.is_file():
            raise ModelCardError(f"file {name} listed in the model card is missing", path=root)
        actual = sha256_file(file)
        if actual != digest:
            raise ModelCardError(
                f"checksum mismatch for {name}: card says {digest[:12]}..., file has {actual[:12]}... "
                "(file modified, truncated or replaced); re-export the model", path=root)


def set_interpolation(model_dir: str | os.PathLike[str], interpolation: Interpolation | None) -> ModelCard:
    """Record the blend to serve in a verified card (the other files are untouched; the card is rewritten
    atomically). Returns the new card."""
    card = load_model_card(model_dir, verify=True).replace(interpolation=interpolation)
    write_model_card(model_dir, card)
    return card
