"""How many IVF lists a mining job visits: as many as its own data needs for a recall target.

An IVF index finds a query's true neighbour exactly when the neighbour's list is among the
``nprobe`` lists nearest the query. For a sample of the job's queries this module finds their
exact neighbours (blocked brute force), the list of each neighbour and the rank of that list in
the query's order of lists; the smallest ``nprobe`` that covers ``target`` of those ranks is the
one to search with. It needs only the trained coarse quantizer, so it serves the local search and
the Ray scan of lists alike, and no filled index.

Margin mining needs more than the first neighbour: each sentence's mean similarity to its k
nearest scales every margin, and the order-statistics null reads ten columns. A fixed ``nprobe``
(nlist/8, at least 32) missed enough of them on 20-34k pools that the automatic threshold's F1
moved by -3.3 to +2.3 points against exact search; a measured ``nprobe`` does not depend on how
clustered the vectors happen to be.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from stilts.index.knn import knn

LOG = logging.getLogger(__name__)

# the share of the sampled queries' k nearest neighbours the search must find
RECALL_TARGET = 0.995
# queries sampled to measure it (their exact k-NN costs sample x N x dim)
RECALL_SAMPLE = 1000


def list_ranks(
    ivf: faiss.IndexIVF, queries: np.ndarray, database: np.ndarray, k: int
) -> np.ndarray:
    """For each query's exact ``k`` nearest rows of ``database``: the rank (0 = nearest) of the
    list holding that row in the query's order of lists; (n, k) ints, -1 where there is no row."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, ids = knn(q, database, k)
    found = ids >= 0
    rows = np.unique(ids[found])
    _, home = ivf.quantizer.search(np.ascontiguousarray(database[rows], dtype=np.float32), 1)
    _, order = ivf.quantizer.search(q, ivf.nlist)  # every list, nearest first
    rank_of = np.empty_like(order)
    rank_of[np.arange(len(q))[:, None], order] = np.arange(ivf.nlist)[None, :]
    ranks = np.full(ids.shape, -1, dtype=np.int64)
    query, col = np.nonzero(found)
    ranks[query, col] = rank_of[query, home[np.searchsorted(rows, ids[query, col]), 0]]
    return ranks


def nprobe_for_recall(
    ivf: faiss.IndexIVF,
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    floor: int = 1,
    target: float = RECALL_TARGET,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
) -> tuple[int, float]:
    """The smallest ``nprobe`` (at least ``floor``) at which IVF search finds ``target`` of the
    exact ``k`` nearest neighbours of a sample of ``queries``: (nprobe, the recall it gives)."""
    n = len(queries)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(sample, n), replace=False))
    ranks = list_ranks(ivf, np.asarray(queries[rows]), database, k)
    ranks = np.sort(ranks[ranks >= 0])
    if len(ranks) == 0:
        return min(floor, ivf.nlist), 1.0
    need = int(ranks[min(len(ranks) - 1, int(np.ceil(target * len(ranks))) - 1)]) + 1
    nprobe = min(ivf.nlist, max(floor, need))
    recall = float(np.mean(ranks < nprobe))
    LOG.info(
        "IVF%d: nprobe %d finds %.4f of the exact %d nearest (%d sampled queries; target %.3f)",
        ivf.nlist,
        nprobe,
        recall,
        k,
        len(rows),
        target,
    )
    return nprobe, recall
