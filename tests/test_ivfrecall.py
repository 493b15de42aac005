"""Mining's IVF search visits as many lists as its own data needs (stilts.index.ivfrecall)."""

import faiss
import numpy as np
from conftest import clustered_pairs

from stilts.index import factory as fx
from stilts.index.ivfrecall import list_ranks, nprobe_for_recall
from stilts.index.knn import knn
from stilts.index.mining import neighbours


def _ivf(database: np.ndarray, nlist: int):
    index = faiss.index_factory(database.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(database)
    index.add(database)
    return index, faiss.extract_index_ivf(index)


def _recall(index, ivf, queries, database, nprobe, k=10) -> float:
    ivf.nprobe = nprobe
    _, got = index.search(queries, k)
    _, want = knn(queries, database, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want, strict=True)]))


def test_list_ranks_predict_the_search_recall():
    """Vectors spread over 5,000 clusters (hard for 512 lists): the share of ranks below nprobe
    is the recall a real IVF search at that nprobe gives."""
    x, y = clustered_pairs(20_000, 32, clusters=5000, seed=3)
    index, ivf = _ivf(y, 512)
    ranks = list_ranks(ivf, x[:400], y, 10)
    assert ranks.shape == (400, 10) and (ranks >= 0).all()
    for nprobe in (8, 64, 128):
        assert abs(np.mean(ranks < nprobe) - _recall(index, ivf, x[:400], y, nprobe)) < 0.002


def test_measured_nprobe_meets_the_target_on_other_queries():
    x, y = clustered_pairs(20_000, 32, clusters=5000, seed=3)
    index, ivf = _ivf(y, 512)
    default = fx.nprobe_for(512)
    assert _recall(index, ivf, x[15_000:15_500], y, default) < 0.97  # the fixed default falls short
    nprobe, recall = nprobe_for_recall(ivf, x[:10_000], y, 10, floor=default, target=0.99)
    assert default < nprobe < 512 and recall >= 0.99
    assert _recall(index, ivf, x[15_000:15_500], y, nprobe) >= 0.98  # held-out queries
    # easy data needs no more than the floor
    x, y = clustered_pairs(20_000, 32, clusters=50, seed=3)
    _, easy = _ivf(y, 512)
    assert nprobe_for_recall(easy, x, y, 10, floor=default) == (default, 1.0)


def test_ivf_mining_finds_the_exact_neighbours():
    """Mining's k-NN through an IVF index with no nprobe given: the measured nprobe finds the
    neighbours exact search finds (the fixed default of 32 of 256 lists misses a tenth)."""
    x, y = clustered_pairs(8000, 32, clusters=3000, seed=4)
    exact = neighbours(x, y, 10)

    def found(nb) -> float:
        pairs = zip(nb.fwd_ids, exact.fwd_ids, strict=True)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in pairs]))

    assert found(neighbours(x, y, 10, index="IVF256,Flat")) >= 0.99
    assert found(neighbours(x, y, 10, index="IVF256,Flat", nprobe=fx.nprobe_for(256))) < 0.95
