"""stilts.index.VectorIndex on real FAISS and SQLite: exactness, persistence, deletes, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stilts.errors import ErrorCode, StiltsError
from stilts.index import Document, Hit, VectorIndex
from stilts.index import factory as fx

DIM = 32


def clustered(n: int, dim: int = DIM, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Normalised points around random centres (embedding-like, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(q: np.ndarray, x: np.ndarray, ids: np.ndarray, k: int):
    sims = q @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(sims, order, 1)


def docs_for(ids, langs=("de", "en", "fr")):
    return [
        Document(int(i), f"text {i}", langs[j % len(langs)], {"n": int(i), "tag": ["a", "ü"]})
        for j, i in enumerate(ids)
    ]


def test_flat_matches_numpy_brute_force(tmp_path):
    x = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 1_000_003 + 2**40  # 64-bit ids
    q = clustered(20, seed=1)
    idx = VectorIndex.create(tmp_path / "i", DIM, kind="flat")
    assert idx.add(ids, x, docs_for(ids)) == 2000
    hits = idx.search(q, k=10)
    want_ids, want_scores = brute(q, x, ids, 10)
    for row, hs in enumerate(hits):
        assert all(isinstance(h, Hit) for h in hs)
        assert [h.id for h in hs] == want_ids[row].tolist()
        np.testing.assert_allclose([h.score for h in hs], want_scores[row], atol=1e-5)
    top = hits[0][0]
    assert top.text == f"text {top.id}" and top.metadata == {"n": top.id, "tag": ["a", "ü"]}
    assert idx.recall(k=10, sample=100) == 1.0
    idx.delete(ids[:10])
    blocks = list(idx.iter_documents(block=300))
    assert [d.id for docs, _ in blocks for d in docs] == ids[10:].tolist()
    np.testing.assert_allclose(np.concatenate([v for _, v in blocks]), x[10:], atol=1e-6)
    idx.close()


def test_persistence_replays_rows_newer_than_the_snapshot(tmp_path):
    x = clustered(600)
    path = tmp_path / "idx"
    idx = VectorIndex.create(path, DIM, kind="flat")
    idx.add(np.arange(300), x[:300], docs_for(range(300)))
    idx.save()
    # After the snapshot: more adds and a delete, then the process "dies" (no save, no close).
    idx.add(np.arange(300, 600), x[300:], docs_for(range(300, 600)))
    assert idx.delete([5, 6, 7, 123456]) == 3
    del idx
    assert not list(path.glob("*.tmp")), "save leaves no temp file"

    again = VectorIndex.open(path)
    assert len(again) == 597
    assert again.get([5, 300, 599, 42]) == [
        None,
        Document(300, "text 300", "de", {"n": 300, "tag": ["a", "ü"]}),
        Document(599, "text 599", "fr", {"n": 599, "tag": ["a", "ü"]}),
        Document(42, "text 42", "de", {"n": 42, "tag": ["a", "ü"]}),
    ]
    live = np.array([i for i in range(600) if i not in (5, 6, 7)])
    q = x[[5, 310, 599]]
    want, _ = brute(q, x[live], live, 5)
    assert [[h.id for h in hs] for hs in again.search(q, k=5)] == want.tolist()
    again.close()


def test_save_is_atomic_and_ignores_stray_temp_files(tmp_path):
    x = clustered(100)
    idx = VectorIndex.create(tmp_path, DIM, kind="hnsw")
    idx.add(np.arange(100), x)
    idx.save()
    snapshot = (tmp_path / "index.faiss").read_bytes()
    # A crash while writing the next snapshot leaves a half-written temp file behind.
    (tmp_path / ".index.faiss.99999.tmp").write_bytes(snapshot[: len(snapshot) // 2])
    idx.add([100], clustered(1, seed=5))
    idx.close()
    again = VectorIndex.open(tmp_path)
    assert len(again) == 101
    assert again.search(clustered(1, seed=5), k=1)[0][0].id == 100
    again.close()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "IVF16,Flat"])
def test_delete_and_readd_per_kind(tmp_path, kind):
    x = clustered(1500)
    idx = VectorIndex.create(tmp_path / "i", DIM, kind=kind, train_size=1000)
    idx.add(np.arange(1500), x)
    assert idx.describe()["trained"]
    assert idx.delete(np.arange(0, 1500, 2)) == 750
    assert len(idx) == 750
    found = {h.id for hs in idx.search(x[:50], k=5, nprobe=64) for h in hs}
    assert found and all(i % 2 == 1 for i in found), "deleted ids never come back"
    # Re-adding a deleted id works and finds the new vector.
    idx.add([0], x[1:2])
    assert idx.search(x[1:2], k=2, nprobe=64)[0][0].id in (0, 1)
    idx.save()
    idx.close()
    again = VectorIndex.open(tmp_path / "i")
    found = {h.id for hs in again.search(x[:50], k=5, nprobe=64) for h in hs}
    assert all(i % 2 == 1 or i == 0 for i in found)
    again.close()


def test_hnsw_tombstones_are_filtered_and_compacted(tmp_path):
    x = clustered(1000)
    idx = VectorIndex.create(None, DIM, kind="hnsw")
    idx.add(np.arange(1000), x)
    idx.delete(np.arange(100))
    d = idx.describe()
    assert d["tombstones"] == 100 and d["size"] == 900
    hits = idx.search(x[:100], k=3)
    assert all(h.id >= 100 for hs in hits for h in hs)
    idx.compact()
    assert idx.describe()["tombstones"] == 0
    # Past 20% tombstones the index compacts itself.
    idx.delete(np.arange(100, 400))
    assert idx.describe()["tombstones"] == 0 and len(idx) == 600


def test_reading_an_existing_id_is_already_exists_unless_upsert():
    x = clustered(10)
    idx = VectorIndex.create(None, DIM, kind="flat")
    idx.add(np.arange(5), x[:5])
    with pytest.raises(StiltsError) as e:
        idx.add([4, 5], x[5:7])
    assert e.value.code is ErrorCode.ALREADY_EXISTS and e.value.field == "ids"
    assert len(idx) == 5, "a refused batch adds nothing"
    idx.add([4, 5], x[5:7], [Document(4, "new"), Document(5, "five")], upsert=True)
    assert len(idx) == 6
    assert idx.get([4])[0].text == "new"
    hit = idx.search(x[5:6], k=1)[0][0]
    assert hit.id == 4 and hit.score == pytest.approx(1.0, abs=1e-5)


def test_language_filter_exact_and_selector_paths():
    x = clustered(6000)
    ids = np.arange(6000)
    langs = ["de"] * 100 + ["en"] * 5900  # de: few rows (exact path); en: selector path
    idx = VectorIndex.create(None, DIM, kind="hnsw")
    idx.add(ids, x, [Document(int(i), "", lang) for i, lang in zip(ids, langs, strict=True)])
    q = clustered(5, seed=9)
    for wanted, rows in (("de", np.arange(100)), ("en", np.arange(100, 6000))):
        hits = idx.search(q, k=5, languages=[wanted], ef_search=256)
        assert all(h.language == wanted for hs in hits for h in hs)
        want, _ = brute(q, x[rows], ids[rows], 5)
        got = [[h.id for h in hs] for hs in hits]
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, want, strict=True)])
        assert overlap >= 0.9
    assert idx.search(q, k=5, languages=["xx"]) == [[] for _ in range(5)]


def test_untrained_kinds_search_exactly_until_trained():
    x = clustered(3000)
    idx = VectorIndex.create(None, DIM, kind="ivf", train_size=2000)
    idx.add(np.arange(500), x[:500])
    d = idx.describe()
    assert not d["trained"] and d["untrained_buffer"] == 500
    want, _ = brute(x[:3], x[:500], np.arange(500), 4)
    assert [[h.id for h in hs] for hs in idx.search(x[:3], k=4)] == want.tolist()
    idx.add(np.arange(500, 3000), x[500:])
    d = idx.describe()
    assert d["trained"] and d["untrained_buffer"] == 0
    assert d["params"]["nlist"] == fx.nlist_for(3000)


def test_recall_check_and_per_query_nprobe():
    x = clustered(20000, clusters=200)
    idx = VectorIndex.create(None, DIM, kind="ivf", train_size=20000)
    idx.add(np.arange(20000), x)
    nlist = idx.describe()["params"]["nlist"]
    low = idx.recall(k=10, sample=200, nprobe=1)
    full = idx.recall(k=10, sample=200, nprobe=nlist)
    assert full == pytest.approx(1.0)
    assert low < 0.95 < idx.recall(k=10, sample=200, nprobe=32)
    # With real (not stored) queries the figure equals one computed here from search() + numpy.
    q = clustered(100, clusters=200, seed=11)
    got = [[h.id for h in hs] for hs in idx.search(q, k=10, nprobe=1)]
    want, _ = brute(q, x, np.arange(20000), 10)
    mine = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert idx.recall(k=10, queries=q, nprobe=1) == pytest.approx(mine)
    assert mine < low, "stored vectors as queries read higher (they find themselves)"
    assert idx.describe()["params"]["nprobe"] == fx.nprobe_for(nlist)


def test_auto_leaves_exact_search_past_the_threshold(monkeypatch):
    monkeypatch.setattr(fx, "AUTO_EXACT_MAX", 3000)
    idx = VectorIndex.create(None, DIM, kind="auto")
    idx.add(np.arange(3000), clustered(3000))
    assert idx.describe()["factory"] == "Flat"
    idx.add(np.arange(3000, 4000), clustered(1000, seed=3))
    d = idx.describe()
    assert d["factory"] == f"IVF{fx.nlist_for(4000)},Flat" and d["size"] == 4000
    assert idx.recall(k=10, sample=100) > 0.8


def test_manifest_and_dimension_are_enforced(tmp_path, default_model_dir):
    from stilts.manifest import Manifest

    manifest = Manifest.load(default_model_dir)
    idx = VectorIndex.create(tmp_path / "m", manifest.dim, manifest=manifest.to_dict())
    v = clustered(3, dim=manifest.dim)
    idx.add([1, 2, 3], v, fingerprint=manifest.fingerprint)
    with pytest.raises(StiltsError) as e:
        idx.add([4], clustered(1, dim=manifest.dim), fingerprint="0123456789abcdef")
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    with pytest.raises(StiltsError) as e:
        idx.add([4], clustered(1, dim=16))
    assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == "vectors"
    with pytest.raises(StiltsError) as e:
        idx.search(clustered(1, dim=16))
    assert e.value.field == "queries"
    idx.save()
    idx.close()
    again = VectorIndex.open(tmp_path / "m")
    d = again.describe()
    assert d["model"] == manifest.name and d["fingerprint"] == manifest.fingerprint
    assert d["dim"] == manifest.dim and d["size"] == 3 and d["device"] == "cpu"
    again.check_manifest(manifest.to_dict())
    other = Manifest.from_dict({**manifest.to_dict(), "layer": manifest.layer + 1})
    with pytest.raises(StiltsError) as e:
        again.check_manifest(other)
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    with pytest.raises(StiltsError) as e:
        VectorIndex.create(tmp_path / "n", 16, manifest=manifest.to_dict())
    assert e.value.field == "dim"
    with pytest.raises(StiltsError) as e:
        VectorIndex.create(tmp_path / "m", manifest.dim)
    assert e.value.code is ErrorCode.ALREADY_EXISTS
    again.close()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda i: i.add([1], np.full((1, DIM), np.nan, np.float32)), "vectors"),
        (lambda i: i.add([1], np.zeros((1, DIM), np.float32)), "vectors"),
        (lambda i: i.add([1, 1], clustered(2)), "ids"),
        (lambda i: i.add([1.5], clustered(1)), "ids"),
        (lambda i: i.add([1], clustered(2)), "vectors"),
        (lambda i: i.add([1], clustered(1), [Document(2)]), "docs"),
        (lambda i: i.add([1], clustered(1), [Document(1, metadata={"x": {1, 2}})]), "metadata"),
        (lambda i: i.search(clustered(1), k=0), "k"),
        (lambda i: i.search(clustered(1), scoring="csls"), "scoring"),
        (lambda i: i.search(clustered(1), languages="de"), "languages"),
        (lambda i: i.search(clustered(1), nprobe=0), "nprobe"),
        (lambda i: VectorIndex.create(None, 0), "dim"),
        (lambda i: VectorIndex.create(None, DIM, kind="IVF_nonsense"), "kind"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(call, field):
    idx = VectorIndex.create(None, DIM, kind="flat")
    idx.add([100], clustered(1, seed=4))
    with pytest.raises(StiltsError) as e:
        call(idx)
    assert e.value.code is ErrorCode.INVALID_ARGUMENT
    assert e.value.field == field
    assert len(idx) == 1


def test_margin_without_reference_and_closed_index_fail_cleanly(tmp_path):
    idx = VectorIndex.create(tmp_path / "c", DIM)
    idx.add([1, 2], clustered(2))
    with pytest.raises(StiltsError) as e:
        idx.search(clustered(1), scoring="margin")
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    idx.close()
    with pytest.raises(StiltsError) as e:
        idx.search(clustered(1))
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    with pytest.raises(StiltsError) as e:
        VectorIndex.open(tmp_path / "missing")
    assert e.value.code is ErrorCode.NOT_FOUND


def test_margin_ranks_hubs_down():
    """Queries from another "language" (a shared offset) make documents near that offset hubs:
    they win on cosine for many queries and lose under margin scoring."""
    rng = np.random.default_rng(0)
    shift = rng.standard_normal(DIM).astype(np.float32)
    shift /= np.linalg.norm(shift)
    x = clustered(400, clusters=400)
    hubs = shift + 0.3 * rng.standard_normal((3, DIM)).astype(np.float32) / np.sqrt(DIM)
    noise = 0.5 * rng.standard_normal((100, DIM)).astype(np.float32) / np.sqrt(DIM)
    queries = x[:100] + shift + noise  # query i is the "translation" of document i
    idx = VectorIndex.create(None, DIM, kind="flat")
    idx.add(np.arange(400), x)
    idx.add([1000, 1001, 1002], hubs)
    cosine_top = np.array([hs[0].id for hs in idx.search(queries, k=1)])
    idx.set_margin_reference(queries, k=4)
    margin_hits = idx.search(queries, k=3, scoring="margin")
    margin_top = np.array([hs[0].id for hs in margin_hits])
    assert (cosine_top >= 1000).sum() >= 20, "the set-up has hubs"
    assert (margin_top >= 1000).sum() <= (cosine_top >= 1000).sum() // 5
    right = np.arange(100)
    assert (margin_top == right).mean() >= (cosine_top == right).mean() + 0.3
    assert all(hs[0].score >= hs[1].score >= hs[2].score for hs in margin_hits)
    # Margin = cos / mean of the two sides' k-NN means, computed here independently.
    doc = x[7]
    r_doc = np.sort(queries @ doc / np.linalg.norm(queries, axis=1))[-4:].mean()
    qn = queries[7] / np.linalg.norm(queries[7])
    r_q = np.sort(qn @ (queries / np.linalg.norm(queries, axis=1, keepdims=True)).T)[-4:].mean()
    want = float(qn @ doc) / ((r_q + r_doc) / 2)
    got = {h.id: h.score for h in idx.search(queries[7:8], k=20, scoring="margin")[0]}
    assert got[7] == pytest.approx(want, rel=1e-4)
    # Documents added after the reference get their margin term too.
    idx.add([2000], x[7:8] * 0.999 + x[8:9] * 0.001)
    assert {h.id for h in idx.search(queries[7:8], k=2, scoring="margin")[0]} == {7, 2000}


def test_concurrent_searches_and_writes():
    x = clustered(3000)
    idx = VectorIndex.create(None, DIM, kind="hnsw")
    idx.add(np.arange(1000), x[:1000])
    errors = []

    def searcher():
        try:
            for _ in range(30):
                hs = idx.search(x[:8], k=5)
                assert all(len(h) == 5 for h in hs)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(1000, 3000, 250):
        idx.add(np.arange(start, start + 250), x[start : start + 250])
        idx.delete([start - 1])
    for t in threads:
        t.join()
    assert not errors
    assert len(idx) == 3000 - 8


def test_self_reference_margin_excludes_the_document_itself():
    """CSLS-style reference = the index itself: r(doc) averages its k nearest *other* docs."""
    x = clustered(60, clusters=6)
    q = clustered(3, clusters=6, seed=8)
    idx = VectorIndex.create(None, DIM, kind="flat")
    idx.add(np.arange(60), x)
    idx.set_margin_reference(None, k=3)
    assert idx.describe()["margin"] == {"k": 3, "reference": 60}
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    r_doc = np.sort(sims, axis=1)[:, -3:].mean(axis=1)
    r_q = np.sort(q @ x.T, axis=1)[:, -3:].mean(axis=1)
    for qi, hits in enumerate(idx.search(q, k=5, scoring="margin")):
        for h in hits:
            want = float(q[qi] @ x[h.id]) / ((r_q[qi] + r_doc[h.id]) / 2)
            assert h.score == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_unreadable_snapshot_is_rebuilt_from_the_database(tmp_path, kind):
    x = clustered(1200)
    idx = VectorIndex.create(tmp_path, DIM, kind=kind, train_size=1000)
    idx.add(np.arange(1200), x, docs_for(range(1200)))
    idx.set_margin_reference(x[:100], k=4)
    idx.save()
    idx.close()
    (tmp_path / "index.faiss").write_bytes(b"not a faiss index")
    again = VectorIndex.open(tmp_path)
    d = again.describe()
    assert d["size"] == 1200 and d["trained"] and d["margin"] == {"k": 4, "reference": 100}
    assert again.search(x[7:8], k=1, nprobe=64)[0][0].id == 7
    assert again.get([7])[0].text == "text 7"
    again.close()


def test_create_in_an_unusable_path_names_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StiltsError) as e:
        VectorIndex.create(tmp_path / "file" / "idx", DIM)
    assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == "path"
