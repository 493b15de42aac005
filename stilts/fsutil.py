"""Filesystem helpers: a file or a directory is built beside its target and swapped in whole;
a full disk is recognised and reported as one clear RESOURCE_EXHAUSTED error."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from stilts.errors import ErrorCode, StiltsError

# SQLite's result code for "database or disk is full" (sqlite3.SQLITE_FULL)
_SQLITE_FULL = 13


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says a file system is full: ENOSPC or
    EDQUOT, SQLite's SQLITE_FULL, or FAISS's write error naming "No space left on device"."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(exc):
            return True
        if isinstance(exc, RuntimeError) and os.strerror(errno.ENOSPC) in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full_error(directory: str | os.PathLike | None, what: str, outcome: str) -> StiltsError:
    """The RESOURCE_EXHAUSTED error for a write that found the disk full.

    Args:
        directory: where the write went (the data, index or cache directory); None = memory.
        what: what was being written, e.g. ``"the documents"``.
        outcome: what became of it, e.g. ``"nothing of this request was stored"``.
    """
    where = "memory" if directory is None else str(directory)
    return StiltsError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"{where}: the disk is full (no space left on the file system of this directory) while "
        f"writing {what}; {outcome}. Free space there and retry: no restart is needed",
    )


@contextlib.contextmanager
def disk_full_as(directory: str | os.PathLike | None, what: str, outcome: str) -> Iterator[None]:
    """Re-raise a full-disk error inside the block as :func:`disk_full_error` (others pass)."""
    try:
        yield
    except StiltsError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(directory, what, outcome) from e
        raise


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling directory of ``target``; on success it replaces ``target``.

    On any error the half-built directory is removed and ``target`` is left as it was, so a reader
    never sees a half-written model or checkpoint.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    work.chmod(0o755)
    try:
        yield work
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk.

    Errors are raised, not swallowed: a write that reports success must be durable.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed over it.

    For writers that need a file name (``faiss.write_index``). The directory is fsynced after the
    rename. On any error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a unique name, created by the writer (so it gets the usual permissions, unlike mkstemp's 0600)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(
    target: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``target`` for writing; on success it replaces ``target``.

    A reader sees the old file or the whole new one, never a part (see :func:`atomic_path`).

    Args:
        target: The file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: Text encoding (ignored for ``"wb"``).
    """
    with atomic_path(target) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_write(target) as f:
        f.write(text)
