"""A labels file records its teacher; resuming it with another teacher is exit 2, naming both."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import ConfigError, DataError
from distill.core.formats import write_run
from distill.core.label_files import (
    LabeledDoc,
    LabeledQuery,
    append_labels,
    read_labels,
    read_teacher,
    start_labels,
    valid_qids,
)
from distill.teacher.config import LabelConfig
from distill.teacher.label import labels_teacher, run_label
from tests.teacher_data import write_mini


@pytest.fixture(scope="module")
def mini(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_mini(demo_data, tmp_path_factory.mktemp("mini"), n_queries=4, n_extra_docs=25)


def _bm25(mini: dict[str, Path], **kw: object) -> LabelConfig:
    base = {"source": "bm25", "queries": str(mini["queries"]), "corpus": str(mini["corpus"]), "n_bm25": 5,
            "n_dense": 0, "n_random": 1} | kw
    return LabelConfig(**base)  # type: ignore[arg-type]


def _stop_after(path: Path, n_queries: int) -> None:
    """What a run stopped after ``n_queries`` leaves: the header, that many records, no manifest."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + n_queries]), encoding="utf-8")
    (path.parent / "manifest.json").unlink()


def test_a_labels_file_begins_with_its_teacher_and_reads_as_before(mini: dict[str, Path], tmp_path: Path) -> None:
    path = run_label(_bm25(mini), tmp_path / "l")
    header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert header["labelled_by"]["source"] == "bm25" and header["labelled_by"]["config"]["n_bm25"] == 5
    assert "endpoint_api_key" not in json.dumps(header) and "batch_size" not in header["labelled_by"]["config"]
    assert len(read_labels(path)) == 4 and len(valid_qids(path)) == 4
    assert read_teacher(path) == labels_teacher(_bm25(mini), tmp_path / "l")


def test_resume_with_another_source_or_setting_is_refused_naming_both(mini: dict[str, Path], tmp_path: Path) -> None:
    cfg = _bm25(mini)
    path = run_label(cfg, tmp_path / "l")
    run = {r.qid: {d.doc_id: d.score for d in r.docs} for r in read_labels(path)}
    run_path = write_run(tmp_path / "teacher.trec", run)
    _stop_after(path, 2)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"labelled by source 'bm25', but this run asks for source 'run'"):
        run_label(LabelConfig(source="run", run=str(run_path), queries=cfg.queries, corpus=cfg.corpus), tmp_path / "l")
    with pytest.raises(ConfigError, match=r"n_bm25: 5 vs 7"):
        run_label(replace(cfg, n_bm25=7), tmp_path / "l")
    assert path.read_bytes() == before  # nothing appended, nothing lost
    # settings that leave every label as it is may change on resume
    run_label(replace(cfg, batch_size=3, max_length=64, device="cpu"), tmp_path / "l")
    assert sorted(r.qid for r in read_labels(path)) == sorted(valid_qids(path)) and len(valid_qids(path)) == 4


def test_teacher_label_stopped_with_endpoint_resumed_with_bm25_exits_2(mini: dict[str, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l"
    endpoint = LabelConfig(source="endpoint", endpoint_url="http://127.0.0.1:9/v1/rerank", endpoint_model="big",
                           endpoint_api_key="secret", queries=str(mini["queries"]), corpus=str(mini["corpus"]))
    path = out / "labels.jsonl"
    out.mkdir()
    start_labels(path, labels_teacher(endpoint, out))
    append_labels(path, LabeledQuery("q", "query", (LabeledDoc("d", 1.0, "bm25"),)))
    before = path.read_bytes()
    code = main(["teacher", "label", "--source", "bm25", "--out", str(out), "--queries", str(mini["queries"]),
                 "--corpus", str(mini["corpus"]), "--n-dense", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "source 'endpoint'" in err and "source 'bm25'" in err and "endpoint_model" in err and "Traceback" not in err
    assert "secret" not in path.read_text(encoding="utf-8") and path.read_bytes() == before


def test_a_file_without_a_header_reads_and_resumes_with_a_warning(mini: dict[str, Path], tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = run_label(_bm25(mini), tmp_path / "l")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[1:3]), encoding="utf-8")  # as an older distilrank wrote it, stopped early
    (path.parent / "manifest.json").unlink()
    assert len(read_labels(path)) == 2 and read_teacher(path) is None
    with caplog.at_level(logging.WARNING):
        run_label(_bm25(mini), tmp_path / "l")
    assert "records no teacher" in caplog.text
    assert len(read_labels(path)) == 4 and read_teacher(path) is None  # no header claimed for old labels


def test_a_copied_output_folder_matches_its_own_teacher(mini: dict[str, Path], tmp_path: Path) -> None:
    """Path settings match by absolute path or by path relative to the labels folder: ``cp -r OUT OUT2``
    resumes in OUT2 with OUT2's run, and a different run file is refused."""
    src = tmp_path / "OUT"
    labels = run_label(_bm25(mini), src / "bm25")
    run = {r.qid: {d.doc_id: d.score for d in r.docs} for r in read_labels(labels)}
    write_run(src / "teacher.trec", run)
    cfg = LabelConfig(source="run", run=str(src / "teacher.trec"), queries=str(mini["queries"]),
                      corpus=str(mini["corpus"]))
    path = run_label(cfg, src / "l")
    _stop_after(path, 1)
    shutil.copytree(src, tmp_path / "OUT2")
    copy = tmp_path / "OUT2"
    run_label(replace(cfg, run=str(copy / "teacher.trec")), copy / "l")
    assert len(read_labels(copy / "l" / "labels.jsonl")) == 4
    _stop_after(copy / "l" / "labels.jsonl", 1)
    write_run(tmp_path / "other.trec", run)
    with pytest.raises(ConfigError, match=r"run: '.*teacher\.trec' vs '.*other\.trec'"):
        run_label(replace(cfg, run=str(tmp_path / "other.trec")), copy / "l")


def test_concatenated_shards_read_as_one_file_but_two_teachers_do_not(mini: dict[str, Path], tmp_path: Path) -> None:
    shards = [run_label(_bm25(mini, shard=f"{i}/2"), tmp_path / f"s{i}") for i in range(2)]
    both = tmp_path / "both.jsonl"
    both.write_bytes(b"".join(p.read_bytes() for p in shards))
    assert len(read_labels(both)) == 4
    other = run_label(_bm25(mini, n_random=2), tmp_path / "other")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(shards[0].read_bytes() + other.read_bytes())
    with pytest.raises(DataError, match=r"mixed\.jsonl:\d+: labels of another teacher begin here \(n_random: 1 vs 2"):
        read_labels(mixed)


def test_every_label_source_says_which_settings_decide_its_scores() -> None:
    from distill.teacher import config as teacher_config
    from distill.teacher.label import _SCORING

    sources = set(teacher_config._LABEL_SOURCES) - {"ensemble"}
    assert sources <= set(_SCORING)
    named = {f for source in sources for f in (*_SCORING[source][0], *_SCORING[source][1])}
    assert named <= set(LabelConfig.__dataclass_fields__)
