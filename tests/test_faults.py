"""Faults a server meets in production, on real files and a real gRPC server on loopback: a full
disk (a size-limited tmpfs; needs the right to mount, else skipped with the reason), flipped bytes
and truncation of every file kind the project writes, and kill -9 during a snapshot write.

Each test asserts the status code, the message, and that nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

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
        pytest.skip(
            "cannot mount a size-limited tmpfs here (root with CAP_SYS_ADMIN is needed): "
            + (got.stderr.strip() or f"exit {got.returncode}")
        )
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
