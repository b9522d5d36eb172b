"""The one place that decides reuse: StageRunner on trivial stages, in milliseconds (no models)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from distill.core.stage_runner import Stage, StageRunner


class Counter:
    """A stage body that writes ``value`` to ``out.txt`` and counts its calls."""

    def __init__(self, value: str = "v1"):
        self.calls = 0
        self.value = value

    def __call__(self, d: Path) -> dict[str, Path]:
        self.calls += 1
        (d / "out.txt").write_text(self.value)
        return {"out": d / "out.txt"}


def stage(body: Counter, config: dict | None = None, **kw: object) -> Stage:
    return Stage("a", config or {"x": 1}, body, **kw)  # type: ignore[arg-type]


def test_a_finished_stage_is_reused(tmp_path):
    body = Counter()
    first = StageRunner(tmp_path).run(stage(body))
    again = StageRunner(tmp_path).run(stage(body))
    assert body.calls == 1 and again.skipped and not first.skipped
    assert again.outputs == first.outputs and again.output_hashes == first.output_hashes


def test_a_config_change_wipes_and_reruns(tmp_path):
    body = Counter()
    StageRunner(tmp_path).run(stage(body))
    (tmp_path / "a" / "stale_checkpoint").write_text("old")
    StageRunner(tmp_path).run(stage(body, {"x": 2}))
    assert body.calls == 2 and not (tmp_path / "a" / "stale_checkpoint").exists()


def test_a_torn_stage_resumes_in_its_directory(tmp_path):
    def torn(d: Path) -> dict[str, Path]:
        (d / "checkpoint").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path).run(Stage("a", {"x": 1}, torn))
    seen: list[bool] = []

    def resumed(d: Path) -> dict[str, Path]:
        seen.append((d / "checkpoint").exists())
        (d / "out.txt").write_text("done")
        return {"out": d / "out.txt"}

    StageRunner(tmp_path).run(Stage("a", {"x": 1}, resumed))
    assert seen == [True]


def test_an_edited_output_reruns_the_stage_from_scratch_and_says_so(tmp_path, caplog):
    body = Counter("original")
    StageRunner(tmp_path).run(stage(body))
    (tmp_path / "a" / "out.txt").write_text("edited but still valid")
    (tmp_path / "a" / "checkpoint").write_text("would be resumed from")
    with caplog.at_level(logging.WARNING):
        res = StageRunner(tmp_path).run(stage(body))
    assert body.calls == 2 and not res.skipped
    assert (tmp_path / "a" / "out.txt").read_text() == "original" and not (tmp_path / "a" / "checkpoint").exists()
    assert "changed since the stage finished" in caplog.text and "out.txt" in caplog.text


def test_a_deleted_output_reruns_the_stage(tmp_path):
    body = Counter()
    StageRunner(tmp_path).run(stage(body))
    (tmp_path / "a" / "out.txt").unlink()
    assert not StageRunner(tmp_path).run(stage(body)).skipped and body.calls == 2


def test_dependents_key_on_upstream_output_hashes(tmp_path):
    up, down = Counter("u1"), Counter("d")
    runner = StageRunner(tmp_path)
    a = runner.run(Stage("up", {}, up))
    runner.run(Stage("down", {}, down, upstream=[a]))
    up.value = "u2"  # a rerun of the upstream that gives other bytes
    (tmp_path / "up" / "out.txt").write_text("tampered")
    runner = StageRunner(tmp_path)
    a = runner.run(Stage("up", {}, up))
    runner.run(Stage("down", {}, down, upstream=[a]))
    assert (up.calls, down.calls) == (2, 2)


def test_a_copied_out_directory_is_self_contained(tmp_path):
    body = Counter()
    StageRunner(tmp_path / "one").run(stage(body))
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    shutil.rmtree(tmp_path / "one")
    res = StageRunner(tmp_path / "two").run(stage(body))
    assert res.skipped and res.outputs["out"] == tmp_path / "two" / "a" / "out.txt"
    manifest = json.loads((tmp_path / "two" / "a" / "manifest.json").read_text())
    assert manifest["outputs"]["out"]["path"] == "a/out.txt"


def test_directory_outputs_are_verified_file_by_file(tmp_path):
    def body(d: Path) -> dict[str, Path]:
        (d / "model").mkdir(exist_ok=True)
        (d / "model" / "weights.bin").write_bytes(b"w")
        return {"model": d / "model"}

    StageRunner(tmp_path).run(Stage("m", {}, body))
    (tmp_path / "m" / "model" / "weights.bin").write_bytes(b"x")
    assert not StageRunner(tmp_path).run(Stage("m", {}, body)).skipped


def test_an_output_outside_the_run_directory_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(RuntimeError, match="outside the run directory"):
        StageRunner(tmp_path / "out").run(Stage("a", {}, lambda d: {"out": outside}))


def test_the_typed_result_is_built_from_the_outputs_after_a_run_and_after_a_reuse(tmp_path):
    body = Counter("42")

    def load(outputs):
        return int(outputs["out"].read_text())

    first = StageRunner(tmp_path).run(stage(body, load=load))
    again = StageRunner(tmp_path).run(stage(body, load=load))
    assert body.calls == 1 and again.skipped
    assert first.value == again.value == 42
    assert StageRunner(tmp_path).run(stage(body)).value is None  # no loader, no value
