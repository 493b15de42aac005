"""Blocked exact k-nearest-neighbour search by inner product (faiss contrib style).

The database is read shard by shard and the queries block by block; each (query block, shard)
tile is one exact FAISS search, and the running top-k per query is merged tile after tile, so
memory is bounded by the block and shard sizes however large N x M is. Shards can come from an
iterator (files, memory maps, other machines).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import faiss
import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.index.factory import GPU_MAX_K, gpu_count

DEFAULT_BLOCK = 8192
DEFAULT_SHARD = 262_144
_gpu_resources = None
Shards = np.ndarray | Iterable[np.ndarray] | Callable[[], Iterator[np.ndarray]]


def empty_topk(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores -inf and labels -1: the neutral element of :func:`merge_topk`."""
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def merge_topk(
    d1: np.ndarray, i1: np.ndarray, d2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two per-row top lists into the top ``k`` (ties keep the first list's entries first)."""
    d = np.concatenate([d1, d2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def knn_tile(
    queries: np.ndarray, shard: np.ndarray, k: int, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of ``queries`` in one ``shard``; labels offset to global rows.

    Runs on the GPU when FAISS has one, else on the CPU (BLAS).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(shard, dtype=np.float32)
    kk = min(k, len(x))
    if kk == 0 or len(q) == 0:
        return empty_topk(len(q), k)
    if gpu_count() > 0 and kk <= GPU_MAX_K:  # faiss-gpu: brute force on the first GPU
        global _gpu_resources
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        d, i = faiss.knn_gpu(_gpu_resources, q, x, kk, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        d, i = faiss.knn(q, x, kk, metric=faiss.METRIC_INNER_PRODUCT)
    i = i.astype(np.int64) + offset
    if kk < k:
        pad_d, pad_i = empty_topk(len(q), k - kk)
        d, i = np.concatenate([d, pad_d], 1), np.concatenate([i, pad_i], 1)
    return d, i


def _shards(database: Shards, shard_size: int) -> Iterator[np.ndarray]:
    if isinstance(database, np.ndarray):
        for start in range(0, len(database), shard_size):
            yield database[start : start + shard_size]
    elif callable(database):
        yield from database()
    else:
        yield from database


def _check(arr: np.ndarray, name: str, dim: int | None) -> None:
    if arr.ndim != 2:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{name} must be 2-D, got {arr.shape}", name)
    if dim is not None and arr.shape[1] != dim:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{name} has dimension {arr.shape[1]}, expected {dim}",
            name,
        )


def knn(
    queries: np.ndarray,
    database: Shards,
    k: int,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by inner product, in (query block x database shard) tiles.

    Args:
        queries: (nq, d) array; a ``np.memmap`` works (blocks are read as needed).
        database: (n, d) array (memory map welcome), or an iterable of shards, or a callable
            returning an iterator of shards; rows are numbered in order across shards.
        k: neighbours per query; rows of the result beyond the database size are -1 / -inf.
        block_size: queries per tile.
        shard_size: database rows per shard when ``database`` is one array.
        progress: show a tqdm bar over database rows.
        desc: the bar's label.

    Returns:
        (scores, labels): (nq, k) float32 inner products, best first, and int64 database rows.
    """
    if k < 1:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "k must be >= 1", "k")
    if block_size < 1 or shard_size < 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, "block_size and shard_size must be >= 1", "block_size"
        )
    _check(queries, "queries", None)
    nq, dim = queries.shape
    best_d, best_i = empty_topk(nq, k)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = len(database) if isinstance(database, np.ndarray) else None
        bar = tqdm(total=total, desc=desc, unit="vec")
    offset = 0
    for shard in _shards(database, shard_size):
        shard = np.asarray(shard)
        _check(shard, "database", dim)
        shard = np.ascontiguousarray(shard, dtype=np.float32)
        for start in range(0, nq, block_size):
            stop = min(start + block_size, nq)
            d, i = knn_tile(queries[start:stop], shard, k, offset)
            best_d[start:stop], best_i[start:stop] = merge_topk(
                best_d[start:stop], best_i[start:stop], d, i, k
            )
        offset += len(shard)
        if bar is not None:
            bar.update(len(shard))
    if bar is not None:
        bar.close()
    return best_d, best_i


def knn_blocks(
    query_blocks: Iterable[np.ndarray],
    database: np.ndarray,
    k: int,
    shard_size: int = DEFAULT_SHARD,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Streaming form of :func:`knn`: yields (scores, labels) per query block.

    Use it when the queries come from an iterator (files, a generator) and the database is an
    array or memory map.
    """
    for block in query_blocks:
        yield knn(np.asarray(block), database, k, block_size=len(block) or 1, shard_size=shard_size)


def search_index(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    block_size: int = DEFAULT_BLOCK,
    params: faiss.SearchParameters | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search a built (possibly approximate) FAISS index in query blocks."""
    nq = len(queries)
    best_d, best_i = empty_topk(nq, k)
    for start in range(0, nq, block_size):
        q = np.ascontiguousarray(queries[start : start + block_size], dtype=np.float32)
        d, i = index.search(q, k, params=params)
        best_d[start : start + len(q)] = d
        best_i[start : start + len(q)] = i
    best_d[best_i < 0] = -np.inf
    return best_d, best_i
