"""stilts.index: FAISS vector indices with SQLite documents, margin scoring and bitext mining.

API::

    from stilts.index import VectorIndex, Hit, Document
    idx = VectorIndex.create(path_or_None, dim, kind="auto", manifest=enc.manifest.to_dict())
    idx.add(ids, vectors, docs)            # durable on return; existing id -> ALREADY_EXISTS
    idx.search(queries, k=10, languages=None, scoring="cosine" | "margin", nprobe=, ef_search=)
    idx.set_margin_reference(vectors=None, k=4); idx.save(); VectorIndex.open(path)

Also:

- ``add(..., upsert=True)`` replaces existing ids instead of raising ALREADY_EXISTS.
- ``add`` / ``search`` take ``fingerprint=`` (the encoder's ``manifest.fingerprint``) and refuse
  another encoder's vectors with FAILED_PRECONDITION; ``check_manifest(manifest)`` does the same
  for a whole manifest (dim too). Vectors are L2-normalised on the way in.
- ``create(..., device="auto"|"cpu"|"gpu", shard=False, train_size=N)``; ``open(path, device=)``.
- ``vectors(ids)``, ``train()``, ``compact()``, ``manifest``, ``fingerprint``; context manager
  (saves on clean exit).
- ``search(..., candidates=N)``: cosine candidates re-ranked under margin scoring.
"""

from typing import TYPE_CHECKING

from stilts.records import Document, Hit

if TYPE_CHECKING:
    from stilts.index.vector_index import VectorIndex

__all__ = ["Document", "Hit", "VectorIndex"]


def __getattr__(name: str):
    # Lazy, so that ``stilts --help`` (which imports stilts.index.cli) does not load FAISS.
    if name == "VectorIndex":
        from stilts.index.vector_index import VectorIndex

        return VectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
