"""The embedding cache of a mining job: a memory-mapped ``.npy`` per side, filled chunk by chunk
and resumable after a crash."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write_text
from stilts.index.scan import Side, chunk_texts

LOG = logging.getLogger(__name__)

CACHE_VERSION = 1


class Cache:
    """A memory-mapped (n_unique, dim) float32 ``.npy`` plus the list of finished chunks.

    Keyed by the file's hash, its layout, the model fingerprint, precision, prefix and chunk size,
    so a cache is reused exactly when it holds the vectors this run would compute.
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
        shape = (max(self.n, 1), dim)
        if self.path.is_file() and self.state_path.is_file():
            try:
                self.array = np.lib.format.open_memmap(self.path, mode="r+")
                state = json.loads(self.state_path.read_text())
                if self.array.shape == shape and state.get("key") == self.key:
                    self.done = set(state["done"])
            except (ValueError, OSError, json.JSONDecodeError) as e:
                LOG.warning("%s: unreadable cache (%s); re-encoding", self.path, e)
        if not self.done:
            self.array = np.lib.format.open_memmap(
                self.path, mode="w+", dtype=np.float32, shape=shape
            )
            self._write_state()
        self.reused = len(self.done)

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
        self.array.flush()
        self.done.add(c)
        self._write_state()

    def _write_state(self) -> None:
        atomic_write_text(self.state_path, json.dumps({"key": self.key, "done": sorted(self.done)}))

    def vectors(self) -> np.ndarray:
        return self.array[: self.n]


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
