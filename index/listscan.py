"""k-NN of a large query set in an IVF-Flat index, one inverted list at a time.

``index.search`` walks the index query by query: each query reads its ``nprobe`` lists from
memory, so a mining job (every sentence of one side against the other) reads each list thousands
of times and is bound by memory bandwidth. Here the queries are first grouped by the lists they
probe (the same coarse assignment ``search`` makes), then each list is read once and matched
against all its queries in one BLAS product, and the products' top-k are merged per query. The
result is the one ``search`` gives with the same ``nprobe`` (same candidates, scores equal to
float rounding); measured 3-8x faster at 100k queries against 1M vectors on 2 cores.

``lists`` restricts the scan to a range of lists, so the work splits over processes or machines
(each holding only its lists) and the partial top-k merge with :func:`stilts.index.knn.merge_topk`.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

LOG = logging.getLogger(__name__)

QUERY_CHUNK = 8192  # queries per product: bounds the (queries x list size) score matrix
ASSIGN_BLOCK = 65536


def coarse_assign(ivf: faiss.IndexIVF, queries: np.ndarray) -> np.ndarray:
    """The ``nprobe`` lists each query visits (``(n, nprobe)`` int64, in blocks)."""
    out = np.empty((len(queries), ivf.nprobe), dtype=np.int64)
    for start in range(0, len(queries), ASSIGN_BLOCK):
        q = np.ascontiguousarray(queries[start : start + ASSIGN_BLOCK], dtype=np.float32)
        out[start : start + len(q)] = ivf.quantizer.search(q, ivf.nprobe)[1]
    return out


def list_vectors(ivf: faiss.IndexIVF, lst: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and float32 vectors stored in inverted list ``lst`` of an IVF-Flat index."""
    inv = ivf.invlists
    n = inv.list_size(lst)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, ivf.d), np.float32)
    ids = faiss.rev_swig_ptr(inv.get_ids(lst), n).copy()
    codes = faiss.rev_swig_ptr(inv.get_codes(lst), n * inv.code_size).copy()
    inv.release_ids(lst, inv.get_ids(lst))
    inv.release_codes(lst, inv.get_codes(lst))
    return ids.astype(np.int64), codes.view(np.float32).reshape(n, ivf.d)


def search_by_list(
    ivf: faiss.IndexIVF,
    queries: np.ndarray,
    k: int,
    lists: range | None = None,
    assign: np.ndarray | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of every query among the vectors of the lists it probes.

    Args:
        ivf: a trained, filled IVF-Flat index (inner product); its ``nprobe`` is used.
        queries: ``(n, d)`` float32 (a memory map is fine; rows are gathered per list).
        k: neighbours per query.
        lists: only these lists (default: all); queries' other lists are skipped.
        assign: the coarse assignment from :func:`coarse_assign` (computed when None).
        progress: a tqdm bar over lists.

    Returns:
        ``(scores, ids)`` of shape ``(n, k)``, best first; -inf / -1 where fewer than ``k``.
    """
    if assign is None:
        assign = coarse_assign(ivf, queries)
    nq, nprobe = assign.shape
    flat = assign.ravel()
    order = np.argsort(flat, kind="stable")
    query_of = order // nprobe
    bounds = np.searchsorted(flat[order], np.arange(ivf.nlist + 1))
    heap = faiss.ResultHeap(nq, k, keep_max=True)
    todo = lists if lists is not None else range(ivf.nlist)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="k-NN by list", unit="list")
    for lst in todo:
        qs = query_of[bounds[lst] : bounds[lst + 1]]
        if len(qs):
            ids, xb = list_vectors(ivf, lst)
            if len(ids):
                kk = min(k, len(ids))
                for start in range(0, len(qs), QUERY_CHUNK):
                    sub = np.sort(qs[start : start + QUERY_CHUNK])
                    q = np.ascontiguousarray(queries[sub], dtype=np.float32)
                    d, i = faiss.knn(q, xb, kk, metric=faiss.METRIC_INNER_PRODUCT)
                    heap.add_result_subset(sub, d, ids[i])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    heap.finalize()
    heap.D[heap.I < 0] = -np.inf  # as stilts.index.knn.empty_topk: nothing found
    return heap.D, heap.I
