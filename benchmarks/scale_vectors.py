"""Real-like vectors at any scale, derived from a few tens of thousands of encoded real sentences.

Encoding a million sentences is out of reach on a small machine, and isotropic random vectors make
every approximate index look either perfect or hopeless, so the large benchmarks derive their
vectors from real ones:

1. ``encode_pairs`` encodes Tatoeba translation pairs of the dev pack (every language, up to
   ``per_language`` pairs each) once with the ``bitext`` prefix and caches them (``.npz``).
2. ``derive`` makes ``n`` synthetic *pairs* from them. Synthetic pair ``t`` is a blend of two real
   pairs ``i`` and ``j`` with one weight ``w`` shared by both sides, ``(1 - w) x_i + w x_j`` (and
   the same for the English side), plus on each side an independent displacement ``s * (a - b)``
   where ``(a, b)`` is another real translation pair: noise that lives in the embedding's own
   (anisotropic) subspace, scaled so that a synthetic pair is about as close as a real one.
   Rows are renormalised. The shared ``(i, j, w)`` gives every synthetic pair its own identity,
   so "row t of the source translates row t of the target" is a ground truth that mining can be
   scored on, and the blends fill the space between real sentences the way a large corpus does.

:func:`stats` measures what matters for the recall figures (cosine of true pairs, cosine to the
nearest other vector) for the real and the derived vectors, so a report can show they agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

DEFAULT_PER_LANGUAGE = 120
BLEND_MAX = 0.5
NOISE_SCALE = (0.3, 0.6)


def encode_pairs(
    tatoeba_dir: str | Path,
    cache: str | Path,
    model: str = "default",
    per_language: int = DEFAULT_PER_LANGUAGE,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded (xx, en) Tatoeba pairs of every language, cached in ``cache`` (an ``.npz``).

    Returns:
        (xx vectors, en vectors), row i of one translating row i of the other, L2-normalised.
    """
    cache = Path(cache)
    if cache.is_file():
        with np.load(cache) as z:
            return z["xx"], z["en"]
    from stilts.benchmarks.data import read_tatoeba
    from stilts.encoding.encoder import Encoder

    sets = read_tatoeba(tatoeba_dir, max_pairs=per_language)
    xx = [s for t in sets.values() for s in t.src]
    en = [s for t in sets.values() for s in t.en]
    LOG.info("encoding %d real pairs from %d languages", len(xx), len(sets))
    enc = Encoder(model)
    vx = enc.encode(xx, kind="bitext", batch_size=64, progress=progress)
    ve = enc.encode(en, kind="bitext", batch_size=64, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, xx=vx.astype(np.float32), en=ve.astype(np.float32))
    tmp.replace(cache)
    return vx, ve


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def derive(
    xx: np.ndarray,
    en: np.ndarray,
    n: int,
    seed: int = 0,
    sides: tuple[str, ...] = ("xx", "en"),
    block: int = 65536,
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``n`` synthetic translation pairs derived from the real pairs ``(xx, en)``.

    Args:
        xx, en: real pair vectors (row i translates row i).
        n: synthetic pairs to make.
        seed: random seed (the same seed gives the same vectors).
        sides: which sides to return (``xx``, ``en``).
        block: rows generated at a time.
        out: preallocated ``(n, dim)`` float32 arrays (e.g. ``np.lib.format.open_memmap``) per side.

    Returns:
        ``{side: (n, dim) float32}``; row t of ``xx`` and row t of ``en`` are a pair.
    """
    m, dim = xx.shape
    rng = np.random.default_rng(seed)
    res = out or {s: np.empty((n, dim), dtype=np.float32) for s in sides}
    src = {"xx": xx, "en": en}
    for start in range(0, n, block):
        b = min(block, n - start)
        i = rng.integers(0, m, b)
        j = rng.integers(0, m, b)
        w = rng.uniform(0, BLEND_MAX, b).astype(np.float32)[:, None]
        for side in ("xx", "en"):
            a = rng.integers(0, m, b)
            s = rng.uniform(*NOISE_SCALE, b).astype(np.float32)[:, None]
            if side not in res:
                continue
            base = src[side]
            v = (1 - w) * base[i] + w * base[j] + s * (xx[a] - en[a])
            res[side][start : start + b] = _unit(v)
    return res


def stats(xx: np.ndarray, en: np.ndarray, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """Cosine of true pairs and to the nearest other vector (of the ``en`` side), medians."""
    from stilts.index.knn import knn

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(xx), min(sample, len(xx)), replace=False))
    pair = np.einsum("ij,ij->i", xx[rows], en[rows])
    d, i = knn(np.ascontiguousarray(en[rows]), en, 2)
    nn_other = np.where(i[:, 0] == rows, d[:, 1], d[:, 0])
    d, _ = knn(np.ascontiguousarray(xx[rows]), en, 1)
    return {
        "pair_cosine_median": float(np.median(pair)),
        "nearest_other_cosine_median": float(np.median(nn_other)),
        "pair_is_nearest": float(np.mean(d[:, 0] <= pair + 1e-6)),
    }
