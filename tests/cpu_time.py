"""Opt-in pytest plugin: the CPU time (user + sys) of every test, its own process and the children it waited for.

The suite is CPU-bound on 2 cores, so CPU seconds, not wall seconds, say which tests to make cheaper (wall time
depends on what the other xdist worker runs meanwhile). Used to measure issue #14 (README, "Test suite time")::

    python -m pytest -p tests.cpu_time -n 2 --dist loadfile      # then: python -m tests.cpu_time

Each process (xdist worker or the main one) writes ``$DISTILRANK_CPU_TIME_DIR/cpu-<worker>.json`` (default
``.cpu_time/``); running the module prints the costliest tests and files from those files. A fixture's set-up
counts towards the first test that uses it; a server stopped at module teardown counts towards the last.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

_ROWS: list[tuple[str, float, float, float]] = []


def _dir() -> Path:
    return Path(os.environ.get("DISTILRANK_CPU_TIME_DIR", ".cpu_time"))


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201
    own0, kids0 = _cpu()
    t0 = time.perf_counter()
    yield
    own1, kids1 = _cpu()
    _ROWS.append((item.nodeid, round(own1 - own0, 2), round(kids1 - kids0, 2), round(time.perf_counter() - t0, 2)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    own, kids = _cpu()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _dir().mkdir(parents=True, exist_ok=True)
    payload = {"worker": worker, "rows": _ROWS, "process_cpu_s": round(own, 2), "children_cpu_s": round(kids, 2)}
    (_dir() / f"cpu-{worker}.json").write_text(json.dumps(payload))


def summary(folder: Path, top: int = 15) -> str:
    rows, files, lines = [], Counter(), []
    for path in sorted(folder.glob("cpu-*.json")):
        data = json.loads(path.read_text())
        lines.append(f"{data['worker']}: own {data['process_cpu_s']:.1f} s, "
                     f"waited-for children {data['children_cpu_s']:.1f} s")
        for nodeid, own, kids, wall in data["rows"]:
            rows.append((own + kids, wall, nodeid))
            files[nodeid.split("::")[0]] += own + kids
    rows.sort(reverse=True)
    lines += ["", f"tests: {len(rows)}, CPU in tests {sum(files.values()):.1f} s", "", "CPU s   wall s  test"]
    lines += [f"{cpu:6.1f}  {wall:6.1f}  {nodeid}" for cpu, wall, nodeid in rows[:top]]
    lines += ["", "CPU s   file"] + [f"{cpu:6.1f}  {name}" for name, cpu in files.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else _dir()))
