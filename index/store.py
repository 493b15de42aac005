"""The SQLite side of an index: documents, their vectors and the index settings (source of truth).

Every write is one transaction in WAL mode with ``synchronous=FULL``, so it is on disk when the call
returns. Rows carry a ``seq``: a label that is never reused, which is what FAISS stores. A FAISS
snapshot can therefore always be reconciled with the database (labels present in one and not the
other are added or removed), however old the snapshot is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import disk_full_as
from stilts.records import Document

LOG = logging.getLogger(__name__)

DB_NAME = "index.sqlite"
SCHEMA_VERSION = 1
_IN_CHUNK = 900  # SQLite's default limit on bound parameters is 999 (older builds)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    seq INTEGER PRIMARY KEY,
    id INTEGER NOT NULL UNIQUE,
    text TEXT NOT NULL DEFAULT '',
    language TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL,
    margin_r REAL
);
CREATE INDEX IF NOT EXISTS docs_language ON docs(language);
CREATE TABLE IF NOT EXISTS reference (pos INTEGER PRIMARY KEY, seq INTEGER, vector BLOB NOT NULL);
"""


class Row(NamedTuple):
    """One stored document as read back (without its vector)."""

    seq: int
    id: int
    text: str
    language: str
    metadata: str  # JSON object
    margin_r: float | None  # the document's margin term (None until a reference is set)

    def document(self) -> Document:
        """The row as a :class:`~stilts.records.Document`."""
        return Document(int(self.id), self.text, self.language, json.loads(self.metadata))


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Store:
    """Documents and vectors in one SQLite file (``path=None``: in memory).

    All methods are thread-safe (one connection behind a lock). A write that finds the disk full
    raises RESOURCE_EXHAUSTED naming the directory; its transaction is rolled back whole (nothing
    of it is kept) and the next write, once there is space, succeeds.
    """

    def __init__(self, path: str | Path | None, dim: int):
        self.path = None if path is None else Path(path)
        self.dim = dim
        self._lock = threading.Lock()
        where = None if self.path is None else self.path.parent
        with disk_full_as(where, DB_NAME, "the index was not opened"):
            self._conn = sqlite3.connect(
                ":memory:" if path is None else str(path),
                check_same_thread=False,
                isolation_level=None,  # explicit BEGIN/COMMIT below
            )
            if path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def quick_check(self) -> None:
        """Run SQLite's ``PRAGMA quick_check`` (every page and record well-formed).

        Raises:
            StiltsError: FAILED_PRECONDITION naming the file when the database is damaged.
        """
        try:
            rows = self._read("PRAGMA quick_check")
            problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{self.path}: the document store is damaged (PRAGMA quick_check: "
                f"{'; '.join(problems[:3])}); this index is not served. Restore {DB_NAME} from a "
                "backup (the FAISS snapshot cannot restore documents)",
            )

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Cursor]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; rolled back on any error.

        A failed rollback (SQLite rolls back itself after some errors, e.g. a full disk) never
        hides the error that caused it.
        """
        where = None if self.path is None else self.path.parent
        with self._lock, disk_full_as(where, what, "nothing of this request was stored"):
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if not self._conn.in_transaction:  # SQLite already rolled it back
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as e:  # keep the original error, which is being raised
            LOG.warning("%s: rollback failed too: %s", self.path or "memory", e)

    def _write(self, statements: Iterable[tuple[str, Any]], what: str = "index settings") -> None:
        """Run (sql, params-or-seq-of-params) pairs in one durable transaction."""
        with self._transaction(what) as cur:
            for sql, params in statements:
                if isinstance(params, list):
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- settings -----------------------------------------------------------------------------

    def get_meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._read("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        self._write(
            [
                (
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(k, json.dumps(v)) for k, v in values.items()],
                )
            ]
        )

    # --- documents ----------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM docs")[0][0])

    def existing(self, ids: Sequence[int]) -> dict[int, int]:
        """id -> seq for those of ``ids`` that are stored."""
        out: dict[int, int] = {}
        for part in _chunks(list(ids)):
            marks = ",".join("?" * len(part))
            for id_, seq in self._read(f"SELECT id, seq FROM docs WHERE id IN ({marks})", part):
                out[int(id_)] = int(seq)
        return out

    def insert(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        languages: Sequence[str],
        metadata: Sequence[str],
        margin_r: np.ndarray | None,
        replace_seqs: Sequence[int] = (),
    ) -> np.ndarray:
        """Insert documents (deleting ``replace_seqs`` first) in one transaction.

        Returns:
            The new rows' seqs.
        """
        with self._transaction(f"{len(ids)} documents") as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
            start = int(json.loads(row[0])) if row else 0
            seqs = np.arange(start, start + len(ids), dtype=np.int64)
            for part in _chunks(list(replace_seqs)):
                marks = ",".join("?" * len(part))
                cur.execute(f"DELETE FROM docs WHERE seq IN ({marks})", part)
            margins = [None] * len(ids) if margin_r is None else margin_r.tolist()
            cur.executemany(
                "INSERT INTO docs(seq, id, text, language, metadata, vector, margin_r) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (int(s), int(i), t, lang, m, v.tobytes(), r)
                    for s, i, t, lang, m, v, r in zip(
                        seqs, ids, texts, languages, metadata, vectors, margins, strict=True
                    )
                ],
            )
            cur.execute(
                "INSERT INTO meta(key, value) VALUES ('next_seq', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (json.dumps(start + len(ids)),),
            )
        return seqs

    def delete(self, ids: Sequence[int]) -> np.ndarray:
        """Delete documents by id in one transaction; returns the seqs removed."""
        found = self.existing(ids)
        seqs = sorted(found.values())
        if seqs:
            self._write(
                [
                    (f"DELETE FROM docs WHERE seq IN ({','.join('?' * len(p))})", tuple(p))
                    for p in _chunks(seqs)
                ],
                f"the deletion of {len(seqs)} documents",
            )
        return np.asarray(seqs, dtype=np.int64)

    def rows_by_id(self, ids: Sequence[int]) -> dict[int, Row]:
        """id -> row."""
        return self._rows("id", ids)

    def rows_by_seq(self, seqs: Sequence[int]) -> dict[int, Row]:
        """seq -> row."""
        return self._rows("seq", seqs)

    def _rows(self, key: str, values: Sequence[int]) -> dict[int, Row]:
        out: dict[int, Row] = {}
        for part in _chunks(list(values)):
            marks = ",".join("?" * len(part))
            for r in self._read(
                f"SELECT {', '.join(Row._fields)} FROM docs WHERE {key} IN ({marks})", part
            ):
                row = Row._make(r)
                out[int(getattr(row, key))] = row
        return out

    def stored_bytes(self, column: str, keys: Sequence[int]) -> dict[int, int]:
        """key -> UTF-8 bytes of a document's text, language and metadata JSON, without reading
        them into Python (``column``: ``id`` or ``seq``)."""
        if column not in ("id", "seq"):
            raise ValueError(column)
        out: dict[int, int] = {}
        for part in _chunks(list(keys)):
            marks = ",".join("?" * len(part))
            for key, size in self._read(
                f"SELECT {column}, length(CAST(text AS BLOB)) + length(CAST(language AS BLOB)) "
                f"+ length(CAST(metadata AS BLOB)) FROM docs WHERE {column} IN ({marks})",
                part,
            ):
                out[int(key)] = int(size)
        return out

    def max_seq(self) -> int:
        """The largest live seq (-1 when empty); rows added later have larger seqs."""
        return int(self._read("SELECT COALESCE(MAX(seq), -1) FROM docs")[0][0])

    def seqs(self, languages: Sequence[str] | None = None) -> np.ndarray:
        """Live seqs, optionally only those whose language is in ``languages``."""
        if languages is None:
            rows = self._read("SELECT seq FROM docs ORDER BY seq")
        else:
            marks = ",".join("?" * len(languages))
            rows = self._read(
                f"SELECT seq FROM docs WHERE language IN ({marks}) ORDER BY seq", list(languages)
            )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, seqs: Sequence[int]) -> np.ndarray:
        """Vectors of ``seqs`` in that order (missing seqs raise KeyError)."""
        found: dict[int, bytes] = {}
        for part in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(part))
            for s, v in self._read(f"SELECT seq, vector FROM docs WHERE seq IN ({marks})", part):
                found[int(s)] = v
        out = np.empty((len(seqs), self.dim), dtype=np.float32)
        for row, s in enumerate(seqs):
            out[row] = np.frombuffer(found[int(s)], dtype=np.float32)
        return out

    def iter_vectors(
        self, block: int = 65536, min_seq: int = -1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs, vectors) blocks of live documents in seq order."""
        last = min_seq
        while True:
            rows = self._read(
                "SELECT seq, vector FROM docs WHERE seq > ? ORDER BY seq LIMIT ?", (last, block)
            )
            if not rows:
                return
            seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield seqs, vecs.reshape(len(rows), self.dim)
            last = int(seqs[-1])

    def set_margins(self, seqs: np.ndarray, values: np.ndarray) -> None:
        self._write(
            [
                (
                    "UPDATE docs SET margin_r = ? WHERE seq = ?",
                    [(float(v), int(s)) for s, v in zip(seqs, values, strict=True)],
                )
            ]
        )

    # --- margin reference ---------------------------------------------------------------------

    def set_reference(self, vectors: np.ndarray | None, seqs: np.ndarray | None) -> None:
        rows = []
        if vectors is not None:
            for pos, v in enumerate(vectors):
                rows.append((pos, None if seqs is None else int(seqs[pos]), v.tobytes()))
        statements: list[tuple[str, Any]] = [("DELETE FROM reference", ())]
        if rows:
            statements.append(("INSERT INTO reference(pos, seq, vector) VALUES (?, ?, ?)", rows))
        self._write(statements)

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, seqs; -1 where the row is not a document of this index)."""
        rows = self._read("SELECT seq, vector FROM reference ORDER BY pos")
        seqs = np.array([-1 if r[0] is None else r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return vecs.reshape(len(rows), self.dim).copy(), seqs
