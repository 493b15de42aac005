"""``stilts mine``: mine translation pairs between two text files larger than RAM.

The steps, each bounded in memory:

1. **scan** each file once, streaming: byte offset of every line, a 64-bit hash of its sentence
   (for deduplication), the file's SHA-256; the layout (one sentence per line, or BUCC
   ``id<TAB>sentence``) is detected on the first lines or given;
2. **encode** the unique non-empty sentences in fixed chunks with the manifest's ``bitext``
   prefix into a memory-mapped ``.npy`` cache next to the output, keyed by file hash + model
   fingerprint; finished chunks are recorded, so a re-run or a run killed midway resumes
   without re-encoding them;
3. **k-NN** both ways over the memory maps in blocks (:mod:`stilts.index.knn`), then margin
   scoring and candidate selection (:mod:`stilts.index.mining`);
4. **write** ``score<TAB>src<TAB>tgt`` sorted by score (ids when the input has ids, else the
   sentences; duplicates of a mined sentence are all listed), atomically, plus a JSON summary.

``engine="ray"`` runs steps 2 and 3 on Ray (:mod:`stilts.index.ray_engine`) with the same chunks,
so both engines write the same file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stilts.index import mining
from stilts.index.factory import AUTO_EXACT_MAX
from stilts.index.knn import DEFAULT_BLOCK, DEFAULT_SHARD

from stilts.errors import ErrorCode, StiltsError

LOG = logging.getLogger(__name__)

FORMATS = ("auto", "lines", "ids")
ENGINES = ("local", "ray")
DETECT_LINES = 1000
DEFAULT_CHUNK = 8192
CACHE_VERSION = 1


@dataclasses.dataclass
class Side:
    """One scanned input file.

    Attributes:
        path: the file.
        has_ids: BUCC layout (``id<TAB>sentence``).
        offsets: byte offset of each line.
        inverse: line -> unique sentence row (-1 for an empty sentence).
        first_line: unique row -> the first line holding that sentence (ascending).
        digest: SHA-256 of the file.
    """

    path: Path
    has_ids: bool
    offsets: np.ndarray
    inverse: np.ndarray
    first_line: np.ndarray
    digest: str

    @property
    def n_lines(self) -> int:
        return len(self.offsets)

    @property
    def n_unique(self) -> int:
        return len(self.first_line)

    @property
    def n_empty(self) -> int:
        return int((self.inverse < 0).sum())


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"{path}:{line + 1}: not valid UTF-8 ({e.reason})", "input"
        ) from None


def _split(text: str, has_ids: bool, path: Path, line: int) -> tuple[str, str]:
    """(id or "", sentence) of one decoded line."""
    if not has_ids:
        return "", text
    sid, tab, sentence = text.partition("\t")
    if not tab or not sid:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{path}:{line + 1}: expected id<TAB>sentence (the file's first lines have ids); "
            "pass --input-format lines for one sentence per line",
            "input",
        )
    return sid, sentence


def _hash(sentence: str) -> int:
    return int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8).digest(), "little")


def detect_ids(path: str | os.PathLike) -> bool:
    """Whether a file is in the BUCC layout: its first non-empty lines all hold a TAB.

    Raises:
        StiltsError: INVALID_ARGUMENT when most but not all of them do (a broken ids file).
    """
    seen = with_tab = 0
    first_without = None
    with open(path, "rb") as f:
        for line, raw in enumerate(f):
            if not raw.strip():
                continue
            seen += 1
            if b"\t" in raw:
                with_tab += 1
            elif first_without is None:
                first_without = line
            if seen >= DETECT_LINES:
                break
    if seen and with_tab == seen:
        return True
    if with_tab > seen // 2:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{path}:{first_without + 1}: expected id<TAB>sentence like most lines; "
            "pass --input-format lines or ids",
            "input",
        )
    return False


def scan(path: str | os.PathLike, input_format: str = "auto", progress: bool = False) -> Side:
    """Read a file once, streaming, and deduplicate its sentences (see :class:`Side`).

    Raises:
        StiltsError: NOT_FOUND for a missing file, INVALID_ARGUMENT for bad UTF-8 or a line
        without an id in the ids layout.
    """
    p = Path(path)
    if not p.is_file():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{p}: no such file", "input")
    if input_format not in FORMATS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"input format must be one of {FORMATS}", "input_format"
        )
    has_ids = detect_ids(p) if input_format == "auto" else input_format == "ids"
    offsets = array("q")
    hashes = array("Q")
    nonempty = array("q")
    digest = hashlib.sha256()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=p.stat().st_size, desc=f"scan {p.name}", unit="B", unit_scale=True)
    pos = 0
    with open(p, "rb") as f:
        for line, raw in enumerate(f):
            offsets.append(pos)
            pos += len(raw)
            digest.update(raw)
            if bar is not None and line % 65536 == 0:
                bar.n = pos
                bar.refresh()
            _, sentence = _split(_decode(raw, p, line), has_ids, p, line)
            sentence = sentence.strip()
            if sentence:
                hashes.append(_hash(sentence))
                nonempty.append(line)
    if bar is not None:
        bar.n = pos
        bar.close()
    h = np.frombuffer(hashes, dtype=np.uint64) if len(hashes) else np.zeros(0, np.uint64)
    lines = np.frombuffer(nonempty, dtype=np.int64) if len(nonempty) else np.zeros(0, np.int64)
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # unique rows in order of first occurrence
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    inverse = np.full(len(offsets), -1, dtype=np.int64)
    inverse[lines] = rank[inv.ravel()]
    off = np.frombuffer(offsets, dtype=np.int64).copy() if len(offsets) else np.zeros(0, np.int64)
    side = Side(p, has_ids, off, inverse, lines[first[order]], digest.hexdigest())
    LOG.info(
        "%s: %d lines, %d unique sentences, %d empty, %s",
        p,
        side.n_lines,
        side.n_unique,
        side.n_empty,
        "id<TAB>sentence" if has_ids else "one sentence per line",
    )
    return side


def read_lines_at(side: Side, lines: np.ndarray) -> Iterator[tuple[int, str, str]]:
    """(line, id, sentence) for ascending ``lines``, reading only the spans that hold them."""
    if not len(lines):
        return
    with open(side.path, "rb") as f:
        want = iter(lines.tolist())
        target = next(want)
        f.seek(int(side.offsets[target]))
        current = target
        while True:
            raw = f.readline()
            if current == target:
                sid, sentence = _split(
                    _decode(raw, side.path, current), side.has_ids, side.path, current
                )
                yield current, sid, sentence.strip()
                target = next(want, None)
                if target is None:
                    return
                if target - current > 64:  # far ahead: jump instead of reading through
                    f.seek(int(side.offsets[target]))
                    current = target
                    continue
            current += 1


def chunk_texts(side: Side, chunk: int, chunks: Sequence[int]) -> Iterator[tuple[int, list[str]]]:
    """(chunk number, its unique sentences) for the given chunks of ``side``."""
    for c in chunks:
        rows = side.first_line[c * chunk : (c + 1) * chunk]
        yield c, [s for _, _, s in read_lines_at(side, rows)]


# --- the embedding cache -----------------------------------------------------------------------


class Cache:
    """A memory-mapped (n_unique, dim) float32 ``.npy`` plus the list of finished chunks.

    Keyed by the file's hash, its layout, the model fingerprint, precision, prefix and chunk size,
    so a cache is reused exactly when it holds the vectors this run would compute.
    """

    def __init__(
        self, directory: Path, side: Side, encoder_key: dict[str, Any], dim: int, chunk: int
    ):
        key = json.dumps(
            {
                "v": CACHE_VERSION,
                "input": side.digest,
                "ids": side.has_ids,
                "chunk": chunk,
                **encoder_key,
            },
            sort_keys=True,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:20]
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"emb-{self.key}.npy"
        self.state_path = directory / f"emb-{self.key}.json"
        self.chunk = chunk
        self.n = side.n_unique
        self.n_chunks = -(-self.n // chunk)
        self.done: set[int] = set()
        shape = (max(self.n, 1), dim)
        if self.path.is_file() and self.state_path.is_file():
            try:
                self.array = np.lib.format.open_memmap(self.path, mode="r+")
                state = json.loads(self.state_path.read_text())
                if self.array.shape == shape and state.get("key") == self.key:
                    self.done = set(state["done"])
            except (ValueError, OSError, json.JSONDecodeError) as e:
                LOG.warning("%s: unreadable cache (%s); re-encoding", self.path, e)
        if not self.done:
            self.array = np.lib.format.open_memmap(
                self.path, mode="w+", dtype=np.float32, shape=shape
            )
            self._write_state()
        self.reused = len(self.done)

    def rows(self, c: int) -> tuple[int, int]:
        return c * self.chunk, min((c + 1) * self.chunk, self.n)

    def todo(self) -> list[int]:
        return [c for c in range(self.n_chunks) if c not in self.done]

    def put(self, c: int, vectors: np.ndarray) -> None:
        """Store one chunk's vectors, flush them, then mark the chunk done (in that order)."""
        a, b = self.rows(c)
        if vectors.shape != (b - a, self.array.shape[1]):
            raise StiltsError(
                ErrorCode.INTERNAL, f"chunk {c}: got {vectors.shape}, expected {(b - a,)}"
            )
        self.array[a:b] = vectors
        self.array.flush()
        self.done.add(c)
        self._write_state()

    def _write_state(self) -> None:
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"key": self.key, "done": sorted(self.done)}))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def vectors(self) -> np.ndarray:
        return self.array[: self.n]


def encode_local(encoder, side: Side, cache: Cache, batch_size: int, progress: bool) -> None:
    """Encode the chunks the cache lacks, in order, with one in-process encoder."""
    todo = cache.todo()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        done_rows = sum(cache.rows(c)[1] - cache.rows(c)[0] for c in cache.done)
        bar = tqdm(total=cache.n, initial=done_rows, desc=f"encode {side.path.name}", unit="sent")
    for c, texts in chunk_texts(side, cache.chunk, todo):
        cache.put(c, encoder.encode(texts, kind="bitext", batch_size=batch_size))
        if bar is not None:
            bar.update(len(texts))
    if bar is not None:
        bar.close()


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
    tmp = output.with_name(f".{output.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for score, sl, tl in expanded:
            for a in sl:
                for b in tl:
                    f.write(f"{score:.6f}\t{s_label[int(a)]}\t{t_label[int(b)]}\n")
                    n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
    return n


def write_text_pairs(
    rows: Sequence[tuple[float, int, int]],
    src_labels: Sequence[str],
    tgt_labels: Sequence[str],
    output: Path,
) -> int:
    """Write (score, src line, tgt line) triples as ``score<TAB>src<TAB>tgt``, sorted by score
    (ties by line numbers), with the lines' labels (ids or sentences)."""
    ordered = sorted(rows, key=lambda r: (-r[0], r[1], r[2]))
    tmp = output.with_name(f".{output.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for score, s, t in ordered:
            a = src_labels[s].replace("\t", " ")
            b = tgt_labels[t].replace("\t", " ")
            f.write(f"{score:.6f}\t{a}\t{b}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
    return len(ordered)


# --- the job -----------------------------------------------------------------------------------


def _encoder(model: Any, precision: str | None, threads: int | None):
    if hasattr(model, "encode") and hasattr(model, "manifest"):
        return model
    from stilts.encoder import Encoder

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
    threshold: float | None = None,
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
        precision: ``q4``, ``int8`` or ``fp32``; None: the model's default (ignored for an Encoder).
        k, margin, retrieval, threshold, index: as :func:`stilts.index.mining.mine`.
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
    mining.check_options(k, margin, retrieval, threshold)
    if engine not in ENGINES:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"engine must be one of {ENGINES}", "engine")
    if chunk_size < 1 or batch_size < 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, "chunk_size and batch_size must be >= 1", "chunk_size"
        )
    out = Path(output)
    if out.is_dir():
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{out} is a directory", "output")
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cache_dir) if cache_dir else out.with_name(out.name + ".cache")
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    sides = [scan(src, input_format, progress), scan(tgt, input_format, progress)]
    seconds["scan"] = time.perf_counter() - t
    for side, name in zip(sides, ("src", "tgt"), strict=True):
        if side.n_unique == 0:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{side.path}: no sentences", name)

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
    exact = index == "flat" or (index == "auto" and max(len(x), len(y)) <= AUTO_EXACT_MAX)
    if ray_mod is not None and exact:
        nb = ray_mod.neighbours(x, y, k, block_size=block_size, shard_size=shard_size)
    else:
        nb = mining.neighbours(
            x, y, k, index=index, block_size=block_size, shard_size=shard_size, progress=progress
        )
    seconds["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs = mining.select(nb, margin=margin, retrieval=retrieval, threshold=threshold)
    seconds["select"] = time.perf_counter() - t
    t = time.perf_counter()
    n_lines = write_pairs(pairs, sides[0], sides[1], out)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    def side_summary(side: Side, cache: Cache) -> dict[str, Any]:
        return {
            "path": str(side.path),
            "lines": side.n_lines,
            "unique": side.n_unique,
            "empty": side.n_empty,
            "ids": side.has_ids,
            "sha256": side.digest,
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
        "threshold": threshold,
        "index": index,
        "engine": engine,
        "score_quantiles": _quantiles([p.score for p in pairs]),
        "seconds": {name: round(v, 3) for name, v in seconds.items()},
    }
    tmp = out.with_name(f".{out.name}.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out.with_name(out.name + ".json"))
    return summary


def _quantiles(scores: Sequence[float]) -> dict[str, float] | None:
    if not scores:
        return None
    q = np.quantile(np.asarray(scores), [0.0, 0.1, 0.5, 0.9, 1.0])
    return {
        k: round(float(v), 4) for k, v in zip(("min", "p10", "p50", "p90", "max"), q, strict=True)
    }


def mine_texts(
    encoder,
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | None = None,
    index: str = "auto",
    batch_size: int = 32,
) -> list[mining.MinedPair]:
    """Mine in-memory sentence lists (for the server): deduplicate, encode with the ``bitext``
    prefix, mine; pair rows refer to the first occurrence of each sentence in the inputs.

    Empty sentences are never paired.
    """
    mining.check_options(k, margin, retrieval, threshold)
    uniques = []
    for name, texts in (("src", src), ("tgt", tgt)):
        if isinstance(texts, str) or any(not isinstance(t, str) for t in texts):
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{name} must be a list of strings", name)
        first: dict[str, int] = {}
        for i, t in enumerate(texts):
            if t.strip():
                first.setdefault(t.strip(), i)
        if not first:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{name} has no sentences", name)
        uniques.append((list(first), np.fromiter(first.values(), dtype=np.int64)))
    x = encoder.encode(uniques[0][0], kind="bitext", batch_size=batch_size)
    y = encoder.encode(uniques[1][0], kind="bitext", batch_size=batch_size)
    pairs = mining.mine(
        x, y, k=k, margin=margin, retrieval=retrieval, threshold=threshold, index=index
    )
    s_map, t_map = uniques[0][1], uniques[1][1]
    return [mining.MinedPair(p.score, int(s_map[p.src]), int(t_map[p.tgt])) for p in pairs]
