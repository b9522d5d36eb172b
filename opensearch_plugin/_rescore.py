"""Rescore query bodies and client-side rescoring with the plugin's exact semantics.

Per shard (hits carry ``_shard``; without it, the hits are one shard), the window is the shard's first
``window_size`` hits in first-stage order. Score modes:

* ``interpolate`` (default): :func:`distill.core.interpolation.blend` over the window, in doubles, with the
  card's values for whatever the clause leaves out; the window is ordered by the blend, exact ties by doc id
  ascending (:func:`~distill.core.interpolation.rank_blended`), and each score is the blend rounded to float32
  (what OpenSearch returns). Hits below the window keep their first-stage order and gaps under every
  rescored hit: ``floor - 1 - (last window hit's first-stage score - the hit's)``, where ``floor`` bounds
  every blend from below (:func:`blend_floor`).
* ``total|multiply|avg|max|min``: OpenSearch's ``QueryRescorer`` in float32: a window hit scores
  ``mode(first * query_weight, ranker * rescore_query_weight)``, the others ``first * query_weight``.

Shards are then merged as OpenSearch merges them: by float32 score, ties by shard number, then by rank in
the shard. First-stage scores are read as float32 (the engine's scores, exactly). The ranker sees each
document as its ``fields`` values from _source joined with ". " (= Document.full_text).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from distill.core.errors import ConfigError
from distill.core.interpolation import Interpolation, ScoreConvention, blend, rank_blended
from distill.core.normalization import RunNorm

from ._model_defaults import ModelDefaults, to_convention

logger = logging.getLogger(__name__)

ScoreMode = Literal["interpolate", "total", "multiply", "avg", "max", "min"]
SCORE_MODES: tuple[str, ...] = ("interpolate", "total", "multiply", "avg", "max", "min")
QUERY_RESCORER_MODES: tuple[str, ...] = SCORE_MODES[1:]
_NORMS = ("minmax", "zscore", "none")
#: the window when neither the clause nor a card says (Interpolation.conservative's depth)
CONSERVATIVE_WINDOW = Interpolation.conservative().depth

ScoreFn = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass(frozen=True, slots=True)
class RescoreParams:
    """The ``distilrank`` rescore clause. ``None``: not in the clause; the plugin (and :func:`rescore_hits`)
    then take the served model card's value. ``window_size`` hits per shard are sent to the ranker."""

    window_size: int | None = None
    fields: tuple[str, ...] = ("title", "text")
    score_mode: ScoreMode = "interpolate"
    first_stage_weight: float | None = None
    first_stage_norm: RunNorm | None = None
    ranker_norm: RunNorm | None = None
    score_convention: ScoreConvention | None = None
    query_weight: float | None = None
    rescore_query_weight: float | None = None

    def __post_init__(self) -> None:
        if self.window_size is not None and self.window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {self.window_size}")
        if not self.fields:
            raise ConfigError("fields must name at least one _source field, e.g. ('title', 'text')")
        if self.score_mode not in SCORE_MODES:
            raise ConfigError(f"score_mode must be one of {', '.join(SCORE_MODES)}, got {self.score_mode!r}")
        w = self.first_stage_weight
        if w is not None and not (math.isfinite(w) and 0.0 <= w <= 1.0):
            raise ConfigError(f"first_stage_weight must be a number in [0, 1], got {w!r}")
        for name in ("first_stage_norm", "ranker_norm"):
            if getattr(self, name) not in (None, *_NORMS):
                raise ConfigError(f"{name} must be one of {', '.join(_NORMS)}, got {getattr(self, name)!r}")
        if self.score_convention not in (None, "raw_logit", "sigmoid"):
            raise ConfigError(f"score_convention must be raw_logit or sigmoid, got {self.score_convention!r}")
        self._check_mode_parameters()

    def _check_mode_parameters(self) -> None:
        """Values of one arithmetic with the other's mode are refused, as the plugin refuses them (400)."""
        blend_values = (self.first_stage_weight, self.first_stage_norm, self.ranker_norm, self.score_convention)
        weights = (self.query_weight, self.rescore_query_weight)
        if self.score_mode == "interpolate" and any(v is not None for v in weights):
            raise ConfigError("query_weight and rescore_query_weight apply to score_mode total, multiply, avg, max and "
                              "min; score_mode interpolate (the default) takes first_stage_weight")
        if self.score_mode != "interpolate" and any(v is not None for v in blend_values):
            raise ConfigError("first_stage_weight, first_stage_norm, ranker_norm and score_convention apply to "
                              f"score_mode interpolate, not {self.score_mode}")

    @property
    def needs_card(self) -> bool:
        """True when some value must come from the served model's card."""
        blend_values = (self.first_stage_weight, self.first_stage_norm, self.ranker_norm, self.score_convention)
        return self.window_size is None or (self.score_mode == "interpolate" and None in blend_values)

    def window(self, defaults: ModelDefaults | None) -> int:
        if self.window_size is not None:
            return self.window_size
        return defaults.interpolation.depth if defaults is not None else CONSERVATIVE_WINDOW

    def interpolation(self, defaults: ModelDefaults | None) -> Interpolation:
        """The blend to apply: the card's, with the clause's values over it."""
        base = defaults.interpolation if defaults is not None else None
        values = {"first_stage_weight": self.first_stage_weight, "first_stage_norm": self.first_stage_norm,
                  "ranker_norm": self.ranker_norm, "score_convention": self.score_convention}
        missing = [k for k, v in values.items() if v is None]
        if base is None and missing:
            raise ConfigError(f"the rescore leaves {', '.join(missing)} to the model card, but no card defaults were "
                              "given (pass defaults=, or a score_fn with model_defaults())")
        given = {k: v for k, v in values.items() if v is not None}
        if base is None:
            return Interpolation(**given, chosen_by="default", depth=self.window(None))  # type: ignore[arg-type]
        return dataclasses.replace(base, **given, depth=self.window(defaults))

    def resolved(self, defaults: ModelDefaults | None) -> RescoreParams:
        """Every value spelled out (what the plugin applies with these ``defaults``)."""
        if self.score_mode != "interpolate":
            return dataclasses.replace(self, window_size=self.window(defaults),
                                       query_weight=1.0 if self.query_weight is None else self.query_weight,
                                       rescore_query_weight=1.0 if self.rescore_query_weight is None
                                       else self.rescore_query_weight)
        spec = self.interpolation(defaults)
        return dataclasses.replace(self, window_size=spec.depth, first_stage_weight=spec.first_stage_weight,
                                   first_stage_norm=spec.first_stage_norm, ranker_norm=spec.ranker_norm,
                                   score_convention=spec.score_convention)


def rescore_clause(query_text: str, params: RescoreParams) -> dict[str, object]:
    """The ``rescore`` element of a search body for the plugin; values left to the card are left out."""
    body: dict[str, object] = {"query_text": query_text, "fields": list(params.fields), "score_mode": params.score_mode}
    for name in ("first_stage_weight", "first_stage_norm", "ranker_norm", "score_convention", "query_weight",
                 "rescore_query_weight"):
        value = getattr(params, name)
        if value is not None:
            body[name] = value
    clause: dict[str, object] = {"distilrank": body}
    if params.window_size is not None:
        clause = {"window_size": params.window_size, **clause}
    return clause


def match_query(query_text: str, fields: Sequence[str] = ("title", "text")) -> dict[str, object]:
    """BM25 first stage: ``multi_match`` (most_fields) over ``fields``."""
    return {"multi_match": {"query": query_text, "fields": list(fields), "type": "most_fields"}}


def search_body(query_text: str, size: int = 10, params: RescoreParams | None = None,
                fields: Sequence[str] = ("title", "text"), from_: int = 0) -> dict[str, object]:
    body: dict[str, object] = {"query": match_query(query_text, fields), "size": size, "from": from_,
                               "_source": list(fields)}
    if params is not None:
        body["rescore"] = rescore_clause(query_text, params)
    return body


def document_text(source: Mapping[str, object], fields: Sequence[str]) -> str:
    """Same string the plugin builds: non-empty values of ``fields`` (dotted paths, lists flattened) joined by ". "."""
    parts: list[str] = []

    def add(value: object) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for v in value:
                add(v)
            return
        s = value if isinstance(value, str) else str(value)
        if s:
            parts.append(s)

    for field in fields:
        value: object = source
        for key in field.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        add(value)
    return ". ".join(parts)


def combine(first: np.ndarray, ranker: np.ndarray | None, params: RescoreParams) -> np.ndarray:
    """QueryRescorer modes: final scores for hits in first-stage order. ``ranker`` covers the first
    ``len(ranker)`` hits (the window)."""
    if params.score_mode == "interpolate":
        raise ConfigError("combine() is the QueryRescorer arithmetic; score_mode interpolate blends with "
                          "blend_window()")
    qw = np.float32(1.0 if params.query_weight is None else params.query_weight)
    rqw = np.float32(1.0 if params.rescore_query_weight is None else params.rescore_query_weight)
    out = np.asarray(first, dtype=np.float32) * qw
    if ranker is None:
        return out
    n = len(ranker)
    p = out[:n]
    s = np.asarray(ranker, dtype=np.float32) * rqw
    c = {"total": lambda: p + s, "multiply": lambda: p * s, "avg": lambda: (p + s) / np.float32(2),
         "max": lambda: np.maximum(p, s), "min": lambda: np.minimum(p, s)}[params.score_mode]()
    out[:n] = c
    return out


def blend_floor(spec: Interpolation, first: Sequence[float], ranker: Sequence[float], window_size: int) -> float:
    """A lower bound of every blended score of a window of at most ``window_size`` hits (the plugin's
    ``Blend.floor``): minmax values are >= 0, z-scores of n values >= -sqrt(n - 1), and an unnormalised side
    is bounded by this window's minimum (so with ``none`` the bound holds for one shard only)."""

    def lower(norm: str, raw: Sequence[float]) -> float:
        if norm == "minmax":
            return 0.0
        if norm == "zscore":
            return -math.sqrt(max(window_size - 1, 0))
        return min(raw)

    w = spec.first_stage_weight
    return w * lower(spec.first_stage_norm, first) + (1.0 - w) * lower(spec.ranker_norm, ranker)


def blend_window(ids: Sequence[str], first: Sequence[float], ranker: Sequence[float], spec: Interpolation,
                 window_size: int) -> list[tuple[str, float]]:
    """One shard's hits (first-stage order, ``first`` covering all of them, ``ranker`` the window) in final
    order with their float32 scores, as the plugin computes them."""
    n = len(ranker)
    blended = blend(first[:n], ranker, spec)
    out = [(ids[i], _f32(blended[i])) for i in rank_blended(ids[:n], blended)]
    below = blend_floor(spec, first[:n], ranker, window_size) - 1.0
    last = first[n - 1]
    out += [(ids[k], _f32(below - (last - first[k]))) for k in range(n, len(ids))]
    return out


def _f32(x: float) -> float:
    return float(np.float32(x))


_SHARD = re.compile(r"^\[(?P<index>.*)\]\[(?P<shard>\d+)\]$")


def _shard_key(hit: Mapping[str, object]) -> tuple[int, str]:
    """OpenSearch orders shard results by shard number, then index name; hits without ``_shard`` are one shard."""
    m = _SHARD.match(str(hit.get("_shard") or ""))
    return (int(m["shard"]), m["index"]) if m else (0, "")


def _group_by_shard(hits: Sequence[Mapping[str, object]]) -> list[list[Mapping[str, object]]]:
    groups: dict[tuple[int, str], list[Mapping[str, object]]] = {}
    for h in hits:
        groups.setdefault(_shard_key(h), []).append(h)
    return [groups[k] for k in sorted(groups)]


def _first_stage(hits: Sequence[Mapping[str, object]]) -> list[tuple[str, float]]:
    return [(str(h["_id"]), _f32(float(h["_score"]))) for h in hits]  # type: ignore[arg-type]


def _rescore_shard(hits: Sequence[Mapping[str, object]], query_text: str, params: RescoreParams, score_fn: ScoreFn,
                   defaults: ModelDefaults | None) -> list[tuple[str, float]]:
    """One shard's hits in final order; fails open (first-stage order and scores) like the plugin."""
    window = params.window(defaults)
    ids = [str(h["_id"]) for h in hits]
    first = [_f32(float(h["_score"])) for h in hits]  # type: ignore[arg-type]
    try:
        spec = params.interpolation(defaults) if params.score_mode == "interpolate" else None
        texts = [document_text(h.get("_source") or {}, params.fields) for h in hits[:window]]  # type: ignore[arg-type]
        scores = score_fn(query_text, texts) if texts else []
        if len(scores) != len(texts) or not all(math.isfinite(float(s)) for s in scores):
            raise ValueError(f"ranker returned {len(scores)} scores for {len(texts)} documents (or a non-finite one)")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - fail open is the contract, the error is logged
        logger.warning("client-side rescore failed open: %s", exc)
        return _first_stage(hits)
    if spec is not None:
        served = getattr(scores, "served", None) or (defaults.served if defaults is not None else None)
        return blend_window(ids, first, to_convention(scores, served, spec.score_convention), spec, window)
    final = combine(np.asarray(first, dtype=np.float32), np.asarray(scores, dtype=np.float32), params)
    order = sorted(range(len(ids)), key=lambda i: (-final[i], i))
    return [(ids[i], float(final[i])) for i in order]


def _defaults_for(params: RescoreParams, score_fn: ScoreFn, defaults: ModelDefaults | None) -> ModelDefaults | None:
    if defaults is not None or not params.needs_card:
        return defaults
    read = getattr(score_fn, "model_defaults", None)
    return read() if read is not None else None


def _merge(ranked: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """Shard results merged as OpenSearch merges them: float score, then shard order, then rank in the shard."""
    if len(ranked) == 1:
        return ranked[0]
    merged = [(score, s, k, doc_id) for s, shard in enumerate(ranked) for k, (doc_id, score) in enumerate(shard)]
    merged.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(doc_id, score) for score, _s, _k, doc_id in merged]


def rescore_hits(hits: Sequence[Mapping[str, object]], query_text: str, params: RescoreParams, score_fn: ScoreFn,
                 defaults: ModelDefaults | None = None) -> list[tuple[str, float]]:
    """Client-side rescoring of first-stage ``hits`` (OpenSearch hit dicts with _id, _score, _source and, with
    several shards, _shard), exactly as the plugin rescores them. Returns ``(doc id, float32 score)`` in final order.

    ``score_fn(query, documents) -> scores`` (one per document, input order; a :class:`ServedScores` also says
    their convention). ``defaults``: the served model's card values for what ``params`` leaves out; by default
    ``score_fn.model_defaults()`` when it has one (:class:`RankerPool`). Fails open per shard like the plugin:
    a ranker failure keeps that shard's first-stage order and scores. Raises ConfigError when ``params`` leave
    a blend value to a card that nothing provides.
    """
    shards = _group_by_shard(hits)
    try:
        defaults = _defaults_for(params, score_fn, defaults)
    except Exception as exc:  # noqa: BLE001 - no card: the plugin fails open too
        logger.warning("client-side rescore failed open (model defaults unknown): %s", exc)
        return _merge([_first_stage(group) for group in shards])
    return _merge([_rescore_shard(group, query_text, params, score_fn, defaults) for group in shards])


def ranker_score_fn(base_url: str | Sequence[str], timeout: float = 10.0):
    """A ``score_fn`` over one or more ranker replicas (:class:`~opensearch_plugin.RankerPool`)."""
    from ._ranker_pool import RankerPool

    return RankerPool(base_url, timeout=timeout)
