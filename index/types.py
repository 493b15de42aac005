"""The records an index stores and returns: :class:`Document` in, :class:`Hit` out."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Document:
    """One indexed item.

    Attributes:
        id: the caller's 64-bit id (unique within an index).
        text: the sentence or passage.
        language: an ISO code or any tag the caller filters on (``languages=`` in search).
        metadata: JSON-serialisable user fields, returned with every hit.
    """

    id: int
    text: str = ""
    language: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Hit:
    """One search result: the document's fields plus its score for the query.

    ``score`` is the cosine similarity (``scoring="cosine"``) or the ratio margin
    (``scoring="margin"``; > 1 means "closer than the usual neighbours of either side").
    """

    id: int
    score: float
    text: str = ""
    language: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
