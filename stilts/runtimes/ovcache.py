"""OpenVINO's compiled models, cached under ``$STILTS_HOME/ov-cache`` so a warm start compiles nothing.

Loading an OpenVINO route from the fp32 ONNX graph reads and converts the whole 470 MB protobuf
(seconds, and about 1 GB of memory at its peak) before the CPU plugin compiles it. The compiled
model is therefore exported once (``CompiledModel.export_model``) to
``$STILTS_HOME/ov-cache/<model>-<route>-<key>.blob`` with a sidecar ``.json``: the key is a SHA-256
of what makes two compiled models interchangeable (the model's name, fingerprint and the graph's
SHA-256 from its manifest, the route and the whole compile configuration, the CPU signature of
:mod:`stilts.runtimes.cpu` and the OpenVINO version), and the sidecar records the blob's size and
SHA-256 (and a SHA-256 of its own content), as the route records do. A later load checks both and
imports the blob from a private memory map (``core.import_model`` on a shared-memory tensor: no
copy of the weights); a missing, truncated, altered or unimportable entry is logged and rebuilt,
never a crash. Nothing is written anywhere else: OpenVINO's own ``CACHE_DIR`` is not used, and
``STILTS_OV_CACHE=0`` turns the cache off (nothing read, nothing written).

Once imported, the blob's resident pages are handed back (:func:`page_out`): the CPU plugin keeps
the layer weights in its own bf16 (or f32) buffers, so the blob's fp32 copies of them are not read
again, and the pages it does read later (the compact word table's rows) come back from the page
cache. The default's encode of 4,000 sentences peaked at 394 MB instead of 472 MB.

The blob's checksum stands in for the graph's: it was compiled from a graph that matched the
manifest's SHA-256, which is part of the key, so a warm start does not read the 470 MB graph at
all (:class:`stilts.encoding.session.RouteSession` verifies only the tokenizer then).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from stilts.fsutil import atomic_path, atomic_write_text
from stilts.home import stilts_home
from stilts.runtimes.cpu import cpu_signature
from stilts.runtimes.ovcompact import compact_enabled

LOG = logging.getLogger(__name__)

# madvise(2): reclaim these pages now (Linux 5.4+); clean file pages are dropped, never data
MADV_PAGEOUT = 21
CACHE_DIR = "ov-cache"
# 1: the word table compacted to 4 bits where exact (stilts.runtimes.ovcompact)
CACHE_VERSION = 1
ENV = "STILTS_OV_CACHE"


def cache_enabled() -> bool:
    """Whether compiled models are cached (``STILTS_OV_CACHE`` unset, or anything but 0/off/no)."""
    return os.environ.get(ENV, "").strip().lower() not in ("0", "off", "no", "false")


def cache_root() -> Path:
    """``$STILTS_HOME/ov-cache``."""
    return stilts_home() / CACHE_DIR


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _body_sha(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One compiled model's place in the cache: ``blob`` and its sidecar ``meta``.

    Attributes:
        blob: the exported compiled model.
        key: what it was compiled from and for (its SHA-256 is in the file name).
    """

    blob: Path
    key: dict

    @property
    def meta(self) -> Path:
        return self.blob.with_suffix(".json")

    def load(self) -> np.ndarray | None:
        """The blob, memory-mapped (private, copy-on-write: nothing is ever written back), after
        checking its sidecar, size and SHA-256; None when absent or unusable (logged; the caller
        compiles and :meth:`save` replaces it)."""
        if not self.blob.is_file() and not self.meta.is_file():
            return None
        try:
            meta = json.loads(self.meta.read_text())
            if not isinstance(meta, dict) or meta.get("sha256") != _body_sha(meta):
                raise ValueError("its record's checksum does not match")
            if meta.get("key") != self.key:
                raise ValueError("its record is for another model, route, CPU or version")
            if self.blob.stat().st_size != meta.get("blob_bytes"):
                raise ValueError("the blob's size does not match its record")
            if _sha256(self.blob) != meta.get("blob_sha256"):
                raise ValueError("the blob's sha256 does not match its record")
            return np.memmap(self.blob, dtype=np.uint8, mode="c")
        except (OSError, ValueError, AttributeError, TypeError) as e:
            LOG.warning("%s: unusable compiled model (%s); compiling again", self.blob, e)
            return None

    def save(self, data: bytes | memoryview) -> None:
        """Write the blob, then its sidecar (atomically, each: a reader sees a whole entry or an
        unusable one, never a torn blob that checks out)."""
        with atomic_path(self.blob) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        meta = {
            "version": CACHE_VERSION,
            "key": self.key,
            "blob_bytes": self.blob.stat().st_size,
            "blob_sha256": _sha256(self.blob),
        }
        atomic_write_text(self.meta, json.dumps({**meta, "sha256": _body_sha(meta)}, indent=2))

    def discard(self) -> None:
        """Remove the entry (an import that failed: the next load compiles again)."""
        for p in (self.blob, self.meta):
            try:
                p.unlink(missing_ok=True)
            except OSError as e:
                LOG.warning("%s: could not remove (%s)", p, e)


def cache_entry(
    model: str, fingerprint: str, graph_sha256: str, route: str, config: dict, openvino: str
) -> CacheEntry:
    """The cache entry of a model's graph compiled for ``route`` with ``config`` on this CPU.

    Args:
        model: the manifest's name.
        fingerprint: the manifest's fingerprint.
        graph_sha256: the graph's SHA-256 as the manifest records it.
        route: the route's name (``ov-bf16``, ``ov-f32``).
        config: every property the model is compiled with.
        openvino: OpenVINO's version (``openvino.get_version()``).
    """
    key = {
        "version": CACHE_VERSION,
        "model": model,
        "fingerprint": fingerprint,
        "graph_sha256": graph_sha256,
        "route": route,
        "config": {k: str(v) for k, v in sorted(config.items())},
        "compact_word_table": compact_enabled(),
        "cpu": cpu_signature(),
        "openvino": openvino,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}-{route}")[:80]
    return CacheEntry(cache_root() / f"{safe}-{digest}.blob", key)


def page_out(mapped: np.ndarray) -> bool:
    """Ask the kernel to reclaim the resident pages of a memory-mapped array (``MADV_PAGEOUT``);
    they are read again from the page cache when touched. False where the kernel or the platform
    cannot (nothing changes then)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or mapped.nbytes == 0:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    address = mapped.ctypes.data
    start = address - address % page
    length = mapped.nbytes + address - start
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if madvise(start, length, MADV_PAGEOUT) != 0:
        LOG.debug("madvise(MADV_PAGEOUT): errno %d", ctypes.get_errno())
        return False
    return True
