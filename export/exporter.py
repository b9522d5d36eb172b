"""``export_model``: student dir -> gated ONNX or OpenVINO artifact with a verified model card.

Pipeline: Optimum export (fp32) -> ORTOptimizer (O1/O2/O3) -> optional int8 (onnxruntime
dynamic or calibrated static) -> gates on real (query, candidates) lists -> artifact built in a
temporary directory and renamed into place only when every gate passed (nothing half-written).

With ``runtime`` openvino or auto the recipe is chosen per machine (:mod:`export._recipes`): ONNX Runtime and
OpenVINO recipes (f32, bf16, int8) are all gated and timed side by side, the fastest that passes is served, and an
ONNX Runtime runner-up ships beside an OpenVINO winner for machines that cannot run it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.core.atomic_io import atomic_dir, config_hash, sha256_file, write_json
from distill.core.base_models import student_base_name
from distill.core.cross_encoder import CrossEncoderScorer, TokenCaps
from distill.core.errors import ConfigError, GateFailedError, MissingPrerequisiteError
from distill.core.interpolation import Interpolation
from distill.core.isa import MachineIsa
from distill.core.model_card import ModelCard, RunnerUp, load_model_card, write_model_card
from export._candidates import CandidateLists, demo_candidates, eval_candidates
from export._isa import resolve_machine
from export._recipes import Reference, Trial, choose, gate, openvino_trials
from export._scoring import Scored as _Scored
from export._scoring import mixed_batch as _mixed_batch
from export._scoring import ndcg as _ndcg  # noqa: F401 - tests import it from here
from export._scoring import score_all as _score_all
from export._scoring import score_lists as _score_lists
from export.config import ExportConfig
from export.gates import (
    GateResult,
    batch_invariance_gate,
    ndcg_gate,
    parity_gate,
    raise_if_failed,
    ranking_agreement,
)
from export.latency import measure_latency
from export.scorers import Pair, export_caps, onnx_scorer, openvino_scorer, torch_scorer

__all__ = ["EvalData", "Int8Recipe", "calibration_batches", "calibration_pairs", "export_model"]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class EvalData:
    """Judged eval set: the run's candidates are reranked to compute nDCG@10 (fp32 vs int8)."""

    queries: Path
    qrels: Path
    run: Path
    corpus: Path

    def __post_init__(self) -> None:
        for name in ("queries", "qrels", "run", "corpus"):
            path = Path(getattr(self, name))
            if not path.is_file():
                raise MissingPrerequisiteError(f"--eval-{name} file {path} does not exist")


#: the keep-edges int8 recipe needs this many encoder layers (L6: 4 layers' linear MatMuls stay int8)
MIN_LAYERS_KEEP_EDGES = 4


@dataclass(frozen=True)
class Int8Recipe:
    mode: str
    per_channel: bool
    #: static only: leave the first/last encoder layer and the attention-score products in fp32
    keep_edges: bool = False

    @property
    def name(self) -> str:
        return (f"{self.mode}-{'per_channel' if self.per_channel else 'per_tensor'}"
                + ("-edges_fp32" if self.keep_edges else ""))

    @property
    def pairs_per_call(self) -> int | None:
        """At most this many pairs per ONNX call (None = any). Dynamic int8 quantises each call's
        activations with one scale over the whole call, padding included, so in a batch a pair's score
        would depend on its batch mates (measured: 12-22% of the score spread). Scored one pair per
        call it is batch-invariant by construction, and on a CPU one unpadded pair per call costs
        about what a length-bucketed batch does."""
        return 1 if self.mode == "dynamic" else None

    def pairs_per_call_or(self, default: int) -> int:
        """Pairs per ONNX call to gate and serve this recipe with: ``default``, capped by :attr:`pairs_per_call`."""
        return min(default, self.pairs_per_call or default)


def _recipes(cfg: ExportConfig) -> list[Int8Recipe]:
    first = Int8Recipe(cfg.int8_mode, cfg.per_channel)
    if not cfg.int8_fallback:
        return [first]
    out = [first]
    for r in (Int8Recipe("static", True), Int8Recipe("static", True, keep_edges=True), Int8Recipe("dynamic", True)):
        if r not in out:
            out.append(r)
    return out


def _check_student(model_dir: Path) -> dict[str, Any]:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise MissingPrerequisiteError(f"{model_dir} is not a Hugging Face model dir (no config.json); "
                                       "pass a trained student directory (distilrank student train --out DIR)")
    hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    n_labels = len(hf.get("id2label") or {}) or hf.get("num_labels", 2)
    if n_labels != 1:
        raise ConfigError(f"{cfg_path}: the student must be a 1-label cross-encoder (num_labels=1), found {n_labels}")
    if not any((model_dir / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
        raise MissingPrerequisiteError(f"{model_dir} has no tokenizer files; save the tokenizer with the student")
    return hf


def _provenance(model_dir: Path, hf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base_models, training) fields of the card, from the student's manifest when it has one."""
    manifest: dict[str, Any] = {}
    for cand in (model_dir / "manifest.json", model_dir.parent / "manifest.json"):
        if cand.is_file():
            try:
                manifest = json.loads(cand.read_text(encoding="utf-8"))
                manifest["_path"] = str(cand)
                break
            except json.JSONDecodeError:
                logger.warning("ignoring unreadable student manifest %s", cand)
    # the student's manifest (or the pipeline's, which keeps it as stage_record) names the resolved base
    student_base = manifest.get("base_model") or (manifest.get("stage_record") or {}).get("base_model")
    train_cfg_path = Path(manifest["_path"]).parent / "config.json" if manifest else None
    if not student_base and train_cfg_path is not None and train_cfg_path.is_file():
        # `distilrank student train` writes its resolved config (model.base = "default" or a local dir)
        # beside the manifest
        try:
            spec = (json.loads(train_cfg_path.read_text(encoding="utf-8")).get("model") or {}).get("base")
        except (json.JSONDecodeError, AttributeError):
            spec = None
        if spec:
            student_base = student_base_name(spec)
    base = {"student_dir": str(model_dir), "student_base": student_base or hf.get("_name_or_path") or None,
            "architecture": (hf.get("architectures") or [None])[0], "num_hidden_layers": hf.get("num_hidden_layers")}
    if "teacher" in manifest:
        base["teacher"] = manifest["teacher"]
    training = {"model_config_sha256": sha256_file(model_dir / "config.json")}
    if manifest:
        training.update({"manifest": manifest["_path"], "manifest_sha256": sha256_file(manifest["_path"]),
                         "config_hash": manifest.get("config_hash"), "inputs": manifest.get("inputs"),
                         "metrics": manifest.get("metrics")})
    else:
        logger.warning("%s has no manifest.json: the model card cannot name the training data", model_dir)
    return base, training


def calibration_pairs(lists: Mapping[str, Sequence[Pair]], n: int) -> list[Pair]:
    """``n`` pairs spread over as many queries as possible: round-robin over the queries (``lists[qid]`` is one
    query's pairs in first-stage order), taking each list's candidates alternately from the top and the bottom,
    so the activation ranges calibrated cover many queries and both relevant and irrelevant passages (not the
    first few queries' lists)."""
    per_query = []
    for qid in sorted(lists):
        pairs = list(lists[qid])
        order = [i for k in range((len(pairs) + 1) // 2) for i in dict.fromkeys((k, len(pairs) - 1 - k))]
        per_query.append([pairs[i] for i in order])
    out: list[Pair] = []
    depth = 0
    while len(out) < n and any(depth < len(p) for p in per_query):
        out.extend(p[depth] for p in per_query if depth < len(p))
        depth += 1
    return out[:n]


def calibration_batches(scorer: CrossEncoderScorer, pairs: Sequence[Pair],
                        pairs_per_call: int = 8) -> list[dict[str, np.ndarray]]:
    """The calibration pairs tokenised as the scorer tokenises them (its token caps), ``pairs_per_call`` pairs per
    calibration call."""
    enc = scorer.encoder
    return [enc.batch([q for q, _ in pairs[i:i + pairs_per_call]], [d for _, d in pairs[i:i + pairs_per_call]])
            for i in range(0, len(pairs), pairs_per_call)]


@dataclass
class _Context:
    """One export in progress: its inputs, the gate data and the fp32 references every recipe is judged against."""

    cfg: ExportConfig
    model_dir: Path
    hf: dict[str, Any]
    caps: TokenCaps
    machine: MachineIsa
    gate_lists: CandidateLists
    mixed: list[Pair]
    ndcg_lists: CandidateLists | None
    work: Path
    calibration: CandidateLists | None = None
    raw_path: Path = Path()
    fp32_path: Path = Path()
    fp32_scorer: CrossEncoderScorer | None = None
    fp32: _Scored | None = None
    torch_scores: np.ndarray | None = None
    score_std: float = 0.0
    latency_pairs: list[Pair] = field(default_factory=list)

    @property
    def isa(self) -> str:
        return self.machine.isa

    def score(self, scorer: CrossEncoderScorer) -> _Scored:
        return _score_all(scorer, self.gate_lists, self.mixed, self.ndcg_lists, self.cfg)


@dataclass
class _Plan:
    """What the export ships: the served recipe, its runner-up, and the evidence for the card."""

    served: Trial
    runner_up: Trial | None
    decision: str
    gates: dict[str, GateResult]
    latency: dict[str, Any]
    metrics: dict[str, Any]
    int8_trials: dict[str, Any] = field(default_factory=dict)
    recipe_trials: dict[str, Any] = field(default_factory=dict)
    calibration: str | None = None


def _gate_lists(cfg: ExportConfig, eval_data: EvalData | None,
                candidates: CandidateLists | None) -> tuple[CandidateLists, CandidateLists | None]:
    """(gate lists, nDCG lists): the eval run's candidates when given, else the bundled demo's."""
    ndcg_lists = None
    if eval_data is not None:
        ev = eval_candidates(eval_data.queries, eval_data.qrels, eval_data.run, eval_data.corpus)
        ndcg_lists = ev.subset(10**9, cfg.gate_candidates)
        gate_lists = candidates or ev.subset(cfg.gate_queries, cfg.gate_candidates)
    else:
        demo = demo_candidates("test", cfg.gate_candidates)
        gate_lists = candidates or demo.subset(cfg.gate_queries, cfg.gate_candidates)
    if any(len(v) < 10 for v in gate_lists.run.values()):
        raise ConfigError(f"gate candidate lists need >= 10 candidates per query ({gate_lists.source})")
    return gate_lists, ndcg_lists


def export_model(model_dir: str | Path, out_dir: str | Path, config: ExportConfig | None = None,
                 eval_data: EvalData | None = None, candidates: CandidateLists | None = None,
                 interpolation: Interpolation | None = None, calibration: CandidateLists | None = None) -> Path:
    """Export, gate and write the artifact at ``out_dir``; returns its path.

    ``interpolation`` is recorded in the model card as the blend to serve (the pipeline tunes it on the
    served model's own scores and records it with :func:`~distill.core.model_card.set_interpolation`).

    Raises :class:`~distill.core.errors.GateFailedError` (nothing written) when a gate fails.
    ``candidates`` overrides the gate lists (default: the eval run, else bundled scifact_mini BM25).
    ``calibration``: the (query, candidates) lists the static int8 recipes calibrate their activation ranges on;
    pass lists from the collection the model will serve, disjoint from the gate's queries (default: bundled
    scifact_mini train BM25, which suits SciFact-like text only).
    """
    cfg = config or ExportConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise MissingPrerequisiteError(f"student dir {model_dir} does not exist")
    hf = _check_student(model_dir)
    caps = export_caps(model_dir, cfg.max_seq_len, cfg.max_query_tokens, cfg.max_doc_tokens)
    machine = resolve_machine(cfg.isa)
    if cfg.recipes and all(r == "openvino-bf16" for r in cfg.recipes) and not machine.bf16:
        raise ConfigError(f"recipes={list(cfg.recipes)}: this machine ({machine.isa}, from {machine.source}) has no "
                          "native bf16 (AMX or AVX512-BF16); allow another recipe or export on such a machine")
    t_start = time.perf_counter()
    gate_lists, ndcg_lists = _gate_lists(cfg, eval_data, candidates)
    logger.info("gates on %d queries x <=%d candidates from %s (isa=%s, bf16=%s)", len(gate_lists.run),
                cfg.gate_candidates, gate_lists.source, machine.isa, machine.bf16)
    work_parent = out_dir.parent if out_dir.parent.exists() else None
    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=work_parent) as tmp:
        ctx = _Context(cfg, model_dir, hf, caps, machine, gate_lists, _mixed_batch(gate_lists), ndcg_lists, Path(tmp),
                       calibration)
        fp32_gates, fp32_latency = _gate_fp32(ctx)
        plan = _onnxruntime_plan(ctx, fp32_gates, fp32_latency) if cfg.runtime == "onnxruntime" else \
            _per_machine_plan(ctx, fp32_gates, fp32_latency)
        logger.info("decision: %s", plan.decision)
        card = _card(ctx, plan, interpolation)
        _write_artifact(ctx, plan, card, out_dir, t_start)
    logger.info("exported %s (%s) to %s", plan.served.name, plan.served.precision, out_dir)
    return out_dir


def _gate_fp32(ctx: _Context) -> tuple[dict[str, GateResult], dict[str, float]]:
    """Export and optimise the ONNX fp32 model, gate it against PyTorch (must pass), time it."""
    cfg, tol = ctx.cfg, ctx.cfg.gates
    ctx.fp32_path = ctx.raw_path = _onnx_export(ctx.model_dir, ctx.work)
    if cfg.optimize != "none":
        from export._onnx import optimize
        ctx.fp32_path = optimize(ctx.raw_path.parent, cfg.optimize, ctx.work / "optimized")
    reference = torch_scorer(ctx.model_dir, ctx.caps, cfg.pairs_per_call)
    ctx.torch_scores = np.concatenate(_score_lists(reference, ctx.gate_lists))
    ctx.fp32_scorer = onnx_scorer(ctx.fp32_path, ctx.model_dir, ctx.caps, cfg.pairs_per_call)
    fp32 = ctx.fp32 = ctx.score(ctx.fp32_scorer)
    ctx.score_std = float(np.concatenate(fp32.per_query).std())
    gates: dict[str, GateResult] = {}
    for g in (parity_gate(ctx.torch_scores, np.concatenate(fp32.per_query), tol.parity_max_abs_diff),
              batch_invariance_gate(fp32.alone, fp32.batched, ctx.score_std, tol.batch_invariance_max_rel_diff,
                                    "fp32_batch_invariance")):
        gates[g.name] = g
    raise_if_failed(gates, f"fp32 ONNX export ({cfg.optimize})")
    ctx.latency_pairs = ctx.gate_lists.pairs(next(iter(ctx.gate_lists.run)))[1]
    return gates, measure_latency(ctx.fp32_scorer, ctx.latency_pairs, cfg.pairs_per_call, cfg.latency_reps)


def _fp32_trial(ctx: _Context, gates: Mapping[str, GateResult]) -> Trial:
    return Trial("onnxruntime-fp32", "onnxruntime", "fp32", ctx.fp32_path, [ctx.fp32_path], None, ctx.fp32_scorer,
                 list(gates.values()), ctx.fp32.ndcg if ctx.fp32 else None, portable=True)


def _int8_trial(ctx: _Context, recipe: Int8Recipe, calib_lists: CandidateLists) -> Trial | None:
    """One ONNX Runtime int8 recipe, built and gated (None when the student is too shallow for it)."""
    if recipe.keep_edges and (ctx.hf.get("num_hidden_layers") or 0) < MIN_LAYERS_KEEP_EDGES:
        # with the first and last layer in fp32 too little would be int8 to be worth a recipe
        logger.info("int8 %s skipped: %s encoder layers (< %d)", recipe.name, ctx.hf.get("num_hidden_layers"),
                    MIN_LAYERS_KEEP_EDGES)
        return None
    assert ctx.fp32 is not None and ctx.fp32_scorer is not None  # set by _gate_fp32
    path, results, ndcg = _try_int8(recipe, ctx.fp32_path, ctx.raw_path, ctx.work, ctx.isa, ctx.cfg, ctx.fp32,
                                    ctx.score_std, ctx.fp32_scorer, calib_lists, ctx.gate_lists, ctx.mixed,
                                    ctx.ndcg_lists, ctx.model_dir, ctx.caps)
    # unsigned int8 weights (the avx2 recipe) score alike on every CPU; signed ones can saturate without VNNI
    trial = Trial(f"onnxruntime-int8-{recipe.name}", "onnxruntime", "int8", path, [path], recipe.pairs_per_call,
                  gates=results, ndcg=ndcg, quantization=_quantization(recipe, ctx.cfg, calib_lists),
                  portable=ctx.isa == "avx2")
    if not trial.passed:
        logger.warning("int8 %s failed: %s", recipe.name, "; ".join(r.describe() for r in results if not r.passed))
    return trial


def _quantization(recipe: Int8Recipe, cfg: ExportConfig, calib_lists: CandidateLists) -> dict[str, Any]:
    return {"recipe": recipe.name, "mode": recipe.mode, "per_channel": recipe.per_channel,
            "op_types": list(cfg.op_types) if cfg.op_types else "onnxruntime defaults",
            "calibration": calib_lists.source if recipe.mode == "static" else None}


def _calibration_lists(ctx: _Context) -> CandidateLists:
    """The static int8 recipes' calibration lists: the caller's (pairs from the data the model will serve), else
    the bundled scifact_mini train BM25 lists."""
    return ctx.calibration or demo_candidates("train", ctx.cfg.gate_candidates)


def _onnxruntime_plan(ctx: _Context, gates: dict[str, GateResult], fp32_latency: dict[str, float]) -> _Plan:
    """ONNX Runtime only: fp32, or the first int8 recipe of the fallback chain that passes (``quantize``)."""
    cfg = ctx.cfg
    served = _fp32_trial(ctx, gates)
    plan = _Plan(served, None, "fp32 (no quantisation requested)", dict(gates), {"fp32": fp32_latency},
                 {"score_std_fp32": ctx.score_std})
    if ctx.fp32 is not None and ctx.fp32.ndcg is not None:
        plan.metrics["ndcg@10_fp32"] = ctx.fp32.ndcg
    if cfg.quantize == "none":
        return plan
    calib_lists = _calibration_lists(ctx)
    chosen: Trial | None = None
    for recipe in _recipes(cfg):
        trial = _int8_trial(ctx, recipe, calib_lists)
        if trial is None:
            continue
        plan.int8_trials[recipe.name] = {"gates": {r.name: r.to_dict() for r in trial.gates}, "ndcg@10": trial.ndcg,
                                         "passed": trial.passed}
        if trial.passed:
            chosen = trial
            break
    if chosen is None:
        msg = " | ".join(f"{name}: " + "; ".join(GateResult(**g).describe() for g in t["gates"].values()
                                                if not g["passed"]) for name, t in plan.int8_trials.items())
        if cfg.quantize == "int8":
            raise GateFailedError(f"int8 refused, no quantisation recipe passed the gates -> {msg}")
        plan.decision = f"fp32: no int8 recipe passed the gates ({msg})"
        return plan
    return _prefer_int8(ctx, plan, chosen, fp32_latency)


def _prefer_int8(ctx: _Context, plan: _Plan, chosen: Trial, fp32_latency: dict[str, float]) -> _Plan:
    """Serve the passing int8 recipe when int8 was required or it is faster than fp32."""
    cfg = ctx.cfg
    chosen.scorer = onnx_scorer(chosen.model, ctx.model_dir, ctx.caps,  # type: ignore[arg-type]
                                min(chosen.pairs_per_call or cfg.pairs_per_call, cfg.pairs_per_call))
    plan.latency["int8"] = measure_latency(chosen.scorer, ctx.latency_pairs, chosen.scorer.pairs_per_call,
                                           cfg.latency_reps)
    plan.gates.update({r.name: r for r in chosen.gates})
    if chosen.ndcg is not None:
        plan.metrics["ndcg@10_int8"] = chosen.ndcg
    name = chosen.quantization["recipe"] if chosen.quantization else chosen.name
    faster = plan.latency["int8"]["p50_ms"] < fp32_latency["p50_ms"]
    speed = (f"int8 p50 {plan.latency['int8']['p50_ms']:.1f} ms vs fp32 p50 {fp32_latency['p50_ms']:.1f} ms "
             f"(1 query x {len(ctx.latency_pairs)} passages)")
    if cfg.quantize == "int8" or faster:
        plan.served, plan.calibration = chosen, (chosen.quantization or {}).get("calibration")
        plan.decision = f"int8 {name} ({ctx.isa}): gates passed; {speed}"
    else:
        plan.decision = f"fp32: int8 {name} passed the gates but was not faster; {speed}"
    return plan


def _per_machine_plan(ctx: _Context, gates: dict[str, GateResult], fp32_latency: dict[str, float]) -> _Plan:
    """Every recipe this machine can run, gated and timed side by side; the fastest that passes is served."""
    cfg = ctx.cfg
    assert ctx.fp32 is not None and ctx.torch_scores is not None  # set by _gate_fp32
    ref = Reference(cfg, ctx.torch_scores, ctx.fp32, ctx.score_std, ctx.score)
    trials = [_fp32_trial(ctx, gates)]
    calib_lists = _calibration_lists(ctx) if cfg.quantize != "none" else None
    if calib_lists is not None and cfg.runtime == "auto":
        trials += [t for r in _recipes(cfg) if (t := _int8_trial(ctx, r, calib_lists)) is not None]
        for t in trials[1:]:
            if t.passed:
                t.scorer = onnx_scorer(t.model, ctx.model_dir, ctx.caps,  # type: ignore[arg-type]
                                       t.pairs_per_call or cfg.pairs_per_call)
    trials += _openvino_recipes(ctx, ref, calib_lists)
    served, runner_up, decision = choose(trials, cfg, ctx.latency_pairs)
    plan = _Plan(served, runner_up, f"{decision} ({ctx.isa}, bf16 {'yes' if ctx.machine.bf16 else 'no'})",
                 dict(gates), {"fp32": fp32_latency, **{t.name: t.latency for t in trials if t.latency}},
                 {"score_std_fp32": ctx.score_std}, recipe_trials={t.name: t.to_dict() for t in trials})
    if ctx.fp32.ndcg is not None:
        plan.metrics["ndcg@10_fp32"] = ctx.fp32.ndcg
    if served.ndcg is not None:
        plan.metrics[f"ndcg@10_{served.tag}"] = served.ndcg
    if served is not trials[0]:
        plan.gates.update({g.name: g for g in served.gates})
    plan.calibration = (served.quantization or {}).get("calibration") or (calib_lists.source if calib_lists and
                                                                         served.precision == "int8" else None)
    return plan


def _openvino_recipes(ctx: _Context, ref: Reference, calib_lists: CandidateLists | None) -> list[Trial]:
    """The OpenVINO recipes, built and gated; recorded as skipped where openvino is not installed (runtime auto)."""
    from distill.core.errors import MissingExtraError

    def calibration() -> list[dict[str, np.ndarray]]:
        assert calib_lists is not None and ctx.fp32_scorer is not None
        return calibration_batches(ctx.fp32_scorer, calibration_pairs(calib_lists.pairs_by_query(),
                                                                      ctx.cfg.calibration_pairs))

    try:
        trials = openvino_trials(ctx.raw_path, ctx.work, ctx.machine, ctx.cfg.quantize, calibration,
                                 calib_lists.source if calib_lists is not None else None)
    except MissingExtraError as exc:
        if ctx.cfg.runtime == "openvino":
            raise
        logger.warning("OpenVINO recipes skipped: %s", exc)
        return [Trial(name, "openvino", name.rsplit("-", 1)[1], skipped=str(exc))
                for name in ("openvino-fp32", "openvino-bf16", "openvino-int8")]
    for trial in trials:
        if trial.skipped:
            logger.info("recipe %s skipped: %s", trial.name, trial.skipped)
            continue
        trial.scorer = openvino_scorer(trial.model, ctx.model_dir, ctx.caps, trial.precision,  # type: ignore[arg-type]
                                       ctx.cfg.pairs_per_call)
        gate(trial, ref)
    return trials


def _card(ctx: _Context, plan: _Plan, interpolation: Interpolation | None) -> ModelCard:
    """The card of ``plan`` (file names filled in by :func:`_write_artifact`)."""
    cfg, served = ctx.cfg, plan.served
    base_models, training = _provenance(ctx.model_dir, ctx.hf)
    quant = dict(served.quantization) if served.quantization else None
    if quant is not None and plan.calibration:
        quant["calibration"] = plan.calibration
    return ModelCard(
        onnx_file="", precision=served.precision, token_caps=ctx.caps, layers=ctx.hf.get("num_hidden_layers"),
        runtime=served.runtime,  # type: ignore[arg-type]
        isa=ctx.isa, optimization=cfg.optimize,
        # the ranker never puts more pairs in one inference call (None = any number)
        pairs_per_call=served.pairs_per_call, quantization=quant,
        interpolation=interpolation, base_models=base_models, training=training,
        config_hash=config_hash(cfg.to_dict()), export_config=cfg.to_dict(), gate_data=ctx.gate_lists.source,
        metrics=plan.metrics, gates={n: g.to_dict() for n, g in plan.gates.items()}, int8_trials=plan.int8_trials,
        latency={"unit": "ms, 1 query x N passages, tokenisation included, length-bucketed batches",
                 "pairs_per_call": cfg.pairs_per_call, **plan.latency},
        decision=plan.decision, recipe=served.name, recipe_trials=plan.recipe_trials)


def _shipped_name(trial: Trial, path: Path) -> str:
    """The file's name in the artifact (ONNX Runtime int8: ``model_quantized.onnx``, as Optimum names it)."""
    if trial.runtime == "onnxruntime" and trial.precision == "int8":
        return "model_quantized.onnx"
    return path.name


def _write_readme(stage: Path, name: str, card: ModelCard) -> None:
    """The Hugging Face-style README.md of the export, for people and the Hub (the model card stays the contract)."""
    from distill.core.readme_card import ReadmeCard, write_readme

    metrics = {k: float(v) for k, v in card.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    base = card.base_models or {}
    write_readme(stage, ReadmeCard(
        name=name, kind="export", architecture=str(base.get("architecture") or "BERT cross-encoder"),
        num_layers=card.layers, base={k: v for k, v in base.items() if isinstance(v, str | int | float)},
        metrics=metrics, caps=card.token_caps.to_dict(),
        notes=(f"Served recipe: {card.recipe or card.precision} ({card.runtime}); {card.decision}",
               "model_card.json holds the checksums, gates and latency that distilrank serve verifies and reports.")))


def _write_artifact(ctx: _Context, plan: _Plan, card: ModelCard, out_dir: Path, t_start: float) -> None:
    """Stage the served (and runner-up) files, the tokenizer and the card; check that the staged files reproduce the
    gated scores; rename into place."""
    from transformers import AutoTokenizer

    served, runner_up = plan.served, plan.runner_up
    assert served.model is not None
    with atomic_dir(out_dir) as stage:
        for trial in (served, runner_up):
            for path in trial.files if trial else ():
                shutil.copy2(path, stage / _shipped_name(trial, path))
        shutil.copy2(ctx.raw_path.parent / "config.json", stage / "config.json")
        AutoTokenizer.from_pretrained(str(ctx.model_dir)).save_pretrained(str(stage))
        card = card.replace(onnx_file=_shipped_name(served, served.model),
                            export_wall_time_s=round(time.perf_counter() - t_start, 2))
        if runner_up is not None and runner_up.model is not None:
            card = card.replace(runner_up=RunnerUp(runner_up.name, _shipped_name(runner_up, runner_up.model),
                                                   runner_up.precision, runner_up.runtime,  # type: ignore[arg-type]
                                                   runner_up.pairs_per_call))
        write_json(stage / "provenance" / "export_config.json", ctx.cfg.to_dict())
        _write_readme(stage, out_dir.name, card)
        write_model_card(stage, card)
        load_model_card(stage, verify=True)
        pairs = ctx.latency_pairs[:4]
        for trial in (served, runner_up):
            if trial is not None and trial.model is not None:
                per_call = trial.pairs_per_call or 4
                expected = _trial_scorer(ctx, trial, trial.model, ctx.model_dir, per_call).score_pairs(pairs)
                staged = _trial_scorer(ctx, trial, stage / _shipped_name(trial, trial.model), stage, per_call)
                _self_check(trial.name, staged.score_pairs(pairs), expected)


def _trial_scorer(ctx: _Context, trial: Trial, model: Path, tokenizer_dir: Path, per_call: int) -> CrossEncoderScorer:
    if trial.runtime == "openvino":
        return openvino_scorer(model, tokenizer_dir, ctx.caps, trial.precision, per_call)
    return onnx_scorer(model, tokenizer_dir, ctx.caps, per_call)


def _onnx_export(model_dir: Path, work: Path) -> Path:
    from export._onnx import export_fp32

    return export_fp32(model_dir, work / "fp32")


def _try_int8(recipe: Int8Recipe, fp32_path: Path, raw_path: Path, work: Path, isa: str, cfg: ExportConfig,
              fp32: _Scored, score_std: float, fp32_scorer: CrossEncoderScorer, calib_lists: CandidateLists,
              gate_lists: CandidateLists, mixed: list[Pair], ndcg_lists: CandidateLists | None, model_dir: Path,
              caps: TokenCaps) -> tuple[Path, list[GateResult], float | None]:
    from export._onnx import quantize_dynamic_int8, quantize_static_int8, sensitive_nodes

    dst = work / f"int8_{recipe.name}.onnx"
    if recipe.mode == "static":
        # Static QDQ needs onnx shape inference, which does not know the fused contrib ops of an
        # optimised graph (bias quantisation then fails); quantise the plain export instead and let
        # onnxruntime fuse the QDQ pattern at session creation.
        quantize_static_int8(raw_path, dst, isa, recipe.per_channel, cfg.op_types or ("MatMul",),
                             calibration_batches(fp32_scorer, calibration_pairs(calib_lists.pairs_by_query(),
                                                                                cfg.calibration_pairs)),
                             exclude=sensitive_nodes(raw_path) if recipe.keep_edges else ())
    else:
        quantize_dynamic_int8(fp32_path, dst, isa, recipe.per_channel, cfg.op_types)
    scorer = onnx_scorer(dst, model_dir, caps, recipe.pairs_per_call_or(cfg.pairs_per_call))
    scored = _score_all(scorer, gate_lists, mixed, ndcg_lists, cfg)
    tol = cfg.gates
    results = ranking_agreement(fp32.per_query, scored.per_query, tol.spearman_median_min, tol.spearman_worst_min,
                                tol.top10_overlap_mean_min)
    results.append(batch_invariance_gate(scored.alone, scored.batched, score_std, tol.batch_invariance_max_rel_diff,
                                         "int8_batch_invariance"))
    if scored.ndcg is not None and fp32.ndcg is not None:
        results.append(ndcg_gate(fp32.ndcg, scored.ndcg, tol.ndcg_drop_max_points))
    return dst, results, scored.ndcg


def _self_check(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """The staged artifact's files reproduce the gated scores of recipe ``name``."""
    if not np.allclose(got, expected, atol=1e-5):
        raise GateFailedError(f"artifact self-check: staged {name} scores differ from the gated model by "
                              f"{float(np.abs(got - expected).max()):.3g}")
