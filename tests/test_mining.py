"""stilts.index.mining and knn: identical to a brute-force numpy reference, blocked or not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import best_threshold, f1_of

from stilts.errors import ErrorCode, StiltsError
from stilts.index.knn import knn, knn_blocks
from stilts.index.mining import MARGINS, RETRIEVALS, MinedPair, mine, neighbours


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bitext(n: int = 300, m: int = 340, dim: int = 24, seed: int = 0):
    """Targets, and sources where the first 200 are noisy copies ("translations") of targets."""
    rng = np.random.default_rng(seed)
    y = unit(rng.standard_normal((m, dim)))
    x = rng.standard_normal((n, dim)).astype(np.float32)
    perm = rng.permutation(m)[:200]
    x[:200] = y[perm] + 0.45 * rng.standard_normal((200, dim)) / np.sqrt(dim)
    return unit(x), y, {(i, int(perm[i])) for i in range(200)}


def reference(x, y, k, margin, retrieval, threshold=None):
    """Brute-force numpy: the full similarity matrix, LASER's selection rules."""
    sim = x.astype(np.float64) @ y.T.astype(np.float64)
    kx, ky = min(k, len(y)), min(k, len(x))
    fwd_ids = np.argsort(-sim, axis=1, kind="stable")[:, :kx]
    bwd_ids = np.argsort(-sim.T, axis=1, kind="stable")[:, :ky]
    r_x = np.take_along_axis(sim, fwd_ids, 1).mean(1)
    r_y = np.take_along_axis(sim.T, bwd_ids, 1).mean(1)
    fns = {"ratio": lambda a, b: a / b, "distance": lambda a, b: a - b, "absolute": lambda a, b: a}
    fn = fns[margin]
    fwd = [[fn(sim[i, j], (r_x[i] + r_y[j]) / 2) for j in fwd_ids[i]] for i in range(len(x))]
    bwd = [[fn(sim[i, j], (r_x[i] + r_y[j]) / 2) for i in bwd_ids[j]] for j in range(len(y))]
    fwd_best = [(max(s), i, int(fwd_ids[i][int(np.argmax(s))])) for i, s in enumerate(fwd)]
    bwd_best = [(max(s), int(bwd_ids[j][int(np.argmax(s))]), j) for j, s in enumerate(bwd)]
    if retrieval == "forward":
        out = fwd_best
    elif retrieval == "backward":
        out = bwd_best
    elif retrieval == "intersect":
        back = {j: i for _, i, j in bwd_best}
        out = [p for p in fwd_best if back[p[2]] == p[1]]
    else:
        out, seen_s, seen_t = [], set(), set()
        for s, i, j in sorted(fwd_best + bwd_best, key=lambda p: (-p[0], p[1], p[2])):
            if i not in seen_s and j not in seen_t:
                seen_s.add(i)
                seen_t.add(j)
                out.append((s, i, j))
    if threshold is not None:
        out = [p for p in out if p[0] >= threshold]
    return sorted(out, key=lambda p: (-p[0], p[1], p[2]))


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("retrieval", RETRIEVALS)
def test_mine_equals_numpy_reference(margin, retrieval):
    x, y, _ = bitext()
    want = reference(x, y, 4, margin, retrieval)
    # Tiny blocks and shards: many tiles to merge.
    got = mine(x, y, k=4, margin=margin, retrieval=retrieval, block_size=37, shard_size=53)
    assert [(p.src, p.tgt) for p in got] == [(i, j) for _, i, j in want]
    np.testing.assert_allclose(
        [p.score for p in got], [s for s, _, _ in want], rtol=1e-5, atol=1e-6
    )
    assert all(isinstance(p, MinedPair) for p in got)


def test_threshold_and_quality_of_ratio_margin():
    x, y, gold = bitext(seed=3)
    every = mine(x, y)
    best = best_threshold([(p.score, (p.src, p.tgt)) for p in every], gold)
    kept = mine(x, y, threshold=best.threshold)
    assert all(p.score >= best.threshold for p in kept)
    assert f1_of([(p.src, p.tgt) for p in kept], gold) == pytest.approx(best.f1)
    assert best.f1 > 0.9, "noisy copies are found"
    want = reference(x, y, 4, "ratio", "max", threshold=best.threshold)
    assert [(p.src, p.tgt) for p in kept] == [(i, j) for _, i, j in want]


def test_knn_blocks_shards_and_iterators_agree():
    rng = np.random.default_rng(1)
    q = unit(rng.standard_normal((123, 16)))
    db = unit(rng.standard_normal((1001, 16)))
    full_d, full_i = knn(q, db, 7)
    sims = q @ db.T
    np.testing.assert_array_equal(full_i, np.argsort(-sims, axis=1)[:, :7])
    shard_d, shard_i = knn(q, (db[a : a + 100] for a in range(0, 1001, 100)), 7, block_size=10)
    np.testing.assert_array_equal(shard_i, full_i)
    np.testing.assert_allclose(shard_d, full_d, rtol=1e-6)
    streamed = list(knn_blocks((q[a : a + 50] for a in range(0, 123, 50)), db, 7, shard_size=333))
    np.testing.assert_array_equal(np.concatenate([i for _, i in streamed]), full_i)
    # k beyond the database: padded with -1 / -inf.
    d, i = knn(q[:2], db[:3], 5)
    assert (i[:, 3:] == -1).all() and np.isneginf(d[:, 3:]).all()


def test_memmap_inputs(tmp_path):
    x, y, _ = bitext()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    my = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert mine(mx, my, block_size=64, shard_size=64) == mine(x, y)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_agrees_up_to_recall(kind):
    x, y, _ = bitext(n=2000, m=2200, dim=32, seed=5)
    exact = {(p.src, p.tgt) for p in mine(x, y)}
    approx = {(p.src, p.tgt) for p in mine(x, y, index=kind)}
    nb_e = neighbours(x, y, 4)
    nb_a = neighbours(x, y, 4, index=kind)
    recall = np.mean(
        [len(set(a) & set(e)) / 4 for a, e in zip(nb_a.fwd_ids, nb_e.fwd_ids, strict=True)]
    )
    assert recall > 0.8
    assert len(exact & approx) / len(exact) >= recall - 0.05


def test_small_sides_and_bad_options():
    x, y, _ = bitext()
    pairs = mine(x[:2], y, k=8)
    assert {p.src for p in pairs} == {0, 1}
    pairs = mine(x, y[:1], k=4, retrieval="forward")
    assert len(pairs) == len(x) and {p.tgt for p in pairs} == {0}
    for kwargs, field in (
        ({"k": 0}, "k"),
        ({"margin": "csls"}, "margin"),
        ({"retrieval": "both"}, "retrieval"),
        ({"threshold": float("nan")}, "threshold"),
    ):
        with pytest.raises(StiltsError) as e:
            mine(x, y, **kwargs)
        assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == field
    with pytest.raises(StiltsError) as e:
        mine(x, y[:, :10])
    assert e.value.field == "tgt"
    with pytest.raises(StiltsError) as e:
        mine(x[:0], y)
    assert e.value.field == "src"
