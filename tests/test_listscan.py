"""List-by-list k-NN in an IVF-Flat index (mining's approximate path) against FAISS's own search."""

import faiss
import numpy as np

from stilts.index.knn import empty_topk, merge_topk
from stilts.index.listscan import coarse_assign, search_by_list


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(40, dim)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 1.0 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ivf(x: np.ndarray, nlist: int, nprobe: int) -> faiss.IndexIVFFlat:
    index = faiss.index_factory(x.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    index.nprobe = nprobe
    return index


def test_search_by_list_finds_what_faiss_search_finds():
    x, q = _clustered(6000, 32, 1), _clustered(1500, 32, 2)
    index = _ivf(x, 60, 2)
    want_d, want_i = index.search(q, 5)
    got_d, got_i = search_by_list(index, q, 5)
    assert np.array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, atol=1e-5)
    # an approximate search: with few probes it misses some exact neighbours, as FAISS does
    exact_i = faiss.knn(q, x, 5, metric=faiss.METRIC_INNER_PRODUCT)[1]
    assert (got_i == exact_i).mean() < 1.0


def test_list_ranges_merge_to_the_whole_scan_and_short_lists_pad():
    x, q = _clustered(3000, 16, 3), _clustered(800, 16, 4)
    index = _ivf(x, 30, 4)
    whole_d, whole_i = search_by_list(index, q, 8)
    assign = coarse_assign(index, q)
    d, i = empty_topk(len(q), 8)
    for part in (range(0, 7), range(7, 19), range(19, 30)):
        pd, pi = search_by_list(index, q, 8, lists=part, assign=assign)
        d, i = merge_topk(d, i, pd, pi, 8)
    assert np.array_equal(i, whole_i)
    assert np.array_equal(d, whole_d)
    # more neighbours than the probed lists hold: the rest is -1 / -inf, never a made-up row
    tiny = _ivf(x[:200], 4, 1)
    td, ti = search_by_list(tiny, q[:50], 100)
    assert (ti == -1).any() and np.isneginf(td[ti == -1]).all()
    assert ((ti >= -1) & (ti < 200)).all()
