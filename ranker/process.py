"""Start and stop a ``distilrank serve`` child process on 127.0.0.1.

One implementation of the port pick and the readiness wait, for everything that runs the real server beside
itself: the benchmarks (``bench/``), the load-test calibration and the test suite. The child is the installed
CLI (``python -m distill.cli serve``), so what runs is exactly what a user runs.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["free_port", "serving", "start_serve", "stop_serve", "wait_ready"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll ``url/ready`` until it answers 200; fail early if ``proc`` (the server process) exits.

    ``timeout`` is in seconds. Raises RuntimeError when the server exits or does not become ready in time.
    """
    from ranker.client import RerankClient

    deadline = time.monotonic() + timeout
    with RerankClient(url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
            if client.ready():
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url}/ready did not answer 200 within {timeout:.0f} s")


def start_serve(model_dir: str | os.PathLike[str], *args: str, quiet: bool = False, timeout: float = 120.0,
                checkout: str | os.PathLike[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``distilrank [-q] serve --model model_dir --port P *args`` and wait until it is ready.

    ``checkout``: run the server from that source tree instead of this one (a ``git worktree`` of an older
    commit, for before/after benches). The child never inherits ``DISTILRANK_API_KEY``: pass ``--api-key``
    in ``args`` to require one. Returns ``(process, base_url)``; the process is killed when it does not
    become ready within ``timeout`` seconds.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "distill.cli", *(["-q"] if quiet else []), "serve", "--model", str(Path(model_dir)),
           "--port", str(port), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DISTILRANK_API_KEY", None)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    proc = subprocess.Popen(cmd, env=env, cwd=checkout)
    url = f"http://127.0.0.1:{port}"
    logger.debug("started %s (pid %d)", " ".join(cmd), proc.pid)
    try:
        wait_ready(url, proc, timeout)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def stop_serve(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM (the server finishes queued requests), then SIGKILL after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serving(model_dir: str | os.PathLike[str], *args: str, quiet: bool = False,
            timeout: float = 120.0) -> Iterator[str]:
    """:func:`start_serve` as a context manager yielding the base URL; the server is stopped on exit."""
    proc, url = start_serve(model_dir, *args, quiet=quiet, timeout=timeout)
    try:
        yield url
    finally:
        stop_serve(proc)
