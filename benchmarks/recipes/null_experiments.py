"""Two nulls measured for issue 25 (item 2) and not shipped; docs/mining.md, "Split pools, measured,
not shipped" and "Perturbed copies, measured, not shipped". Both run on the pools of ``stilts bench
threshold`` (:func:`stilts.benchmarks.threshold.one_pool`) and print, at the top false scores, the
false forward best matches against the null's count.

- ``split``: the English side cut in two halves; each xx sentence's best full-pool margin within
  each half; the lower of the two is a null sample (translations are rare), and order statistics
  map it to the null of the best of both halves.
- ``perturbed``: the target-decoy idea of proteomics. Each xx sentence's best English candidate
  (the TOP highest-scoring) is copied with its numbers, a name or its negation changed, so that the
  copy is no translation of the xx sentence however close its wording; the copy's margin (same
  k-NN denominators) is a hard decoy score. If decoys were a null, the decoys above a threshold
  would count the false candidates above it. Also: which perturbations applied, and how far a
  copy falls below its candidate, for true and false candidates.

    python benchmarks/recipes/null_experiments.py split bitext-dev:de:0.01 docs-dev:fr:0.01
    python benchmarks/recipes/null_experiments.py perturbed bitext-dev:de:0.01 docs-dev:fr:0.01

Settings (environment): FILLERS (the filler directory), CACHE (the vector cache), PACKS, TOP
(perturbed: decoys for the TOP highest-scoring candidates; default 5000).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np

from stilts.benchmarks import data as bdata
from stilts.benchmarks import threshold
from stilts.benchmarks.systems import StiltsSystem
from stilts.index import mining

LOG = logging.getLogger(__name__)
PACKS = Path(os.environ.get("PACKS", Path(__file__).resolve().parents[3] / "shared" / "data"))
FILLERS = os.environ.get("FILLERS", "/work/data/pools/fillers")
CACHE = os.environ.get("CACHE", "/work/data/pools/vectors")
TOP = int(os.environ.get("TOP", "5000"))
LEVELS = (30, 100, 300, 1000, 3000)  # the k-th highest false score is where each row is read


@dataclasses.dataclass
class Pool:
    """One encoded pool: its set, vectors, the k-NN (4 columns) and each xx sentence's gold row."""

    d: bdata.BuccSet
    src: np.ndarray
    en: np.ndarray
    head: mining.Neighbours
    partner: np.ndarray  # the English row of each xx sentence's translation, -1 for none

    @property
    def means(self) -> tuple[np.ndarray, np.ndarray]:
        return self.head.fwd_mean.astype(np.float64), self.head.bwd_mean.astype(np.float64)


def encoded(system, pack: str, xx: str, share: str) -> Pool:
    d = threshold.one_pool(PACKS / pack / "bucc", FILLERS, xx, share)
    src = np.asarray(system.encode(d.src, xx), dtype=np.float32)
    en = np.asarray(system.encode(d.en, "en"), dtype=np.float32)
    head = mining.neighbours(src, en, 4, index="flat")
    en_pos = {e: j for j, e in enumerate(d.en_ids)}
    gold = {a: en_pos[b] for a, b in d.gold}
    print(f"{pack} {xx} {share}: {len(src)} x {len(en)}, gold {len(d.gold)}")
    return Pool(d, src, en, head, np.array([gold.get(i, -1) for i in d.src_ids]))


# ---- split pools ----


def best_per_half(src, en, fwd_mean, bwd_mean, half):
    """(2, n_src) best full-pool ratio margins within each half, and the target of each."""
    best = np.full((2, len(src)), -np.inf)
    arg = np.full((2, len(src)), -1)
    rows = np.arange(len(src))
    for h, mask in enumerate((half, ~half)):
        idx = np.flatnonzero(mask)
        index = faiss.IndexFlatIP(en.shape[1])
        index.add(en[idx])
        cos, ids = index.search(src, 20)
        y = idx[ids]
        margin = mining.margin_fn("ratio")(cos, (fwd_mean[:, None] + bwd_mean[y]) / 2)
        j = margin.argmax(axis=1)
        best[h], arg[h] = margin[rows, j], y[rows, j]
    return best, arg


def split(system, pack: str, xx: str, share: str) -> None:
    p = encoded(system, pack, xx, share)
    half = np.random.default_rng(0).random(len(p.en)) < 0.5
    best, arg = best_per_half(p.src, p.en, *p.means, half)
    upper = best.max(axis=0)
    correct = arg[best.argmax(axis=0), np.arange(len(p.src))] == p.partner
    lower = np.sort(best.min(axis=0))
    false = np.sort(upper[~correct])[::-1]
    for k in LEVELS:
        if k >= len(false):
            continue
        t = false[k]
        s_half = np.sqrt((len(lower) - np.searchsorted(lower, t, side="left")) / len(lower))
        null = len(p.src) * (1 - (1 - s_half) ** 2)
        n_false = float((upper[~correct] >= t).sum())
        print(
            f"  t {t:.4f}: false forward bests {n_false:6.0f}, split null {null:8.1f} "
            f"(ratio {null / max(n_false, 1):.2f}), true kept {int((upper[correct] >= t).sum())}"
        )


# ---- perturbed copies ----

_NUMBER = re.compile(r"\d+")
_NAME = re.compile(r"(?<=[^.!?:]\s)([A-Z][\w-]*[A-Za-z])")
_NEGATION = re.compile(r"\b(?:not|never|no)\s+|\bcannot\b|\bcan't\b|\bwon't\b|n't\b", re.IGNORECASE)
_POSITIVE = {"cannot": "can", "can't": "can", "won't": "will"}
_AUXILIARY = re.compile(
    r"\b(is|are|was|were|can|could|will|would|should|must|may|might|does|do|did|has|have)\b"
)


def _other_number(m: re.Match, rng: np.random.Generator) -> str:
    n = int(m.group())
    width = len(m.group())
    while True:
        v = int(rng.integers(0 if width == 1 else 10 ** (width - 1), 10**width))
        if v != n:
            return str(v).zfill(width)


def perturb(text: str, names: list[str], rng: np.random.Generator) -> tuple[str, str]:
    """(copy, kind): numbers changed where there are any, else one name (a capitalised word not
    opening a sentence) swapped for another of the pool's, else the negation removed or added."""
    if _NUMBER.search(text):
        return _NUMBER.sub(lambda m: _other_number(m, rng), text), "number"
    found = _NAME.findall(text)
    if found and names:
        old = found[int(rng.integers(len(found)))]
        new = old
        while new == old:
            new = names[int(rng.integers(len(names)))]
        return text.replace(old, new, 1), "name"
    if _NEGATION.search(text):
        plain = _NEGATION.sub(lambda m: _POSITIVE.get(m.group().lower(), ""), text, count=1)
        return (plain[:1].upper() + plain[1:] if text[:1].isupper() else plain), "negation removed"
    if _AUXILIARY.search(text):
        return _AUXILIARY.sub(lambda m: m.group() + " not", text, count=1), "negation added"
    return "Do not " + text[:1].lower() + text[1:], "negation added"


def decoy_margins(src, copies, rows, fwd_mean, k: int = 4) -> np.ndarray:
    """Ratio margin of each copy against its xx row, with the copy's own backward k-NN mean."""
    index = faiss.IndexFlatIP(src.shape[1])
    index.add(src)
    back, _ = index.search(copies, k)
    cos = (src[rows] * copies).sum(axis=1)
    return mining.margin_fn("ratio")(cos, (fwd_mean[rows] + back.mean(axis=1)) / 2)


def perturbed(system, pack: str, xx: str, share: str) -> None:
    p = encoded(system, pack, xx, share)
    fwd_mean, bwd_mean = p.means
    margin = mining.margin_fn("ratio")(
        p.head.fwd_scores.astype(np.float64), (fwd_mean[:, None] + bwd_mean[p.head.fwd_ids]) / 2
    )
    j = margin.argmax(axis=1)
    rows_all = np.arange(len(p.src))
    best, cand = margin[rows_all, j], p.head.fwd_ids[rows_all, j]
    correct = p.partner == cand

    rng = np.random.default_rng(0)
    names = sorted({w for t in p.d.en for w in _NAME.findall(t)})
    rows = np.argsort(-best)[: min(TOP, len(p.src))]
    made = [perturb(p.d.en[cand[r]], names, rng) for r in rows]
    copies = np.asarray(system.encode([c for c, _ in made], "en"), dtype=np.float32)
    decoy = decoy_margins(p.src, copies, rows, fwd_mean)
    kinds = Counter(k for _, k in made)
    drop = best[rows] - decoy
    print(
        f"  decoys {len(rows)}; perturbations: "
        + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
    )
    for label, mask in (("true", correct[rows]), ("false", ~correct[rows])):
        if mask.any():
            print(
                f"  {label} candidates: decoy below its candidate by median {np.median(drop[mask]):.4f}"
                f" (decoy above the candidate: {(drop[mask] < 0).mean():.1%})"
            )
    false = np.sort(best[~correct])[::-1]
    for k in LEVELS:
        if k >= len(false) or false[k] < best[rows].min():
            continue
        t = false[k]
        above = decoy >= t
        n_false = int((best[~correct] >= t).sum())
        print(
            f"  t {t:.4f}: false forward bests {n_false:5d}, decoys {int(above.sum()):5d} "
            f"(ratio {above.sum() / max(n_false, 1):.2f}; of true candidates "
            f"{int((above & correct[rows]).sum())}, of false {int((above & ~correct[rows]).sum())}), "
            f"true kept {int((best[correct] >= t).sum())}"
        )


REPORTS = {"split": split, "perturbed": perturbed}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in REPORTS:
        sys.exit(__doc__)
    logging.basicConfig(level=logging.WARNING)
    system = StiltsSystem("default", precision="auto", kind="bitext", vector_cache=CACHE)
    for spec in argv[1:]:
        REPORTS[argv[0]](system, *spec.split(":"))


if __name__ == "__main__":
    main(sys.argv[1:])
