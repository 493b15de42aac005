"""Index growth and scale on real FAISS + SQLite: ``ivfpq`` with exact re-ranking, ``auto``'s
background tier moves (Flat -> IVF -> OPQ+IVF+PQ) under concurrent reads and writes, crash safety
of a rebuild, and memory-mapped IVF lists."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import faiss
import numpy as np
import pytest

from stilts.errors import ErrorCode, StiltsError
from stilts.index import VectorIndex
from stilts.index import factory as fx

DIM = 64


def embedding_like(n: int, seed: int = 0, dim: int = DIM, clusters: int = 400) -> np.ndarray:
    """Unit vectors around many centres with a spread comparable to the centre distances."""
    rng = np.random.default_rng(1234)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]]


def recall_of(idx: VectorIndex, q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int = 10):
    want = exact_top(q, x, ids, k)
    got = [[h.id for h in hs] for hs in idx.search(q, k=k)]
    return float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want, strict=True)]))


@pytest.mark.slow
def test_ivfpq_reranks_with_stored_vectors_and_survives_reopen(tmp_path):
    x = embedding_like(8000)
    ids = np.arange(8000, dtype=np.int64) + 7
    q = embedding_like(200, seed=5)
    idx = VectorIndex.create(tmp_path / "pq", DIM, kind="ivfpq", train_size=6000)
    for start in range(0, 8000, 2000):
        idx.add(ids[start : start + 2000], x[start : start + 2000])
    d = idx.describe()
    assert d["factory"].startswith("OPQ") and ",PQ" in d["factory"] and d["rerank"] is True
    ivf = faiss.downcast_index(fx.ivf_of(idx._cpu))
    assert not ivf.do_polysemous_training and ivf.pq.cp.niter == fx.PQ_KMEANS_ITER
    r = recall_of(idx, q, x, ids)
    assert r >= 0.9, r
    # scores are exact cosines (re-ranked), not PQ approximations
    hits = idx.search(q[:5], k=3)
    for qi, hs in enumerate(hits):
        want = x[np.array([h.id for h in hs]) - 7] @ q[qi]
        np.testing.assert_allclose([h.score for h in hs], want, atol=1e-5)
    idx.delete(ids[:100])
    idx.save()
    idx.close()
    again = VectorIndex.open(tmp_path / "pq")
    assert again.describe()["factory"] == d["factory"]
    assert not {h.id for hs in again.search(x[:100], k=5) for h in hs} & set(ids[:100].tolist())
    assert recall_of(again, q, x[100:], ids[100:]) >= 0.9
    again.close()


@pytest.mark.slow
def test_auto_moves_up_every_tier_in_the_background_while_serving():
    idx = VectorIndex.create(None, DIM, kind="auto", auto_thresholds=(3000, 9000))
    x = embedding_like(12000)
    ids = np.arange(12000, dtype=np.int64)
    idx.add(ids[:3000], x[:3000])
    assert idx.describe()["factory"] == "Flat"
    errors: list[BaseException] = []
    seen_during: set = set()
    stop = threading.Event()

    def reader() -> None:  # searches never fail and always find an indexed vector itself
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                i = int(rng.integers(0, 3000))
                hits = idx.search(x[i : i + 1], k=5, nprobe=256)
                assert hits[0][0].id == i, (i, hits[0][:2])
                seen_during.add(idx.describe()["rebuilding"])
            except BaseException as e:
                errors.append(e)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        idx.add(ids[3000:4000], x[3000:4000])  # crosses exact_max: IVF built in the background
        assert idx.describe()["rebuilding"] is not None or idx.describe()["factory"] != "Flat"
        idx.add(ids[4000:5000], x[4000:5000])  # writes during the rebuild ...
        idx.delete(ids[4500:4600])  # ... and deletes
        assert idx.wait_for_rebuild(timeout=120)
        d = idx.describe()
        assert d["factory"] == f"IVF{fx.nlist_for(4000)},Flat" and d["size"] == 4900
        idx.add(ids[5000:10000], x[5000:10000])  # crosses ivf_max: OPQ+IVF+PQ
        idx.delete(ids[9000:9050])
        assert idx.wait_for_rebuild(timeout=180)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[0]
    d = idx.describe()
    assert fx.tier(d["factory"]) == 2 and d["factory"].startswith("OPQ"), d
    assert d["size"] == 10000 - 150 and d["rerank"]
    live = np.setdiff1d(ids[:10000], np.r_[ids[4500:4600], ids[9000:9050]])
    got = idx.search(x[live[::97]], k=1, nprobe=64)
    assert [hs[0].id for hs in got] == live[::97].tolist()
    q = embedding_like(200, seed=9)
    assert recall_of(idx, q, x[live], live) >= 0.9
    assert seen_during & {None}  # the reader ran before/after, and ...
    assert any(s is not None for s in seen_during), "... while a rebuild was running"
    idx.close()


def test_a_crash_during_a_background_rebuild_loses_nothing(tmp_path):
    path = tmp_path / "crash"
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from stilts.index import VectorIndex
        x = np.random.default_rng(0).standard_normal((5000, {DIM})).astype(np.float32)
        idx = VectorIndex.create({str(path)!r}, {DIM}, kind="auto", auto_thresholds=(2000, 10**9))
        idx.add(np.arange(2000), x[:2000])
        idx.save()
        idx.add(np.arange(2000, 5000), x[2000:])  # starts the IVF rebuild on a thread
        with idx._lock.read():  # the swap needs the write lock: the rebuild cannot finish now
            d = idx.describe()
            assert d["rebuilding"] and d["factory"] == "Flat", d
            os._exit(3)  # killed mid-rebuild
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    idx = VectorIndex.open(path)
    assert len(idx) == 5000
    x = np.random.default_rng(0).standard_normal((5000, DIM)).astype(np.float32)
    got = idx.search(x[::250], k=1)
    assert [hs[0].id for hs in got] == list(range(0, 5000, 250))
    assert idx.wait_for_rebuild(timeout=60)  # reopening resumes the move
    assert fx.tier(idx.describe()["factory"]) == 1
    idx.close()


def test_mmap_serves_ivf_lists_from_disk_and_takes_writes(tmp_path):
    x = embedding_like(8000)
    ids = np.arange(8000, dtype=np.int64)
    q = embedding_like(100, seed=3)
    idx = VectorIndex.create(tmp_path / "m", DIM, kind="ivf", train_size=6000)
    idx.add(ids[:6000], x[:6000])
    assert idx.describe()["storage"] == "memory"
    in_ram = [[h.id for h in hs] for hs in idx.search(q, k=10)]
    idx.save()
    idx.close()
    snap = tmp_path / "m" / "index.faiss"
    mapped = VectorIndex.open(tmp_path / "m", mmap=True)
    d = mapped.describe()
    assert d["storage"] == "mmap" and d["factory"].startswith("IVF")
    assert [[h.id for h in hs] for hs in mapped.search(q, k=10)] == in_ram
    mapped.add(ids[6000:], x[6000:])  # the mapped lists are read-only: an exact buffer takes these
    mapped.delete(ids[:10])
    assert mapped.describe()["untrained_buffer"] == 2000
    got = mapped.search(x[[0, 5, 6000, 7999]], k=1)
    assert [hs[0].id for hs in got][2:] == [6000, 7999] and got[0][0].id != 0
    before = snap.stat().st_mtime_ns
    mapped.save()  # nothing to write: the snapshot is what is mapped
    assert snap.stat().st_mtime_ns == before
    mapped.close()
    again = VectorIndex.open(tmp_path / "m", mmap=True)  # replays the newer rows into the buffer
    assert len(again) == 7990 and again.describe()["untrained_buffer"] == 2000
    again.compact()  # folds them into a new snapshot, mapped again
    d = again.describe()
    assert d["storage"] == "mmap" and d["untrained_buffer"] == 0 and d["size"] == 7990
    assert recall_of(again, q, x[10:], ids[10:]) > 0.8
    again.close()


def test_auto_thresholds_are_validated_and_stored(tmp_path):
    for bad in [(0, 5), (10, 5), ("a", 3), (1,)]:
        with pytest.raises(StiltsError) as e:
            VectorIndex.create(None, DIM, kind="auto", auto_thresholds=bad)
        assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == "auto_thresholds"
    idx = VectorIndex.create(tmp_path / "t", DIM, kind="auto", auto_thresholds=(50, 500))
    idx.close()
    assert VectorIndex.open(tmp_path / "t").describe()["auto_thresholds"] == [50, 500]
    assert os.path.isdir(tmp_path / "t")


def test_auto_rebuilds_its_ivf_tier_as_it_grows():
    idx = VectorIndex.create(None, DIM, kind="auto", auto_thresholds=(1000, 10**9))
    x = embedding_like(6000)
    idx.add(np.arange(1200), x[:1200])
    assert idx.wait_for_rebuild(timeout=60)
    assert idx.describe()["factory"] == f"IVF{fx.nlist_for(1200)},Flat"
    idx.add(np.arange(1200, 4000), x[1200:4000])  # < 4 x 1200: stays
    assert idx.wait_for_rebuild(timeout=60)
    assert idx.describe()["factory"] == f"IVF{fx.nlist_for(1200)},Flat"
    idx.add(np.arange(4000, 6000), x[4000:6000])  # > 4 x 1200: nlist for the new size
    assert idx.wait_for_rebuild(timeout=60)
    d = idx.describe()
    assert d["factory"] == f"IVF{fx.nlist_for(6000)},Flat" and d["last_build"]["background"]
    got = idx.search(x[::500], k=1, nprobe=64)
    assert [hs[0].id for hs in got] == list(range(0, 6000, 500))
    idx.close()
