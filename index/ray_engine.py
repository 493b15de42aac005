"""The Ray engine of ``stilts mine``: the same job as the local engine, spread over a Ray cluster.

- Encoding runs on Ray Data: the chunks the cache lacks become rows of a dataset, and
  ``map_batches`` sends each chunk to an encoder actor (one per CPU, or one per GPU where the
  cluster has GPUs). Chunks are the local engine's chunks, so the vectors are identical (the int8
  graph quantises activations per batch, so the batch composition matters). Texts travel through
  the object store in windows, so the driver never holds a whole file.
- k-NN runs as one Ray task per database shard (every query block against that shard), merged
  on the driver shard by shard, exactly as :func:`stilts.index.knn.knn` does locally.

Without an address, Ray starts locally (``num_cpus`` CPUs, no dashboard).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

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
        from stilts.encoder import Encoder

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


def knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    max_in_flight: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN with one Ray task per database shard, merged in shard order."""
    ray = _ray()
    task = ray.remote(_shard_knn)
    q_ref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
    limit = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
    best_d, best_i = empty_topk(len(queries), k)
    starts = list(range(0, len(database), shard_size))
    pending: dict[int, Any] = {}
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    next_merge = 0
    for n, start in enumerate(starts):
        shard = np.ascontiguousarray(database[start : start + shard_size], dtype=np.float32)
        pending[n] = task.remote(q_ref, shard, k, start, block_size)
        while len(pending) >= limit or (n == len(starts) - 1 and pending):
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            for m, ref in list(pending.items()):
                if ref in ready:
                    results[m] = ray.get(ref)
                    del pending[m]
            while next_merge in results:  # merge strictly in shard order
                d, i = results.pop(next_merge)
                best_d, best_i = merge_topk(best_d, best_i, d, i, k)
                next_merge += 1
    return best_d, best_i


def neighbours(
    src: np.ndarray,
    tgt: np.ndarray,
    k: int,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
) -> Neighbours:
    """Both directions of exact k-NN on Ray (see :func:`stilts.index.mining.neighbours`)."""
    fd, fi = knn(src, tgt, min(k, len(tgt)), block_size, shard_size)
    bd, bi = knn(tgt, src, min(k, len(src)), block_size, shard_size)
    return Neighbours(fd, fi, bd, bi)
