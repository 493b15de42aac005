"""Perturbed-copy decoys (issue 25, item 2; docs/mining.md, "Perturbed copies, measured, not shipped").

The target-decoy idea of proteomics applied to mining: each xx sentence's best English candidate
is copied with its numbers, names or negation changed, so that the copy is no translation of the
xx sentence however close it stays in wording; the copy's margin against the xx sentence (same
k-NN denominators as the candidate) is a hard decoy score. If decoys were a null, the decoys
above a threshold would count the false candidates above it. This prints, at the top false
scores of a realistic pool, the false forward best matches against the decoys above them, split by
whether the decoy's candidate was true or false, and how often each perturbation applies.

    python benchmarks/recipes/perturbed_decoys.py bitext-dev:de:0.01 docs-dev:fr:0.01

Settings (environment): FILLERS (the filler directory), CACHE (the vector cache), PACKS, TOP
(decoys for the TOP highest-scoring candidates; default 5000).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np

from stilts.benchmarks import threshold
from stilts.benchmarks.systems import StiltsSystem
from stilts.index import mining

LOG = logging.getLogger(__name__)
PACKS = Path(os.environ.get("PACKS", Path(__file__).resolve().parents[3] / "shared" / "data"))
FILLERS = os.environ.get("FILLERS", "/work/data/pools/fillers")
CACHE = os.environ.get("CACHE", "/work/data/pools/vectors")
TOP = int(os.environ.get("TOP", "5000"))

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


def report(system, pack: str, xx: str, share: str) -> None:
    d = threshold.one_pool(PACKS / pack / "bucc", FILLERS, xx, share)
    src = np.asarray(system.encode(d.src, xx), dtype=np.float32)
    en = np.asarray(system.encode(d.en, "en"), dtype=np.float32)
    head = mining.columns(mining.neighbours(src, en, 10, index="flat"), 0, 4)
    fwd_mean, bwd_mean = head.fwd_mean.astype(np.float64), head.bwd_mean.astype(np.float64)
    margin = mining.margin_fn("ratio")(
        head.fwd_scores.astype(np.float64), (fwd_mean[:, None] + bwd_mean[head.fwd_ids]) / 2
    )
    j = margin.argmax(axis=1)
    rows_all = np.arange(len(src))
    best, cand = margin[rows_all, j], head.fwd_ids[rows_all, j]
    en_pos = {e: i for i, e in enumerate(d.en_ids)}
    gold = {a: en_pos[b] for a, b in d.gold}
    correct = np.array([gold.get(i, -1) for i in d.src_ids]) == cand

    rng = np.random.default_rng(0)
    names = sorted({w for t in d.en for w in _NAME.findall(t)})
    rows = np.argsort(-best)[: min(TOP, len(src))]
    made = [perturb(d.en[cand[r]], names, rng) for r in rows]
    copies = np.asarray(system.encode([c for c, _ in made], "en"), dtype=np.float32)
    decoy = decoy_margins(src, copies, rows, fwd_mean)
    kinds = Counter(k for _, k in made)
    drop = best[rows] - decoy
    print(f"{pack} {xx} {share}: {len(src)} x {len(en)}, gold {len(d.gold)}, decoys {len(rows)}")
    print("  perturbations: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    for label, mask in (("true", correct[rows]), ("false", ~correct[rows])):
        if mask.any():
            print(
                f"  {label} candidates: decoy below its candidate by median {np.median(drop[mask]):.4f}"
                f" (decoy above the candidate: {(drop[mask] < 0).mean():.1%})"
            )
    false = np.sort(best[~correct])[::-1]
    for k in (30, 100, 300, 1000, 3000):
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


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    system = StiltsSystem("default", precision="auto", kind="bitext", vector_cache=CACHE)
    for spec in argv:
        report(system, *spec.split(":"))


if __name__ == "__main__":
    main(sys.argv[1:])
