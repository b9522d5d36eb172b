"""The tests' name for :mod:`ranker.process` (``distilrank serve`` as a child process on 127.0.0.1).

The harness itself lives in the library, so the benches use it without importing anything from ``tests``.
"""

from __future__ import annotations

from ranker.process import free_port, serving, start_serve, stop_serve, wait_ready

__all__ = ["free_port", "serving", "start_serve", "stop_serve", "wait_ready"]
