"""The pipeline's serve_select stage, in parts: candidates timed side by side (a machine that slows down during the
stage must not favour whichever candidate ran first), and the int8 calibration lists taken from the run's own
training queries' first-stage windows, dev queries left out."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from distill.core.formats import Document, Query, write_corpus, write_run
from distill.core.label_files import LabeledDoc, LabeledQuery
from distill.pipeline import model_stages


class _Clock:
    """A fake clock; the machine it measures gets slower as the stage goes on (2x slower by its end)."""

    def __init__(self, total_work: float) -> None:
        self.now, self.total = 0.0, total_work

    def perf_counter(self) -> float:
        return self.now

    def work(self, units: float) -> None:
        self.now += units * (1.0 + self.now / self.total)


class _Scorer:
    def __init__(self, clock: _Clock, cost_per_pair: float) -> None:
        self.clock, self.cost = clock, cost_per_pair
        self.calls: list[list[str]] = []

    def rerank(self, corpus: Any, queries: Any, window: dict[str, dict[str, float]], top_k: int,
               per_query: bool = False) -> dict[str, dict[str, float]]:
        assert per_query, "serve_select scores each query's window in calls of its own"
        self.calls.append(sorted(window))
        out = {q: {d: float(len(q) + len(d)) for d in list(docs)[:top_k]} for q, docs in window.items()}
        self.clock.work(self.cost * sum(len(d) for d in out.values()))
        return out


def _dev(n_queries: int = 40, n_docs: int = 20) -> SimpleNamespace:
    first = {f"q{i}": {f"d{j}": float(n_docs - j) for j in range(n_docs)} for i in range(n_queries)}
    return SimpleNamespace(first_stage=first, queries={q: Query(q, f"text {q}") for q in first})


def test_equal_candidates_time_alike_on_a_machine_that_slows_down(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _dev()
    pairs = sum(len(d) for d in dev.first_stage.values())
    clock = _Clock(total_work=3 * pairs * 1.0)
    monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
    names = ["A", "B", "C"]
    runtimes = {n: SimpleNamespace(scorer=_Scorer(clock, 1.0)) for n in names}
    ctx = SimpleNamespace(corpus={}, config=SimpleNamespace(eval=SimpleNamespace(top_k=20)))
    runs, pairs_per_s = model_stages._time_interleaved(ctx, runtimes, dev)  # type: ignore[arg-type]

    # three identical models: timed one after the other, the last would look about 1.6x slower than the first
    assert max(pairs_per_s.values()) / min(pairs_per_s.values()) < 1.1, pairs_per_s
    # every candidate reranked every query once, in blocks, and each block's order rotates
    for name in names:
        assert runs[name] == runs["A"] and set(runs[name]) == set(dev.first_stage)
        calls = runtimes[name].scorer.calls
        assert sorted(q for c in calls for q in c) == sorted(dev.first_stage)
        assert len(calls) == model_stages.TIMING_BLOCKS


def test_a_faster_candidate_is_measured_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _dev()
    clock = _Clock(total_work=1e9)
    monkeypatch.setattr(time, "perf_counter", clock.perf_counter)
    runtimes = {"slow": SimpleNamespace(scorer=_Scorer(clock, 2.0)),
                "fast": SimpleNamespace(scorer=_Scorer(clock, 1.0))}
    ctx = SimpleNamespace(corpus={}, config=SimpleNamespace(eval=SimpleNamespace(top_k=10)))
    runs, pairs_per_s = model_stages._time_interleaved(ctx, runtimes, dev)  # type: ignore[arg-type]
    assert pairs_per_s["fast"] == pytest.approx(2 * pairs_per_s["slow"], rel=1e-3)
    assert all(len(docs) == 10 for docs in runs["fast"].values())


def test_calibration_lists_are_the_training_queries_windows_without_dev_queries(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", [Document(f"d{j}", "", f"passage {j}") for j in range(6)])
    labels = [LabeledQuery("t1", "train one", (LabeledDoc("d1", 0.2, "bm25"), LabeledDoc("d5", 0.9, "random"))),
              LabeledQuery("t2", "train two", (LabeledDoc("d3", 0.5, "bm25"), LabeledDoc("d4", 0.8, "dense"))),
              LabeledQuery("v1", "dev one", (LabeledDoc("d4", 0.7, "bm25"),))]
    first = write_run(tmp_path / "train.trec", {"t1": {"d0": 3.0, "d1": 2.0, "d2": 1.0}, "v1": {"d4": 1.0}})
    ctx = SimpleNamespace(inputs=SimpleNamespace(corpus=corpus), train_run=first,
                          config=SimpleNamespace(eval=SimpleNamespace(top_k=2)))
    dev = SimpleNamespace(queries={"v1": Query("v1", "dev one")})
    lists = model_stages._calibration_data(ctx, labels, dev, tmp_path / "stage")  # type: ignore[arg-type]
    assert set(lists.run) == {"t1", "t2"} and lists.qrels is None
    # the window the served model reranks: the first stage's top 2, not the labelled (random, dense) candidates
    assert list(lists.run["t1"]) == ["d0", "d1"]
    assert lists.pairs("t1")[1][0] == ("train one", "passage 0")
    # a query the first-stage run lacks: its labelled candidates, in the teacher's order
    assert list(lists.run["t2"]) == ["d4", "d3"]
    assert lists.source == "training queries' first-stage top 2 (2 queries, dev left out)"
    assert (tmp_path / "stage" / "calibration_data" / "run.trec").is_file()
    # every labelled query in dev: nothing to calibrate on, the exporter's bundled lists are used
    all_dev = SimpleNamespace(queries={q: Query(q, "x") for q in ("t1", "t2", "v1")})
    assert model_stages._calibration_data(ctx, labels, all_dev, tmp_path / "stage2") is None  # type: ignore[arg-type]
