"""Mining sentence lists in memory (the server's Mine RPC): the steps of ``stilts mine`` on lists.

dedupe (:func:`stilts.index.scan.dedupe`, as the file scan does) -> embed the unique sentences ->
k-NN both ways -> margin and selection (:func:`stilts.index.mining.select_auto`: a fixed or an
auto threshold) -> text-level
:class:`~stilts.records.MinedPair` s, best first, that point back into the inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from stilts.errors import invalid
from stilts.index import mining
from stilts.index.autothreshold import ThresholdEstimate
from stilts.index.scan import dedupe
from stilts.records import MinedPair


@dataclasses.dataclass
class MineSide:
    """One side, one row per sentence to mine.

    Attributes:
        texts: row -> the sentence as given.
        vectors: (rows, dim) L2-normalised vectors.
        positions: row -> its position in the input (the first occurrence of a repeated one).
        ids: row -> the id to report (a document id, or the position for a list).
    """

    texts: list[str]
    vectors: np.ndarray
    positions: np.ndarray
    ids: np.ndarray


def text_side(
    texts: Sequence[str], embed: Callable[[list[str]], np.ndarray], field: str
) -> MineSide:
    """Deduplicate ``texts`` and embed each unique non-empty sentence once (``bitext`` kind).

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``field`` when no sentence is left.
    """
    unique, first = dedupe(texts)
    if not unique:
        raise invalid(f"{field} has no sentences (all are empty)", field)
    return MineSide([texts[i] for i in first.tolist()], embed(unique), first, first)


def mine_sides(
    src: MineSide,
    tgt: MineSide,
    *,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    index: str = "auto",
) -> tuple[list[MinedPair], ThresholdEstimate | None]:
    """Mine two sides; pairs carry positions, ids and texts, best first.

    Returns:
        (pairs, the threshold estimate when ``threshold="auto"`` or ``target_precision``).
    """
    pairs, estimate = mining.mine_with_estimate(
        src.vectors,
        tgt.vectors,
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
        index=index,
    )
    return [
        MinedPair(
            p.score,
            int(src.positions[p.src]),
            int(tgt.positions[p.tgt]),
            int(src.ids[p.src]),
            int(tgt.ids[p.tgt]),
            src.texts[p.src],
            tgt.texts[p.tgt],
        )
        for p in pairs
    ], estimate
