"""Instruction-set detection for int8 kernels (from /proc/cpuinfo flags, or the platform on ARM)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

logger = logging.getLogger(__name__)


def detect_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Best int8 ISA of this CPU: ``avx512_vnni`` > ``avx512`` > ``avx2``; ``arm64`` on aarch64.

    Falls back to ``avx2`` (the most conservative x86 recipe: u8 weights, no VNNI assumed) when the
    flags cannot be read.
    """
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        logger.warning("cannot read %s; assuming avx2 for int8", cpuinfo)
        return "avx2"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
            break
    if {"asimd", "asimddp"} & flags and "avx2" not in flags:
        return "arm64"
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" not in flags:
        logger.warning("CPU has no AVX2 flag; int8 kernels will be slow, using the avx2 recipe anyway")
    return "avx2"


def resolve_isa(isa: str) -> str:
    return detect_isa() if isa == "auto" else isa
