"""The tiny pipeline end to end: report contract, regression gate, stage skipping and reruns, and the
kill-and-resume chain.

One uninterrupted run (``tiny_run``, a ``distilrank pipeline`` subprocess like the killed ones) serves every
test here, and is also the reference the kill chain must reproduce: so the chain lives in this module too
(``make test`` runs one module per xdist worker, and a second module would pay for a second run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import ConfigError
from distill.core.fault_injection import ENV
from distill.presets import resolve_config

REPO = Path(__file__).resolve().parents[2]
# every test here runs the tiny pipeline end to end (subprocesses, minutes on 2 cores)
pytestmark = pytest.mark.slow


def _pipeline(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``distilrank pipeline --preset tiny`` in a child process (a kill must not take the test runner with it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    return subprocess.run([sys.executable, "-m", "distill.cli", "pipeline", "--preset", "tiny", *extra,
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    report = json.loads((out / "report.json").read_text())
    return {s: {m: round(v, 10) for m, v in ms.items()} for s, ms in report["metrics"].items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "out"
    proc = _pipeline(out)
    report = json.loads((out / "report.json").read_text())
    # random 2-layer models: the gate decides from the dev split whether this student may ship
    assert proc.returncode == (5 if report["regression"] else 0), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert main(["pipeline", "--preset", "tiny", "--allow-regression", "--out", str(out)]) == 0
    return out


def test_regression_gate_says_so_first(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "report.json").read_text())
    first_line = (tiny_run / "report.md").read_text().splitlines()[0]
    interp = report["interpolation"]
    assert report["regression"] == (not interp["dev_ndcg@10"] > interp["dev_ndcg@10_first_stage"])
    assert first_line.startswith("**REGRESSION" if report["regression"] else "**OK")


def test_tiny_pipeline_report_contract(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "report.json").read_text())
    for system in ("first_stage", "teacher", "student", "student_interpolated"):
        for metric in ("ndcg@10", "mrr@10"):
            value = report["metrics"][system][metric]
            assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert set(report["stage_wall_time_s"]) >= {"teacher_cpt", "teacher_sft", "teacher_label", "student",
                                                 "eval_teacher"}
    assert report["teacher"]["source"] == "ensemble" and set(report["teacher"]["weights"]) == {"llm", "dense", "bm25"}
    assert report["conventions"]["ignore_identical_ids"] is False
    for path in (*report["artifacts"]["teacher_llm"].values(), report["artifacts"]["student"],
                 report["artifacts"]["labels"], *report["artifacts"]["runs"].values()):
        assert Path(path).exists(), path
    assert 0.0 <= report["interpolation"]["first_stage_weight"] <= 1.0
    assert report["interpolation"]["depth"] == report["rerank_depth"]["student"]
    serve = Path(report["artifacts"]["serve"])
    assert serve == tiny_run / "serve" and (serve / "model_card.json").exists()
    from distill.core.model_card import load_model_card

    card = load_model_card(serve)
    assert card.interpolation is not None and card.interpolation.to_dict()["first_stage_weight"] == \
        report["interpolation"]["first_stage_weight"]
    assert [c["kept"] for c in report["serve_candidates"]].count(True) == 1
    assert "## Served model" in (tiny_run / "report.md").read_text()
    assert (tiny_run / "report.md").read_text().count("|") > 10
    assert (tiny_run / "report.png").read_bytes()[:4] == b"\x89PNG"
    for stage in ("teacher_cpt", "teacher_sft", "teacher_label", "student"):
        assert (tiny_run / stage / "manifest.json").exists(), stage


def test_rerun_skips_completed_stages(tiny_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")}
    first = json.loads((tiny_run / "report.json").read_text())
    assert main(["pipeline", "--preset", "tiny", "--allow-regression", "--out", str(tiny_run)]) == 0
    after = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")}
    assert before == after  # no stage redid its work
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["metrics"] == first["metrics"]
    assert set(report["stages_skipped"]) >= {"teacher_cpt", "teacher_sft", "teacher_label", "student", "eval_student"}


def test_relative_and_absolute_out_are_the_same_run(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths are not part of any stage key: spelling --out relative instead of absolute retrains nothing."""
    before = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")}
    monkeypatch.chdir(tiny_run.parent)
    assert main(["pipeline", "--preset", "tiny", "--allow-regression", "--out", tiny_run.name]) == 0
    assert {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/manifest.json")} == before


def test_upstream_change_reruns_everything_downstream(tiny_run: Path, tmp_path: Path) -> None:
    """A different SFT config re-trains the teacher and so relabels, retrains the student and re-evaluates;
    stages upstream of SFT (CPT, first stages) are kept."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"sft": {"max_steps": 3}}))
    assert main(["pipeline", "--preset", "tiny", "--config", str(cfg), "--allow-regression", "--out", str(out)]) == 0
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"teacher_sft", "teacher_label", "student", "serve_select", "eval_teacher", "eval_student"}


def test_an_edited_finished_output_is_not_trusted(tiny_run: Path, tmp_path: Path) -> None:
    """Edited teacher scores (still valid JSON) are caught by the content hash: the label stage runs again from
    scratch and says so, and the regenerated labels carry the teacher's scores again. (Their header records this
    directory's paths, so the stages after them run again too.)"""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    labels = out / "teacher_label" / "labels.jsonl"
    original = labels.read_bytes()
    labels.write_bytes(original.replace(b'"score": ', b'"score": 1', 1))
    proc = _pipeline(out, "--allow-regression")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "teacher_label: output" in proc.stderr and "changed since the stage finished" in proc.stderr
    assert labels.read_bytes().splitlines()[1:] == original.splitlines()[1:]  # the records; line 0 is the header
    assert _metrics(out)["first_stage"] == _metrics(tiny_run)["first_stage"]


def test_dense_fine_tuning_stage(tiny_run: Path, tmp_path: Path) -> None:
    """dense_ft.enabled adds the teacher_dense stage before labelling: the dense member is the tuned model, the
    ensemble's fit queries are held out of its training, and everything downstream of the labels reruns."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dense_ft": {"enabled": True, "batch_size": 8, "max_seq_length": 32},
                               "label": {"fit_queries": 5}}))
    assert main(["pipeline", "--preset", "tiny", "--config", str(cfg), "--allow-regression", "--out", str(out)]) == 0
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    assert {n for n in after if after[n] != before.get(n)} == {"teacher_dense", "teacher_label", "student",
                                                                "serve_select", "eval_teacher", "eval_student"}
    report = json.loads((out / "report.json").read_text())
    info = report["teacher"]["dense_fine_tuned"]
    assert info["held_out_queries"] == 5 and info["steps"] >= 1
    dense_key = json.loads((out / "teacher_dense" / "config.json").read_text())
    label_key = json.loads((out / "teacher_label" / "config.json").read_text())
    assert len(dense_key["config"]["held_out"]) == 5
    assert "teacher_dense" in label_key["upstream"]  # the labels depend on the tuned model
    assert "Dense member fine-tuned" in (out / "report.md").read_text()
    from distill.teacher.dense_ft import DENSE_MODEL_SUBDIR

    assert (out / "teacher_dense" / DENSE_MODEL_SUBDIR / "modules.json").exists()


def test_tiny_runs_on_a_corpus_without_training_queries(demo_data: Path, tmp_path: Path) -> None:
    """No training queries: the (random) generator's queries are filtered, the crop fallback fills in, the
    pipeline finishes, and the report shows kept/rejected counts and samples."""
    out = tmp_path / "synth"
    code = main(["pipeline", "--preset", "tiny", "--allow-regression", "--corpus", str(demo_data / "corpus.jsonl"),
                 "--eval-queries", str(demo_data / "queries.test.tsv"),
                 "--eval-qrels", str(demo_data / "qrels.test.txt"), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    sq = report["synthetic_queries"]
    assert sq["kept"] >= 1 and sq["kept"] == sq["kept_generated"] + sq["cropped"]
    assert report["interpolation"]["chosen_by"] == "default"
    md = (out / "report.md").read_text()
    assert "## Synthetic queries" in md
    assert (f"{sq['kept_generated']} generated queries kept of {sq['generated']}, plus {sq['cropped']} cropped queries"
            in md)


def test_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_config("huge")
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['teachr'\]"):
        resolve_config("tiny", {"teachr": {}})
    with pytest.raises(ConfigError, match=r"eval: unknown key\(s\) \['top_kk'\]"):
        resolve_config("tiny", {"eval": {"top_kk": 3}})
    with pytest.raises(ConfigError, match=r"student.pairs: unknown key\(s\) \['n_neg'\]"):
        resolve_config("tiny", {"student": {"pairs": {"n_neg": 3}}})
    with pytest.raises(ConfigError, match=r"label: \['queries'\] are set by the pipeline"):
        resolve_config("tiny", {"label": {"queries": "x"}})
    bad = tmp_path / "cfg.json"
    bad.write_text('{"preset": "tiny", "cpt": {"max_lenght": 5}}')
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "max_lenght" in capsys.readouterr().err
    # one config loader: a malformed config file is a config error (exit 2), like an unknown key
    bad.write_text("{oops")
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "cfg.json:1: invalid JSON" in capsys.readouterr().err


#: (point, signal, exit code), in the order the pipeline reaches them
KILL_CHAIN = [
    ("cpt:step", "KILL", -9),                # killed after CPT's first optimiser step
    ("teacher_sft:start", "INT", 130),       # Ctrl-C as SFT starts (the reported case: the head was seeded late)
    ("sft:step", "KILL", -9),                # killed after SFT's first optimiser step
    ("label:query", "KILL", -9),             # killed with one query labelled
    ("teacher_label:outputs", "INT", 130),   # labels complete, manifest not yet written
    ("student:checkpoint", "KILL", -9),      # killed right after the student wrote a checkpoint
    ("serve_select:start", "INT", 130),      # Ctrl-C as the export of the served model starts
    ("eval_teacher:outputs", "KILL", -9),    # evaluation run written, manifest not yet
]


@pytest.mark.faults
@pytest.mark.integration
def test_killed_then_resumed_equals_uninterrupted(tiny_run: Path, tmp_path: Path) -> None:
    """SIGINT or SIGKILL at stage boundaries and mid-stage (an optimiser step, a labelled query, a student
    checkpoint just written). Each kill must end its run with the signal's exit code and no traceback, and the
    next run resumes from what it left. The kill points are chained in stage order in one output directory (run k
    is killed at point k and resumes from the kill at point k-1), so every resume starts from a killed state, some
    from a state that was itself resumed; the last, plain run must report exactly the metrics of ``tiny_run``, an
    uninterrupted run. One chain does the pipeline's work about once instead of once per kill point."""
    out = tmp_path / "out"
    for point, signal, code in KILL_CHAIN:
        killed = _pipeline(out, "--allow-regression", fault=f"{point}:{signal}")
        assert killed.returncode == code, f"kill at {point}: exit {killed.returncode}\n{killed.stderr[-2000:]}"
        assert "Traceback" not in killed.stderr, point
        assert not (out / "report.json").exists(), point
    resumed = _pipeline(out, "--allow-regression")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert _metrics(out) == _metrics(tiny_run)
