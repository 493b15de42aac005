"""Batches of similar length: what a runner is fed, by the encoder and by the export's checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None, bucket: int = 0
) -> Iterator[np.ndarray]:
    """Group item indices into batches of similar length (longest first).

    Each batch holds at most ``batch_size`` items and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (items x longest); a single longer item still forms its own batch.
    ``bucket`` > 0: a batch holds items of one length bucket only (lengths rounded up to a
    multiple of ``bucket``: the routes that pad each row by its own length, see ``Encoder``).
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens:
            size = max(1, min(size, max_tokens // max(longest, 1)))
        if bucket:
            rest = -(-np.asarray(lengths)[order[start:]] // bucket)
            same = int(np.searchsorted(-rest, -rest[0], "right"))
            size = min(size, max(same, 1))
        yield order[start : start + size]
        start += size
