"""Faults a server meets in production, on real files and a real gRPC server on loopback: a full
disk (a size-limited tmpfs; needs the right to mount, else skipped with the reason), flipped bytes
and truncation of every file kind the project writes, and kill -9 during a snapshot write.

Each test asserts the status code, the message, and that nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import IN_CI

from stilts.client import Client, Document, RemoteError
from stilts.errors import ErrorCode, StiltsError

LOG_NAME = "stilts"


def sentence(i: int) -> str:
    words = "apple river mountain window garden yellow engine letter winter music doctor bridge"
    w = words.split()
    return f"Record {i}: " + " ".join(w[(i + j) % len(w)] for j in range(8)) + "."


# --- a small file system ------------------------------------------------------------------------


@contextlib.contextmanager
def small_fs(where: Path, size: str):
    """Mount a tmpfs of ``size`` at ``where`` (skip the test when this process may not mount)."""
    where.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount"):
        pytest.skip("no mount command: the full-disk tests need a size-limited tmpfs")
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if got.returncode != 0:
        reason = "cannot mount a size-limited tmpfs here (root with CAP_SYS_ADMIN is needed): " + (
            got.stderr.strip() or f"exit {got.returncode}"
        )
        if IN_CI:  # CI runs as root on the same machines as development, where mounting works
            pytest.fail(reason + " (CI=true: the full-disk tests must run)")
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full; returns it (delete it to free space)."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def assert_disk_full(err: BaseException, directory: Path) -> None:
    assert isinstance(err, RemoteError | StiltsError), repr(err)
    status = getattr(err, "status", None)
    if status is not None:
        assert status == grpc.StatusCode.RESOURCE_EXHAUSTED, str(err)
    assert err.code is ErrorCode.RESOURCE_EXHAUSTED, str(err)
    assert str(directory) in err.message, err.message
    assert "the disk is full" in err.message, err.message
    assert "rollback" not in err.message.lower(), err.message


# --- full disk: server --------------------------------------------------------------------------


def test_full_disk_fails_the_write_keeps_serving_and_recovers_without_restart(
    tmp_path, encoder, caplog
):
    from stilts.server import start_server

    with small_fs(tmp_path / "fs", "6m") as fs:
        data = fs / "data"
        srv = start_server(data, encoders={"default": encoder}, metrics_port=-1)
        stopped = False
        try:
            with Client(srv.address, timeout=60) as c:
                c.create_index("t")
                c.add_documents("t", [Document(i, sentence(i), "en") for i in range(20)])
                assert srv.indexes.save() == 1  # a snapshot holding the 20
                snap = data / "t" / "index.faiss"
                before = snap.read_bytes()
                filler = fill(fs)

                with pytest.raises(RemoteError) as got:
                    c.add_documents("t", [Document(i, sentence(i), "en") for i in range(20, 420)])
                assert_disk_full(got.value, data)
                with pytest.raises(RemoteError) as got:
                    c.create_index("u")
                assert_disk_full(got.value, data)

                # still serving; acknowledged documents there, nothing of the failed request
                hits = c.search("t", [sentence(3)], k=1)[0]
                assert hits[0].id == 3
                assert c.describe_index("t").documents == 20
                assert c.get_documents("t", [0, 19, 20, 419])[2:] == [None, None]
                assert all(d is not None for d in c.get_documents("t", range(20)))

                # a snapshot round on the full disk: one clear line, the old snapshot kept
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger=LOG_NAME):
                    srv.indexes.get("t").writes += 1
                    assert srv.indexes.save() == 0
                lines = [r for r in caplog.records if "snapshot" in r.getMessage()]
                assert len(lines) == 1, [r.getMessage() for r in caplog.records]
                assert lines[0].exc_info is None
                assert "the disk is full" in lines[0].getMessage()
                assert "Traceback" not in lines[0].getMessage()
                assert snap.read_bytes() == before
                assert not list((data / "t").glob(".index.faiss.*"))

                # space freed: the same server writes again
                filler.unlink()
                assert c.add_documents("t", [Document(500, sentence(500), "en")]).added == 1
                assert c.describe_index("t").documents == 21
                c.create_index("u")

                # full again at shutdown: the snapshot fails with one line, the server stops
                filler = fill(fs)
                caplog.clear()
                with caplog.at_level(logging.WARNING, logger=LOG_NAME):
                    srv.stop()
                    stopped = True
                for name in ("t", "u"):  # one line per index, no traceback
                    lines = [r for r in caplog.records if f"index {name!r}" in r.getMessage()]
                    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
                    assert lines[0].exc_info is None
                    assert "the disk is full" in lines[0].getMessage()
                assert snap.read_bytes() == before
                filler.unlink()
        finally:
            if not stopped:
                srv.stop()

        srv = start_server(data, encoders={"default": encoder}, metrics_port=-1)
        try:
            with Client(srv.address, timeout=60) as c:
                assert c.describe_index("t").documents == 21
                got = c.get_documents("t", [*range(20), 500])
                assert [d.id for d in got] == [*range(20), 500]
                assert c.search("t", [sentence(500)], k=1)[0][0].id == 500
        finally:
            srv.stop()


# --- full disk: stilts mine ---------------------------------------------------------------------


def stilts_mine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stilts.cli", "-q", "mine", "--quiet", "--precision", "int8", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_stilts_mine_on_a_full_disk_exits_non_zero_and_resumes_after_space_is_freed(
    tmp_path, default_model_dir
):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("".join(sentence(i) + "\n" for i in range(30)), encoding="utf-8")
    tgt.write_text("".join(sentence(i).upper() + "\n" for i in range(30)), encoding="utf-8")
    cache = tmp_path / "cache"
    with small_fs(tmp_path / "fs", "1m") as fs:
        # the caches on a full disk: a clear error, not a crash in the memory map
        filler = fill(fs)
        got = stilts_mine(str(src), str(tgt), "-o", str(tmp_path / "p.tsv"), "--cache-dir", str(fs))
        assert got.returncode == 2, got.stderr[-2000:]
        assert f"{fs}: the disk is full" in got.stderr, got.stderr[-2000:]
        assert "Traceback" not in got.stderr
        filler.unlink()

        # the pairs on a full disk: encoded and cached, then the write fails
        out = fs / "pairs.tsv"
        filler = fill(fs)
        got = stilts_mine(str(src), str(tgt), "-o", str(out), "--cache-dir", str(cache))
        assert got.returncode == 2, got.stderr[-2000:]
        assert f"{fs}: the disk is full" in got.stderr and "pairs.tsv" in got.stderr
        assert "Traceback" not in got.stderr
        assert not out.exists() and not list(fs.glob(".pairs.tsv.*"))

        filler.unlink()  # space freed: the same command resumes from the caches
        got = stilts_mine(str(src), str(tgt), "-o", str(out), "--cache-dir", str(cache))
        assert got.returncode == 0, got.stderr[-2000:]
        summary = json.loads((fs / "pairs.tsv.json").read_text())
        assert summary["src"]["cached_chunks_reused"] == summary["src"]["chunks"] == 1
        assert summary["tgt"]["cached_chunks_reused"] == 1
        assert len(out.read_text().splitlines()) >= 25


# --- damaged files ------------------------------------------------------------------------------


def flip_bytes(path: Path, n: int = 50, start: int = 0, seed: int = 0) -> None:
    """Invert ``n`` bytes spread over ``path`` from ``start`` on (a bad disk, a partial copy)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.choice(np.arange(start, len(data)), size=n, replace=False):
        data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, fraction: float = 0.5) -> None:
    size = path.stat().st_size
    with open(path, "rb+") as f:
        f.truncate(int(size * fraction))


def unit_rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_snapshot_is_rebuilt_from_the_store_with_a_warning(tmp_path, caplog, damage):
    from stilts.index import VectorIndex

    x = unit_rows(300)
    with VectorIndex.create(tmp_path / "ix", 32, kind="flat") as idx:
        idx.add(np.arange(300), x)
    snap = tmp_path / "ix" / "index.faiss"
    if damage == "flip":  # the vectors, not the header: FAISS reads garbage without a word
        flip_bytes(snap, 50, start=snap.stat().st_size // 4)
    else:
        truncate(snap)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG_NAME):
        idx = VectorIndex.open(tmp_path / "ix", device="cpu")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(snap) in m and "rebuilding" in m for m in warned), warned
    try:
        assert len(idx) == 300
        hits = idx.search(x, k=1)
        assert [h[0].id for h in hits] == list(range(300))  # every vector finds itself
        assert all(abs(h[0].score - 1.0) < 1e-4 for h in hits)
    finally:
        idx.close()
    # the damaged file was replaced: the next open is quiet
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG_NAME):
        VectorIndex.open(tmp_path / "ix", device="cpu").close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_store_is_refused_and_the_other_indices_serve(tmp_path, encoder, damage):
    from stilts.server import start_server

    data = tmp_path / "data"
    srv = start_server(data, encoders={"default": encoder}, metrics_port=-1)
    try:
        with Client(srv.address, timeout=60) as c:
            for name in ("bad", "good"):
                c.create_index(name)
                c.add_documents(name, [Document(i, sentence(i), "en") for i in range(300)])
    finally:
        srv.stop()
    db = data / "bad" / "index.sqlite"
    if damage == "flip":  # the b-tree page headers of every page after the first
        raw = bytearray(db.read_bytes())
        for page in range(1, len(raw) // 4096):
            for off in range(8):
                raw[page * 4096 + off] ^= 0xFF
        db.write_bytes(bytes(raw))
    else:
        truncate(db, 0.6)

    srv = start_server(data, encoders={"default": encoder}, metrics_port=-1)
    try:
        with Client(srv.address, timeout=60) as c:
            assert c.search("good", [sentence(7)], k=1)[0][0].id == 7
            assert c.describe_index("good").documents == 300
            with pytest.raises(RemoteError) as got:
                c.search("bad", [sentence(7)], k=1)
            assert got.value.status == grpc.StatusCode.FAILED_PRECONDITION, str(got.value)
            assert str(db) in got.value.message
            assert "damaged" in got.value.message
    finally:
        srv.stop()


@pytest.mark.parametrize("damage", ["flip", "truncate", "state"])
def test_damaged_mining_cache_is_recomputed_never_used(tmp_path, encoder, caplog, damage):
    from stilts.index.embcache import Cache, encode_local
    from stilts.index.scan import scan

    src = tmp_path / "src.txt"
    src.write_text("".join(sentence(i) + "\n" for i in range(40)), encoding="utf-8")
    side = scan(src, "auto", False)
    key = {"fingerprint": encoder.manifest.fingerprint, "precision": encoder.precision}
    cache = Cache(tmp_path / "cache", side, key, encoder.dim, 8)
    encode_local(encoder, side, cache, 16, False)
    clean = np.array(cache.vectors())
    del cache

    npy = next((tmp_path / "cache").glob("emb-*.npy"))
    if damage == "flip":  # bytes of chunk 2 (rows 16-23) only
        row_bytes = encoder.dim * 4
        header = npy.stat().st_size - 40 * row_bytes
        raw = bytearray(npy.read_bytes())
        for pos in range(header + 17 * row_bytes, header + 17 * row_bytes + 50):
            raw[pos] ^= 0xFF
        npy.write_bytes(bytes(raw))
    elif damage == "truncate":
        truncate(npy, 0.7)
    else:
        state = npy.with_suffix(".json")
        state.write_text(state.read_text()[:-7])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG_NAME):
        cache = Cache(tmp_path / "cache", side, key, encoder.dim, 8)
    assert any(str(npy) in r.getMessage() for r in caplog.records), caplog.records
    # flipped: that chunk; cut at 70%: the chunks past the cut (numpy pads the file back with
    # zeros, which fail their check); a damaged state file: everything
    assert cache.todo() == {"flip": [2], "truncate": [3, 4], "state": [0, 1, 2, 3, 4]}[damage]
    encode_local(encoder, side, cache, 16, False)
    np.testing.assert_allclose(cache.vectors(), clean, atol=1e-6)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("name", ["model.q4.onnx", "tokenizer.json"])
def test_damaged_model_file_is_refused_when_loaded(tmp_path, default_model_dir, damage, name):
    from stilts import Encoder

    model = tmp_path / "model"
    model.mkdir()
    for f in ("stilts.json", "tokenizer.json", "model.q4.onnx"):
        shutil.copy(default_model_dir / f, model / f)
    Encoder(model, precision="q4").encode(["ok"])  # the copy loads
    if damage == "flip":
        flip_bytes(model / name, 50, start=(model / name).stat().st_size // 2)
    else:
        truncate(model / name, 0.9)
    with pytest.raises(StiltsError) as got:
        Encoder(model, precision="q4")
    assert got.value.code is ErrorCode.FAILED_PRECONDITION
    assert str(model / name) in got.value.message
    assert "sha256" in got.value.message


# --- kill -9 during a snapshot ------------------------------------------------------------------

SAVER = """
import sys, numpy as np
from stilts.index import VectorIndex
path, dim = sys.argv[1], 384
rng = np.random.default_rng(0)
idx = VectorIndex.create(path, dim, kind="flat", device="cpu")
n = 0
while True:
    step = 60000 if n == 0 else 500
    idx.add(np.arange(n, n + step), rng.standard_normal((step, dim)).astype(np.float32))
    n += step
    print(n, flush=True)  # acknowledged: committed to index.sqlite
    idx.save()
"""


@pytest.mark.slow
def test_kill_9_during_a_snapshot_write_loses_nothing_and_leaves_nothing(tmp_path, caplog):
    from stilts.index import VectorIndex

    path = tmp_path / "ix"
    child = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    acked = 0
    try:
        while acked < 61000:  # past the first snapshot: a previous one lies beside the new
            acked = int(child.stdout.readline())
        deadline = time.monotonic() + 60
        while not list(path.glob(".index.faiss.*.tmp")):  # a snapshot being written
            assert time.monotonic() < deadline, "no snapshot write seen"
            assert child.poll() is None
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        acked = max([acked, *(int(line) for line in child.stdout.read().split())])
    finally:
        child.kill()
        child.wait()
    assert list(path.glob(".index.faiss.*.tmp")), "killed outside the snapshot write"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOG_NAME):
        idx = VectorIndex.open(path, device="cpu")
    try:
        assert len(idx) >= acked
        assert idx.get([0, acked - 1]) != [None, None]
        assert not list(path.glob(".index.faiss.*")), "the half-written snapshot was left"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
        q = idx.vectors([acked - 1])
        assert idx.search(q, k=1)[0][0].id == acked - 1
    finally:
        idx.close()


@pytest.mark.slow
def test_server_killed_during_its_shutdown_snapshot_keeps_every_acknowledged_document(
    tmp_path, encoder
):
    from stilts.server import start_server
    from stilts.server.indexes import build_index

    data = tmp_path / "data"
    n, dim = 60000, encoder.dim
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    docs = [Document(i, f"bulk {i}", "en") for i in range(n)]
    manifest = encoder.manifest.to_dict()
    build_index(data, "big", "default", manifest, [(np.arange(n), vectors, docs)], kind="flat")

    srv = start_server(data, subprocess=True, metrics_port=-1, grace_seconds=30)
    try:
        with Client(srv.address, timeout=60) as c:
            new = [Document(n + i, sentence(i), "en") for i in range(20)]
            assert c.add_documents("big", new).added == 20  # acknowledged
        srv.proc.send_signal(signal.SIGTERM)  # drain, then the shutdown snapshot
        snap_dir = data / "big"
        deadline = time.monotonic() + 60
        while not list(snap_dir.glob(".index.faiss.*.tmp")):
            assert time.monotonic() < deadline and srv.proc.poll() is None, "no snapshot seen"
            time.sleep(0.001)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(30)
    finally:
        srv.kill()

    srv = start_server(data, subprocess=True, metrics_port=-1, grace_seconds=30)
    try:
        with Client(srv.address, timeout=60) as c:
            assert c.describe_index("big").documents == n + 20
            assert c.search("big", [sentence(7)], k=1)[0][0].id == n + 7
            got = c.get_documents("big", [0, n - 1, n, n + 19])
            assert [d.id for d in got] == [0, n - 1, n, n + 19]
        assert not list((data / "big").glob(".index.faiss.*")), "half-written snapshot left"
        assert "WARNING" not in srv.log() and "Traceback" not in srv.log(), srv.log()[-3000:]
    finally:
        assert srv.stop() == 0
