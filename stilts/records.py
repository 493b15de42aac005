"""The records every layer shares: :class:`Document` in, :class:`Hit` and :class:`MinedPair` out,
and the names of the text kinds and search scorings."""

from __future__ import annotations

import dataclasses
from typing import Any

TEXT_KINDS = ("query", "passage", "bitext")
"""How a text is embedded (the model's prefix for it)."""

SCORINGS = ("cosine", "margin")
"""How search scores a hit: cosine similarity, or the ratio margin over a reference set."""


@dataclasses.dataclass
class Document:
    """One indexed item.

    Attributes:
        id: the caller's 64-bit id (unique within an index, >= 0).
        text: the sentence or passage.
        language: an ISO code or any tag the caller filters on (``languages=`` in search).
        metadata: JSON-serialisable user fields, returned with every hit.
    """

    id: int
    text: str = ""
    language: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result (best first within a query): the document's fields plus its score.

    ``score`` is the cosine similarity (``scoring="cosine"``) or the ratio margin
    (``scoring="margin"``; > 1 means "closer than the usual neighbours of either side").
    """

    id: int
    score: float
    text: str = ""
    language: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class MinedPair:
    """A mined translation pair, best first in every list of them.

    Attributes:
        score: the margin score (or cosine for ``margin="absolute"``).
        src_index: the source sentence's position (row) in what was mined.
        tgt_index: the target sentence's position.
        src_id: the source document's id for an index side, the position for a text side (-1
            where vectors only were mined).
        tgt_id: the target document's id, likewise.
        src_text: the source sentence ("" when only vectors were mined).
        tgt_text: the target sentence.
    """

    score: float
    src_index: int
    tgt_index: int
    src_id: int = -1
    tgt_id: int = -1
    src_text: str = ""
    tgt_text: str = ""

    @property
    def src(self) -> int:
        """The source row (``src_index``)."""
        return self.src_index

    @property
    def tgt(self) -> int:
        """The target row (``tgt_index``)."""
        return self.tgt_index
