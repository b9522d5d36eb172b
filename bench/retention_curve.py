"""Retention curve: what the student keeps of a fixed teacher as teacher-labelled queries grow.

SciFact (``--data``, BEIR layout: corpus.jsonl, queries/qrels .train and .test). The teacher is a run file,
fitted once and then fixed for every point -- the route of a user who brings an LLM ranker's run:

* ``--teacher ensemble`` (default): BM25 + the all-MiniLM-L6-v2 bi-encoder, per-query z-scores, weights fitted
  by coordinate ascent on nDCG@10 over 150 *fit* training queries (seeded), which never train the student. It
  ranks the top 100 candidates (BM25 100 + dense 100) of each remaining training query (659 on SciFact);
* ``--teacher qrels_boosted``: the same candidates, judged documents first, the ensemble's order below: a
  teacher that the warm-up's ensemble labels do not copy.

Each point N of ``--points`` is N training queries *after* the dev split: the student gets the first M of the
seeded pool, M the smallest with M - dev(M) = N under the student's dev rule (560 -> all 659). Labels come from
the run (``teacher label --source run``, no qrels: the student sees the teacher alone); ``student train`` runs
with the default recipe plus ``--student-config``, ``--dev-run`` = BM25 top 50 of the training queries. The
student reranks BM25's top ``--depth`` of all 300 test queries, and so does the teacher. Per point: nDCG@10 of
BM25, teacher and student, retention (student / teacher), student - BM25, training steps and wall time, the
dev signal against chance (z over dev queries) and the dev verdict against the first stage.

Every point is kept in WORK/VARIANT/nN/point.json and reused when its inputs are unchanged, so an interrupted
curve resumes. The results file keeps the points of its earlier version that this run does not measure, when they
come from the same curve (variant, teacher and its weights, depth, test metrics, student config): points measured
on another machine or in another work folder add up to one curve, each with the run that measured it. On 2 CPU
cores the full default curve takes hours; the 50-query point about an hour (400 steps of 4 groups x 8 pairs at 256
tokens, about 7 s a step on an AVX-512 core, 14 s on AVX2). The warm-up adds about 23 minutes on AVX-512, 35 on
AVX2 (800 weak queries labelled, 200 steps of the same size), once: its weights are cached in WORK/cache for every
point and variant.

    python -m bench retention_curve --variant warmup --student-config '{"warmup": {"mode": "on"}}'
    python -m bench retention_curve --variant default --student-config '{"warmup": {"mode": "off"}}'
    python -m bench retention_curve --variant listwise \\
        --student-config '{"warmup": {"mode": "off"}, "loss": {"pointwise": 0, "margin": 0, "listwise": 1}}'
    python -m bench retention_curve --variant qrels_boosted_default --teacher qrels_boosted --points 50,100 \\
        --student-config '{"warmup": {"mode": "off"}}'

The variant ``default`` is the recipe without the warm-up (the default until the warm-up won on dev; the name is
kept so that its measured points stay one curve); ``warmup`` is today's default recipe.

Writes OUT/retention_curve_VARIANT.{json,md,png}; the plot overlays every retention_curve_*.json in OUT, and
OUT/retention_curve_choice.{json,md} names the variant chosen on dev at ``CHOICE_AT`` training queries among those
with the ensemble teacher: the highest student dev nDCG@10 (the teacher's own ranking of the dev queries, the same
dev queries for every variant), the variant ``default`` unless another beats it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, json_object, run_header, write_results
from distill.core.atomic_io import atomic_write, config_hash, write_json
from distill.core.errors import DataError
from distill.core.evaluation import evaluate
from distill.core.formats import Document, Qrels, Query, Run, read_corpus, read_qrels, read_queries

logger = logging.getLogger("bench.retention_curve")
REPO = Path(__file__).resolve().parent.parent
METRICS = ("ndcg@10", "mrr@10")
#: fit queries of the teacher's weights (never used to train the student)
FIT_QUERIES = 150
CANDIDATES = 100
#: training queries at which the variant is chosen on dev
CHOICE_AT = 100


@dataclass
class Setting:
    """What every point shares: the data, the fixed teacher's files and the test-side runs."""

    corpus_path: Path
    corpus: dict[str, Document]
    pool: list[Query]
    test_q: dict[str, Query]
    test_qrels: Qrels
    teacher_run: Path
    teacher_info: dict[str, Any]
    train_bm25: Path
    test_first: Run
    test_metrics: dict[str, dict[str, float]]
    work: Path


@dataclass(frozen=True)
class Options:
    """The command's options, as the helpers read them."""

    data: Path
    work: Path
    out: Path
    variant: str
    teacher: Literal["ensemble", "qrels_boosted"]
    points: list[int]
    depth: int
    student_config: dict[str, Any]


def _points(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        points = sorted({int(p) for p in value.split(",") if p.strip()})
    except ValueError as exc:
        raise click.BadParameter(f"comma-separated integers, got {value!r}") from exc
    if not points or min(points) < 1:
        raise click.BadParameter("needs at least one positive number of training queries")
    return points


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/distilrank_retention_curve"))
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--variant", default="default", help="name of this recipe in the results (file names too)")
@click.option("--teacher", type=click.Choice(["ensemble", "qrels_boosted"]), default="ensemble")
@click.option("--points", default="50,100,200,560", callback=_points, help="training queries after the dev split")
@click.option("--depth", type=int, default=20, help="BM25 candidates reranked per test query")
@click.option("--student-config", callback=json_object, default=None,
              help='JSON overrides of the student config, e.g. \'{"warmup": {"mode": "on"}}\'')
def main(data: Path, work: Path, out: Path, variant: str, teacher: Literal["ensemble", "qrels_boosted"],
         points: list[int], depth: int, student_config: dict[str, Any]) -> int:
    args = Options(data, work, out, variant, teacher, points, depth, student_config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("bm25s", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    config = student_config_for(args.student_config, args.work)
    setting = _setting(args)
    stem = args.out / f"retention_curve_{args.variant}"
    measured = [_point(setting, config, n, args) for n in args.points]
    result: dict[str, Any] = {"variant": args.variant, "teacher": setting.teacher_info, "depth": args.depth,
                              "n_test_queries": len(setting.test_qrels), "test": setting.test_metrics,
                              "student_config_overrides": args.student_config, "student_config": config.to_dict(),
                              "machine": {"cpus": os.cpu_count(), "device": _device()},
                              "wall_time_s": round(time.perf_counter() - t0, 1)}
    result["points"] = sorted([*measured, *kept_points(stem.with_suffix(".json"), result, args.points)],
                              key=lambda p: p["n_train"])
    md = _markdown(result)
    write_results(stem, result, md)
    results = _curves(args.out)
    _plot(results, stem.parent / f"{stem.name}.png")
    choice = choose_variant(results, CHOICE_AT)
    write_results(args.out / "retention_curve_choice", choice, _choice_markdown(choice))
    print(md)
    return 0


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"


def _measured_by() -> dict[str, Any]:
    """The run that measures a point: its header (command, commit, date, machine) and the CPU's ISA level, which
    tells apart 2-core machines whose header reads the same."""
    from distill.core.isa import detect_isa

    return {**run_header().to_dict(), "isa": detect_isa()}


def _setting(args: Options) -> Setting:
    """Data, the teacher fitted once (its run file kept in WORK and reused) and BM25 runs."""
    from distill.core.bm25 import BM25Index
    from distill.core.formats import write_queries, write_run

    corpus_path = args.data / "corpus.jsonl"
    corpus = read_corpus(corpus_path)
    train_all = read_queries(args.data / "queries.train.tsv")
    train_qrels = read_qrels(args.data / "qrels.train.txt")
    qids = sorted(q for q in train_all if q in train_qrels)
    random.Random(13).shuffle(qids)
    fit = {q: train_all[q] for q in qids[:FIT_QUERIES]}
    pool = [train_all[q] for q in qids[FIT_QUERIES:]]
    test_q = read_queries(args.data / "queries.test.tsv")
    test_qrels = read_qrels(args.data / "qrels.test.txt")
    bm25 = BM25Index(corpus)
    write_queries(args.work / "pool_queries.tsv", pool)
    train_bm25 = args.work / "train_bm25.trec"
    if not train_bm25.exists():
        write_run(train_bm25, bm25.search({q.qid: q for q in pool}, top_k=50), tag="bm25")
    test_first = bm25.search(test_q, top_k=args.depth)
    teacher_run, info, teacher_test = _teacher(args, corpus, bm25, fit, pool, train_qrels, test_q, test_first)
    test_metrics = {name: evaluate(test_qrels, run, METRICS).metrics
                    for name, run in (("bm25", test_first), ("teacher", teacher_test))}
    return Setting(corpus_path, corpus, pool, test_q, test_qrels, teacher_run, info, train_bm25, test_first,
                   test_metrics, args.work)


def _teacher(args: Options, corpus: Mapping[str, Document], bm25: Any, fit: dict[str, Query],
             pool: list[Query], qrels: Qrels, test_q: dict[str, Query], test_first: Run) -> tuple[Path, dict, Run]:
    """(training run file, description, the ensemble's rerank of the test candidates)."""
    from distill.core.formats import write_run
    from distill.teacher.candidates import DenseRetriever
    from distill.teacher.sources import BM25Source, DenseSource, EnsembleSource, TeacherSource, fit_weights

    dense = DenseRetriever(corpus, "default", args.work / "cache")
    members: dict[str, TeacherSource] = {"dense": DenseSource(corpus, retriever=dense),
                                         "bm25": BM25Source(corpus, bm25)}

    def candidates(queries: Mapping[str, Query]) -> dict[str, list[str]]:
        b, d = bm25.search(queries, top_k=CANDIDATES), dense.search(queries, top_k=CANDIDATES)
        return {q: list(dict.fromkeys([*b.get(q, {}), *d.get(q, {})])) for q in queries}

    info_path = args.work / "teacher_ensemble.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        fit_c = candidates(fit)
        weights, alone = fit_weights({m: s.score(fit, fit_c) for m, s in members.items()},
                                     {q: qrels[q] for q in fit})
        info = {"kind": "ensemble", "weights": weights, "fit_queries": len(fit), "fit_dev_ndcg10_alone": alone}
        write_json(info_path, info)
    teacher = EnsembleSource(members, info["weights"])
    run_path = args.work / f"teacher.{args.teacher}.trec"
    if not run_path.exists():
        queries = {q.qid: q for q in pool}
        run = teacher.score(queries, candidates(queries))
        if args.teacher == "qrels_boosted":
            run = qrels_boosted(run, qrels)
        write_run(run_path, run, tag=f"teacher_{args.teacher}")
    test_teacher = teacher.score(test_q, {q: list(test_first[q]) for q in test_q if test_first.get(q)})
    return run_path, {**info, "kind": args.teacher, "run": str(run_path)}, test_teacher


def qrels_boosted(run: Run, qrels: Qrels) -> Run:
    """Judged relevant documents above every other candidate (in the run's order among themselves), the run's
    order below; judged documents the run missed are added at the top."""
    out: Run = {}
    for qid, docs in run.items():
        judged = [d for d, rel in qrels.get(qid, {}).items() if rel > 0]
        lift = (max(docs.values()) - min(docs.values()) + 1.0) if docs else 1.0
        top = max(docs.values(), default=0.0)
        out[qid] = {**docs, **{d: docs.get(d, top) + lift for d in judged}}
    return out


def student_config_for(overrides: Mapping[str, Any], work: Path) -> Any:
    """The student config of a curve: the defaults plus ``overrides``; a warm-up that may run keeps its weights in
    WORK/cache, so that every point and variant on the same corpus loads them instead of warming up again."""
    from distill.student.train import StudentTrainConfig

    config = StudentTrainConfig.from_dict(dict(overrides))
    if config.warmup.mode != "off" and config.warmup.cache_dir is None:
        config = replace(config, warmup=replace(config.warmup, cache_dir=str(work / "cache")))
    return config


def kept_points(path: Path, result: Mapping[str, Any], measured: list[int]) -> list[dict[str, Any]]:
    """Points of an earlier results file ``path`` that this run did not measure, kept when they come from the same
    curve: same variant, teacher (kind and fitted weights), depth, test metrics and full student config. Each kept
    point carries the run that measured it (``measured_by``; the earlier file's header for a point without one).
    Nothing is kept from a file of another curve."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    same = ("variant", "depth", "student_config")
    if any(earlier.get(k) != result[k] for k in same) or _rounded_test(earlier) != _rounded_test(result) or any(
            earlier.get("teacher", {}).get(k) != result["teacher"][k] for k in ("kind", "weights")):
        logger.warning("%s is another curve (its variant, teacher, depth, test metrics or student config differ): "
                       "its points are not kept", path)
        return []
    kept = [{**p, "measured_by": p.get("measured_by", earlier.get("header"))}
            for p in earlier.get("points", []) if p["n_train"] not in measured]
    if kept:
        logger.info("points %s kept from %s", [p["n_train"] for p in kept], path)
    return kept


def _rounded_test(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """A result's test metrics to 4 places: the same curve's BM25 and teacher, float noise across CPUs aside."""
    return {run: {m: round(v, 4) for m, v in ms.items()} for run, ms in result.get("test", {}).items()}


def labelled_for(n_train: int, config: Any) -> int:
    """The smallest number of labelled queries whose dev split leaves ``n_train`` to train on."""
    from distill.student.dev_signal import dev_split_size

    m = n_train + 1
    while m - dev_split_size(m, config.dev_fraction, config.dev_min_queries, config.dev_max_queries) < n_train:
        m += 1
    return m


def _point(setting: Setting, config: Any, n_train: int, args: Options) -> dict[str, Any]:
    """One point of the curve, from WORK/VARIANT/nN/point.json when its key matches."""
    m = labelled_for(n_train, config)
    if m > len(setting.pool):
        raise DataError(f"{n_train} training queries need {m} labelled ones; the pool has {len(setting.pool)}")
    key = {"config": config.to_dict(), "teacher": args.teacher, "depth": args.depth, "n_labelled": m}
    point_dir = setting.work / args.variant / f"n{n_train}"
    cached = point_dir / "point.json"
    if cached.exists() and json.loads(cached.read_text()).get("key") == config_hash(key):
        logger.info("point %d: kept from an earlier run (%s)", n_train, cached)
        return json.loads(cached.read_text())["point"]
    point = _train_point(setting, config, n_train, m, args, point_dir)
    write_json(cached, {"key": config_hash(key), "point": point})
    return point


def _train_point(setting: Setting, config: Any, n_train: int, m: int, args: Options,
                 point_dir: Path) -> dict[str, Any]:
    from distill.core.formats import write_queries
    from distill.student.model import student_scorer
    from distill.student.train import train_student
    from distill.teacher.config import LabelConfig
    from distill.teacher.label import run_label

    queries = write_queries(point_dir / "queries.tsv", setting.pool[:m])
    label_cfg = LabelConfig(source="run", run=str(setting.teacher_run), run_depth=CANDIDATES, queries=str(queries),
                            corpus=str(setting.corpus_path))
    labels = run_label(label_cfg, setting.work / f"labels_{args.teacher}" / f"n{n_train}", corpus=setting.corpus)
    logger.info("point %d: %d labelled queries, training", n_train, m)
    res = train_student(config, labels, setting.corpus_path, None, point_dir / "student",
                        dev_run_path=setting.train_bm25, qrels_kind="teacher", resume=True)
    scorer = student_scorer(res.model_dir)
    t0 = time.perf_counter()
    student_test = scorer.rerank(setting.corpus, setting.test_q, setting.test_first, args.depth)
    rerank_s = time.perf_counter() - t0
    student = evaluate(setting.test_qrels, student_test, METRICS).metrics
    teacher, bm25 = setting.test_metrics["teacher"]["ndcg@10"], setting.test_metrics["bm25"]["ndcg@10"]
    return {"n_train": n_train, "n_labelled": m, "n_dev": m - n_train, "student": student,
            "retention_ndcg@10": round(student["ndcg@10"] / teacher, 4),
            "student_minus_bm25_ndcg@10": round(student["ndcg@10"] - bm25, 4), "steps": res.steps,
            "train_wall_time_s": round(res.wall_time_s, 1),
            "train_s_per_query": round(res.wall_time_s / n_train, 2), "test_rerank_s": round(rerank_s, 1),
            "dev_signal": res.dev_signal, "dev_metrics": res.dev_metrics, "dev_check": res.dev_check,
            "checkpoint": res.checkpoint, "warmup": res.warmup, "dev_verdict": res.verdict,
            "measured_by": _measured_by()}


def _markdown(result: dict[str, Any]) -> str:
    t = result["teacher"]
    test = result["test"]
    lines = [f"# Retention curve: `{result['variant']}` (SciFact, teacher `{t['kind']}`, no qrels)", "",
             f"Teacher: run file of the BM25 + dense ensemble, weights {t['weights']} fitted once on "
             f"{t['fit_queries']} fit queries" + (", judged documents lifted to the top" if t["kind"] ==
                                                  "qrels_boosted" else "") + ". "
             f"Test: all {result['n_test_queries']} test queries, BM25 top {result['depth']} reranked; "
             f"BM25 nDCG@10 {test['bm25']['ndcg@10']:.4f}, teacher {test['teacher']['ndcg@10']:.4f}. "
             f"Student overrides: `{json.dumps(result['student_config_overrides'])}`; "
             f"machine: {result['machine']['cpus']} CPUs, {result['machine']['device']}.", "",
             "| training queries | dev queries | student nDCG@10 | retention | student − BM25 | steps | "
             "training time (s) | s / query | dev nDCG@10 (teacher's ranking) | dev z vs random | warm-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in result["points"]:
        z = p["dev_check"].get("z")
        lines.append(f"| {p['n_train']} | {p['n_dev']} | {p['student']['ndcg@10']:.4f} | "
                     f"{p['retention_ndcg@10']:.3f} | {p['student_minus_bm25_ndcg@10']:+.4f} | {p['steps']} | "
                     f"{p['train_wall_time_s']:.0f} | {p['train_s_per_query']:.1f} | "
                     f"{p['dev_metrics']['ndcg@10']:.4f} | {'n/a' if z is None else f'{z:.1f}'} | "
                     f"{'on' if p['warmup'].get('ran') else 'off'} |")
    return "\n".join(lines) + "\n"


def choose_variant(results: list[dict[str, Any]], at: int) -> dict[str, Any]:
    """The variant chosen on dev at ``at`` training queries: among results with the ensemble teacher and a point
    there, the highest student dev nDCG@10; ``default`` unless another variant is strictly higher. ``chosen`` is
    None while no variant has that point."""
    rows = []
    for res in results:
        if res.get("teacher", {}).get("kind") != "ensemble":
            continue
        for p in res.get("points", []):
            if p["n_train"] == at:
                rows.append({"variant": res["variant"], "overrides": res.get("student_config_overrides", {}),
                             "dev_ndcg10": p["dev_metrics"]["ndcg@10"], "n_dev": p["n_dev"],
                             "dev_z": p["dev_check"].get("z"), "test_ndcg10": p["student"]["ndcg@10"]})
    rows.sort(key=lambda r: (-r["dev_ndcg10"], r["variant"] != "default", r["variant"]))
    chosen = rows[0]["variant"] if rows else None
    return {"at": at, "rule": "highest student dev nDCG@10 (teacher's ranking); default unless strictly beaten",
            "chosen": chosen, "variants": rows}


def _choice_markdown(choice: dict[str, Any]) -> str:
    lines = [f"# Retention curve: variant chosen on dev at {choice['at']} training queries", "",
             f"Rule: {choice['rule']}. Chosen: **{choice['chosen'] or 'none yet'}**. The test column is for the "
             "record; it played no part in the choice.", "",
             "| variant | overrides | dev queries | dev nDCG@10 | dev z vs random | test nDCG@10 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in choice["variants"]:
        z = "n/a" if r["dev_z"] is None else f"{r['dev_z']:.1f}"
        lines.append(f"| {r['variant']} | `{json.dumps(r['overrides'])}` | {r['n_dev']} | {r['dev_ndcg10']:.4f} | "
                     f"{z} | {r['test_ndcg10']:.4f} |")
    return "\n".join(lines) + "\n"


def _curves(out: Path) -> list[dict[str, Any]]:
    """Every variant's curve in ``out`` (its retention_curve_VARIANT.json; the choice file is not a curve)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("retention_curve_*.json"))
            if p.stem != "retention_curve_choice"]


def _plot(results: list[dict[str, Any]], png: Path) -> None:
    """Retention by training queries for every variant in ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for res in results:
        pts = res.get("points", [])
        ax.plot([p["n_train"] for p in pts], [p["retention_ndcg@10"] for p in pts], marker="o",
                label=f"{res['variant']} (teacher {res['teacher']['kind']})")
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training queries (after the dev split)")
    ax.set_ylabel("retention (student / teacher nDCG@10)")
    ax.set_title("SciFact: retention by number of teacher-labelled queries")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from bench import run

    run(main)
