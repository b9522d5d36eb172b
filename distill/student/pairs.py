"""Distillation groups ``(q, d+, d-_1..d-_n)`` with the teacher's (normalised) scores.

Which ``d+``: ``positive="qrels"`` (default) takes a judged relevant doc that the teacher labelled,
falling back to the teacher's top-scored doc when the query has none among its candidates;
``positive="teacher_top"`` always takes the teacher's top doc. Negatives are never judged positives.
``negatives="mixed"`` (default) takes half of each group's negatives from the teacher's ranking
(the highest-scored non-positives, a different slice per group) and half uniformly from the rest, so
the student sees both the hard distinctions the teacher makes near the top and the easy ones that
keep its scale; ``"teacher_hard"`` takes only the former, ``"random"`` only the latter. False
negatives among hard ones do little harm: margin-MSE asks for the teacher's (small) margin, not for
a large one. ``groups_per_query=0`` (auto) builds ``ceil(candidates / group size)`` groups, at most
``max_auto_groups``, so a 100-candidate label file is used, not sampled 8 at a time; and at most
``ceil(auto_group_budget / queries)``, so a file with many queries spends the same step budget on
more queries with fewer groups each (query diversity transfers more than a 13th group of one query). Queries with
fewer than ``n_negatives`` usable negatives are skipped with a log line, so every group has the same
size and batches stay rectangular. Equal teacher scores are ordered by
:func:`~distill.core.cross_encoder.tie_key`, never by doc id (a run-file teacher gives every candidate it did not
rank the same floor score).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from distill.core.cross_encoder import tie_key
from distill.core.errors import ConfigError, DataError
from distill.core.label_files import LabeledQuery
from distill.student.normalize import NormalizationConfig, normalize_scores

__all__ = ["PairConfig", "PairGroup", "build_groups"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairConfig:
    positive: Literal["qrels", "teacher_top"] = "qrels"
    negatives: Literal["random", "teacher_hard", "mixed"] = "mixed"
    n_negatives: int = 7
    #: groups built per query (each with another positive and/or another negative sample); 0 = auto:
    #: ceil(candidates / group size), so each labelled candidate lands in about one group
    groups_per_query: int = 0
    #: cap of the auto count (a 100-candidate list gives 13 groups of 1 + 7)
    max_auto_groups: int = 16
    #: queries without qrels: the positive rotates over the teacher's top N, and each group's negatives are
    #: drawn from the candidates the teacher ranks below that positive (so the order inside the top is taught too)
    teacher_positives: int = 3
    #: the auto count spreads about this many groups over the queries (400 steps of 4 groups): 130 queries
    #: get 13 each, 800 queries 2 each
    auto_group_budget: int = 1600
    seed: int = 13

    def __post_init__(self) -> None:
        if self.positive not in ("qrels", "teacher_top"):
            raise ConfigError(f"pairs.positive must be 'qrels' or 'teacher_top', got {self.positive!r}")
        if self.negatives not in ("random", "teacher_hard", "mixed"):
            raise ConfigError(f"pairs.negatives must be 'random', 'teacher_hard' or 'mixed', got {self.negatives!r}")
        if self.n_negatives < 1:
            raise ConfigError(f"pairs.n_negatives must be >= 1 (margin-MSE needs a negative), got {self.n_negatives}")
        if self.teacher_positives < 1:
            raise ConfigError(f"pairs.teacher_positives must be >= 1, got {self.teacher_positives}")
        if self.groups_per_query < 0 or self.max_auto_groups < 1 or self.auto_group_budget < 1:
            raise ConfigError(f"pairs.groups_per_query must be >= 0 (0 = auto), max_auto_groups and auto_group_budget "
                              f">= 1, got {self.groups_per_query}, {self.max_auto_groups} and {self.auto_group_budget}")


@dataclass(frozen=True, slots=True)
class PairGroup:
    """``doc_ids[0]`` is the positive; ``teacher_scores`` are normalised, aligned with ``doc_ids``."""

    qid: str
    query: str
    doc_ids: tuple[str, ...]
    teacher_scores: tuple[float, ...]


def build_groups(labels: Iterable[LabeledQuery], qrels: Mapping[str, Mapping[str, int]] | None,
                 config: PairConfig, norm: NormalizationConfig) -> list[PairGroup]:
    rng = random.Random(config.seed)
    qrels = qrels or {}
    labels = list(labels)
    per_query_cap = min(config.max_auto_groups,
                        -(-config.auto_group_budget // max(1, sum(1 for lq in labels if lq.docs))))
    groups: list[PairGroup] = []
    skipped = 0
    for lq in labels:
        if not lq.docs:
            skipped += 1
            continue
        ids = [d.doc_id for d in lq.docs]
        scores = dict(zip(ids, normalize_scores([d.score for d in lq.docs], norm), strict=True))
        judged_pos = {d for d, rel in qrels.get(lq.qid, {}).items() if rel >= 1}
        positives = [d for d in ids if d in judged_pos] if config.positive == "qrels" else []
        by_teacher = sorted(ids, key=lambda d: (-scores[d], tie_key(lq.qid, d)))
        teacher_mode = not positives
        if teacher_mode:
            positives = [d for d in by_teacher[:config.teacher_positives] if d not in judged_pos] or by_teacher[:1]
        pool = [d for d in ids if d not in judged_pos and d not in positives[:1]]
        if len(pool) < config.n_negatives:
            skipped += 1
            continue
        n_groups = config.groups_per_query or max(1, min(per_query_cap, -(-len(ids) // (1 + config.n_negatives))))
        n_hard = {"teacher_hard": config.n_negatives, "random": 0}.get(config.negatives, config.n_negatives // 2)
        ranked_pool = sorted(pool, key=lambda d: (-scores[d], tie_key(lq.qid, d)))
        for g in range(n_groups):
            pos = positives[g % len(positives)]
            if teacher_mode:  # negatives only from below this positive, already in the teacher's order
                group_pool = ranked = [d for d in by_teacher[by_teacher.index(pos) + 1:] if d not in judged_pos]
                if len(group_pool) < config.n_negatives:
                    continue
            else:  # judged positives are never in the pool
                group_pool, ranked = pool, ranked_pool
            start = (g * max(n_hard, 1)) % max(1, len(ranked) - n_hard + 1)
            hard = ranked[start:start + n_hard]
            rest = [d for d in group_pool if d not in hard]
            negs = hard + rng.sample(rest, config.n_negatives - len(hard))
            doc_ids = (pos, *negs)
            groups.append(PairGroup(lq.qid, lq.query, doc_ids, tuple(scores[d] for d in doc_ids)))
    if skipped:
        logger.info("skipped %d queries with no labels or fewer than %d usable negatives", skipped, config.n_negatives)
    if not groups:
        raise DataError(f"no training groups could be built: every labelled query has fewer than "
                        f"{config.n_negatives} non-positive candidates; label more candidates or lower n_negatives")
    return groups
