"""Named fault points for the kill-and-resume suite (``tests/distill/test_pipeline.py``).

``DISTILRANK_FAULT=POINT:SIGNAL`` (e.g. ``student:checkpoint:KILL``, ``teacher_sft:start:INT``) makes
the process send itself SIGKILL or SIGINT when it reaches ``POINT``: exactly what a user's Ctrl-C or
an OOM killer does there. Unset (always, outside that suite), :func:`fault_point` is one dict lookup.

Points: ``<stage>:start`` and ``<stage>:outputs`` (outputs written, manifest not yet) in the pipeline
runner; ``cpt:step`` / ``sft:step`` after the first optimiser step; ``label:query`` after the first
query's labels are appended; ``synthesize:batch`` after a batch of generated queries is appended;
``student:checkpoint`` right after the Trainer wrote a checkpoint.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "fault_point"]

ENV = "DISTILRANK_FAULT"
_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, sig = spec.rpartition(":")
    if point == name:
        os.environ.pop(ENV)  # once per process
        os.kill(os.getpid(), _SIGNALS[sig])
