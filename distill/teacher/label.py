"""``distilrank teacher label``: teacher scores for candidate lists of training queries, from any teacher source.

Output follows :mod:`distill.core.label_files`; one line is appended (and fsynced) per query, so an interrupted
run resumes with the queries not yet labelled, whatever the source (a dead endpoint included). An
ensemble's fitted weights are written to ``ensemble.json`` before any label, so a resumed run labels
with the same weights. The file's first line records the teacher (:func:`labels_teacher`): resuming with
another source or other scoring settings is a ConfigError (exit 2) naming both. The manifest is written
last, when every query is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from distill.core.atomic_io import write_json
from distill.core.errors import ConfigError
from distill.core.fault_injection import fault_point
from distill.core.formats import Document, Qrels, Query, Run, read_corpus, read_qrels, read_queries
from distill.core.label_files import (
    LabeledDoc,
    LabeledQuery,
    LabelsTeacher,
    append_labels,
    read_teacher,
    start_labels,
    valid_qids,
)
from distill.core.manifest import write_manifest
from distill.teacher._training_pairs import subsample
from distill.teacher.candidates import gather_candidates
from distill.teacher.config import LabelConfig
from distill.teacher.sources import EnsembleSource, TeacherSource, combine_runs, fit_weights, scored_qids

__all__ = ["ENSEMBLE_CHECK_FILE", "ENSEMBLE_FILE", "LABELS_FILE", "SourceFactory", "ensemble_fit_qids",
           "label_fit_qids", "labels_teacher", "run_label"]

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.jsonl"
ENSEMBLE_FILE = "ensemble.json"
#: with the LLM alone: would an ensemble with dense and BM25 have done better on the fit queries?
ENSEMBLE_CHECK_FILE = "ensemble_check.json"
#: queries whose candidates are gathered together (BM25 and dense retrieval run as one batch)
_CHUNK = 16


class SourceFactory:
    """Builds teacher sources over one corpus, sharing one BM25 index and one dense index between the
    candidate generator and the sources (each index is built once per corpus)."""

    def __init__(self, config: LabelConfig, corpus: Mapping[str, Document], cache_dir: Path | None):
        self.config, self.corpus, self.cache_dir = config, corpus, cache_dir
        self._bm25: Any = None
        self._dense: Any = None
        self._dense_model: str | None = None

    @property
    def bm25_index(self) -> Any:
        if self._bm25 is None:
            from distill.core.bm25 import BM25Index

            self._bm25 = BM25Index(self.corpus)
        return self._bm25

    @property
    def bm25_config(self) -> Any:
        return self.bm25_index.config

    @property
    def dense_retriever(self) -> Any:
        """The dense index of ``config.dense_model`` (rebuilt when the config names another model, e.g. the
        pipeline's fine-tuned one)."""
        if self._dense is None or self._dense_model != self.config.dense_model:
            from distill.teacher.candidates import DenseRetriever

            self._dense = DenseRetriever(self.corpus, self.config.dense_model, self.cache_dir)
            self._dense_model = self.config.dense_model
        return self._dense

    def build(self, name: str) -> TeacherSource:
        from distill.teacher import sources as s

        cfg = self.config
        if name == "bm25":
            return s.BM25Source(self.corpus, self.bm25_index)
        if name == "dense":
            return s.DenseSource(self.corpus, retriever=self.dense_retriever)
        if name == "run":
            return s.RunSource(cfg.run or "")
        if name in ("endpoint", "openai"):
            return s.remote_source(name, self.corpus, cfg)
        if name == "llm":
            return s.LLMSource(self.corpus, cfg.teacher, cfg.llm_score, cfg.batch_size, cfg.max_length, cfg.device)
        raise ValueError(f"unknown source {name!r}")

    def candidates(self, queries: Mapping[str, Query], qrels: Qrels | None,
                   run_source: Any = None) -> dict[str, list[tuple[str, str]]]:
        cfg = self.config
        if cfg.source == "run":
            from distill.teacher.candidates import merge_candidates

            return {q: merge_candidates({"run": run_source.candidates(q, cfg.run_depth),
                                         "positive": [d for d, r in (qrels or {}).get(q, {}).items()
                                                      if r > 0 and d in self.corpus]}) for q in queries}
        return gather_candidates(queries, self.corpus, cfg.n_bm25, cfg.n_dense, cfg.n_random, qrels, cfg.dense_model,
                                 self.cache_dir, cfg.seed, bm25=self.bm25_index if cfg.n_bm25 else None,
                                 dense=self.dense_retriever if cfg.n_dense else None)


def _hash_order(qids: list[str]) -> list[str]:
    return sorted(qids, key=lambda q: (hashlib.sha1(q.encode()).hexdigest(), q))


def ensemble_fit_qids(qids: Iterable[str], qrels: Qrels | None, n: int) -> list[str]:
    """The queries an ensemble fits its weights on: the first ``n`` judged ones in a fixed hash order (the same
    on every shard and on resume; a stage that trains a member on the training qrels leaves these out)."""
    return [q for q in _hash_order(list(qids)) if any(r >= 1 for r in (qrels or {}).get(q, {}).values())][:n]


def label_fit_qids(config: LabelConfig, queries: Mapping[str, Query], qrels: Qrels | None) -> list[str]:
    """The queries :func:`run_label` fits an ensemble's weights on, for this config (empty for other sources
    or fixed weights)."""
    if config.source != "ensemble" or config.weights is not None:
        return []
    return ensemble_fit_qids(subsample(list(queries), config.max_queries, config.seed), qrels, config.fit_queries)


#: with synthetic qrels only, a member is kept when its nDCG@10 is at least this share of the best member's
SYNTHETIC_FLOOR = 0.5


def synthetic_qrels_weights(runs: Mapping[str, Run], qrels: Qrels) -> tuple[dict[str, float], dict[str, float]]:
    """Ensemble weights when the only qrels are synthetic: (equal weights over the members that score at least
    :data:`SYNTHETIC_FLOOR` x the best member's nDCG@10, each member alone).

    A synthetic query is written from its source document's words and kept only when BM25 (or dense) finds
    that document again, so its one "relevant" document is a lexical match by construction. On SciFact the
    800 synthetic queries of ``--preset small`` scored BM25 0.85 and dense 0.52, and coordinate ascent gave BM25
    all the weight; on 50 real training queries the same fit put 0.44-0.67 on dense (README). Synthetic qrels
    tell a broken member (the CPU-trained LLM: 0.08) from a working one, not how to weigh working ones.
    """
    from distill.core.evaluation import evaluate

    qids = scored_qids(runs, qrels, "weigh them")
    alone = {m: evaluate({q: qrels[q] for q in qids}, {q: r[q] for q in qids}, ["ndcg@10"]).metrics["ndcg@10"]
             for m, r in runs.items()}
    best = max(alone.values())
    kept = sorted(m for m, v in alone.items() if v >= SYNTHETIC_FLOOR * best)
    return {m: round(1.0 / len(kept), 4) if m in kept else 0.0 for m in runs}, alone


def _fit_runs(config: LabelConfig, factory: SourceFactory, members: dict[str, Any], queries: Mapping[str, Query],
              cands: Mapping[str, list[str]], cache: Path, fit_key: Mapping[str, Any]) -> dict[str, Run]:
    """Each member's scores of the fit queries, kept per member as it finishes: a run killed while fitting
    resumes with the members already scored (an LLM member costs minutes), never mixing another fit's."""
    from distill.core.atomic_io import config_hash

    key = config_hash({**fit_key, "queries": sorted(queries), "candidates": {q: list(c) for q, c in cands.items()}})
    runs: dict[str, Run] = {}
    for m in config.members:
        path = cache / f"{m}.{key[:16]}.json"
        if path.is_file():
            runs[m] = json.loads(path.read_text())
            logger.info("ensemble: the %s member's fit scores were kept from an interrupted run", m)
            continue
        members[m] = factory.build(m)
        runs[m] = members[m].score(queries, cands)
        write_json(path, runs[m])
    return runs


def _ensemble(config: LabelConfig, factory: SourceFactory, queries: Mapping[str, Query], qids: list[str],
              qrels: Qrels | None, out_dir: Path) -> EnsembleSource:
    """The ensemble with fixed, resumed or freshly fitted weights (written to ``ensemble.json`` first)."""
    path = out_dir / ENSEMBLE_FILE
    members: dict[str, Any] = {}

    def weighted(weights: Mapping[str, float]) -> EnsembleSource:
        # only members with a positive weight are built: a dropped LLM is never loaded, on resume neither
        active = {m: float(w) for m, w in weights.items() if w > 0}
        return EnsembleSource({m: members.get(m) or factory.build(m) for m in active}, active)

    fit_key = {"members": list(config.members), "weights": config.weights, "qrels": config.qrels,
               "fit_queries": config.fit_queries, "seed": config.seed, "qrels_kind": config.qrels_kind,
               "synthetic_weights": config.synthetic_weights}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fit_key") == fit_key:
            logger.info("ensemble: resuming with the saved weights %s", saved["weights"])
            return weighted(saved["weights"])
    info: dict[str, Any] = {"fit_key": fit_key, "members": list(config.members)}
    if config.weights is not None:
        weights = {m: float(config.weights.get(m, 0.0)) for m in config.members}
        info.update(weights=weights, fitted_on="given in the config")
    else:
        fit = ensemble_fit_qids(qids, qrels, config.fit_queries)
        if len(fit) < 5:
            weights = dict.fromkeys(config.members, round(1.0 / len(config.members), 4))
            logger.warning("ensemble: %d labelled queries have qrels (need >= 5 to fit): equal weights %s", len(fit),
                           weights)
            info.update(weights=weights, fitted_on="equal weights (too few queries with qrels to fit)")
        else:
            fq = {q: queries[q] for q in fit}
            cands = {q: [d for d, _ in c] for q, c in factory.candidates(fq, qrels).items()}
            runs = _fit_runs(config, factory, members, fq, cands, out_dir / "ensemble_fit", fit_key)
            fit_qrels = {q: qrels[q] for q in fit}  # type: ignore[index]
            if config.qrels_kind == "synthetic" and config.synthetic_weights == "equal":
                weights, alone = synthetic_qrels_weights(runs, fit_qrels)
                how = (f"{len(fit)} labelled queries with synthetic qrels: equal weights for the members scoring at "
                       f"least {SYNTHETIC_FLOOR:g} x the best member's nDCG@10 (synthetic qrels favour BM25 by "
                       "construction, so they are not used to fit weights)")
            else:
                weights, alone = fit_weights(runs, fit_qrels, seed=config.seed)
                how = f"{len(fit)} labelled queries with {config.qrels_kind} qrels (coordinate ascent on nDCG@10)"
            combined = combine_runs(runs, weights)
            from distill.core.evaluation import evaluate

            info.update(weights=weights, dev_ndcg10_alone=alone, n_fit_queries=len(fit),
                        dev_ndcg10_ensemble=evaluate(fit_qrels, combined, ["ndcg@10"]).metrics["ndcg@10"],
                        fitted_on=how)
            logger.info("ensemble weights %s (%s)", weights, how)
    write_json(path, info)
    return weighted(info["weights"])


def _ensemble_check(config: LabelConfig, factory: SourceFactory, queries: Mapping[str, Query], qids: list[str],
                    qrels: Qrels, labels_path: Path, out_dir: Path) -> dict[str, Any]:
    """With the LLM teacher alone: would an ensemble with dense and BM25 do better on the fit queries?

    Uses the LLM scores already in the label file (no extra LLM call); the answer is written to
    ``ensemble_check.json`` and logged as a warning when the ensemble wins by more than half a point.
    """
    from distill.core.evaluation import evaluate
    from distill.core.label_files import iter_labels

    fit = set(ensemble_fit_qids(qids, qrels, config.fit_queries))
    llm = {r.qid: {d.doc_id: d.score for d in r.docs} for r in iter_labels(labels_path) if r.qid in fit}
    if len(llm) < 5:
        return {"checked": False, "why": f"{len(llm)} labelled queries with qrels (need >= 5)"}
    fq = {q: queries[q] for q in llm}
    cands = {q: list(d) for q, d in llm.items()}
    runs = {"llm": llm, **{m: factory.build(m).score(fq, cands) for m in ("dense", "bm25")}}
    weights, alone = fit_weights(runs, {q: qrels[q] for q in llm}, seed=config.seed)
    ens = evaluate({q: qrels[q] for q in llm}, combine_runs(runs, weights), ["ndcg@10"]).metrics["ndcg@10"]
    favours = ens > alone["llm"] + 0.005
    info = {"checked": True, "n_queries": len(llm), "dev_ndcg10_alone": alone, "dev_ndcg10_ensemble": ens,
            "ensemble_weights": weights, "favours_ensemble": favours}
    write_json(out_dir / ENSEMBLE_CHECK_FILE, info)
    if favours:
        logger.warning("label: on %d queries with qrels an ensemble %s scores nDCG@10 %.4f vs the LLM alone %.4f; "
                       "consider label.source = ensemble", len(llm), weights, ens, alone["llm"])
    return info


#: per source: the settings that decide its scores, and those among them that are paths. An endpoint's URL
#: names a server, not a model (a server restarted on another port is the same teacher), so its model name
#: is what is checked.
_SCORING: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llm": (("llm_score", "max_length"), ("teacher",)),
    "run": (("run_depth",), ("run",)),
    "endpoint": (("endpoint_model",), ()),
    "openai": (("endpoint_model", "openai_score"), ()),
    "bm25": ((), ()),
    "dense": ((), ("dense_model",)),
}
_ENSEMBLE_FIELDS = ("members", "weights", "fit_queries", "qrels_kind", "synthetic_weights", "seed")
_CANDIDATE_FIELDS = ("n_bm25", "n_dense", "n_random", "seed")


def _path_record(value: str | None, base: Path) -> dict[str, str]:
    if not value:
        return {}
    path = Path(value)
    if not path.exists():
        return {"path": str(value)}  # a Hub name or "default"
    path = path.resolve()
    return {"path": str(path), "relative": os.path.relpath(path, base.resolve())}


def labels_teacher(config: LabelConfig, out_dir: Path) -> LabelsTeacher:
    """The teacher a labels file records in its header: the source and the settings that decide its scores or
    its candidates; not batch sizes, device, timeouts, retries, the API key, ``max_queries`` or the shard,
    which leave every label as it is."""
    fields: list[str] = []
    path_fields: list[str] = []
    for name in sorted(config.used_sources):
        fields += _SCORING[name][0]
        path_fields += _SCORING[name][1]
    if config.source == "ensemble":
        fields += _ENSEMBLE_FIELDS
    if config.source != "run":  # the run source takes its candidates from the run
        fields += _CANDIDATE_FIELDS
        path_fields += ["dense_model"] if config.n_dense else []
    raw = config.to_dict()
    values = {key: raw.get(key) for key in dict.fromkeys(fields)} | {"positives": config.qrels is not None}
    values = json.loads(json.dumps(values, default=str))  # as it reads back from the file
    paths = {key: _path_record(raw.get(key), out_dir) for key in dict.fromkeys(path_fields)}
    return LabelsTeacher(config.source, values, paths)


def _claim_labels(out: Path, teacher: LabelsTeacher, done: set[str]) -> None:
    """Begin a new labels file with its teacher; resuming one that another teacher began is exit 2."""
    recorded = read_teacher(out)
    if recorded is None:
        if done:
            logger.warning("%s records no teacher (an older distilrank wrote it): resuming without checking that "
                           "its %d labelled queries come from %s", out, len(done), teacher.describe())
        else:
            start_labels(out, teacher)
        return
    diff = recorded.differences(teacher)
    if diff:
        raise ConfigError(f"{out} was labelled by source {recorded.source!r}, but this run asks for source "
                          f"{teacher.source!r}; they differ in {'; '.join(diff)} (recorded vs asked). Resume with "
                          "the same teacher and settings, or label into another --out.")


def run_label(config: LabelConfig, out_dir: str | Path, progress: bool = False,
              corpus: Mapping[str, Document] | None = None, factory: SourceFactory | None = None) -> Path:
    """Label (or resume labelling) the configured queries; returns the labels file."""
    config.require_data()
    out_dir = Path(out_dir)
    out = out_dir / LABELS_FILE
    resolved = config.to_dict()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    queries = read_queries(config.queries)
    corpus = corpus if corpus is not None else read_corpus(config.corpus)
    qrels = read_qrels(config.qrels) if config.qrels else None
    qids = all_qids = subsample(list(queries), config.max_queries, config.seed)
    shard_i, shard_n = config.shard_index()
    if shard_n > 1:
        qids = [q for k, q in enumerate(sorted(qids)) if k % shard_n == shard_i]
        logger.info("label: shard %d/%d holds %d queries", shard_i, shard_n, len(qids))
    done = valid_qids(out)
    _claim_labels(out, labels_teacher(config, out_dir), done)
    todo = [q for q in qids if q not in done]
    logger.info("label: %d queries, %d already labelled, %d to go (source %s)", len(qids), len(qids) - len(todo),
                len(todo), config.source)
    factory = factory or SourceFactory(config, corpus, out_dir / "cache")
    n_docs = 0
    extra: dict[str, Any] = {"source": config.source}
    if todo or config.source == "ensemble":
        source: TeacherSource = (_ensemble(config, factory, queries, all_qids, qrels, out_dir)
                                 if config.source == "ensemble" else factory.build(config.source))
        if isinstance(source, EnsembleSource):
            extra["ensemble"] = json.loads((out_dir / ENSEMBLE_FILE).read_text())
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="label", unit="chunk")
        for chunk in chunks:
            cq = {q: queries[q] for q in chunk}
            cands = factory.candidates(cq, qrels, source if config.source == "run" else None)
            for qid in chunk:  # scored and appended one query at a time: the resume unit of slow teachers
                scores = source.score({qid: cq[qid]}, {qid: [d for d, _ in cands[qid]]})
                docs = tuple(LabeledDoc(d, float(scores[qid][d]), src) for d, src in cands[qid])
                append_labels(out, LabeledQuery(qid, queries[qid].text, docs))
                n_docs += len(docs)
                fault_point("label:query")
    if config.source == "llm" and qrels:
        extra["ensemble_check"] = _ensemble_check(config, factory, queries, qids, qrels, out, out_dir)
    inputs = {"queries": config.queries, "corpus": config.corpus}
    if "llm" in config.used_sources:
        inputs["teacher_spec"] = str(Path(config.teacher) / "teacher.json")
    if config.run:
        inputs["run"] = config.run
    if config.qrels:
        inputs["qrels"] = config.qrels
    write_manifest(out_dir, "teacher-label", resolved, inputs=inputs,
                   metrics={"queries": len(qids), "labelled_this_run": len(todo), "docs_scored_this_run": n_docs},
                   wall_time_s=time.perf_counter() - started, extra=extra)
    return out
