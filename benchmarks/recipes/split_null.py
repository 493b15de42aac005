"""Split-pool null (issue 25, item 2; docs/mining.md, "Split pools, measured, not shipped").

The English side of a realistic pool (``stilts bench threshold``'s) cut in two halves; each xx
sentence's best full-pool margin within each half; the lower of the two is a null sample
(translations are rare), and order statistics map it to the null of the best of both halves. It
prints that null against the false forward best matches at the top false scores.

    python benchmarks/recipes/split_null.py bitext-dev:de:0.01 docs-dev:fr:0.01

Settings (environment): FILLERS (the filler directory), CACHE (the vector cache), PACKS.
"""

from __future__ import annotations

import logging
import os
import sys
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


def report(system, pack: str, xx: str, share: str) -> None:
    d = threshold.one_pool(PACKS / pack / "bucc", FILLERS, xx, share)
    src = np.asarray(system.encode(d.src, xx), dtype=np.float32)
    en = np.asarray(system.encode(d.en, "en"), dtype=np.float32)
    head = mining.columns(mining.neighbours(src, en, 10, index="flat"), 0, 4)
    en_pos = {e: j for j, e in enumerate(d.en_ids)}
    gold = {a: en_pos[b] for a, b in d.gold}
    partner = np.array([gold.get(i, -1) for i in d.src_ids])
    half = np.random.default_rng(0).random(len(en)) < 0.5
    fwd_mean, bwd_mean = head.fwd_mean.astype(np.float64), head.bwd_mean.astype(np.float64)
    best, arg = best_per_half(src, en, fwd_mean, bwd_mean, half)
    upper = best.max(axis=0)
    correct = arg[best.argmax(axis=0), np.arange(len(src))] == partner
    lower = np.sort(best.min(axis=0))
    false = np.sort(upper[~correct])[::-1]
    print(f"{pack} {xx} {share}: {len(src)} x {len(en)}, gold {len(d.gold)}")
    for k in (30, 100, 300, 1000, 3000):
        if k >= len(false):
            continue
        t = false[k]
        s_half = np.sqrt((len(lower) - np.searchsorted(lower, t, side="left")) / len(lower))
        split = len(src) * (1 - (1 - s_half) ** 2)
        n_false = float((upper[~correct] >= t).sum())
        print(
            f"  t {t:.4f}: false forward bests {n_false:6.0f}, split null {split:8.1f} "
            f"(ratio {split / max(n_false, 1):.2f}), true kept {int((upper[correct] >= t).sum())}"
        )


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    system = StiltsSystem("default", precision="auto", kind="bitext", vector_cache=CACHE)
    for spec in argv:
        report(system, *spec.split(":"))


if __name__ == "__main__":
    main(sys.argv[1:])
