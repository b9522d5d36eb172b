"""What this CPU can run fast: the instruction-set level for int8 kernels and whether it multiplies bf16 natively.

One detection for the exporter (which recipes to time and gate, which int8 weights to write) and the ranker (whether
the card's recipe can run here, or its runner-up must be served). The levels, best first:

* ``amx``: AMX tiles (``amx_tile`` with ``amx_bf16``/``amx_int8``; Sapphire Rapids and later Xeons);
* ``avx512_vnni``: AVX-512 with VNNI int8 dot products;
* ``avx512``: AVX-512 F+BW without VNNI;
* ``avx2``: the conservative x86 baseline (also what unreadable flags give);
* ``arm64``: aarch64 (NEON dot products).

``bf16`` is separate from the level: AMX has it, and so do some AVX-512 CPUs (``avx512_bf16``: Cooper Lake, AMD Zen 4
and later). Without it OpenVINO emulates bf16, slower than f32 and with no gate measured on it, so a bf16 recipe is
neither built nor served there. Where OpenVINO is installed, its ``OPTIMIZATION_CAPABILITIES`` must list ``BF16`` too.

``DISTILRANK_ISA=<level>`` pretends the CPU is a typical one of that level (``amx`` has bf16, the others do not):
the way to test on one machine what another machine would build or serve.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError

__all__ = ["ISA_ENV", "ISA_LEVELS", "MachineIsa", "cpu_flags", "detect_isa", "machine_isa", "openvino_capabilities"]

logger = logging.getLogger(__name__)

#: best first
ISA_LEVELS = ("amx", "avx512_vnni", "avx512", "avx2", "arm64")
ISA_ENV = "DISTILRANK_ISA"
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class MachineIsa:
    """``isa``: one of :data:`ISA_LEVELS`; ``bf16``: native bf16 matrix products; ``source``: how it was found."""

    isa: str
    bf16: bool
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"isa": self.isa, "bf16": self.bf16, "source": self.source}


def cpu_flags(cpuinfo: str | os.PathLike[str] = CPUINFO) -> set[str] | None:
    """The first ``flags``/``Features`` line of ``cpuinfo``; None when it cannot be read."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def _level(flags: set[str]) -> str:
    if {"asimd", "asimddp"} & flags and "avx2" not in flags:
        return "arm64"
    if "amx_tile" in flags and {"amx_bf16", "amx_int8"} & flags:
        return "amx"
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" not in flags:
        logger.warning("CPU has no AVX2 flag; int8 kernels will be slow, using the avx2 recipe anyway")
    return "avx2"


def detect_isa(cpuinfo: str | os.PathLike[str] = CPUINFO) -> str:
    """Best level of this CPU from its flags (see the module docstring); ``arm64`` on aarch64, ``avx2`` when the
    flags cannot be read. Ignores :data:`ISA_ENV` (use :func:`machine_isa` for the level to act on)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags(cpuinfo)
    if flags is None:
        logger.warning("cannot read %s; assuming avx2 for int8", cpuinfo)
        return "avx2"
    return _level(flags)


def openvino_capabilities() -> frozenset[str] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device (e.g. FP32, BF16, INT8); None without openvino."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return frozenset(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def machine_isa(cpuinfo: str | os.PathLike[str] = CPUINFO, env: Mapping[str, str] | None = None,
                ask_openvino: bool = True) -> MachineIsa:
    """The level and bf16 support to act on: :data:`ISA_ENV` when set, else the CPU flags (bf16 also needing
    OpenVINO's ``BF16`` capability when ``ask_openvino`` and openvino is installed)."""
    env = os.environ if env is None else env
    forced = env.get(ISA_ENV, "").strip()
    if forced:
        if forced not in ISA_LEVELS:
            raise ConfigError(f"{ISA_ENV}={forced!r} is not one of {', '.join(ISA_LEVELS)}; unset it to detect the CPU")
        return MachineIsa(forced, forced == "amx", f"{ISA_ENV}={forced}")
    isa = detect_isa(cpuinfo)
    flags = cpu_flags(cpuinfo) or set()
    bf16 = bool({"amx_bf16", "avx512_bf16"} & flags)
    source = "cpu flags"
    if bf16 and ask_openvino:
        caps = openvino_capabilities()
        if caps is not None:
            bf16 = "BF16" in caps
            source = "cpu flags and OpenVINO OPTIMIZATION_CAPABILITIES"
    return MachineIsa(isa, bf16, source)
