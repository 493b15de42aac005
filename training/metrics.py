"""Task metrics (no torch): accuracy, binary F1, SQuAD exact match / F1, tagging accuracy.

All metrics are fractions in [0, 1]. SQuAD follows the official evaluation script (v1.1 and v2.0):
answers are lower-cased, stripped of punctuation, articles and extra whitespace; a question scores the
maximum over its gold answers; an unanswerable question (v2) has the single gold answer ``""``.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} differ in shape")
    return float((p == y).mean()) if len(y) else 0.0


def binary_f1(
    predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray, positive: int = 1
) -> float:
    """F1 of the positive class (0 when there is no true or predicted positive)."""
    p = np.asarray(predictions) == positive
    y = np.asarray(labels) == positive
    tp = float((p & y).sum())
    if tp == 0:
        return 0.0
    precision = tp / p.sum()
    recall = tp / y.sum()
    return float(2 * precision * recall / (precision + recall))


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (official SQuAD script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 of the normalised answers; both empty counts as a match (v2)."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Exact match and F1 over the questions in ``gold`` (a missing prediction scores 0).

    Args:
        predictions: question id -> predicted answer text (``""`` for no answer).
        gold: question id -> gold answer texts (empty for an unanswerable question).

    Returns:
        ``exact_match``, ``f1`` and for v2-style data also ``has_answer_*`` / ``no_answer_*`` splits.
    """
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    for qid, answers in gold.items():
        refs = [a for a in answers if normalize_answer(a)] or [""]
        pred = predictions.get(qid)
        if pred is None:
            em[qid] = f1[qid] = 0.0
            continue
        em[qid] = max(exact_match(pred, a) for a in refs)
        f1[qid] = max(token_f1(pred, a) for a in refs)
    n = max(len(gold), 1)
    out = {"exact_match": sum(em.values()) / n, "f1": sum(f1.values()) / n}
    has = [q for q, a in gold.items() if any(normalize_answer(x) for x in a)]
    none = [q for q in gold if q not in set(has)]
    if none:
        for name, ids in (("has_answer", has), ("no_answer", none)):
            if ids:
                out[f"{name}_exact_match"] = sum(em[q] for q in ids) / len(ids)
                out[f"{name}_f1"] = sum(f1[q] for q in ids) / len(ids)
    return out


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    allowed: np.ndarray,
    max_answer_tokens: int = 30,
    top_k: int = 20,
) -> tuple[float, int, int] | None:
    """Highest-scoring span (start + end logit) with ``start <= end < start + max_answer_tokens``
    and both ends on ``allowed`` (context) tokens; None when there is none."""
    cand_s = [i for i in np.argsort(-start_logits)[:top_k] if allowed[i]]
    cand_e = [i for i in np.argsort(-end_logits)[:top_k] if allowed[i]]
    best = None
    for s in cand_s:
        for e in cand_e:
            if e < s or e - s + 1 > max_answer_tokens:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    return best
