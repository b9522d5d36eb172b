"""Atomic writes leave nothing half-written, and clear what a killed writer left."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.atomic_io import atomic_dir, atomic_write, write_json


def test_a_killed_writers_temporaries_are_cleared_by_the_next_write(tmp_path: Path) -> None:
    (tmp_path / ".report.json.abc123.tmp").write_text("half")  # what a SIGKILL mid-write leaves
    (tmp_path / ".model.xyz.tmp").mkdir()
    (tmp_path / ".model.xyz.tmp" / "weights.bin").write_bytes(b"half")
    (tmp_path / ".other.json.q.tmp").write_text("another artifact's")
    write_json(tmp_path / "report.json", {"ok": True})
    with atomic_dir(tmp_path / "model") as stage:
        (stage / "weights.bin").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.q.tmp", "model", "report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a[1].txt"  # glob metacharacters in the name
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a[1].txt"]
