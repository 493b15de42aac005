"""``stilts mine``: mine translation pairs between two text files larger than RAM.

The steps, each bounded in memory:

1. **scan** each file once, streaming (:mod:`stilts.index.scan`): byte offset of every line, a
   64-bit hash of its sentence (for deduplication), the file's SHA-256; the layout (one sentence
   per line, or BUCC ``id<TAB>sentence``, see :mod:`stilts.inputs`) is detected or given;
2. **encode** the unique non-empty sentences in fixed chunks with the manifest's ``bitext``
   prefix into a memory-mapped ``.npy`` cache next to the output (:mod:`stilts.index.embcache`),
   keyed by file hash + model fingerprint; finished chunks are recorded, so a re-run or a run
   killed midway resumes without re-encoding them;
3. **k-NN** both ways over the memory maps in blocks (:mod:`stilts.index.knn`), then margin
   scoring and candidate selection (:mod:`stilts.index.mining`);
4. **write** ``score<TAB>src<TAB>tgt`` sorted by score (ids when the input has ids, else the
   sentences; duplicates of a mined sentence are all listed), atomically, plus a JSON summary.

``engine="ray"`` runs steps 2 and 3 on Ray (:mod:`stilts.index.ray_engine`) with the same chunks,
so both engines write the same file; :func:`mine_on_server` runs them on a stilts server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write, atomic_write_text, disk_full_as
from stilts.index import autothreshold, mining
from stilts.index.embcache import Cache, encode_local
from stilts.index.knn import DEFAULT_BLOCK, DEFAULT_SHARD
from stilts.index.scan import Side, chunk_texts, read_lines_at, scan

ENGINES = ("local", "ray")
_KEPT = "the previous output is kept, and so are the embedding caches: run it again to resume"
DEFAULT_CHUNK = 8192


# --- output ------------------------------------------------------------------------------------


def _labels(side: Side, lines: np.ndarray) -> dict[int, str]:
    out = {}
    for line, sid, sentence in read_lines_at(side, np.unique(lines)):
        out[line] = sid if side.has_ids else sentence.replace("\t", " ")
    return out


def _lines_of(side: Side) -> tuple[np.ndarray, np.ndarray]:
    """CSR of unique row -> its lines: (start per row + end, lines sorted by row)."""
    valid = np.flatnonzero(side.inverse >= 0)
    order = valid[np.argsort(side.inverse[valid], kind="stable")]
    starts = np.searchsorted(side.inverse[order], np.arange(side.n_unique + 1))
    return starts, order


def write_pairs(pairs: Sequence[mining.MinedPair], src: Side, tgt: Side, output: Path) -> int:
    """Write ``score<TAB>src<TAB>tgt`` lines atomically; returns the number of lines.

    With ids, every line holding a mined sentence is listed (BUCC gold names any of them);
    without ids, the sentence is written once.
    """
    s_start, s_lines = _lines_of(src)
    t_start, t_lines = _lines_of(tgt)

    def lines(side, starts, order, row):
        found = order[starts[row] : starts[row + 1]]
        return found if side.has_ids else found[:1]

    expanded = [
        (p.score, lines(src, s_start, s_lines, p.src), lines(tgt, t_start, t_lines, p.tgt))
        for p in pairs
    ]
    need_s = np.concatenate([e[1] for e in expanded]) if expanded else np.zeros(0, np.int64)
    need_t = np.concatenate([e[2] for e in expanded]) if expanded else np.zeros(0, np.int64)
    s_label, t_label = _labels(src, need_s), _labels(tgt, need_t)
    n = 0
    with atomic_write(output) as f:
        for score, sl, tl in expanded:
            for a in sl:
                for b in tl:
                    f.write(f"{score:.6f}\t{s_label[int(a)]}\t{t_label[int(b)]}\n")
                    n += 1
    return n


# --- the job -----------------------------------------------------------------------------------


def _encoder(model: Any, precision: str | None, threads: int | None):
    if hasattr(model, "encode") and hasattr(model, "manifest"):
        return model
    from stilts.encoding.encoder import Encoder

    return Encoder(model, precision=precision, threads=threads)


def mine_files(
    src: str | os.PathLike,
    tgt: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: Any = "default",
    precision: str | None = None,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    index: str = "auto",
    engine: str = "local",
    ray_address: str | None = None,
    input_format: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    batch_size: int = 32,
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    threads: int | None = None,
    progress: bool = True,
    ray_num_cpus: int | None = None,
) -> dict[str, Any]:
    """Mine pairs between two files and write them to ``output`` (see the module docstring).

    Args:
        src, tgt: UTF-8 files, one sentence per line or ``id<TAB>sentence``.
        output: the TSV to write; ``OUTPUT.json`` gets the summary.
        model: a model name or directory, or an ``Encoder``.
        precision: a route (``q4``, ``int8``, ``fp32``, ``ov-f32``, ``ov-bf16``); None: ``auto``,
            the batch-job route measured on this CPU (ignored for an Encoder).
        k, margin, retrieval, threshold, index: as :func:`stilts.index.mining.mine`
            (``threshold="auto"``: chosen from the job's scores, :mod:`stilts.index.autothreshold`).
        target_precision: with ``auto``: the lowest threshold whose estimated precision reaches
            this.
        engine: ``local`` or ``ray``.
        ray_address: a Ray cluster (None: local Ray).
        input_format: ``auto``, ``lines`` or ``ids``.
        cache_dir: where the ``.npy`` caches live (default ``OUTPUT.cache/``).
        chunk_size: unique sentences per encoded (and cached) chunk.
        batch_size: sentences per encoder batch.
        block_size, shard_size: k-NN tile sizes.
        threads: encoder threads (local engine).
        progress: tqdm bars with ETA.
        ray_num_cpus: CPUs for local Ray (default: all).

    Returns:
        The summary dict (also written as JSON next to the output).
    """
    t0 = time.perf_counter()
    mining.check_options(k, margin, retrieval, threshold, target_precision)
    n_knn = mining.neighbours_needed(k, threshold, target_precision)
    if engine not in ENGINES:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"engine must be one of {ENGINES}", "engine")
    if chunk_size < 1 or batch_size < 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, "chunk_size and batch_size must be >= 1", "chunk_size"
        )
    out = _output_path(output)
    cache_root = Path(cache_dir) if cache_dir else out.with_name(out.name + ".cache")
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    sides = [scan(src, input_format, progress), scan(tgt, input_format, progress)]
    seconds["scan"] = time.perf_counter() - t
    for side, name in zip(sides, ("src", "tgt"), strict=True):
        _check_non_empty(side, name)

    t = time.perf_counter()
    enc = _encoder(model, precision, threads)
    key = {
        "fingerprint": enc.manifest.fingerprint,
        "precision": enc.precision,
        "prefix": enc.manifest.prefix("bitext"),
    }
    caches = [Cache(cache_root, s, key, enc.dim, chunk_size) for s in sides]
    seconds["load"] = time.perf_counter() - t
    t = time.perf_counter()
    ray_mod = None
    if engine == "ray":
        from stilts.index import ray_engine as ray_mod

        ray_mod.init(ray_address, ray_num_cpus)
        model_ref = str(enc.path) if hasattr(enc, "path") else model
        for side, cache in zip(sides, caches, strict=True):
            ray_mod.encode_chunks(
                side, cache, model_ref, enc.precision, batch_size, progress=progress
            )
    else:
        for side, cache in zip(sides, caches, strict=True):
            encode_local(enc, side, cache, batch_size, progress)
    seconds["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    x, y = caches[0].vectors(), caches[1].vectors()
    engine_knn = ray_mod.neighbours if ray_mod is not None else mining.neighbours
    nb = engine_knn(
        x, y, n_knn, index=index, block_size=block_size, shard_size=shard_size, progress=progress
    )
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
    with disk_full_as(out.parent, f"the mined pairs {out.name}", _KEPT):
        n_lines = write_pairs(pairs, sides[0], sides[1], out)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    def side_summary(side: Side, cache: Cache) -> dict[str, Any]:
        return {
            **_side_summary(side),
            "cache": str(cache.path),
            "cached_chunks_reused": cache.reused,
            "chunks": cache.n_chunks,
        }

    summary = {
        "output": str(out),
        "pairs": len(pairs),
        "lines": n_lines,
        "src": side_summary(sides[0], caches[0]),
        "tgt": side_summary(sides[1], caches[1]),
        "model": enc.manifest.name,
        "fingerprint": enc.manifest.fingerprint,
        "precision": enc.precision,
        "k": k,
        "margin": margin,
        "retrieval": retrieval,
        **autothreshold.summary_fields(threshold, estimate),
        "index": index,
        "engine": engine,
        "score_quantiles": _quantiles([p.score for p in pairs]),
        "seconds": {name: round(v, 3) for name, v in seconds.items()},
    }
    _write_summary(out, summary)
    return summary


def _output_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    if out.is_dir():
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{out} is a directory", "output")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _check_non_empty(side: Side, name: str) -> None:
    if side.n_unique == 0:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{side.path}: no sentences", name)


def _non_empty(side: Side, name: str) -> list[str]:
    """The side's unique sentences, in row order."""
    _check_non_empty(side, name)
    return next(chunk_texts(side, side.n_unique, [0]))[1]


def _side_summary(side: Side) -> dict[str, Any]:
    return {
        "path": str(side.path),
        "lines": side.n_lines,
        "unique": side.n_unique,
        "empty": side.n_empty,
        "ids": side.has_ids,
        "sha256": side.digest,
    }


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    with disk_full_as(out.parent, f"{out.name}.json", _KEPT):
        atomic_write_text(
            out.with_name(out.name + ".json"),
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
        )


def _quantiles(scores: Sequence[float]) -> dict[str, float] | None:
    if not scores:
        return None
    q = np.quantile(np.asarray(scores), [0.0, 0.1, 0.5, 0.9, 1.0])
    return {
        k: round(float(v), 4) for k, v in zip(("min", "p10", "p50", "p90", "max"), q, strict=True)
    }


def mine_on_server(
    src: str | os.PathLike,
    tgt: str | os.PathLike,
    output: str | os.PathLike,
    client: Any,
    *,
    model: str = "default",
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    input_format: str = "auto",
) -> dict[str, Any]:
    """:func:`mine_files` with steps 2 and 3 on a stilts server (``client``: a
    :class:`stilts.client.Client`): the files are scanned and deduplicated here, their unique
    sentences sent to the Mine RPC, and the pairs written as :func:`mine_files` writes them.

    Returns:
        The summary dict (also written as JSON next to the output).
    """
    t0 = time.perf_counter()
    mining.check_options(k, margin, retrieval, threshold, target_precision)
    out = _output_path(output)
    sides = [scan(src, input_format), scan(tgt, input_format)]
    texts = [_non_empty(side, name) for side, name in zip(sides, ("src", "tgt"), strict=True)]
    pairs = client.mine(
        texts[0],
        texts[1],
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
        model=model,
    )
    # the server numbers the (already unique) sentences as sent: its positions are our rows
    n_lines = write_pairs(pairs, sides[0], sides[1], out)
    summary = {
        "output": str(out),
        "pairs": len(pairs),
        "lines": n_lines,
        "server": getattr(client, "address", None),
        "model": model,
        "src": _side_summary(sides[0]),
        "tgt": _side_summary(sides[1]),
        "k": k,
        "margin": margin,
        "retrieval": retrieval,
        **autothreshold.summary_fields(threshold, getattr(pairs, "threshold_estimate", None)),
        "engine": "server",
        "seconds": {"total": round(time.perf_counter() - t0, 3)},
    }
    _write_summary(out, summary)
    return summary
