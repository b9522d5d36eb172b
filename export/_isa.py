"""The exporter's view of the CPU: the ISA level its int8 weights and recipes are made for.

Detection lives in the base layer (:mod:`distill.core.isa`), shared with the ranker, which checks there whether
a card's recipe can run on the serving machine.
"""

from __future__ import annotations

import logging

from distill.core.isa import ISA_LEVELS, MachineIsa, detect_isa, machine_isa

__all__ = ["ISA_LEVELS", "detect_isa", "resolve_isa", "resolve_machine"]

logger = logging.getLogger(__name__)


def resolve_machine(isa: str) -> MachineIsa:
    """``auto``: this machine (``DISTILRANK_ISA`` honoured); a level: a typical CPU of that level (``amx`` with
    bf16, the others without), so an export can be made for another machine or a fallback tested here."""
    if isa == "auto":
        return machine_isa()
    if isa not in ISA_LEVELS:
        from distill.core.errors import ConfigError

        raise ConfigError(f"isa={isa!r} is not auto or one of {', '.join(ISA_LEVELS)}")
    return MachineIsa(isa, isa == "amx", "export config")


def resolve_isa(isa: str) -> str:
    return resolve_machine(isa).isa
