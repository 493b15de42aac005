"""FAISS snapshot files with a SHA-256 taken while they are written and checked while they are read.

The digest is streamed through FAISS's callback I/O while writing (one pass). A read checks the
size, then hashes the file in 1 MiB blocks *before* FAISS parses it (a damaged header could make
FAISS allocate or read nonsense), then reads it from the page cache. The caller records the
returned ``{"sha256", "bytes"}`` in the index's settings and passes it back when opening.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import faiss

from stilts.manifest import sha256_file

BLOCK = 1 << 20


class SnapshotMismatch(Exception):
    """The snapshot's bytes are not those recorded when it was written."""


def write(index: faiss.Index, path: str | os.PathLike) -> dict[str, Any]:
    """Write ``index`` to ``path``; returns ``{"sha256": ..., "bytes": ...}`` of what was written.

    Raises:
        OSError / RuntimeError: the write failed (e.g. a full disk).
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as f:

        def sink(block: bytes) -> None:
            nonlocal size
            digest.update(block)
            f.write(block)
            size += len(block)

        writer = faiss.PyCallbackIOWriter(sink, BLOCK)
        faiss.write_index(index, writer)
        del writer  # flushes the last block
        f.flush()
    return {"sha256": digest.hexdigest(), "bytes": size}


def read(path: str | os.PathLike, expected: dict[str, Any] | None, mmap: bool = False):
    """Read a snapshot, checking it against ``expected`` (None: not checked, e.g. an index
    written before checksums were recorded).

    Args:
        path: the snapshot file.
        expected: ``{"sha256", "bytes"}`` as :func:`write` returned it.
        mmap: memory-map IVF lists (read-only) instead of reading them into RAM.

    Raises:
        SnapshotMismatch: size or SHA-256 differ from ``expected``.
        RuntimeError: FAISS cannot parse the file.
    """
    path = Path(path)
    if expected is not None:
        size = path.stat().st_size
        if size != int(expected["bytes"]):
            raise SnapshotMismatch(f"{size:,} bytes, {int(expected['bytes']):,} written")
    if expected is not None and sha256_file(path, BLOCK) != expected["sha256"]:
        raise SnapshotMismatch("SHA-256 differs from the one recorded when it was written")
    if mmap:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    return faiss.read_index(str(path))
