"""The exporter's per-machine choice: every recipe this machine can run is built, gated and timed side by side; the
fastest that passes every gate is served, and a runner-up that runs everywhere (ONNX Runtime fp32, or int8 with
unsigned weights) ships beside a winner that does not.

Every recipe is judged against the same references (the PyTorch student and the gated ONNX Runtime fp32 model) on
the same gate lists, with the gates of its precision:

* fp32 (OpenVINO f32): parity with PyTorch within ``parity_max_abs_diff`` logits;
* bf16: parity with PyTorch within ``parity_bf16_max_rel_diff`` of the fp32 score spread;
* every recipe: rank agreement with fp32 (Spearman median and worst, top-10 overlap), batch invariance and, with
  eval data, the nDCG@10 drop: the int8 tolerances, unchanged, for every precision.

Recipes that cannot run here are recorded with the reason (bf16 without native bf16 units, OpenVINO not
installed), never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.cross_encoder import CrossEncoderScorer
from distill.core.errors import GateFailedError, MissingExtraError
from distill.core.isa import MachineIsa
from export._scoring import Scored
from export.config import ExportConfig
from export.gates import (
    GateResult,
    batch_invariance_gate,
    ndcg_gate,
    parity_gate,
    ranking_agreement,
    relative_parity_gate,
)
from export.latency import measure_interleaved
from export.scorers import Pair

logger = logging.getLogger(__name__)


@dataclass
class Trial:
    """One recipe: its files, how it is served, and what the gates and the clock said."""

    name: str
    runtime: str
    precision: str
    model: Path | None = None
    files: list[Path] = field(default_factory=list)
    pairs_per_call: int | None = None
    scorer: CrossEncoderScorer | None = None
    gates: list[GateResult] = field(default_factory=list)
    ndcg: float | None = None
    latency: dict[str, float] | None = None
    quantization: dict[str, Any] | None = None
    skipped: str | None = None
    #: runs with the [serve] extra on any CPU and scores there as it was gated: ONNX Runtime fp32, and ONNX Runtime
    #: int8 with unsigned weights (made for avx2); signed int8 weights can saturate on CPUs without VNNI
    portable: bool = False

    @property
    def passed(self) -> bool:
        return self.skipped is None and bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def tag(self) -> str:
        """Prefix of this recipe's gate names (``openvino_bf16``)."""
        return self.name.replace("-", "_")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runtime": self.runtime, "precision": self.precision, "passed": self.passed,
                               "gates": {g.name: g.to_dict() for g in self.gates}, "ndcg@10": self.ndcg,
                               "latency": self.latency, "pairs_per_call": self.pairs_per_call}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.quantization:
            out["quantization"] = self.quantization
        return out


@dataclass
class Reference:
    """What every recipe is judged against, and how a candidate scorer is scored (the exporter's rule)."""

    cfg: ExportConfig
    torch_scores: np.ndarray
    fp32: Scored
    score_std: float
    score: Callable[[CrossEncoderScorer], Scored]


def gate(trial: Trial, ref: Reference) -> Trial:
    """Score ``trial`` as it will be served and judge it with its precision's gates (see the module docstring)."""
    if trial.scorer is None:
        raise ValueError(f"recipe {trial.name} has no scorer to gate")
    tol = ref.cfg.gates
    scored = ref.score(trial.scorer)
    flat = np.concatenate(scored.per_query)
    results: list[GateResult] = []
    if trial.precision == "fp32":
        results.append(parity_gate(ref.torch_scores, flat, tol.parity_max_abs_diff, f"{trial.tag}_vs_pytorch"))
    elif trial.precision == "bf16":
        results.append(relative_parity_gate(ref.torch_scores, flat, ref.score_std, tol.parity_bf16_max_rel_diff,
                                            f"{trial.tag}_vs_pytorch"))
    results += ranking_agreement(ref.fp32.per_query, scored.per_query, tol.spearman_median_min, tol.spearman_worst_min,
                                 tol.top10_overlap_mean_min, prefix=trial.tag)
    results.append(batch_invariance_gate(scored.alone, scored.batched, ref.score_std, tol.batch_invariance_max_rel_diff,
                                         f"{trial.tag}_batch_invariance"))
    if scored.ndcg is not None and ref.fp32.ndcg is not None:
        results.append(ndcg_gate(ref.fp32.ndcg, scored.ndcg, tol.ndcg_drop_max_points, prefix=trial.tag))
    trial.gates, trial.ndcg = results, scored.ndcg
    if not trial.passed:
        logger.warning("recipe %s failed: %s", trial.name, "; ".join(g.describe() for g in results if not g.passed))
    return trial


def openvino_trials(raw_onnx: Path, work: Path, machine: MachineIsa, quantize: str,
                    calibration: Callable[[], list[dict[str, np.ndarray]]],
                    calibration_source: str | None = None) -> list[Trial]:
    """The OpenVINO recipes, built (not yet gated): f32 and bf16 share one IR; int8 (NNCF) when ``quantize``,
    calibrated on ``calibration()`` (its source, as the card records it: ``calibration_source``)."""
    from export._openvino import IR_F32, IR_INT8, convert_to_ir, ir_files, quantize_openvino_int8

    ir = convert_to_ir(raw_onnx, work / "openvino", IR_F32)
    trials = [Trial("openvino-fp32", "openvino", "fp32", ir, ir_files(ir)),
              Trial("openvino-bf16", "openvino", "bf16", ir, ir_files(ir))]
    if not machine.bf16:
        trials[1].skipped = (f"this machine ({machine.isa}, {machine.source}) has no native bf16 (AMX or "
                             "AVX512-BF16): OpenVINO would emulate it")
    if quantize != "none":
        try:
            int8 = quantize_openvino_int8(ir, work / "openvino_int8", calibration(), IR_INT8)
        except MissingExtraError as exc:  # NNCF missing: the f32 and bf16 recipes stand
            trials.append(Trial("openvino-int8", "openvino", "int8", skipped=str(exc)))
            return trials
        trials.append(Trial("openvino-int8", "openvino", "int8", int8, ir_files(int8),
                            quantization={"tool": "nncf", "mode": "static", "preset": "transformer",
                                          "calibration": calibration_source}))
    return trials


def _servable(trial: Trial, cfg: ExportConfig) -> bool:
    """May ``trial`` be the served recipe under ``cfg`` (runtime, quantize and recipes settings)?"""
    if cfg.runtime == "openvino" and trial.runtime != "openvino":
        return False
    if cfg.quantize == "int8" and trial.precision != "int8":
        return False
    if cfg.recipes is not None:
        return any(trial.name == r or trial.name.startswith(r + "-") for r in cfg.recipes)
    return True


def _p50(trial: Trial) -> float:
    return (trial.latency or {}).get("p50_ms", float("inf"))


def choose(trials: Sequence[Trial], cfg: ExportConfig, pairs: Sequence[Pair]) -> tuple[Trial, Trial | None, str]:
    """Time every passing recipe side by side; return (served, runner-up, decision). The runner-up is the fastest
    passing portable recipe (:attr:`Trial.portable`), None when the served recipe is portable itself. Raises
    GateFailedError when no recipe that ``cfg`` allows to serve passed."""
    passed = [t for t in trials if t.passed]
    timings = measure_interleaved({t.name: t.scorer for t in passed if t.scorer is not None}, pairs, cfg.latency_reps)
    for t in passed:
        t.latency = timings.get(t.name)
    servable = sorted((t for t in passed if _servable(t, cfg)), key=_p50)
    if not servable:
        failed = "; ".join(f"{t.name}: {t.skipped or 'failed ' + ', '.join(g.name for g in t.gates if not g.passed)}"
                           for t in trials if _servable(t, cfg) and not t.passed) or "none was built"
        raise GateFailedError(f"no recipe allowed by runtime={cfg.runtime}, quantize={cfg.quantize}, "
                              f"recipes={cfg.recipes} passed the gates ({failed})")
    served = servable[0]
    runner_up = None
    if not served.portable:
        runner_up = min((t for t in passed if t.portable), key=_p50)
    speeds = ", ".join(f"{t.name} {_p50(t):.1f}" for t in sorted(passed, key=_p50))
    decision = (f"{served.name}: fastest recipe that passed every gate (p50 ms, 1 query x {len(pairs)} passages: "
                f"{speeds})" + (f"; runner-up {runner_up.name}" if runner_up else ""))
    not_passed = [t.name + (" (skipped)" if t.skipped else " (failed)") for t in trials if not t.passed]
    if not_passed:
        decision += "; not served: " + ", ".join(not_passed)
    return served, runner_up, decision
