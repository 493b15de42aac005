"""FAISS snapshot files with a SHA-256 taken while they are written and checked while they are read.

The digest is streamed through FAISS's callback I/O while writing (one pass). A read checks the
size, then hashes the file in 1 MiB blocks *before* FAISS parses it (a damaged header could make
FAISS allocate or read nonsense), then reads it from the page cache. The caller records the
returned ``{"sha256", "bytes"}`` in the index's settings and passes it back when opening.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
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
        os.fsync(f.fileno())
    return {"sha256": digest.hexdigest(), "bytes": size}


def read(path: str | os.PathLike, expected: Sequence[dict[str, Any]] | None, mmap: bool = False):
    """Read a snapshot, checking it against the digests in ``expected``: the one recorded for the
    last snapshot written and the one before it (a write killed between recording its digest and
    renaming the file leaves the previous file, which is sound). None or empty: not checked, e.g.
    an index written before checksums were recorded.

    Args:
        path: the snapshot file.
        expected: ``{"sha256", "bytes"}`` dicts as :func:`write` returned them.
        mmap: memory-map IVF lists (read-only) instead of reading them into RAM.

    Raises:
        SnapshotMismatch: size or SHA-256 match none of ``expected``.
        RuntimeError: FAISS cannot parse the file.
    """
    path = Path(path)
    expected = [e for e in expected or () if e]
    if expected:
        size = path.stat().st_size
        sizes = {int(e["bytes"]) for e in expected}
        if size not in sizes:
            written = " or ".join(f"{s:,}" for s in sorted(sizes))
            raise SnapshotMismatch(f"{size:,} bytes, {written} written")
        if sha256_file(path, BLOCK) not in {e["sha256"] for e in expected}:
            raise SnapshotMismatch("SHA-256 differs from the one recorded when it was written")
    if mmap:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    return faiss.read_index(str(path))
