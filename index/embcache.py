"""The embedding cache of a mining job: a memory-mapped ``.npy`` per side, filled chunk by chunk
and resumable after a crash.

Each finished chunk's SHA-256 is recorded in the cache's state file (``emb-KEY.json``) when it is
written and checked when the cache is opened: a chunk that fails the check (flipped bytes, a
truncated or unreadable file) is encoded again, never used. The ``.npy`` is allocated in full when
created, so a full disk is an error then (RESOURCE_EXHAUSTED naming the directory), not a crash
while writing into the memory map later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write_text, disk_full_as
from stilts.index.scan import Side, chunk_texts

LOG = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: per-chunk SHA-256 in the state file


class Cache:
    """A memory-mapped (n_unique, dim) float32 ``.npy`` plus the list of finished chunks.

    Keyed by the file's hash, its layout, the model fingerprint, the route (``precision``: q4,
    fp32, ov-bf16, ... each computes its own vectors), prefix and chunk size, so a cache is reused
    exactly when it holds the vectors this run would compute.
    """

    def __init__(
        self, directory: Path, side: Side, encoder_key: dict[str, Any], dim: int, chunk: int
    ):
        key = json.dumps(
            {
                "v": CACHE_VERSION,
                "input": side.digest,
                "ids": side.has_ids,
                "chunk": chunk,
                **encoder_key,
            },
            sort_keys=True,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:20]
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"emb-{self.key}.npy"
        self.state_path = directory / f"emb-{self.key}.json"
        self.chunk = chunk
        self.n = side.n_unique
        self.n_chunks = -(-self.n // chunk)
        self.done: set[int] = set()
        self.sums: dict[int, str] = {}  # chunk -> SHA-256 of its float32 rows
        self._directory = directory
        shape = (max(self.n, 1), dim)
        if self.path.is_file() and self.state_path.is_file():
            try:
                self.array = np.lib.format.open_memmap(self.path, mode="r+")
                state = json.loads(self.state_path.read_text())
                if self.array.shape == shape and state.get("key") == self.key:
                    self.sums = {int(c): str(h) for c, h in state["sha256"].items()}
                    self.done = self._verified(set(state["done"]))
            except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
                LOG.warning("%s: unreadable cache (%s); encoding it again", self.path, e)
                self.done, self.sums = set(), {}
        if not self.done:
            with disk_full_as(directory, self.path.name, "the mining job stopped"):
                self.array = np.lib.format.open_memmap(
                    self.path, mode="w+", dtype=np.float32, shape=shape
                )
                with open(self.path, "rb+") as f:  # allocate now: no SIGBUS in the map later
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            self.sums = {}
            self._write_state()
        self.reused = len(self.done)

    def _verified(self, done: set[int]) -> set[int]:
        """The chunks of ``done`` whose rows still hash to the recorded SHA-256 (others are
        encoded again, with a warning naming the file)."""
        good = set()
        for c in sorted(done):
            a, b = self.rows(c)
            if c in self.sums and _digest(self.array[a:b]) == self.sums[c]:
                good.add(c)
        bad = sorted(done - good)
        if bad:
            LOG.warning(
                "%s: %d cached chunk(s) fail their SHA-256 check (e.g. chunk %d, rows %d-%d); "
                "encoding them again",
                self.path,
                len(bad),
                bad[0],
                *self.rows(bad[0]),
            )
        self.sums = {c: self.sums[c] for c in good}
        return good

    def rows(self, c: int) -> tuple[int, int]:
        return c * self.chunk, min((c + 1) * self.chunk, self.n)

    def todo(self) -> list[int]:
        return [c for c in range(self.n_chunks) if c not in self.done]

    def put(self, c: int, vectors: np.ndarray) -> None:
        """Store one chunk's vectors, flush them, then mark the chunk done (in that order)."""
        a, b = self.rows(c)
        if vectors.shape != (b - a, self.array.shape[1]):
            raise StiltsError(
                ErrorCode.INTERNAL, f"chunk {c}: got {vectors.shape}, expected {(b - a,)}"
            )
        self.array[a:b] = vectors
        with disk_full_as(self._directory, self.path.name, "the mining job stopped"):
            self.array.flush()
            self.sums[c] = _digest(self.array[a:b])
            self.done.add(c)
            try:
                self._write_state()
            except BaseException:
                self.done.discard(c)
                raise

    def _write_state(self) -> None:
        with disk_full_as(self._directory, self.state_path.name, "the mining job stopped"):
            atomic_write_text(
                self.state_path,
                json.dumps(
                    {
                        "key": self.key,
                        "done": sorted(self.done),
                        "sha256": {str(c): self.sums[c] for c in sorted(self.done)},
                    }
                ),
            )

    def vectors(self) -> np.ndarray:
        return self.array[: self.n]


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float32).data).hexdigest()


def encode_local(encoder, side: Side, cache: Cache, batch_size: int, progress: bool) -> None:
    """Encode the chunks the cache lacks, in order, with one in-process encoder."""
    todo = cache.todo()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        done_rows = sum(cache.rows(c)[1] - cache.rows(c)[0] for c in cache.done)
        bar = tqdm(total=cache.n, initial=done_rows, desc=f"encode {side.path.name}", unit="sent")
    for c, texts in chunk_texts(side, cache.chunk, todo):
        cache.put(c, encoder.encode(texts, kind="bitext", batch_size=batch_size))
        if bar is not None:
            bar.update(len(texts))
    if bar is not None:
        bar.close()
