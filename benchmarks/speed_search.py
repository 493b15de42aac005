"""Search latency, QPS and recall@k of each index kind on synthetic vectors.

Everything searched is a :class:`stilts.index.VectorIndex` (what the server serves), in memory;
exact neighbours for recall come from the index layer's blocked kNN. The vectors are synthetic but
shaped like sentence embeddings rather than uniform noise (on which every approximate index looks
bad): unit vectors drawn around a few thousand random centres, queries drawn the same way and not
stored. Latency is one query per call (``search(q, k)``, documents fetched as a client gets them),
QPS is batched throughput; each figure is the median of ``repeats`` passes, the kinds interleaved.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np

from stilts.benchmarks.timing import percentiles

LOG = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
BASELINE = "flat"


def synthetic(
    n: int, dim: int = 384, centres: int | None = None, spread: float = 0.6, seed: int = 0
) -> np.ndarray:
    """``n`` unit vectors in clusters: centre + Gaussian noise (relative norm ``spread``)."""
    rng = np.random.default_rng(seed)
    c = centres or max(16, min(4096, n // 50))
    mu = rng.standard_normal((c, dim)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for start in range(0, n, step):
        m = min(step, n - start)
        x = mu[rng.integers(0, c, m)] + rng.standard_normal((m, dim)).astype(np.float32) * (
            spread / np.sqrt(dim)
        )
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(kind: str, vectors: np.ndarray):
    """An in-memory VectorIndex of ``kind`` holding ``vectors`` (ids 0..n-1), trained."""
    from stilts.index import VectorIndex

    t0 = time.perf_counter()
    # kinds that train do it once, on all the vectors (train_size = n), so IVF gets its nlist for n
    index = VectorIndex.create(
        None,
        vectors.shape[1],
        kind,
        device="cpu",
        train_size=len(vectors) if kind != "flat" else None,
    )
    step = 50_000
    for start in range(0, len(vectors), step):
        chunk = vectors[start : start + step]
        index.add(np.arange(start, start + len(chunk), dtype=np.int64), chunk)
    if kind != "flat":
        try:
            index.train()
        except Exception as e:  # already trained (kinds that train on add)
            LOG.debug("train %s: %s", kind, e)
    return index, time.perf_counter() - t0


def _latencies(index, queries: np.ndarray, k: int) -> list[float]:
    out = []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        index.search(queries[i : i + 1], k)
        out.append(time.perf_counter() - t0)
    return out


def _batch_seconds(index, queries: np.ndarray, k: int, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search(queries[start : start + batch], k)
    return time.perf_counter() - t0


def run_size(
    n: int,
    kinds: tuple[str, ...] = KINDS,
    n_queries: int = 500,
    k: int = 10,
    repeats: int = 3,
    batch: int = 64,
    dim: int = 384,
    seed: int = 0,
    real: np.ndarray | None = None,
) -> dict:
    """Every kind on ``n`` vectors: build time, latency percentiles, QPS, recall@k vs exact.

    Args:
        real: real embeddings (e.g. ``stilts encode`` output) to use instead of synthetic ones:
            ``n_queries`` random rows become the queries, ``n`` others the indexed vectors.
    """
    from stilts.errors import ErrorCode, StiltsError
    from stilts.index.knn import knn

    if real is not None:
        if real.ndim != 2 or len(real) < n + n_queries:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"search-vectors: need at least {n + n_queries} rows for {n} vectors + "
                f"{n_queries} queries, the file has {len(real)}",
                "search-vectors",
            )
        rows = np.random.default_rng(seed).permutation(len(real))[: n + n_queries]
        data = np.ascontiguousarray(real[np.sort(rows)], dtype=np.float32)
        data = data[np.random.default_rng(seed + 1).permutation(len(data))]
        data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        dim = data.shape[1]
    else:
        data = synthetic(n + n_queries, dim, seed=seed)
    queries, vectors = data[:n_queries], data[n_queries:]
    _, exact = knn(queries, vectors, k)
    built = {}
    for kind in kinds:
        LOG.info("search: building %s on %d vectors", kind, n)
        built[kind] = build(kind, vectors)
    for index, _ in built.values():  # warm-up
        _latencies(index, queries[: min(50, len(queries))], k)
    lat: dict[str, list[dict]] = {kind: [] for kind in kinds}
    qps: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind, (index, _) in built.items():
            ls = _latencies(index, queries, k)
            lat[kind].append({**percentiles(ls), "mean": statistics.fmean(ls)})
            qps[kind].append(len(queries) / _batch_seconds(index, queries, k, batch))
    out = {}
    for kind, (index, build_s) in built.items():
        hits = index.search(queries, k)
        found = [[h.id for h in row] for row in hits]
        recall = float(
            np.mean([len(set(f) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)])
        )
        med = {key: statistics.median(r[key] for r in lat[kind]) * 1000 for key in lat[kind][0]}
        desc = index.describe()
        out[kind] = {
            "factory": desc.get("factory"),
            "params": desc.get("params"),
            "build_seconds": build_s,
            "latency_ms": med,
            "qps_sequential": 1000.0 / med["mean"],
            "qps_batch": statistics.median(qps[kind]),
            "qps_batch_runs": qps[kind],
            f"recall_at_{k}": recall,
        }
        index.close()
    if BASELINE in out:
        base = out[BASELINE]
        for r in out.values():
            r["p50_vs_flat"] = r["latency_ms"]["p50"] / base["latency_ms"]["p50"]
            r["qps_batch_vs_flat"] = r["qps_batch"] / base["qps_batch"]
    return {
        "n": n,
        "vectors": "real" if real is not None else "synthetic",
        "dim": dim,
        "queries": n_queries,
        "k": k,
        "batch": batch,
        "repeats": repeats,
        "kinds": out,
    }


def run(
    sizes: list[int],
    kinds: tuple[str, ...] = KINDS,
    vectors_path: str | None = None,
    **kw,
) -> dict:
    """:func:`run_size` for each size: ``{"by_size": {n: ...}}``.

    Args:
        sizes: index sizes.
        kinds: index kinds.
        vectors_path: a ``.npy`` of real embeddings (memory-mapped) instead of synthetic vectors.
    """
    real = np.load(vectors_path, mmap_mode="r") if vectors_path else None
    out = {"by_size": {str(n): run_size(n, kinds, real=real, **kw) for n in sizes}}
    out["vectors"] = str(vectors_path) if vectors_path else "synthetic (clustered)"
    return out
