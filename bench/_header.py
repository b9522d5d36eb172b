"""The run header every result file starts with: the machine, the date, the command line and the git commit.

JSON results carry it as their first field, ``header``; Markdown results as a line under their title. It is
taken once per process, when :func:`bench.run` starts the bench, so a run that lasts an hour reports the
commit it started from even if the checkout moves on meanwhile.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_write

__all__ = ["RunHeader", "run_header", "stamp_results", "write_results"]

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunHeader:
    """Where and how a result was made. ``commit`` is the full hash ("unknown" outside a git checkout);
    ``dirty``: tracked files differed from it; ``date``: UTC, ISO 8601, to the second."""

    command: str
    commit: str
    dirty: bool
    date: str
    machine: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """One line: the command, the commit, the date and the machine."""
        commit = self.commit[:12] + (" with uncommitted changes" if self.dirty else "")
        return f"Command: `{self.command}` · commit `{commit}` · {self.date} · {self.machine}"


@functools.cache
def run_header() -> RunHeader:
    """This process's header, taken at the first call (:func:`bench.run` makes it before the bench starts)."""
    commit, dirty = _git_commit()
    date = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return RunHeader(command=_command_line(), commit=commit, dirty=dirty, date=date, machine=_machine())


def write_results(stem: str | os.PathLike[str], result: dict[str, Any], markdown: str) -> Path:
    """Write ``STEM.json`` (``result`` under the run header) and ``STEM.md`` (``markdown`` with the header line
    under its title), each atomically, creating the folder. Returns the JSON path."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.md"
    _write_json(json_path, result)
    with atomic_write(md_path) as fh:
        fh.write(_with_header_line(markdown))
    return json_path


def stamp_results(json_path: str | os.PathLike[str], md_path: str | os.PathLike[str]) -> Path:
    """Add the run header to a JSON and a Markdown result that library code wrote (``export.report``, say).
    Returns the JSON path."""
    json_path, md_path = Path(json_path), Path(md_path)
    result = json.loads(json_path.read_text(encoding="utf-8"))
    result.pop("header", None)
    _write_json(json_path, result)
    markdown = md_path.read_text(encoding="utf-8")
    with atomic_write(md_path) as fh:
        fh.write(_with_header_line(markdown))
    return json_path


def _write_json(path: Path, result: dict[str, Any]) -> None:
    # keys sorted as distill.core.atomic_io.write_json sorts them, the header first
    body = json.loads(json.dumps(result, sort_keys=True, default=str))
    with atomic_write(path) as fh:
        json.dump({"header": run_header().to_dict(), **body}, fh, indent=2, default=str)
        fh.write("\n")


def _with_header_line(markdown: str) -> str:
    """``markdown`` with the header line after its first line when that is a ``#`` title, else on top."""
    line = run_header().markdown()
    first, sep, rest = markdown.partition("\n")
    if first.startswith("# "):
        return f"{first}\n\n{line}\n" + (rest if rest.startswith("\n") else "\n" + rest)
    return f"{line}\n\n{markdown}"


def _command_line() -> str:
    """The command as typed: ``python -m bench NAME ARGS`` or ``python -m bench.NAME ARGS``."""
    script, args = Path(sys.argv[0]).resolve(), sys.argv[1:]
    if script.parent == REPO / "bench":
        module = "bench" if script.stem == "__main__" else f"bench.{script.stem}"
        return shlex.join(["python", "-m", module, *args])
    return shlex.join(["python", *sys.argv])


def _git_commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")
