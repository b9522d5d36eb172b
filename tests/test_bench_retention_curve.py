"""The retention curve's helpers: the labelled-query count behind each point, the qrels-boosted teacher, the
points kept from an earlier results file and the variant chosen on dev. The curve itself trains students for hours
and runs only as a bench."""

from __future__ import annotations

import json

from bench.retention_curve import choose_variant, kept_points, labelled_for, qrels_boosted, student_config_for
from distill.student.dev_signal import dev_split_size
from distill.student.train import StudentTrainConfig


def test_labelled_for_leaves_exactly_n_training_queries_after_the_dev_split():
    config = StudentTrainConfig()
    for n in (1, 5, 50, 100, 200, 560):
        m = labelled_for(n, config)
        dev = dev_split_size(m, config.dev_fraction, config.dev_min_queries, config.dev_max_queries)
        assert m - dev == n, (n, m, dev)
        smaller = m - 1
        if smaller >= 2:  # the smallest such m: one fewer leaves fewer than n
            assert smaller - dev_split_size(smaller, config.dev_fraction, config.dev_min_queries,
                                            config.dev_max_queries) < n


def test_qrels_boosted_lifts_judged_documents_above_every_other_candidate_in_the_runs_order():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5}, "q2": {"x": 1.0, "y": 0.0}}
    qrels = {"q1": {"c": 1, "d": 2, "b": 0, "z": 1}}
    out = qrels_boosted(run, qrels)
    order = sorted(out["q1"], key=lambda d: -out["q1"][d])
    # judged relevant c, d (run order c > d) and z (missed by the run) above a; b judged 0 stays in place
    assert set(order[:3]) == {"c", "d", "z"} and order.index("c") < order.index("d")
    assert order[3:] == ["a", "b"]
    assert out["q2"] == run["q2"]  # no judgments: the run as it was


def _result(variant: str, kind: str, points: dict[int, tuple[float, float]]) -> dict:
    return {"variant": variant, "teacher": {"kind": kind}, "student_config_overrides": {"v": variant},
            "points": [{"n_train": n, "n_dev": 18, "dev_metrics": {"ndcg@10": dev}, "dev_check": {"z": 5.0},
                        "student": {"ndcg@10": test}} for n, (dev, test) in points.items()]}


def test_the_variant_is_chosen_on_dev_at_its_point_never_on_test():
    results = [_result("default", "ensemble", {50: (0.9, 0.5), 100: (0.70, 0.60)}),
               _result("warmup", "ensemble", {100: (0.75, 0.55)}),
               _result("listwise", "ensemble", {100: (0.72, 0.70)}),
               _result("qrels_boosted_default", "qrels_boosted", {100: (0.99, 0.99)})]
    choice = choose_variant(results, 100)
    assert choice["chosen"] == "warmup"  # best dev; listwise's better test and the other teacher play no part
    assert [r["variant"] for r in choice["variants"]] == ["warmup", "listwise", "default"]


def test_the_default_recipe_is_kept_unless_strictly_beaten_and_no_point_chooses_nothing():
    tie = [_result("a_variant", "ensemble", {100: (0.7, 0.9)}), _result("default", "ensemble", {100: (0.7, 0.5)})]
    assert choose_variant(tie, 100)["chosen"] == "default"
    none = choose_variant(tie, 200)
    assert none["chosen"] is None and none["variants"] == []


def _curve_file(tmp_path, points, **changes) -> tuple:
    earlier = {"variant": "default", "depth": 20, "student_config": {"lr": 3e-5},
               "teacher": {"kind": "ensemble", "weights": {"bm25": 0.55, "dense": 0.45}, "run": "/a/run.trec"},
               "test": {"bm25": {"ndcg@10": 0.67621}, "teacher": {"ndcg@10": 0.71163}},
               "header": {"command": "python -m bench retention_curve", "machine": "AMD EPYC, 2 cores"},
               "points": [{"n_train": n, "student": {"ndcg@10": 0.5}} for n in points]}
    earlier["points"][-1]["measured_by"] = {"isa": "avx2", "date": "2026-12-02"}  # a point that says its run
    path = tmp_path / "retention_curve_default.json"
    path.write_text(json.dumps(earlier))
    now = {k: v for k, v in earlier.items() if k != "points"}
    now["teacher"] = {**now["teacher"], "run": "/b/run.trec"}  # another work folder: same teacher
    now["test"] = {"bm25": {"ndcg@10": 0.676209}, "teacher": {"ndcg@10": 0.711631}}  # float noise of another CPU
    for key, value in changes.items():
        now[key] = value
    return path, now


def test_an_earlier_results_file_of_the_same_curve_keeps_the_points_this_run_did_not_measure(tmp_path):
    path, now = _curve_file(tmp_path, [50, 100, 560])
    kept = kept_points(path, now, measured=[100])
    assert [p["n_train"] for p in kept] == [50, 560]
    # the run that measured each: its own record, else the earlier file's header
    assert kept[0]["measured_by"] == {"command": "python -m bench retention_curve", "machine": "AMD EPYC, 2 cores"}
    assert kept[1]["measured_by"] == {"isa": "avx2", "date": "2026-12-02"}
    assert kept_points(tmp_path / "absent.json", now, measured=[100]) == []


def test_points_of_another_curve_are_never_kept(tmp_path):
    for change in ({"depth": 30}, {"student_config": {"lr": 1e-5}}, {"variant": "warmup"},
                   {"teacher": {"kind": "qrels_boosted", "weights": {"bm25": 0.55, "dense": 0.45}}},
                   {"teacher": {"kind": "ensemble", "weights": {"bm25": 0.6, "dense": 0.4}}},
                   {"test": {"bm25": {"ndcg@10": 0.6762}, "teacher": {"ndcg@10": 0.7300}}}):
        path, now = _curve_file(tmp_path, [50, 100], **change)
        assert kept_points(path, now, measured=[560]) == [], change


def test_a_curve_shares_the_warmed_weights_and_off_is_the_recipe_without_the_warm_up(tmp_path):
    on = student_config_for({}, tmp_path)  # the default recipe warms up
    assert on.warmup.mode == "on" and on.warmup.cache_dir == str(tmp_path / "cache")
    assert student_config_for({"warmup": {"mode": "on"}}, tmp_path) == on
    assert student_config_for({"warmup": {"cache_dir": "/elsewhere"}}, tmp_path).warmup.cache_dir == "/elsewhere"
    off = student_config_for({"warmup": {"mode": "off"}}, tmp_path)  # no cache: the same config as a plain "off"
    assert off.warmup.cache_dir is None
    assert off.to_dict() == StudentTrainConfig.from_dict({"warmup": {"mode": "off"}}).to_dict()
