"""Precision / recall / F1 of mined pairs against gold pairs, and the F1-optimal threshold.

Small helpers for checking a mining run; the official BUCC and Tatoeba readers and reports live
in ``stilts.benchmarks``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of a set of predicted pairs, and the threshold used."""

    precision: float
    recall: float
    f1: float
    threshold: float | None = None
    predicted: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def prf(predicted: Iterable[Hashable], gold: set, threshold: float | None = None) -> PRF:
    """P/R/F1 of ``predicted`` pairs (any hashables, e.g. (src_id, tgt_id)) against ``gold``."""
    pred = set(predicted)
    tp = len(pred & gold)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return PRF(p, r, f, threshold, len(pred))


def best_threshold(scored: Sequence[tuple[float, Hashable]], gold: set) -> PRF:
    """The threshold maximising F1 over candidates ``(score, pair)`` (as LASER's BUCC script:
    sweep the sorted scores, put the threshold halfway to the next score)."""
    ranked = sorted(scored, key=lambda sp: -sp[0])
    best = PRF(0.0, 0.0, 0.0, ranked[0][0] + 1 if ranked else None)
    tp = 0
    seen: set = set()
    for i, (score, pair) in enumerate(ranked):
        if pair in seen:
            continue
        seen.add(pair)
        tp += pair in gold
        p, r = tp / len(seen), tp / len(gold) if gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        if f > best.f1:
            nxt = ranked[i + 1][0] if i + 1 < len(ranked) else score - 1e-3
            best = PRF(p, r, f, (score + nxt) / 2, len(seen))
    return best
