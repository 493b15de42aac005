"""``stilts mine --engine ray`` on local Ray (2 CPUs) writes the same file as the local engine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import ray  # the ray extra: `make test` installs it, so CI runs these tests (no skip)
from conftest import clustered_pairs, set_ray_auth_mode

from stilts.index import knn as knn_mod
from stilts.index import ray_engine
from stilts.index.minefiles import mine_files
from stilts.index.minevectors import mine_vector_files
from stilts.index.threads import omp_threads

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    prior = os.environ.get("RAY_AUTH_MODE")
    ray_engine.init(None, num_cpus=2)
    yield
    ray.shutdown()
    set_ray_auth_mode(prior)  # local Ray turned token authentication on for the whole process


def write_subset(dev_pack: Path, lang: str, side: str, n: int, out: Path) -> Path:
    path = dev_pack / "bucc" / f"{lang}-en" / f"{lang}-en.training.{side}"
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_ray_knn_equals_local_blocked_knn(local_ray):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, 16)).astype(np.float32)
    db = rng.standard_normal((1000, 16)).astype(np.float32)
    want = knn_mod.knn(q, db, 5, block_size=64, shard_size=128)
    got = ray_engine.knn(q, db, 5, block_size=64, shard_size=128)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


def test_ray_engine_writes_the_local_engines_output(local_ray, dev_pack, encoder, tmp_path):
    src = write_subset(dev_pack, "de", "de", 120, tmp_path / "de.txt")
    tgt = write_subset(dev_pack, "de", "en", 140, tmp_path / "en.txt")
    opts = dict(model=encoder, chunk_size=32, shard_size=50, block_size=40, progress=False)
    local = mine_files(src, tgt, tmp_path / "local.tsv", engine="local", **opts)
    remote = mine_files(src, tgt, tmp_path / "ray.tsv", engine="ray", **opts)
    assert remote["engine"] == "ray" and remote["src"]["cached_chunks_reused"] == 0
    assert remote["src"]["chunks"] == 4 and remote["tgt"]["chunks"] == 5
    assert (tmp_path / "ray.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()
    assert local["pairs"] == remote["pairs"] > 50
    # The Ray run filled its own cache: the vectors are bit-identical to the local ones.
    for side in ("src", "tgt"):
        a = np.load(local[side]["cache"])
        b = np.load(remote[side]["cache"])
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_ray_approximate_mining_writes_the_local_engines_bytes(local_ray, tmp_path, kind):
    # ivf/ivfpq: trained on the driver, each shard's lists filled and scanned by a Ray task at
    # the driver's preassigned lists (ivfpq: PQ candidates merged, then re-ranked exactly);
    # hnsw has no lists to shard and runs on the driver.
    x, y = clustered_pairs(2000, 64)
    src, tgt = tmp_path / "src.npy", tmp_path / "tgt.npy"
    np.save(src, x)
    np.save(tgt, y)
    opts = dict(index=kind, nprobe=1, block_size=700, shard_size=500, progress=False)
    # FAISS on 1 thread here as in the 1-CPU Ray workers (see test_ray_cluster.py): BLAS rounds
    # differently between thread counts, and training and list scans use BLAS.
    with omp_threads(1):
        local = mine_vector_files(src, tgt, tmp_path / "local.tsv", engine="local", **opts)
        remote = mine_vector_files(src, tgt, tmp_path / "ray.tsv", engine="ray", **opts)
    assert remote["engine"] == "ray" and local["pairs"] == remote["pairs"] > 1500
    assert (tmp_path / "ray.tsv").read_bytes() == (tmp_path / "local.tsv").read_bytes()

    if kind != "hnsw":  # one list probed: approximate, so the shards' lists did the work
        exact = mine_vector_files(src, tgt, tmp_path / "exact.tsv", index="flat", progress=False)
        assert exact["pairs"] > 1500
        assert (tmp_path / "exact.tsv").read_bytes() != (tmp_path / "local.tsv").read_bytes()
