"""Typed configuration of ``distilrank export``: what to build and the quality gates it must pass.

Every tolerance is a named field so the model card can report the value a result was judged
against. Values are validated at construction and raise :class:`~distill.core.errors.ConfigError`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from distill.core.errors import ConfigError

__all__ = ["RECIPE_NAMES", "ExportConfig", "ExportRuntime", "GateTolerances", "Int8Mode", "Isa", "OptimizeLevel",
           "QuantizeMode"]

logger = logging.getLogger(__name__)

OptimizeLevel = Literal["none", "O1", "O2", "O3"]
QuantizeMode = Literal["none", "int8", "auto"]
Int8Mode = Literal["dynamic", "static"]
Isa = Literal["auto", "amx", "avx512_vnni", "avx512", "avx2", "arm64"]
#: which runtimes' recipes may be served: ONNX Runtime only (the default), OpenVINO only, or the fastest of both
ExportRuntime = Literal["onnxruntime", "openvino", "auto"]

_OPTIMIZE = ("none", "O1", "O2", "O3")
_QUANTIZE = ("none", "int8", "auto")
_INT8_MODES = ("dynamic", "static")
_ISAS = ("auto", "amx", "avx512_vnni", "avx512", "avx2", "arm64")
_RUNTIMES = ("onnxruntime", "openvino", "auto")
#: recipes the per-machine choice (runtime openvino or auto) can serve; ONNX Runtime int8 recipes are named
#: ``onnxruntime-int8-<mode>-<granularity>[-edges_fp32]`` and matched by the ``onnxruntime-int8`` prefix
RECIPE_NAMES = ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")


@dataclass(frozen=True)
class GateTolerances:
    """Thresholds of the export quality gates (all results are reported, pass or fail).

    Scores are raw logits. ``batch_invariance_max_rel_diff`` is measured in units of the standard
    deviation of the fp32 scores over the gate candidates, so it does not depend on the logit scale.
    """

    #: ONNX fp32 (after graph optimisation) vs PyTorch, max |logit difference|; OpenVINO f32 too.
    parity_max_abs_diff: float = 2e-3
    #: OpenVINO bf16 vs PyTorch, max |logit difference| / std(fp32 scores). bf16 keeps 8 significant bits, so its
    #: error grows with the logit scale: it is judged in units of the score spread, like batch invariance. Measured
    #: on MiniLM-L6 with a trained (linear-probe) head, 800 SciFact pairs: max 0.044, p99 0.035 (docs/results.md,
    #: "bf16 parity"); the gate allows about twice that. int8 has no parity gate (its ranking gates judge it).
    parity_bf16_max_rel_diff: float = 0.1
    #: int8 vs fp32 per-query Spearman correlation over each candidate list.
    spearman_median_min: float = 0.95
    spearman_worst_min: float = 0.70
    #: int8 vs fp32 overlap of the top-10 sets (|A & B| / 10), mean over queries.
    top10_overlap_mean_min: float = 0.80
    #: nDCG@10(fp32) - nDCG@10(int8), in points (0.5 = 0.005 absolute); only with eval data.
    ndcg_drop_max_points: float = 0.5
    #: max |score alone - score inside a mixed batch| / std(fp32 scores).
    batch_invariance_max_rel_diff: float = 0.02

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or value != value:
                raise ConfigError(f"gate tolerance {name} must be a number, got {value!r}")
        for name in ("spearman_median_min", "spearman_worst_min", "top10_overlap_mean_min"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"gate tolerance {name} must be in [-1, 1], got {getattr(self, name)}")
        for name in ("parity_max_abs_diff", "parity_bf16_max_rel_diff", "ndcg_drop_max_points",
                     "batch_invariance_max_rel_diff"):
            if getattr(self, name) < 0:
                raise ConfigError(f"gate tolerance {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class ExportConfig:
    """What ``distilrank export`` builds.

    ``quantize="int8"`` tries the requested int8 recipe first and, when ``int8_fallback`` is set,
    the more robust recipes after it (static per-channel, then dynamic per-channel); the first one
    that passes every gate is kept, and if none passes the export fails (exit 5). Dynamic int8 is gated
    and served one pair per ONNX call (its activation scale spans the call, so batch mates would move a
    pair's score); the model card's ``max_pairs_per_call`` tells the ranker so.
    ``quantize="auto"`` does the same but falls back to fp32 instead of failing, and keeps int8 only
    when it is also faster than fp32 on this machine.

    ``runtime="openvino"`` or ``"auto"`` chooses per machine instead: every recipe this machine can run is built,
    gated and timed side by side (ONNX Runtime fp32 and, with ``quantize``, each int8 recipe; OpenVINO f32, bf16
    where the CPU multiplies bf16 natively, and NNCF int8 with ``quantize``), and the fastest that passes every gate
    is kept; ``openvino`` serves an OpenVINO recipe (exit 5 when none passes), ``auto`` either. ``recipes`` narrows
    the recipes that may be served (names from :data:`RECIPE_NAMES`). Where an OpenVINO recipe wins, the fastest
    passing ONNX Runtime recipe ships beside it as the card's runner-up. ``isa`` (auto = this CPU, or
    ``DISTILRANK_ISA``) decides which recipes the machine can run.
    """

    optimize: OptimizeLevel = "O2"
    quantize: QuantizeMode = "none"
    int8_mode: Int8Mode = "dynamic"
    per_channel: bool = True
    isa: Isa = "auto"
    runtime: ExportRuntime = "onnxruntime"
    recipes: tuple[str, ...] | None = None
    #: ONNX operator types to quantise; None = onnxruntime's defaults for the mode.
    op_types: tuple[str, ...] | None = None
    int8_fallback: bool = True
    #: tokens per (query, passage) pair; None = the student's own caps (scoring.json), which training used
    max_seq_len: int | None = None
    #: per-side caps; None = the student's own (scoring.json). The model card records the caps used.
    max_query_tokens: int | None = None
    max_doc_tokens: int | None = None
    #: (query, passage) pairs per ONNX/OpenVINO call in the gates and the latency measurement (a dynamic int8
    #: recipe is scored one pair per call whatever this says)
    pairs_per_call: int = 16
    #: gate candidate lists: at most this many queries x candidates per query.
    gate_queries: int = 30
    gate_candidates: int = 20
    calibration_pairs: int = 128
    latency_reps: int = 10
    seed: int = 0
    gates: GateTolerances = field(default_factory=GateTolerances)

    #: keys this config once had under another name: a config file that still uses one gets an error saying so
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"batch_size": "pairs_per_call"}

    def __post_init__(self) -> None:
        for name, allowed in (("optimize", _OPTIMIZE), ("quantize", _QUANTIZE), ("int8_mode", _INT8_MODES),
                              ("isa", _ISAS), ("runtime", _RUNTIMES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("max_query_tokens", "max_doc_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or unset (the student's caps), got {value!r}")
        if self.max_seq_len is not None and (not isinstance(self.max_seq_len, int) or self.max_seq_len < 8):
            raise ConfigError(f"max_seq_len must be an integer >= 8 or unset (the student's caps), "
                              f"got {self.max_seq_len!r}")
        for name in ("pairs_per_call", "gate_queries", "gate_candidates", "calibration_pairs", "latency_reps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.gate_candidates < 10:
            raise ConfigError(f"gate_candidates must be >= 10 for the top-10 overlap gate, got {self.gate_candidates}")
        if self.max_seq_len is not None and self.max_seq_len > 512:
            raise ConfigError(f"max_seq_len={self.max_seq_len} exceeds BERT's 512 positions")
        if self.op_types is not None and not self.op_types:
            raise ConfigError("op_types must be None (onnxruntime defaults) or a non-empty list of ONNX op types")
        if self.recipes is not None:
            unknown = [r for r in self.recipes if r not in RECIPE_NAMES]
            if unknown or not self.recipes:
                raise ConfigError(f"recipes={list(self.recipes)!r}: choose among {', '.join(RECIPE_NAMES)}")
            if self.runtime == "onnxruntime":
                raise ConfigError("recipes choose among per-machine recipes: set runtime to openvino or auto")
        if not isinstance(self.gates, GateTolerances):
            raise ConfigError(f"gates must be a GateTolerances, got {type(self.gates).__name__}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["op_types"] = list(self.op_types) if self.op_types else None
        out["recipes"] = list(self.recipes) if self.recipes else None
        return out
