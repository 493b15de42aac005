"""``stilts mine`` on precomputed sentence vectors: two ``.npy`` files instead of two text files.

For corpora whose embeddings were computed elsewhere (another machine, a GPU job, an earlier
run's cache), the encoder is skipped: both files are memory-mapped, checked (2-D, same dimension,
finite, unit length within a tolerance, in blocks so a file larger than RAM is fine), mined
exactly as text files are, and the pairs are written as ``score<TAB>src_row<TAB>tgt_row``
(0-based rows of the two files), with the summary in ``OUTPUT.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write, atomic_write_text, disk_full_as
from stilts.index import autothreshold, mining
from stilts.index.knn import DEFAULT_BLOCK, DEFAULT_SHARD

LOG = logging.getLogger(__name__)
_KEPT = "the previous output is kept; run it again once there is space"

NPY_MAGIC = b"\x93NUMPY"
NORM_TOLERANCE = 1e-2
CHECK_BLOCK = 65536


def is_npy(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a NumPy ``.npy`` file (by its magic bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(NPY_MAGIC)) == NPY_MAGIC
    except OSError:
        return False


def load_vectors(path: str | os.PathLike, field: str) -> np.ndarray:
    """Memory-map a ``(n, dim)`` float32 ``.npy`` of L2-normalised vectors, checked in blocks.

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``field`` (not .npy, shape, dtype, NaN, norms).
    """
    p = Path(path)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"{p}: not a readable .npy file: {e}", field
        ) from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{p}: need a non-empty (n, dim) array, got shape {arr.shape}",
            field,
        )
    if arr.dtype != np.float32:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"{p}: need float32 vectors, got {arr.dtype}", field
        )
    for start in range(0, len(arr), CHECK_BLOCK):
        block = np.asarray(arr[start : start + CHECK_BLOCK])
        if not np.isfinite(block).all():
            row = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{p}: row {row} is not finite", field)
        norms = np.linalg.norm(block, axis=1)
        bad = np.abs(norms - 1) > NORM_TOLERANCE
        if bad.any():
            row = start + int(np.argmax(bad))
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"{p}: row {row} has norm {norms[row - start]:.4f}; vectors must be "
                "L2-normalised (as stilts encode writes them)",
                field,
            )
    return arr


def write_row_pairs(pairs: list[mining.MinedPair], output: Path) -> int:
    """Write ``score<TAB>src_row<TAB>tgt_row`` lines atomically; returns the number of lines."""
    with disk_full_as(output.parent, f"the mined pairs {output.name}", _KEPT):
        with atomic_write(output) as f:
            for p in pairs:
                f.write(f"{p.score:.6f}\t{p.src}\t{p.tgt}\n")
    return len(pairs)


def mine_vector_files(
    src: str | os.PathLike,
    tgt: str | os.PathLike,
    output: str | os.PathLike,
    *,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    index: str = "auto",
    engine: str = "local",
    ray_address: str | None = None,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = True,
    ray_num_cpus: int | None = None,
    nprobe: int | None = None,
) -> dict[str, Any]:
    """Mine pairs between two ``.npy`` vector files and write them to ``output``.

    Args:
        src, tgt: ``(n, dim)`` float32 L2-normalised vectors (memory-mapped).
        output: the TSV to write; ``OUTPUT.json`` gets the summary.
        k, margin, retrieval, threshold, index: as :func:`stilts.index.mining.mine`
            (``threshold="auto"``: chosen from the job's scores, :mod:`stilts.index.autothreshold`).
        target_precision: with ``auto``: the lowest threshold whose estimated precision reaches
            this.
        engine: ``local``, or ``ray`` (one Ray task per database shard: exact tiles, or the
            shard's IVF lists for ``ivf``/``ivfpq``; see :mod:`stilts.index.ray_engine`).
        ray_address: a Ray cluster (None: local Ray).
        block_size, shard_size: k-NN tile sizes.
        progress: tqdm bars.
        ray_num_cpus: CPUs for local Ray.
        nprobe: IVF lists visited per query (approximate kinds).

    Returns:
        The summary dict (also written as JSON next to the output).
    """
    t0 = time.perf_counter()
    mining.check_options(k, margin, retrieval, threshold, target_precision)
    n_knn = mining.neighbours_needed(k, threshold, target_precision)
    if engine not in ("local", "ray"):
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "engine must be local or ray", "engine")
    if nprobe is not None and (
        isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1
    ):
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "nprobe must be a positive integer", "nprobe")
    out = Path(output)
    if out.is_dir():
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{out} is a directory", "output")
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    x, y = load_vectors(src, "src"), load_vectors(tgt, "tgt")
    if x.shape[1] != y.shape[1]:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"src and tgt dimensions differ ({x.shape[1]} vs {y.shape[1]})",
            "tgt",
        )
    seconds["load"] = time.perf_counter() - t
    t = time.perf_counter()
    knn_opts = dict(
        index=index, block_size=block_size, shard_size=shard_size, progress=progress, nprobe=nprobe
    )
    if engine == "ray":
        from stilts.index import ray_engine

        ray_engine.init(ray_address, ray_num_cpus)
        nb = ray_engine.neighbours(x, y, n_knn, **knn_opts)
    else:
        nb = mining.neighbours(x, y, n_knn, **knn_opts)
    seconds["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs, estimate = mining.select_auto(
        nb,
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
    )
    seconds["select"] = time.perf_counter() - t
    t = time.perf_counter()
    n_lines = write_row_pairs(pairs, out)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    summary = {
        "output": str(out),
        "pairs": len(pairs),
        "lines": n_lines,
        "src": {"path": str(src), "vectors": int(len(x)), "dim": int(x.shape[1])},
        "tgt": {"path": str(tgt), "vectors": int(len(y)), "dim": int(y.shape[1])},
        "input_format": "npy",
        "k": k,
        "margin": margin,
        "retrieval": retrieval,
        **autothreshold.summary_fields(threshold, estimate),
        "index": index,
        "nprobe": nprobe,
        "engine": engine,
        "seconds": {name: round(v, 3) for name, v in seconds.items()},
    }
    with disk_full_as(out.parent, f"{out.name}.json", _KEPT):
        atomic_write_text(out.with_name(out.name + ".json"), json.dumps(summary, indent=2) + "\n")
    LOG.info("mined %d pairs from %d x %d vectors", len(pairs), len(x), len(y))
    return summary
