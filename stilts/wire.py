"""proto <-> Python: the one conversion of the shared records and enums, for client and server.

No checks here (the server validates requests in ``stilts.server.validate``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from stilts.records import Document, Hit, MinedPair
from stilts.v1 import retrieval_pb2, types_pb2

THRESHOLD_METADATA = "stilts-threshold"
"""Trailing metadata key of a Mine call that chose its threshold: the estimate as JSON."""

KIND_VALUES: dict[str | None, int] = {
    None: types_pb2.TEXT_KIND_UNSPECIFIED,
    "query": types_pb2.TEXT_KIND_QUERY,
    "passage": types_pb2.TEXT_KIND_PASSAGE,
    "bitext": types_pb2.TEXT_KIND_BITEXT,
}
"""Text kind name -> ``TextKind`` (None -> UNSPECIFIED)."""
KIND_NAMES: dict[int, str] = {v: k for k, v in KIND_VALUES.items() if k is not None}
"""``TextKind`` -> name (UNSPECIFIED absent)."""

SCORING_VALUES: dict[str, int] = {
    "cosine": retrieval_pb2.SCORING_COSINE,
    "margin": retrieval_pb2.SCORING_MARGIN,
}
"""Scoring name -> ``Scoring``."""
SCORING_NAMES: dict[int, str] = {
    retrieval_pb2.SCORING_UNSPECIFIED: "cosine",
    **{v: k for k, v in SCORING_VALUES.items()},
}
"""``Scoring`` -> name (UNSPECIFIED means cosine)."""


def _value(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
        return int(v)  # Struct numbers are doubles: give back the integers that went in
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict (integral numbers as ints)."""
    return _value(json_format.MessageToDict(s))


def dict_to_struct(d: dict[str, Any] | None, out: struct_pb2.Struct) -> None:
    """Fill ``out`` from ``d`` (nothing for None or empty)."""
    if d:
        out.update(d)


def document_to_proto(doc: Document, out: types_pb2.Document) -> types_pb2.Document:
    """Fill and return ``out``."""
    out.id = int(doc.id)
    out.text = doc.text
    out.language = doc.language or ""
    dict_to_struct(doc.metadata, out.metadata)
    return out


def document_from_proto(p: types_pb2.Document) -> Document:
    return Document(p.id, p.text, p.language, struct_to_dict(p.metadata))


def hit_to_proto(hit: Hit, out: retrieval_pb2.Hit) -> retrieval_pb2.Hit:
    """Fill and return ``out``."""
    out.id, out.score, out.text, out.language = hit.id, hit.score, hit.text, hit.language
    dict_to_struct(hit.metadata, out.metadata)
    return out


def hit_from_proto(p: retrieval_pb2.Hit) -> Hit:
    return Hit(p.id, p.score, p.text, p.language, struct_to_dict(p.metadata))


def mined_pair_to_proto(pair: MinedPair) -> retrieval_pb2.MinedPair:
    return retrieval_pb2.MinedPair(
        score=float(pair.score),
        src_index=int(pair.src_index),
        tgt_index=int(pair.tgt_index),
        src_id=int(pair.src_id),
        tgt_id=int(pair.tgt_id),
        src_text=pair.src_text,
        tgt_text=pair.tgt_text,
    )


def mined_pair_from_proto(p: retrieval_pb2.MinedPair) -> MinedPair:
    return MinedPair(p.score, p.src_index, p.tgt_index, p.src_id, p.tgt_id, p.src_text, p.tgt_text)
