"""Vectors of texts already encoded by one system, so a benchmark encodes each text once.

The English sides of a pack's languages repeat (bitext-dev: 78,867 Tatoeba English lines, 14,255
distinct; its BUCC English files 34,578 lines, 16,365 distinct), and a second run on the same
pack with the same model need not encode anything again. A cache is a directory per
``(fingerprint, precision, kind)`` with two append-only files: ``texts.jsonl`` (one JSON string
per line) and ``vectors.f32`` (rows of ``dim`` float32); a torn tail (a killed run) is dropped on
open. Without a directory it lives in memory for the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

TEXTS = "texts.jsonl"
VECTORS = "vectors.f32"


class VectorCache:
    """Text -> vector for one encoder route (``directory`` None: in memory only).

    Args:
        dim: vector dimension.
        directory: where the two files live (created when missing).
    """

    def __init__(self, dim: int, directory: str | os.PathLike | None = None):
        self.dim = int(dim)
        self.dir = Path(directory) if directory is not None else None
        self.rows: dict[str, int] = {}
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        texts_path, vec_path = self.dir / TEXTS, self.dir / VECTORS
        if not texts_path.is_file() or not vec_path.is_file():
            texts_path.write_text("", encoding="utf-8")
            vec_path.write_bytes(b"")
            return
        texts = []
        with texts_path.open(encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                texts.append(json.loads(line))
        raw = np.fromfile(vec_path, dtype=np.float32)
        n = min(len(texts), raw.size // self.dim)
        self.vectors = raw[: n * self.dim].reshape(n, self.dim).copy()
        self.rows = {t: i for i, t in enumerate(texts[:n])}
        if n < len(texts) or raw.size != n * self.dim:
            LOG.warning("%s: dropped a torn tail (kept %d vectors)", self.dir, n)
            self._rewrite(texts[:n])
        LOG.info("%s: %d cached vectors", self.dir, n)

    def _rewrite(self, texts: list[str]) -> None:
        with (self.dir / TEXTS).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
        self.vectors.tofile(self.dir / VECTORS)

    def __len__(self) -> int:
        return len(self.rows)

    def encode(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Rows for ``texts``; ``encode`` is called once on the distinct texts not cached."""
        new = list(dict.fromkeys(t for t in texts if t not in self.rows))
        if new:
            vecs = np.asarray(encode(new), dtype=np.float32).reshape(len(new), self.dim)
            start = len(self.rows)
            self.rows.update((t, start + i) for i, t in enumerate(new))
            self.vectors = np.concatenate([self.vectors, vecs])
            if self.dir is not None:
                with (self.dir / VECTORS).open("ab") as f:
                    vecs.tofile(f)
                with (self.dir / TEXTS).open("a", encoding="utf-8") as f:
                    f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in new)
        return self.vectors[[self.rows[t] for t in texts]]
