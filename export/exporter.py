"""``export_model``: student dir -> gated ONNX artifact with a verified model card.

Pipeline: Optimum export (fp32) -> ORTOptimizer (O1/O2/O3) -> optional int8 (onnxruntime
dynamic or calibrated static) -> gates on real (query, candidates) lists -> artifact built in a
temporary directory and renamed into place only when every gate passed (nothing half-written).
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
from distill.core.model_card import ModelCard, load_model_card, write_model_card
from export._candidates import CandidateLists, demo_candidates, eval_candidates
from export._isa import resolve_isa
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
from export.scorers import Pair, export_caps, onnx_scorer, torch_scorer, with_batch_size

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
        return f"{self.mode}-{'per_channel' if self.per_channel else 'per_tensor'}" + ("-edges_fp32" if self.keep_edges else "")

    @property
    def pairs_per_call(self) -> int | None:
        """At most this many pairs per ONNX call (None = any). Dynamic int8 quantises each call's
        activations with one scale over the whole call, padding included, so in a batch a pair's score
        would depend on its batch mates (measured: 12-22% of the score spread). Scored one pair per
        call it is batch-invariant by construction, and on a CPU one unpadded pair per call costs
        about what a length-bucketed batch does."""
        return 1 if self.mode == "dynamic" else None

    def batch_size(self, default: int) -> int:
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
    student_base = manifest.get("base_model")
    train_cfg_path = Path(manifest["_path"]).parent / "config.json" if manifest else None
    if not student_base and train_cfg_path is not None and train_cfg_path.is_file():
        # `distilrank student train` writes its resolved config (model.base = "default" or a local dir) beside the manifest
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


def _mixed_batch(lists: CandidateLists) -> list[Pair]:
    """Up to 16 pairs from different queries, first and last candidates: mixed lengths and topics."""
    pairs: list[Pair] = []
    for qid in list(lists.run)[:8]:
        _, ps = lists.pairs(qid)
        pairs.extend([ps[0], ps[-1]])
    return pairs[:16]


@dataclass
class _Scored:
    per_query: list[np.ndarray]
    alone: np.ndarray
    batched: np.ndarray
    ndcg: float | None = None
    gates: list[GateResult] = field(default_factory=list)


def _score_lists(scorer: Any, lists: CandidateLists, cfg: ExportConfig) -> list[np.ndarray]:
    flat: list[Pair] = []
    sizes = []
    for qid in lists.run:
        _, ps = lists.pairs(qid)
        flat.extend(ps)
        sizes.append(len(ps))
    scores = scorer.score_pairs(flat)
    return np.split(scores, np.cumsum(sizes)[:-1])


def _ndcg(scorer: Any, lists: CandidateLists, cfg: ExportConfig) -> float:
    from distill.core.evaluation import evaluate

    per_query = _score_lists(scorer, lists, cfg)
    run = {qid: dict(zip(lists.run[qid], map(float, s), strict=True)) for qid, s in zip(lists.run, per_query, strict=True)}
    # only the queries of the eval run: a qrels file judging more queries (a whole train split) would
    # average in zeros, shrinking nDCG and so every drop the gate compares to its tolerance
    qrels = {qid: rels for qid, rels in (lists.qrels or {}).items() if qid in run}
    return evaluate(qrels, run, ["ndcg@10"]).metrics["ndcg@10"]


def _score_all(scorer: Any, gate_lists: CandidateLists, mixed: list[Pair], ndcg_lists: CandidateLists | None,
               cfg: ExportConfig) -> _Scored:
    """Scores with ``scorer`` as it will be served; ``batched`` puts the mixed pairs in as few ONNX calls
    as the scorer's batch size allows (one call, unless the recipe caps the pairs per call)."""
    out = _Scored(_score_lists(scorer, gate_lists, cfg), with_batch_size(scorer, 1).score_pairs(mixed),
                  with_batch_size(scorer, min(len(mixed), scorer.batch_size)).score_pairs(mixed))
    if ndcg_lists is not None:
        out.ndcg = _ndcg(scorer, ndcg_lists, cfg)
    return out


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


def calibration_batches(scorer: CrossEncoderScorer, pairs: Sequence[Pair], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """The calibration pairs tokenised as the scorer tokenises them (its token caps), in batches."""
    enc = scorer.encoder
    return [enc.batch([q for q, _ in pairs[i:i + batch_size]], [d for _, d in pairs[i:i + batch_size]])
            for i in range(0, len(pairs), batch_size)]


def export_model(model_dir: str | Path, out_dir: str | Path, config: ExportConfig | None = None,
                 eval_data: EvalData | None = None, candidates: CandidateLists | None = None,
                 interpolation: Interpolation | None = None) -> Path:
    """Export, gate and write the artifact at ``out_dir``; returns its path.

    ``interpolation`` is recorded in the model card as the blend to serve (the pipeline tunes it on the
    served model's own scores and records it with :func:`~distill.core.model_card.set_interpolation`).

    Raises :class:`~distill.core.errors.GateFailedError` (nothing written) when a gate fails.
    ``candidates`` overrides the gate lists (default: the eval run, else bundled scifact_mini BM25).
    """
    cfg = config or ExportConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not model_dir.is_dir():
        raise MissingPrerequisiteError(f"student dir {model_dir} does not exist")
    hf = _check_student(model_dir)
    caps = export_caps(model_dir, cfg.max_seq_len, cfg.max_query_tokens, cfg.max_doc_tokens)
    isa = resolve_isa(cfg.isa)
    t_start = time.perf_counter()

    ndcg_lists = None
    if eval_data is not None:
        ev = eval_candidates(eval_data.queries, eval_data.qrels, eval_data.run, eval_data.corpus)
        ndcg_lists = ev.subset(10**9, cfg.gate_candidates)
        gate_lists = candidates or ev.subset(cfg.gate_queries, cfg.gate_candidates)
    else:
        gate_lists = candidates or demo_candidates("test", cfg.gate_candidates).subset(cfg.gate_queries, cfg.gate_candidates)
    if any(len(v) < 10 for v in gate_lists.run.values()):
        raise ConfigError(f"gate candidate lists need >= 10 candidates per query ({gate_lists.source})")
    mixed = _mixed_batch(gate_lists)
    logger.info("gates on %d queries x <=%d candidates from %s (isa=%s)", len(gate_lists.run), cfg.gate_candidates,
                gate_lists.source, isa)

    tol = cfg.gates
    with tempfile.TemporaryDirectory(prefix=".export-work-", dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        work = Path(tmp)
        fp32_path = raw_path = _onnx_export(model_dir, work)
        if cfg.optimize != "none":
            from export._onnx import optimize
            fp32_path = optimize(raw_path.parent, cfg.optimize, work / "optimized")

        torch_scores = _score_lists(torch_scorer(model_dir, caps, cfg.batch_size), gate_lists, cfg)
        fp32_scorer = onnx_scorer(fp32_path, model_dir, caps, cfg.batch_size)
        fp32 = _score_all(fp32_scorer, gate_lists, mixed, ndcg_lists, cfg)
        score_std = float(np.concatenate(fp32.per_query).std())
        gates: dict[str, GateResult] = {}
        for g in (parity_gate(np.concatenate(torch_scores), np.concatenate(fp32.per_query), tol.parity_max_abs_diff),
                  batch_invariance_gate(fp32.alone, fp32.batched, score_std, tol.batch_invariance_max_rel_diff,
                                        "fp32_batch_invariance")):
            gates[g.name] = g
        raise_if_failed(gates, f"fp32 ONNX export ({cfg.optimize})")

        latency_pairs = gate_lists.pairs(next(iter(gate_lists.run)))[1]
        fp32_latency = measure_latency(fp32_scorer, latency_pairs, cfg.batch_size, cfg.latency_reps)
        served, precision, decision = fp32_path, "fp32", "fp32 (no quantisation requested)"
        latency = {"fp32": fp32_latency}
        metrics: dict[str, Any] = {"score_std_fp32": score_std}
        if fp32.ndcg is not None:
            metrics["ndcg@10_fp32"] = fp32.ndcg
        int8_trials: dict[str, dict[str, Any]] = {}
        chosen: Int8Recipe | None = None
        if cfg.quantize != "none":
            calib_lists = demo_candidates("train", cfg.gate_candidates)
            for recipe in _recipes(cfg):
                if recipe.keep_edges and (hf.get("num_hidden_layers") or 0) < MIN_LAYERS_KEEP_EDGES:
                    # with the first and last layer in fp32 too little would be int8 to be worth a recipe
                    logger.info("int8 %s skipped: %s encoder layers (< %d)", recipe.name, hf.get("num_hidden_layers"),
                                MIN_LAYERS_KEEP_EDGES)
                    continue
                path, results, ndcg = _try_int8(recipe, fp32_path, raw_path, work, isa, cfg, fp32, score_std, fp32_scorer,
                                                calib_lists, gate_lists, mixed, ndcg_lists, model_dir, caps)
                int8_trials[recipe.name] = {"gates": {r.name: r.to_dict() for r in results}, "ndcg@10": ndcg,
                                            "passed": all(r.passed for r in results)}
                if all(r.passed for r in results):
                    chosen = recipe
                    int8_batch = recipe.batch_size(cfg.batch_size)
                    int8_scorer = onnx_scorer(path, model_dir, caps, int8_batch)
                    latency["int8"] = measure_latency(int8_scorer, latency_pairs, int8_batch, cfg.latency_reps)
                    gates.update({r.name: r for r in results})
                    if ndcg is not None:
                        metrics["ndcg@10_int8"] = ndcg
                    break
                logger.warning("int8 %s failed: %s", recipe.name, "; ".join(r.describe() for r in results if not r.passed))
            if chosen is None:
                msg = " | ".join(f"{name}: " + "; ".join(GateResult(**g).describe() for g in t["gates"].values()
                                                        if not g["passed"]) for name, t in int8_trials.items())
                if cfg.quantize == "int8":
                    raise GateFailedError(f"int8 refused, no quantisation recipe passed the gates -> {msg}")
                decision = f"fp32: no int8 recipe passed the gates ({msg})"
            else:
                faster = latency["int8"]["p50_ms"] < fp32_latency["p50_ms"]
                speed = (f"int8 p50 {latency['int8']['p50_ms']:.1f} ms vs fp32 p50 {fp32_latency['p50_ms']:.1f} ms "
                         f"(1 query x {len(latency_pairs)} passages)")
                if cfg.quantize == "int8" or faster:
                    served, precision = work / f"int8_{chosen.name}.onnx", "int8"
                    decision = f"int8 {chosen.name} ({isa}): gates passed; {speed}"
                else:
                    decision = f"fp32: int8 {chosen.name} passed the gates but was not faster; {speed}"
        logger.info("decision: %s", decision)

        base_models, training = _provenance(model_dir, hf)
        card = ModelCard(
            onnx_file="", precision=precision, token_caps=caps, layers=hf.get("num_hidden_layers"),
            isa=isa, optimization=cfg.optimize,
            # the ranker never puts more pairs in one ONNX call (None = any number)
            pairs_per_call=chosen.pairs_per_call if precision == "int8" and chosen else None,
            quantization=({"recipe": chosen.name, "mode": chosen.mode, "per_channel": chosen.per_channel,
                           "op_types": list(cfg.op_types) if cfg.op_types else "onnxruntime defaults",
                           "calibration": calib_lists.source if chosen.mode == "static" else None}
                          if precision == "int8" and chosen else None),
            interpolation=interpolation, base_models=base_models, training=training,
            config_hash=config_hash(cfg.to_dict()), export_config=cfg.to_dict(), gate_data=gate_lists.source,
            metrics=metrics, gates={n: g.to_dict() for n, g in gates.items()}, int8_trials=int8_trials,
            latency={"unit": "ms, 1 query x N passages, tokenisation included, length-bucketed batches",
                     "batch_size": cfg.batch_size, **latency},
            decision=decision)
        onnx_name = "model_quantized.onnx" if precision == "int8" else served.name
        with atomic_dir(out_dir) as stage:
            shutil.copy2(served, stage / onnx_name)
            shutil.copy2(raw_path.parent / "config.json", stage / "config.json")
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(stage))
            card = card.replace(onnx_file=onnx_name, export_wall_time_s=round(time.perf_counter() - t_start, 2))
            write_json(stage / "provenance" / "export_config.json", cfg.to_dict())
            write_model_card(stage, card)
            per_call = card.pairs_per_call or 4
            _self_check(stage, onnx_name, caps, latency_pairs[:4], per_call,
                        onnx_scorer(served, model_dir, caps, per_call).score_pairs(latency_pairs[:4]))
    logger.info("exported %s (%s) to %s", onnx_name, precision, out_dir)
    return out_dir


def _onnx_export(model_dir: Path, work: Path) -> Path:
    from export._onnx import export_fp32

    return export_fp32(model_dir, work / "fp32")


def _try_int8(recipe: Int8Recipe, fp32_path: Path, raw_path: Path, work: Path, isa: str, cfg: ExportConfig, fp32: _Scored,
              score_std: float, fp32_scorer: CrossEncoderScorer, calib_lists: CandidateLists, gate_lists: CandidateLists,
              mixed: list[Pair], ndcg_lists: CandidateLists | None, model_dir: Path,
              caps: TokenCaps) -> tuple[Path, list[GateResult], float | None]:
    from export._onnx import quantize_dynamic_int8, quantize_static_int8, sensitive_nodes

    dst = work / f"int8_{recipe.name}.onnx"
    if recipe.mode == "static":
        # Static QDQ needs onnx shape inference, which does not know the fused contrib ops of an
        # optimised graph (bias quantisation then fails); quantise the plain export instead and let
        # onnxruntime fuse the QDQ pattern at session creation.
        quantize_static_int8(raw_path, dst, isa, recipe.per_channel, cfg.op_types or ("MatMul",),
                             calibration_batches(fp32_scorer, calibration_pairs(calib_lists.pairs_by_query(), cfg.calibration_pairs)),
                             exclude=sensitive_nodes(raw_path) if recipe.keep_edges else ())
    else:
        quantize_dynamic_int8(fp32_path, dst, isa, recipe.per_channel, cfg.op_types)
    scorer = onnx_scorer(dst, model_dir, caps, recipe.batch_size(cfg.batch_size))
    scored = _score_all(scorer, gate_lists, mixed, ndcg_lists, cfg)
    tol = cfg.gates
    results = ranking_agreement(fp32.per_query, scored.per_query, tol.spearman_median_min, tol.spearman_worst_min,
                                tol.top10_overlap_mean_min)
    results.append(batch_invariance_gate(scored.alone, scored.batched, score_std, tol.batch_invariance_max_rel_diff,
                                         "int8_batch_invariance"))
    if scored.ndcg is not None and fp32.ndcg is not None:
        results.append(ndcg_gate(fp32.ndcg, scored.ndcg, tol.ndcg_drop_max_points))
    return dst, results, scored.ndcg


def _self_check(stage: Path, onnx_name: str, caps: TokenCaps, pairs: Sequence[Pair], per_call: int,
                expected: np.ndarray) -> None:
    """The staged artifact verifies against its card and reproduces the gated scores."""
    load_model_card(stage, verify=True)
    got = onnx_scorer(stage / onnx_name, stage, caps, per_call).score_pairs(pairs)
    if not np.allclose(got, expected, atol=1e-5):
        raise GateFailedError(f"artifact self-check: staged model scores differ from the gated model by "
                              f"{float(np.abs(got - expected).max()):.3g}")

