"""Scores: top-1 retrieval accuracy, P/R/F1 at a threshold, the F1-optimal (oracle) threshold.

Pure numpy on predictions and scores; the scoring itself (cosine, margin, mining) comes from
:mod:`stilts.index` and is applied in :mod:`stilts.benchmarks.accuracy`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from stilts.errors import ErrorCode, StiltsError


@dataclasses.dataclass
class ThresholdScore:
    """P/R/F1 of the candidates scored at or above ``threshold``."""

    threshold: float
    precision: float
    recall: float
    f1: float
    n_predicted: int
    n_correct: int
    n_gold: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def top1_accuracy(predicted: np.ndarray) -> float:
    """Share of rows ``i`` whose top-ranked item is ``i`` (aligned Tatoeba-style data)."""
    predicted = np.asarray(predicted).reshape(-1)
    if len(predicted) == 0:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "no predictions to score", "predicted")
    return float(np.mean(predicted == np.arange(len(predicted))))


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def prf(predicted: Iterable[tuple], gold: set[tuple]) -> tuple[float, float, float]:
    """Precision, recall and F1 of a set of predicted pairs against the gold pairs."""
    pred = set(predicted)
    correct = len(pred & gold)
    p = correct / len(pred) if pred else 0.0
    r = correct / len(gold) if gold else 0.0
    return p, r, f1(p, r)


def _check(scores: np.ndarray, correct: np.ndarray, n_gold: int) -> None:
    if scores.shape != correct.shape or scores.ndim != 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, "scores and correct must be 1-D of equal length", "scores"
        )
    if int(correct.sum()) > n_gold:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{int(correct.sum())} correct candidates but only {n_gold} gold pairs",
            "n_gold",
        )


def at_threshold(
    scores: Sequence[float], correct: Sequence[bool], n_gold: int, threshold: float
) -> ThresholdScore:
    """P/R/F1 when every candidate with ``score >= threshold`` is predicted.

    Args:
        scores: one score per candidate pair (unique pairs).
        correct: whether each candidate is a gold pair.
        n_gold: number of gold pairs (found by the candidates or not: recall's denominator).
        threshold: the decision threshold.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    _check(s, c, n_gold)
    keep = s >= threshold
    n_pred, n_ok = int(keep.sum()), int(c[keep].sum())
    p = n_ok / n_pred if n_pred else 0.0
    r = n_ok / n_gold if n_gold else 0.0
    return ThresholdScore(float(threshold), p, r, f1(p, r), n_pred, n_ok, n_gold)


def f1_sweep(
    scores: Sequence[float], correct: Sequence[bool], n_gold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """P/R/F1 at every distinct cut of the candidates sorted by score (ties are never split).

    Returns:
        (thresholds, precision, recall, f1), one entry per cut; cut j predicts the candidates
        scored ``>= thresholds[j]``. Each threshold lies half-way to the next lower score, so
        applied to other data it does not hinge on one exact value.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    _check(s, c, n_gold)
    if len(s) == 0:
        return (np.zeros(0),) * 4
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    tp = np.cumsum(c)
    npred = np.arange(1, len(s) + 1)
    # A cut after position i is valid when the next score is strictly lower (or i is last).
    valid = np.append(s[1:] < s[:-1], True)
    nxt = np.append(s[1:], s[-1])
    thr = np.where(np.arange(len(s)) == len(s) - 1, s, (s + nxt) / 2)[valid]
    p = (tp / npred)[valid]
    r = (tp / n_gold)[valid] if n_gold else np.zeros(int(valid.sum()))
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    return thr, p, r, f


def oracle_threshold(
    scores: Sequence[float], correct: Sequence[bool], n_gold: int
) -> ThresholdScore:
    """The F1-optimal threshold on the scored set itself (as XTREME/jiant report BUCC).

    Ties in F1 go to the higher threshold (fewer predictions). With no candidates the threshold is
    +inf and every figure 0.
    """
    thr, p, r, f = f1_sweep(scores, correct, n_gold)
    if len(thr) == 0:
        return ThresholdScore(float("inf"), 0.0, 0.0, 0.0, 0, 0, n_gold)
    j = int(np.argmax(f))
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    keep = s >= thr[j]
    return ThresholdScore(
        float(thr[j]),
        float(p[j]),
        float(r[j]),
        float(f[j]),
        int(keep.sum()),
        int(c[keep].sum()),
        n_gold,
    )


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
