"""Benchmarks, run as modules (``python -m bench.NAME --help``); results go to ``bench/results``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = ["run"]


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a bench's ``main`` the way the ``distilrank`` CLI runs a command: a data or config error (a missing
    collection, a bad file) is one ``error:`` line and its exit code from :mod:`distill.core.errors`, not a traceback."""
    from distill.core.errors import DistilrankError, exit_code_for

    try:
        rc = main()
    except DistilrankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None
    raise SystemExit(rc or 0)
