"""The Ray engine of ``stilts mine``: the same job as the local engine, spread over a Ray cluster.

- Encoding runs on Ray Data: the chunks the cache lacks become rows of a dataset, and
  ``map_batches`` sends each chunk to an encoder actor (one per CPU, or one per GPU where the
  cluster has GPUs). Chunks are the local engine's chunks, so the vectors are identical (the int8
  graph quantises activations per batch, so the batch composition matters). Texts travel through
  the object store in windows, so the driver never holds a whole file.
- k-NN runs as one Ray task per database shard (every query against that shard), merged on the
  driver shard by shard, exactly as :func:`stilts.index.knn.knn` does locally. Exact search
  scores tiles; IVF kinds (``ivf``, ``ivfpq``) are trained on the driver, which also assigns
  every query to its lists once, and each task fills its shard into the trained lists and
  scans them (:func:`ivf_knn`). A node holds its shard's lists and the quantizer; the queries
  and their list ids go out, top-k lists come back.

Without an address, Ray starts locally (``num_cpus`` CPUs, no dashboard).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from stilts.index import factory as fx
from stilts.index import listscan, mining
from stilts.index.knn import DEFAULT_BLOCK, DEFAULT_SHARD, empty_topk, knn_tile, merge_topk
from stilts.index.mining import Neighbours

LOG = logging.getLogger(__name__)

WINDOW_CHUNKS = 16


def _ray():
    try:
        import ray
    except ImportError as e:
        from stilts.errors import ErrorCode, StiltsError

        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"--engine ray needs Ray: pip install 'stilts[ray]' ({e})",
            "engine",
        ) from None
    return ray


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start local Ray (idempotent)."""
    ray = _ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "ignore_reinit_error": True,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    LOG.info("ray: %s", ray.cluster_resources())


class EncoderActor:
    """A Ray Data UDF: encodes whole chunks (one row = one chunk) with the ``bitext`` prefix."""

    def __init__(self, model: str, precision: str, batch_size: int, threads: int, device: str):
        from stilts.encoding.encoder import Encoder

        self.encoder = Encoder(model, precision=precision, threads=threads, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, vecs = [], []
        for start, texts in zip(batch["start"], batch["texts"], strict=True):
            v = self.encoder.encode(
                [str(t) for t in texts], kind="bitext", batch_size=self.batch_size
            )
            rows.append(np.arange(int(start), int(start) + len(v), dtype=np.int64))
            vecs.append(v)
        dim = self.encoder.dim
        return {
            "row": np.concatenate(rows) if rows else np.zeros(0, np.int64),
            "vec": np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32),
        }


def encode_chunks(
    side, cache, model: str, precision: str, batch_size: int, progress: bool = True
) -> None:
    """Encode the chunks ``cache`` lacks on Ray Data actors and store them in the cache."""
    from stilts.index.scan import chunk_texts

    ray = _ray()
    todo = cache.todo()
    if not todo:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = gpus or cpus
    remote: dict[str, Any] = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    device = "cuda" if gpus else "cpu"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cache.n, initial=cache.n - sum(_size(cache, c) for c in todo), unit="sent")
        bar.set_description(f"encode {side.path.name} (ray, {actors} actors)")
    window = max(WINDOW_CHUNKS, 4 * actors)
    source = chunk_texts(side, cache.chunk, todo)
    while True:
        items = []
        for c, texts in source:
            items.append({"chunk": c, "start": cache.rows(c)[0], "texts": texts})
            if len(items) >= window:
                break
        if not items:
            break
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            EncoderActor,
            fn_constructor_kwargs={
                "model": model,
                "precision": precision,
                "batch_size": batch_size,
                "threads": 1 if not gpus else None,
                "device": device,
            },
            batch_size=1,
            batch_format="numpy",
            concurrency=min(actors, len(items)),
            **remote,
        )
        got = {it["chunk"]: 0 for it in items}
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = np.asarray(out["row"], dtype=np.int64)
            vecs = np.asarray(out["vec"], dtype=np.float32).reshape(len(rows), -1)
            cache.array[rows] = vecs
            for c, n in zip(*np.unique(rows // cache.chunk, return_counts=True), strict=True):
                got[int(c)] += int(n)
                if got[int(c)] == _size(cache, int(c)):
                    a, b = cache.rows(int(c))
                    cache.put(int(c), np.asarray(cache.array[a:b]))
                    if bar is not None:
                        bar.update(b - a)
    if bar is not None:
        bar.close()


def _size(cache, c: int) -> int:
    a, b = cache.rows(c)
    return b - a


def _shard_knn(queries: np.ndarray, shard: np.ndarray, k: int, offset: int, block_size: int):
    """Every query block against one shard: the same tiles as the local engine."""
    best_d, best_i = empty_topk(len(queries), k)
    for start in range(0, len(queries), block_size):
        d, i = knn_tile(queries[start : start + block_size], shard, k, offset)
        best_d[start : start + len(d)] = d
        best_i[start : start + len(d)] = i
    return best_d, best_i


def _sharded_topk(
    submit: Callable[[np.ndarray, int], Any],
    database: np.ndarray,
    nq: int,
    k: int,
    shard_size: int,
    progress: bool = False,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``submit(shard, start)`` (a Ray task: every query's top ``k`` in that database shard)
    for each shard, at most two per cluster CPU in flight, and merge the results in shard order,
    exactly as :func:`stilts.index.knn.knn` merges its tiles."""
    ray = _ray()
    limit = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
    best_d, best_i = empty_topk(nq, k)
    starts = list(range(0, len(database), shard_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(database), desc=f"{desc} (ray)", unit="vec")
    pending: dict[int, Any] = {}
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    next_merge = 0
    for n, start in enumerate(starts):
        shard = np.ascontiguousarray(database[start : start + shard_size], dtype=np.float32)
        pending[n] = submit(shard, start)
        while len(pending) >= limit or (n == len(starts) - 1 and pending):
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            for m, ref in list(pending.items()):
                if ref in ready:
                    results[m] = ray.get(ref)
                    del pending[m]
            while next_merge in results:  # merge strictly in shard order
                d, i = results.pop(next_merge)
                best_d, best_i = merge_topk(best_d, best_i, d, i, k)
                if bar is not None:
                    bar.update(min(shard_size, len(database) - starts[next_merge]))
                next_merge += 1
    if bar is not None:
        bar.close()
    return best_d, best_i


def knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN with one Ray task per database shard, merged in shard order."""
    ray = _ray()
    task = ray.remote(_shard_knn)
    q_ref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
    return _sharded_topk(
        lambda shard, start: task.remote(q_ref, shard, k, start, block_size),
        database,
        len(queries),
        k,
        shard_size,
        progress,
        desc,
    )


def _pretransforms(index: faiss.Index) -> list[faiss.VectorTransform]:
    """The transforms an ``IndexPreTransform`` applies before its IVF (OPQ...), in order."""
    if not isinstance(index, faiss.IndexPreTransform):
        return []
    return [faiss.downcast_VectorTransform(index.chain.at(j)) for j in range(index.chain.size())]


def is_sharded_ivf(index: faiss.Index) -> bool:
    """Whether ``index`` is an IVF (after pre-transforms) that Ray can scan shard by shard."""
    inner = (
        faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    )
    return isinstance(inner, faiss.IndexIVF)


def preassign(
    index: faiss.Index, queries: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The query side of an IVF search, computed once on the driver exactly as the local engine
    computes it: (queries as the lists see them, coarse scores, the ``nprobe`` list ids).

    IVF-Flat is scanned list by list (:mod:`stilts.index.listscan`): the queries and their
    lists (no scores needed). Other IVF kinds are searched block by block as ``index.search``
    does: the pre-transformed queries (OPQ's rotation for ``ivfpq``), coarse scores and lists.
    """
    ivf = fx.ivf_of(index)
    if mining.scans_by_list(index):
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return q, None, listscan.coarse_assign(ivf, q)
    nq = len(queries)
    qt = np.empty((nq, ivf.d), dtype=np.float32)
    coarse_d = np.empty((nq, ivf.nprobe), dtype=np.float32)
    coarse_i = np.empty((nq, ivf.nprobe), dtype=np.int64)
    for start in range(0, nq, block_size):
        q = np.ascontiguousarray(queries[start : start + block_size], dtype=np.float32)
        for transform in _pretransforms(index):
            q = transform.apply(q)
        stop = start + len(q)
        qt[start:stop] = q
        coarse_d[start:stop], coarse_i[start:stop] = ivf.quantizer.search(q, ivf.nprobe)
    return qt, coarse_d, coarse_i


def _shard_ivf(
    empty: np.ndarray,
    query_side: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    shard: np.ndarray,
    offset: int,
    k: int,
    block_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One target shard: added to a copy of the trained, empty index (rows numbered from
    ``offset``), then scanned at every query's preassigned lists (see :func:`preassign`)."""
    index = faiss.deserialize_index(empty)
    ids = np.arange(offset, offset + len(shard), dtype=np.int64)
    index.add_with_ids(np.ascontiguousarray(shard, dtype=np.float32), ids)
    ivf = fx.ivf_of(index)
    qt, coarse_d, coarse_i = query_side
    ivf.nprobe = coarse_i.shape[1]
    if coarse_d is None:
        return listscan.search_by_list(ivf, qt, k, assign=coarse_i)
    best_d, best_i = empty_topk(len(qt), k)
    for start in range(0, len(qt), block_size):
        stop = min(start + block_size, len(qt))
        d, i = ivf.search_preassigned(qt[start:stop], k, coarse_i[start:stop], coarse_d[start:stop])
        best_d[start:stop], best_i[start:stop] = d, i
    return best_d, best_i


def ivf_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    index: faiss.Index,
    factory: str,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k-NN through a trained, empty IVF ``index`` whose lists are filled shard by
    shard on Ray; the same results as :func:`stilts.index.mining.neighbours` on one machine.

    The driver assigns every query to its lists once (:func:`preassign`); each task adds one
    database shard to a copy of ``index`` and scans it at those lists (IVF-Flat list by list as
    :func:`stilts.index.listscan.search_by_list`, other kinds with FAISS
    ``search_preassigned``); the per-shard top lists are merged in shard order. A compressed
    ``factory`` (PQ) merges ``REFINE_FACTOR * k`` candidates by code score, then re-ranks them
    with the exact database rows on the driver, as the local engine does.

    The results equal the local engine's when both run FAISS on the same number of threads
    (BLAS rounds differently between thread counts), except (1) where candidates tie exactly at
    the k-th place (identical codes in one list, e.g. duplicate rows): one machine keeps the one
    FAISS's heap keeps, Ray the one of the first shard; (2) IVF-Flat scores in their last bit
    when lists are long: one machine scores a whole list in one BLAS product, a shard its rows of
    it, and BLAS rounding depends on the product's shape.
    """
    ray = _ray()
    task = ray.remote(_shard_ivf)
    LOG.info(
        "%s: %s over %d shards of %d rows on Ray (nprobe %d)",
        desc,
        factory,
        -(-len(database) // shard_size),
        shard_size,
        fx.ivf_of(index).nprobe,
    )
    empty_ref = ray.put(faiss.serialize_index(index))
    side_ref = ray.put(preassign(index, queries, block_size))
    compressed = fx.is_compressed(factory)
    fetch = mining.refine_fetch(k, len(database)) if compressed else k
    d, i = _sharded_topk(
        lambda shard, start: task.remote(empty_ref, side_ref, shard, start, fetch, block_size),
        database,
        len(queries),
        fetch,
        shard_size,
        progress,
        desc,
    )
    if compressed:
        return mining.rerank_rows(
            queries, lambda start, q: i[start : start + len(q)], database, k, block_size
        )
    d[i < 0] = -np.inf
    return d, i


def neighbours(
    src: np.ndarray,
    tgt: np.ndarray,
    k: int,
    *,
    index: str = "flat",
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    nprobe: int | None = None,
) -> Neighbours:
    """Both directions of k-NN on Ray, as :func:`stilts.index.mining.neighbours` computes them.

    Exact search runs as tiles per database shard; IVF kinds (``ivf``, ``ivfpq``, ``auto`` past
    the exact tier) are trained on the driver and scanned shard by shard (:func:`ivf_knn`); any
    other approximate kind (HNSW) is searched on the driver.
    """
    kind = mining.knn_kind(index, len(src), len(tgt))
    if kind == "flat":
        fd, fi = knn(src, tgt, min(k, len(tgt)), block_size, shard_size, progress, "knn src->tgt")
        bd, bi = knn(tgt, src, min(k, len(src)), block_size, shard_size, progress, "knn tgt->src")
        return Neighbours(fd, fi, bd, bi)
    dim = src.shape[1]
    if not is_sharded_ivf(faiss.index_factory(dim, fx.resolve_kind(kind, len(tgt), dim))):
        local = dict(index=index, block_size=block_size, shard_size=shard_size, nprobe=nprobe)
        return mining.neighbours(src, tgt, k, progress=progress, **local)  # HNSW: no lists
    out = []
    for queries, database, desc in ((src, tgt, "knn src->tgt"), (tgt, src, "knn tgt->src")):
        kk = min(k, len(database))
        trained, factory = mining.trained_index(database, kind)
        mining.set_search(trained, kk, nprobe, queries, database)
        out.append(
            ivf_knn(queries, database, kk, trained, factory, block_size, shard_size, progress, desc)
        )
    (fd, fi), (bd, bi) = out
    return Neighbours(fd, fi, bd, bi)
