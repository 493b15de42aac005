"""The sides of a mining job, deduplicated one way: a file scanned once (streaming, for files
larger than RAM) or a list of sentences in memory.

A sentence is its stripped text; empty sentences are never mined. Unique sentences are numbered
in order of first occurrence, and every line maps to its sentence's row (:class:`Side`), so pairs
found between rows are written back as lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stilts.inputs import decode_line, has_ids, split_sentence

LOG = logging.getLogger(__name__)


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


def sentence_hash(sentence: str) -> int:
    """64-bit hash of a (stripped) sentence: what deduplication compares."""
    return int.from_bytes(hashlib.blake2b(sentence.encode(), digest_size=8).digest(), "little")


def unique_rows(
    hashes: np.ndarray, lines: np.ndarray, n_lines: int
) -> tuple[np.ndarray, np.ndarray]:
    """Number the unique sentences in order of first occurrence.

    Args:
        hashes: :func:`sentence_hash` of each non-empty sentence.
        lines: the line of each of them (ascending).
        n_lines: all lines, empty ones included.

    Returns:
        (inverse: line -> unique row, -1 for an empty sentence; first_line: row -> its first line).
    """
    _, first, inv = np.unique(hashes, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    inverse = np.full(n_lines, -1, dtype=np.int64)
    inverse[lines] = rank[inv.ravel()]
    return inverse, lines[first[order]]


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The unique non-empty sentences of an in-memory list, as :func:`scan` numbers them.

    Returns:
        (unique stripped sentences, row -> position of its first occurrence in ``texts``).
    """
    stripped = [t.strip() for t in texts]
    lines = np.fromiter((i for i, s in enumerate(stripped) if s), dtype=np.int64)
    hashes = np.fromiter((sentence_hash(stripped[i]) for i in lines), np.uint64, len(lines))
    _, first_line = unique_rows(hashes, lines, len(texts))
    return [stripped[i] for i in first_line.tolist()], first_line


def scan(path: str | os.PathLike, input_format: str = "auto", progress: bool = False) -> Side:
    """Read a file once, streaming, and deduplicate its sentences (see :class:`Side`).

    Raises:
        StiltsError: NOT_FOUND for a missing file, INVALID_ARGUMENT for bad UTF-8 or a line
        without an id in the ids layout.
    """
    p = Path(path)
    ids_layout = has_ids(p, input_format)
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
            _, sentence = split_sentence(decode_line(raw, p, line), ids_layout, p, line)
            sentence = sentence.strip()
            if sentence:
                hashes.append(sentence_hash(sentence))
                nonempty.append(line)
    if bar is not None:
        bar.n = pos
        bar.close()
    h = np.frombuffer(hashes, dtype=np.uint64) if len(hashes) else np.zeros(0, np.uint64)
    lines = np.frombuffer(nonempty, dtype=np.int64) if len(nonempty) else np.zeros(0, np.int64)
    inverse, first_line = unique_rows(h, lines, len(offsets))
    off = np.frombuffer(offsets, dtype=np.int64).copy() if len(offsets) else np.zeros(0, np.int64)
    side = Side(p, ids_layout, off, inverse, first_line, digest.hexdigest())
    LOG.info(
        "%s: %d lines, %d unique sentences, %d empty, %s",
        p,
        side.n_lines,
        side.n_unique,
        side.n_empty,
        "id<TAB>sentence" if ids_layout else "one sentence per line",
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
                sid, sentence = split_sentence(
                    decode_line(raw, side.path, current), side.has_ids, side.path, current
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
