"""The benchmark's only doorway to retrieval and mining: everything here calls :mod:`stilts.index`.

Nothing is re-implemented. The k-NN of both directions come from
:func:`stilts.index.mining.neighbours` (exact blocked kNN) once per set; candidates and their
scores from :func:`stilts.index.mining.select`, with ``margin="absolute"`` for plain cosine. The
``forward`` / ``backward`` selections give one best target per source / per target: top-1
retrieval as in LASER/XTREME Tatoeba, with cosine or margin.
"""

from __future__ import annotations

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.index import mining
from stilts.records import SCORINGS


def neighbours(src: np.ndarray, tgt: np.ndarray, k: int = 4) -> mining.Neighbours:
    """Exact k-NN both ways (the index layer's blocked kNN)."""
    return mining.neighbours(src, tgt, k)


def neighbours_for_auto(
    src: np.ndarray, tgt: np.ndarray, k: int = 4
) -> tuple[mining.Neighbours, mining.Neighbours]:
    """(the k-NN of the margin, the wider k-NN the threshold estimators read), as ``stilts mine
    --threshold auto`` computes them (:func:`stilts.index.mining.select_auto`)."""
    wide = mining.neighbours(src, tgt, mining.neighbours_needed(k, "auto"))
    return mining.columns(wide, 0, k), wide


def candidates(
    nb: mining.Neighbours, margin: str = "ratio", retrieval: str = "max"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate pair the miner proposes from ``nb`` (no threshold), with its score.

    Returns:
        (src rows, tgt rows, scores), one entry per mined pair.
    """
    pairs = mining.select(nb, margin=margin, retrieval=retrieval, threshold=None)
    n = len(pairs)
    rows_s = np.fromiter((p.src for p in pairs), dtype=np.int64, count=n)
    rows_t = np.fromiter((p.tgt for p in pairs), dtype=np.int64, count=n)
    scores = np.fromiter((p.score for p in pairs), dtype=np.float64, count=n)
    return rows_s, rows_t, scores


def _predicted(rows_from: np.ndarray, rows_to: np.ndarray, n: int) -> np.ndarray:
    """``pred[a] = b`` for each selected pair (a, b); -1 where a got none."""
    pred = np.full(n, -1, dtype=np.int64)
    pred[rows_from] = rows_to
    return pred


def tatoeba_predictions(
    src: np.ndarray,
    tgt: np.ndarray,
    scoring: str = "cosine",
    k: int = 4,
    margin: str = "ratio",
    nb: mining.Neighbours | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 retrieval both ways over aligned sets.

    Args:
        src: (n, d) xx vectors; row i translates ``tgt[i]``.
        tgt: (n, d) English vectors.
        scoring: ``cosine`` (nearest neighbour) or ``margin`` (``margin`` over the k nearest
            neighbours of both sides, the best of each source's k candidates).
        k: neighbours for the margin.
        margin: ``ratio`` (default) or ``distance``.
        nb: the k-NN of both directions when already computed.

    Returns:
        (xx->en predicted rows, en->xx predicted rows).
    """
    if scoring not in SCORINGS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"scoring must be cosine or margin, got {scoring!r}",
            "scoring",
        )
    nb = nb if nb is not None else neighbours(src, tgt, k)
    m = "absolute" if scoring == "cosine" else margin
    fs, ft, _ = candidates(nb, m, "forward")
    bs, bt, _ = candidates(nb, m, "backward")
    return _predicted(fs, ft, len(src)), _predicted(bt, bs, len(tgt))
