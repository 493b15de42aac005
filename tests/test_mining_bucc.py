"""Mining quality on the dev pack's BUCC-style sets with the default model (int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import best_threshold, f1_of

from stilts.index.mining import mine

pytestmark = pytest.mark.slow


def read_bucc(dev_pack: Path, lang: str):
    base = dev_pack / "bucc" / f"{lang}-en" / f"{lang}-en.training"

    def side(ext: str) -> tuple[list[str], list[str]]:
        rows = [
            line.rstrip("\n").split("\t", 1) for line in open(f"{base}.{ext}", encoding="utf-8")
        ]
        return [r[0] for r in rows], [r[1] for r in rows]

    gold = {tuple(line.split()) for line in open(f"{base}.gold", encoding="utf-8")}
    return side(lang), side("en"), gold


@pytest.fixture(scope="session")
def bucc_vectors(dev_pack, encoder):
    """Both sides of de-en and fr-en, encoded once per session with the bitext prefix."""
    out = {}
    for lang in ("de", "fr"):
        (src_ids, src), (tgt_ids, tgt), gold = read_bucc(dev_pack, lang)
        x = encoder.encode(src, kind="bitext", batch_size=64)
        y = encoder.encode(tgt, kind="bitext", batch_size=64)
        out[lang] = (x, y, np.array(src_ids), np.array(tgt_ids), gold)
    return out


def scored(lang, bucc_vectors, **kw):
    x, y, sid, tid, gold = bucc_vectors[lang]
    pairs = mine(x, y, **kw)
    return [(p.score, (sid[p.src], tid[p.tgt])) for p in pairs], gold


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_ratio_margin_f1_and_beats_cosine(lang, bucc_vectors):
    ratio, gold = scored(lang, bucc_vectors, margin="ratio")
    cosine, _ = scored(lang, bucc_vectors, margin="absolute")
    best = best_threshold(ratio, gold)
    plain = best_threshold(cosine, gold)
    # int8, measured (ratio vs cosine oracle F1): the tuned default de .838 vs .804, fr .848 vs
    # .837; its base de .770 vs .649, fr .799 vs .704 (in-batch-negative training leaves margin
    # scoring less hubness to correct)
    assert best.f1 >= 0.8, best
    assert best.f1 > plain.f1 + 0.005, (best, plain)
    # The threshold really gives that F1 when applied by the miner itself.
    x, y, sid, tid, _ = bucc_vectors[lang]
    kept = mine(x, y, threshold=best.threshold)
    assert f1_of([(sid[p.src], tid[p.tgt]) for p in kept], gold) == pytest.approx(best.f1)


def test_threshold_calibrated_on_another_pair_transfers(bucc_vectors):
    de, de_gold = scored("de", bucc_vectors)
    fr, fr_gold = scored("fr", bucc_vectors)
    t = best_threshold(de, de_gold).threshold
    transferred = f1_of([p for s, p in fr if s >= t], fr_gold)
    assert transferred >= best_threshold(fr, fr_gold).f1 - 0.05, transferred


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_keeps_quality(kind, bucc_vectors):
    exact, gold = scored("de", bucc_vectors)
    approx, _ = scored("de", bucc_vectors, index=kind)
    assert best_threshold(approx, gold).f1 >= best_threshold(exact, gold).f1 - 0.01
