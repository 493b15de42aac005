"""Building a FAISS structure from the SQLite store, in the background, and exact re-ranking.

- :func:`build_from_store` trains and fills a fresh index from the stored vectors (the source of
  truth), streaming them in blocks, up to a given ``seq``.
- :class:`Background` runs such a build on a thread while the old structure keeps serving; the
  caller swaps the result in under its write lock, after replaying the rows written meanwhile
  (rows with a larger ``seq`` are added, rows deleted meanwhile are removed). A crash at any point
  loses nothing: the database holds every row, and the snapshot file is only ever replaced whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import faiss
import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.index import factory as fx
from stilts.index.store import Store

LOG = logging.getLogger(__name__)


def build_from_store(
    store: Store, factory: str, dim: int, max_seq: int | None = None
) -> tuple[faiss.Index, np.ndarray, dict[str, float]]:
    """A trained index of ``factory`` holding the stored rows with ``seq <= max_seq``.

    Returns:
        (the index, the seqs it holds, ``{"train_rows", "train_seconds", "add_seconds"}``).

    Raises:
        StiltsError: FAILED_PRECONDITION when training fails (too few vectors).
    """
    live = store.seqs()
    if max_seq is not None:
        live = live[live <= max_seq]
    cpu = fx.build(factory, dim)
    t0 = time.perf_counter()
    train_rows = 0
    if not cpu.is_trained:
        xt = _sample(store, live[fx.train_rows(len(live), factory)])
        LOG.info("training %s on %d vectors", factory, len(xt))
        try:
            cpu.train(xt)
        except RuntimeError as e:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"cannot train {factory} on {len(xt)} vectors: {str(e).splitlines()[0]}",
                "kind",
            ) from None
        train_rows = len(xt)
        del xt
    t1 = time.perf_counter()
    held = []
    for seqs, vecs in store.iter_vectors():
        if max_seq is not None and seqs[0] > max_seq:
            break
        if max_seq is not None and seqs[-1] > max_seq:
            keep = seqs <= max_seq
            seqs, vecs = seqs[keep], vecs[keep]
        cpu.add_with_ids(vecs, seqs)
        held.append(seqs)
    t2 = time.perf_counter()
    seqs = np.concatenate(held) if held else np.zeros(0, dtype=np.int64)
    LOG.info("built %s: %d vectors (train %.1fs, add %.1fs)", factory, len(seqs), t1 - t0, t2 - t1)
    timings = {"train_rows": train_rows, "train_seconds": t1 - t0, "add_seconds": t2 - t1}
    return cpu, seqs, timings


def _sample(store: Store, seqs: np.ndarray) -> np.ndarray:
    """Stored vectors of ``seqs`` (sorted) read in one streaming pass; rows deleted meanwhile are
    skipped."""
    parts = []
    last = int(seqs[-1]) if len(seqs) else -1
    for block_seqs, vecs in store.iter_vectors():
        keep = np.isin(block_seqs, seqs, assume_unique=True)
        if keep.any():
            parts.append(vecs[keep])
        if block_seqs[-1] >= last:
            break
    return np.concatenate(parts) if parts else np.zeros((0, store.dim), dtype=np.float32)


class Background:
    """At most one background build at a time: ``start(work)`` runs ``work()`` on a thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.target: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, target: str, work: Callable[[], None]) -> bool:
        """Start ``work`` (building ``target``) unless a build runs already; True if started."""
        if self.running:
            return False
        self.error = None
        self.target = target

        def run() -> None:
            try:
                work()
            except BaseException as e:  # reported by wait(); the old structure keeps serving
                LOG.exception("background rebuild to %s failed", target)
                self.error = e

        self._thread = threading.Thread(target=run, name=f"stilts-rebuild-{target}", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running build; True when none is running (any more)."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running
