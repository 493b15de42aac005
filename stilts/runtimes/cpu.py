"""What this CPU is, as the routes see it: its relevant instruction-set flags, cores, architecture,
and the installed runtimes' versions.

The route records (:mod:`stilts.encoding.autoroute`) and OpenVINO's compiled-model cache
(:mod:`stilts.runtimes.ovcache`) are both keyed by them: a record or a compiled model made on
another CPU, or by another runtime version, is never used.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

# The /proc/cpuinfo flags that decide how fast a graph runs: vector width, dot-product and bf16 units.
RELEVANT_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "bf16",
)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The :data:`RELEVANT_FLAGS` this CPU has (``/proc/cpuinfo``; empty where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
    return [f for f in RELEVANT_FLAGS if f in found]


def cpu_signature() -> dict:
    """What makes two machines time routes alike: flags, cores, architecture."""
    return {"flags": cpu_flags(), "cores": os.cpu_count() or 1, "machine": platform.machine()}


def native_bf16(flags: Sequence[str]) -> bool:
    """Whether the flags show bf16 arithmetic in hardware (AVX-512 BF16, AMX-BF16, Arm BF16)."""
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def runtime_versions() -> dict[str, str | None]:
    """The installed version of each runtime (None: absent): installing or upgrading one makes
    the routes be measured again."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("onnxruntime", "openvino"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
