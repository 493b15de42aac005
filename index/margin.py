"""Margin scoring for retrieval: the reference set and the two k-NN mean terms.

Ratio margin (Artetxe & Schwenk, 2019) of a query x and a document y::

    margin(x, y) = cos(x, y) / ((r(x) + r(y)) / 2)

where r(v) is the mean cosine of v to its k nearest neighbours in a reference set: the other side
of a mining job, a sample of typical queries, or (CSLS-style) a sample of the index itself. r(y)
is computed once per document (when the reference is set, and for every later add) and stored
with it, r(x) once per query with one small exact search, so margin search costs one extra
k-NN over the reference set per query and a re-ranking of the cosine candidates.
"""

from __future__ import annotations

import faiss
import numpy as np


class MarginReference:
    """A reference set, searched exactly.

    Args:
        vectors: (n, dim) normalised reference vectors.
        seqs: per row, the index label it came from (a sample of the index itself), or -1.
        k: neighbours averaged.
    """

    def __init__(self, vectors: np.ndarray, seqs: np.ndarray, k: int):
        self.k = int(k)
        self.seqs = np.asarray(seqs, dtype=np.int64)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.from_index = bool((self.seqs >= 0).any())

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def query_terms(self, queries: np.ndarray) -> np.ndarray:
        """r(x) for each query: mean cosine to its k nearest reference vectors."""
        d, _ = self.index.search(np.ascontiguousarray(queries), min(self.k, self.size))
        return d.mean(axis=1)

    def doc_terms(self, vectors: np.ndarray, seqs: np.ndarray | None = None) -> np.ndarray:
        """r(y) for each document; a document sampled into the reference does not count itself."""
        k = min(self.k, self.size)
        if not self.from_index or seqs is None:
            d, _ = self.index.search(np.ascontiguousarray(vectors), k)
            return d.mean(axis=1)
        d, i = self.index.search(np.ascontiguousarray(vectors), min(k + 1, self.size))
        own = self.seqs[np.clip(i, 0, None)] == np.asarray(seqs)[:, None]
        d = np.where(own, np.nan, d)
        # the first k entries that are not the document itself
        order = np.argsort(own, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(d, order, 1)
        with np.errstate(invalid="ignore"):
            out = np.nanmean(kept, axis=1)
        return np.nan_to_num(out, nan=0.0).astype(np.float32)


def ratio(cos: float, r_query: float, r_doc: float) -> float:
    """cos / ((r(x) + r(y)) / 2), guarded against a zero denominator."""
    return cos / max((r_query + r_doc) / 2.0, 1e-6)
