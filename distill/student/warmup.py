"""Warm-up on the corpus itself: a relevance prior from weak pairs the corpus gives for free, before distillation.

With a few dozen teacher-labelled queries a student starting from a bi-encoder's weights and a fresh 1-logit head
has little to learn relevance from. The corpus has more: each document's title, or a span cropped from its text
(TWOLAR's cropped queries), is a query whose source passage is relevant. So before distillation (RankingGPT's
continued pre-training on weak pairs, applied to the student):

1. ``n_queries`` documents are drawn (seeded); each gives one weak query (``query_kind``: its title, a span of
   ``crop_min_words``..``crop_max_words`` words of its text, or ``mixed``: titles for even draws, crops for odd);
2. its candidates are the source passage and its BM25 neighbours (and dense neighbours when the dense member
   runs), ``n_candidates`` of each;
3. the cheap ensemble teacher scores them: BM25 and the dense bi-encoder, z-scored per query and summed with
   equal weights (:class:`distill.teacher.sources.EnsembleSource`). The dense member runs when ``dense="on"``,
   or ``"auto"`` and the corpus has at most ``dense_max_docs`` documents (it embeds the whole corpus once,
   cached);
4. one group per weak query: the source passage as the positive, ``n_negatives`` of the other candidates, the
   ensemble's scores as targets, the student's own loss (:class:`~distill.student.loss.HybridDistillLoss`);
5. ``steps`` optimiser steps of ``batch_size`` groups, linear decay after 10% warm-up, no dev evaluation.

Then the student is distilled on the strong teacher's labels as usual, starting from the warmed weights.

**When** (``mode``): ``on`` (the default), ``off``, or ``auto``: on when fewer than ``auto_below_queries`` queries
are left to train on after the dev split, off otherwise. A base that is already a 1-logit cross-encoder (a trained
student cut to fewer layers, a user's own reranker) is never warmed up: it has a relevance prior of its own, and
the weak pairs would overwrite it. ``auto`` does not train with and without the warm-up and compare on
dev: that doubles the cost of training, which is what the warm-up must not do on small CPU machines. Whether the
warm-up ran and why is recorded in the student's ``manifest.json`` and ``student_report.json``.

**Cost** is bounded by config: ``n_queries`` BM25 (and dense) searches, and ``steps`` x ``batch_size`` x
(1 + ``n_negatives``) scored pairs (200 x 4 x 8 with the defaults: the cost of 200 distillation steps).

**Reuse**: the weak labels and the warmed weights are kept under ``cache_dir`` (default ``OUT/warmup``) in a
directory named by a hash of the corpus file, the base model, the token budget, the loss, the learning rate and
this config; a later run with the same ones (a resumed run, another label set on the same corpus) loads them.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distill.core.atomic_io import atomic_dir, atomic_write, config_hash, sha256_file, write_json
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Document, Query
from distill.core.label_files import LabeledDoc, LabeledQuery
from distill.student.pairs import PairConfig, PairGroup, build_groups

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distill.student.train import StudentTrainConfig

__all__ = ["WarmupConfig", "WarmupOutcome", "build_weak_queries", "decide_warmup", "label_weak_queries",
           "run_warmup"]

logger = logging.getLogger(__name__)

WarmupMode = Literal["auto", "on", "off"]
QueryKind = Literal["crop", "title", "mixed"]
#: a title shorter than this is no query ("Introduction"); the document gives a crop instead
MIN_TITLE_WORDS = 3
INFO_FILE = "warmup_info.json"


@dataclass(frozen=True)
class WarmupConfig:
    #: "on": it wins on dev at every measured point, against the run-file ensemble teacher at 50, 100 and 560
    #: queries and against a teacher it does not copy (the qrels-boosted one) at 50 (docs/results.md, retention curve)
    mode: WarmupMode = "on"
    #: auto: warm up when fewer than this many queries are left to train on after the dev split
    auto_below_queries: int = 200
    n_queries: int = 800
    query_kind: QueryKind = "mixed"
    crop_min_words: int = 8
    crop_max_words: int = 24
    #: BM25 (and dense) neighbours per weak query, each
    n_candidates: int = 30
    n_negatives: int = 7
    dense: Literal["auto", "on", "off"] = "auto"
    dense_max_docs: int = 20_000
    dense_model: str = "default"
    steps: int = 200
    batch_size: int = 4
    #: None = the student's learning_rate
    learning_rate: float | None = None
    #: where the weak labels and warmed weights are kept (None = OUT/warmup)
    cache_dir: str | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "on", "off"):
            raise ConfigError(f"warmup.mode must be auto, on or off, got {self.mode!r}")
        if self.query_kind not in ("crop", "title", "mixed"):
            raise ConfigError(f"warmup.query_kind must be crop, title or mixed, got {self.query_kind!r}")
        if self.dense not in ("auto", "on", "off"):
            raise ConfigError(f"warmup.dense must be auto, on or off, got {self.dense!r}")
        if min(self.n_queries, self.n_candidates, self.n_negatives, self.steps, self.batch_size) < 1:
            raise ConfigError("warmup.n_queries, n_candidates, n_negatives, steps and batch_size must be >= 1")
        if not 1 <= self.crop_min_words <= self.crop_max_words:
            raise ConfigError(f"warmup needs 1 <= crop_min_words <= crop_max_words, got {self.crop_min_words} "
                              f"and {self.crop_max_words}")
        if self.n_candidates < self.n_negatives:
            raise ConfigError(f"warmup.n_candidates ({self.n_candidates}) must be >= n_negatives ({self.n_negatives})")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"warmup.learning_rate must be > 0 or null, got {self.learning_rate}")
        if self.auto_below_queries < 0:
            raise ConfigError(f"warmup.auto_below_queries must be >= 0, got {self.auto_below_queries}")


@dataclass
class WarmupOutcome:
    """Whether the warm-up ran, why, and what it did (``info``: weak queries, steps, losses, wall time)."""

    ran: bool
    reason: str
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_warmup(config: WarmupConfig, n_train_queries: int, base_ranks: bool = False) -> tuple[bool, str]:
    """Whether to warm up, and why. A base that already ranks (``base_ranks``: a 1-logit cross-encoder, such as a
    trained student cut to fewer layers) is never warmed up: weak pairs would overwrite the prior it has."""
    if config.mode == "off":
        return False, "warmup.mode = off"
    if base_ranks:
        return False, "the base is already a 1-logit cross-encoder: it keeps its own relevance prior"
    if config.mode == "on":
        return True, "warmup.mode = on"
    if n_train_queries < config.auto_below_queries:
        return True, f"auto: {n_train_queries} training queries < {config.auto_below_queries}"
    return False, f"auto: {n_train_queries} training queries >= {config.auto_below_queries}"


def _crop(words: Sequence[str], rng: random.Random, lo: int, hi: int) -> str:
    n = min(rng.randint(lo, hi), len(words))
    start = rng.randint(0, len(words) - n)
    return " ".join(words[start:start + n])


def build_weak_queries(corpus: Mapping[str, Document], config: WarmupConfig) -> dict[str, tuple[Query, str]]:
    """``{qid: (weak query, source doc id)}`` for ``n_queries`` seeded documents (see the module docstring)."""
    rng = random.Random(config.seed)
    usable = [d for d in sorted(corpus) if len(corpus[d].text.split()) >= config.crop_min_words
              or len(corpus[d].title.split()) >= MIN_TITLE_WORDS]
    if not usable:
        raise DataError(f"no document has {config.crop_min_words}+ words of text or a {MIN_TITLE_WORDS}+ word title: "
                        "nothing to warm up on; set warmup.mode = off")
    out: dict[str, tuple[Query, str]] = {}
    for i, doc_id in enumerate(rng.sample(usable, min(config.n_queries, len(usable)))):
        doc = corpus[doc_id]
        title_ok = len(doc.title.split()) >= MIN_TITLE_WORDS
        want_title = config.query_kind == "title" or (config.query_kind == "mixed" and i % 2 == 0)
        words = doc.text.split()
        if (want_title and title_ok) or len(words) < config.crop_min_words:
            text, kind = doc.title.strip(), "title"
        else:
            text, kind = _crop(words, rng, config.crop_min_words, config.crop_max_words), "crop"
        qid = f"warmup-{kind}-{doc_id}"
        out[qid] = (Query(qid, text), doc_id)
    return out


def _use_dense(config: WarmupConfig, n_docs: int) -> bool:
    return config.dense == "on" or (config.dense == "auto" and n_docs <= config.dense_max_docs)


def label_weak_queries(weak: Mapping[str, tuple[Query, str]], corpus: Mapping[str, Document], config: WarmupConfig,
                       cache_dir: Path | None = None) -> list[LabeledQuery]:
    """The source passage and its neighbours of each weak query, scored by the BM25 (+ dense) ensemble."""
    from distill.core.bm25 import BM25Index
    from distill.teacher.sources import BM25Source, DenseSource, EnsembleSource

    queries = {q: query for q, (query, _) in weak.items()}
    bm25 = BM25Index(corpus)
    members: dict[str, Any] = {"bm25": BM25Source(corpus, bm25)}
    searches = [bm25.search(queries, top_k=config.n_candidates)]
    if _use_dense(config, len(corpus)):
        from distill.teacher.candidates import DenseRetriever

        dense = DenseRetriever(corpus, config.dense_model, cache_dir)
        members["dense"] = DenseSource(corpus, retriever=dense)
        searches.append(dense.search(queries, top_k=config.n_candidates))
    candidates = {q: list(dict.fromkeys([src, *(d for run in searches for d in run.get(q, {}))]))
                  for q, (_, src) in weak.items()}
    scores = EnsembleSource(members).score(queries, candidates)
    return [LabeledQuery(q, queries[q].text, tuple(LabeledDoc(d, scores[q][d], "warmup") for d in candidates[q]))
            for q in weak]


def _warmup_key(config: StudentTrainConfig, corpus_path: Path) -> dict[str, Any]:
    w = {k: v for k, v in asdict(config.warmup).items() if k not in ("mode", "auto_below_queries", "cache_dir")}
    return {"warmup": w, "model": asdict(config.model), "loss": asdict(config.loss),
            "normalization": asdict(config.normalization), "seed": config.seed,
            "learning_rate": config.warmup.learning_rate or config.learning_rate, "corpus": sha256_file(corpus_path)}


def run_warmup(config: StudentTrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
               corpus: Mapping[str, Document], corpus_path: str | Path, out_dir: Path,
               n_train_queries: int, *, base_ranks: bool = False, may_train: bool = True) -> WarmupOutcome:
    """Warm ``model`` up in place when :func:`decide_warmup` says so (or load the warmed weights kept earlier).

    ``may_train=False`` (several processes under torchrun) only loads kept weights: with none kept it is a
    :class:`ConfigError` that says how to warm up first."""
    ran, reason = decide_warmup(config.warmup, n_train_queries, base_ranks)
    logger.info("student warm-up: %s (%s)", "on" if ran else "off", reason)
    if not ran:
        return WarmupOutcome(False, reason)
    cfg = config.warmup
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "warmup"
    key = _warmup_key(config, Path(corpus_path))
    done = cache / f"warmup-{config_hash(key)}"
    if (done / INFO_FILE).is_file():
        _load_weights(model, done / "model")
        info = _read_info(done)
        logger.info("student warm-up: loaded the warmed weights kept in %s", done)
        return WarmupOutcome(True, reason, {**info, "reused": str(done)})
    if not may_train:
        raise ConfigError(f"the warm-up runs in one process and no warmed weights are kept in {done}: run the same "
                          "`student train` once in a single process first (its warmed weights are kept there and "
                          "reused), or set warmup.mode = off (--warmup off)")
    start = time.perf_counter()
    weak = build_weak_queries(corpus, cfg)
    labels = label_weak_queries(weak, corpus, cfg, cache)
    positives = {q: {src: 1} for q, (_, src) in weak.items()}
    pairs = PairConfig(n_negatives=cfg.n_negatives, groups_per_query=1, seed=cfg.seed)
    groups = build_groups(labels, positives, pairs, config.normalization)
    losses = train_on_groups(model, tokenizer, groups, corpus, config, cfg)
    info = {"weak_queries": len(weak), "groups": len(groups), "steps": cfg.steps,
            "kinds": {k: sum(q.startswith(f"warmup-{k}-") for q in weak) for k in ("title", "crop")},
            "members": ["bm25", "dense"] if _use_dense(cfg, len(corpus)) else ["bm25"],
            "first_loss": round(losses[0], 5), "last_loss": round(sum(losses[-10:]) / len(losses[-10:]), 5),
            "wall_time_s": round(time.perf_counter() - start, 1), "key": key}
    _save(done, model, tokenizer, config, labels, info)
    return WarmupOutcome(True, reason, info)


def _save(done: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: StudentTrainConfig,
          labels: Sequence[LabeledQuery], info: Mapping[str, Any]) -> None:
    from distill.student.model import save_student

    with atomic_dir(done) as tmp:
        save_student(model, tokenizer, tmp / "model", config.model.caps)
        with atomic_write(tmp / "weak_labels.jsonl") as fh:
            fh.writelines(lq.to_json() + "\n" for lq in labels)
        write_json(tmp / INFO_FILE, dict(info))


def _read_info(done: Path) -> dict[str, Any]:
    import json

    return {k: v for k, v in json.loads((done / INFO_FILE).read_text()).items() if k != "key"}


def _load_weights(model: PreTrainedModel, model_dir: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)


def train_on_groups(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, groups: Sequence[PairGroup],
                    corpus: Mapping[str, Document], config: StudentTrainConfig, cfg: WarmupConfig) -> list[float]:
    """``cfg.steps`` AdamW steps of ``cfg.batch_size`` groups (seeded order, cycling), linear schedule with 10%
    warm-up, gradient norm clipped at 1; the student's loss. Returns each step's loss."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from distill.core.cross_encoder import PairEncoder
    from distill.student.loss import HybridDistillLoss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    torch.manual_seed(cfg.seed)
    encoder = PairEncoder(tokenizer.backend_tokenizer, config.model.caps)
    loss_fn = HybridDistillLoss(config.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate or config.learning_rate,
                            weight_decay=config.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(0.1 * cfg.steps), cfg.steps)
    order = _cycle(len(groups), cfg.steps * cfg.batch_size, cfg.seed)
    losses: list[float] = []
    for step in range(cfg.steps):
        batch = [groups[i] for i in order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
        enc = encoder.batch([g.query for g in batch for _ in g.doc_ids],
                            [corpus[d].full_text for g in batch for d in g.doc_ids])
        feed = {k: torch.from_numpy(v).to(device) for k, v in enc.items()}
        logits = model(**feed).logits.view(len(batch), -1).float()
        teacher = torch.tensor([g.teacher_scores for g in batch], dtype=torch.float32, device=device)
        loss = loss_fn(logits, teacher)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            logger.info("warm-up step %d/%d loss %.4f", step + 1, cfg.steps, sum(losses[-50:]) / len(losses[-50:]))
    model.to("cpu")
    return losses


def _cycle(n: int, total: int, seed: int) -> list[int]:
    """``total`` indices into ``n`` items: seeded permutations one after another (each item once per pass)."""
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < total:
        perm = list(range(n))
        rng.shuffle(perm)
        out.extend(perm)
    return out[:total]
