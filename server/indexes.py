"""The indices a server holds: one :class:`stilts.index.VectorIndex` directory each under
``--data-dir``.

Durability comes from the index layer (every ``add``/``delete`` is committed to SQLite before it
returns; FAISS snapshots are reconciled with the database on open). This module only keeps the
directory consistent:

- an index is created in a hidden ``.tmp-*`` directory (with its ``server.json`` settings) and
  renamed into place, so a crash never leaves a half-created index where the server looks;
- a dropped index is renamed to a hidden ``.drop-*`` directory first, then deleted;
- on start every non-hidden directory is opened and leftover hidden ones are removed; one that
  cannot be opened (a damaged document store) is listed in ``failed`` and the others serve;
- a full disk fails the request that writes (RESOURCE_EXHAUSTED naming the directory) and a
  snapshot round (one WARNING line; the previous snapshot is kept): the server keeps serving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from stilts.catalog import model_hint
from stilts.errors import ErrorCode, StiltsError, shorten
from stilts.fsutil import disk_full_as, fsync_dir
from stilts.index import VectorIndex
from stilts.index.factory import check_kind
from stilts.records import TEXT_KINDS
from stilts.server.models import ModelRegistry, ServedModel

LOG = logging.getLogger(__name__)

SETTINGS_NAME = "server.json"
# fullmatch everywhere: with match/search, "$" also matches before a trailing newline
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def default_query_kind(document_kind: str) -> str:
    """Asymmetric search pairs passages with queries; other kinds are symmetric."""
    return "query" if document_kind == "passage" else document_kind


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{field} {shorten(name)} is not a valid index name: 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit",
            field,
        )
    return name


@dataclasses.dataclass
class ServedIndex:
    """An open index and the server's settings for it.

    Attributes:
        settings: ``model`` (served name at creation), ``kind``, ``document_kind``,
            ``query_kind``, ``created`` (unix time).
        writes: adds and deletes since the last FAISS snapshot.
    """

    name: str
    path: Path
    index: VectorIndex
    settings: dict[str, Any]
    writes: int = 0

    @property
    def fingerprint(self) -> str | None:
        return self.index.fingerprint

    @property
    def document_kind(self) -> str:
        return self.settings.get("document_kind", "passage")

    @property
    def query_kind(self) -> str:
        return self.settings.get("query_kind") or default_query_kind(self.document_kind)

    def __len__(self) -> int:
        return len(self.index)


class IndexRegistry:
    """Open, create, drop and look up the indices under ``data_dir``.

    Args:
        data_dir: the directory that holds one sub-directory per index.
        models: the served models (an index is usable when one has its fingerprint).
    """

    def __init__(self, data_dir: Path, models: ModelRegistry):
        self.data_dir = Path(data_dir)
        self.models = models
        self._indexes: dict[str, ServedIndex] = {}
        self._lock = threading.RLock()
        self.failed: dict[str, str] = {}

    # -- start / stop ----------------------------------------------------------------------

    def load_all(self) -> None:
        """Open every index directory; remove leftovers of interrupted creates and drops."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for p in sorted(self.data_dir.iterdir()):
            if not p.is_dir():
                continue
            if p.name.startswith((".tmp-", ".drop-")):
                LOG.info("removing %s (interrupted create or drop)", p)
                shutil.rmtree(p, ignore_errors=True)
                continue
            if p.name.startswith(".") or not NAME_RE.fullmatch(p.name):
                continue
            try:
                self._indexes[p.name] = self._open(p)
            except Exception as e:  # one broken index must not take the others down
                LOG.error("cannot open index %s: %s", p, e)
                self.failed[p.name] = str(e)
        LOG.info("%d indices open under %s", len(self._indexes), self.data_dir)

    def _open(self, path: Path) -> ServedIndex:
        settings_path = path / SETTINGS_NAME
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        idx = VectorIndex.open(path, device="cpu")
        # Opening may have replayed rows newer than the FAISS snapshot (after a crash): count
        # the index as written so the next snapshot round (or the graceful stop) refreshes it.
        return ServedIndex(path.name, path, idx, settings, writes=1)

    def save(self, force: bool = False) -> int:
        """Write FAISS snapshots of the indices written since their last one; returns how many."""
        n = 0
        for si in list(self._indexes.values()):
            if si.writes or force:
                writes = si.writes
                try:
                    si.index.save()
                except StiltsError as e:
                    if e.code is ErrorCode.FAILED_PRECONDITION:  # dropped meanwhile
                        LOG.debug("not saving %s: %s", si.name, e)
                    else:  # e.g. a full disk: the previous snapshot is kept, retried next round
                        LOG.warning("index %r: snapshot not written: %s", si.name, e)
                    continue
                except Exception as e:  # one index's failure must not stop the others' save
                    LOG.error(
                        "index %r: snapshot not written: %s: %s", si.name, type(e).__name__, e
                    )
                    continue
                si.writes -= writes
                n += 1
        return n

    def close(self) -> None:
        """Snapshot what changed and close every index."""
        with self._lock:
            self.save()
            for si in self._indexes.values():
                si.index.close()
            self._indexes.clear()

    # -- lookups ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._indexes)

    def all(self) -> list[ServedIndex]:
        return [self._indexes[n] for n in self.names() if n in self._indexes]

    def sizes(self) -> list[tuple[str, int]]:
        return [(si.name, len(si)) for si in list(self._indexes.values())]

    def get(self, name: str, field: str = "index") -> ServedIndex:
        if not name:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{field} is required", field)
        si = self._indexes.get(name)
        if si is None and name in self.failed:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{field}: index {shorten(name)} is not served: {self.failed[name]}",
                field,
            )
        if si is None:
            raise StiltsError(
                ErrorCode.NOT_FOUND,
                f"{field}: no index called {shorten(name)}",
                field,
            )
        return si

    def model_for(self, si: ServedIndex) -> ServedModel:
        """The served model whose vectors the index holds.

        Raises:
            StiltsError: FAILED_PRECONDITION when no served model has the index's fingerprint.
        """
        m = self.models.by_fingerprint(si.fingerprint or "", prefer=si.settings.get("model", ""))
        if m is None:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"index {si.name!r} holds vectors of model {si.settings.get('model')!r} "
                f"(fingerprint {si.fingerprint}), which this server does not serve; "
                f"{model_hint(si.fingerprint, si.index.model_name)}",
                "index",
            )
        return m

    # -- create / drop ---------------------------------------------------------------------

    def create(
        self,
        name: str,
        model: ServedModel,
        kind: str = "auto",
        document_kind: str = "passage",
        query_kind: str | None = None,
    ) -> ServedIndex:
        """Create an empty index (atomically: built hidden, then renamed into place).

        Raises:
            StiltsError: INVALID_ARGUMENT (name, kind), ALREADY_EXISTS.
        """
        check_name(name)
        check_kind(kind or "auto")
        for field, value in (("document_kind", document_kind), ("query_kind", query_kind)):
            if value is not None and value not in TEXT_KINDS:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT, f"{field} must be one of {TEXT_KINDS}", field
                )
        with self._lock:
            final = self.data_dir / name
            if name in self._indexes or final.exists():
                raise StiltsError(
                    ErrorCode.ALREADY_EXISTS,
                    f"name: an index called {shorten(name)} exists",
                    "name",
                )
            build_index(
                self.data_dir,
                name,
                model.name,
                model.encoder.manifest.to_dict(),
                (),
                kind=kind or "auto",
                document_kind=document_kind,
                query_kind=query_kind,
            )
            si = self._open(final)
            self._indexes[name] = si
            LOG.info("created index %r (%s, model %r)", name, kind, model.name)
            return si

    def drop(self, name: str) -> int:
        """Delete an index; returns how many documents it held."""
        with self._lock:
            si = self.get(name, "name")
            del self._indexes[name]
        n = len(si)
        si.index.close()
        grave = self.data_dir / f".drop-{name}-{uuid.uuid4().hex[:8]}"
        os.replace(si.path, grave)
        fsync_dir(self.data_dir)
        shutil.rmtree(grave, ignore_errors=True)
        LOG.info("dropped index %r (%d documents)", name, n)
        return n


def build_index(
    data_dir: str | os.PathLike,
    name: str,
    model_name: str,
    manifest: dict[str, Any],
    blocks,
    kind: str = "auto",
    document_kind: str = "passage",
    query_kind: str | None = None,
) -> int:
    """Build an index offline in a (stopped) server's data directory, atomically: the index is
    written hidden and renamed into place, so a server started later serves it.

    For bulk loads from vectors computed elsewhere (``stilts encode``, a mining cache) and for
    benchmarks (synthetic vectors).

    Args:
        data_dir: the server's ``--data-dir``.
        name: index name.
        model_name: served model name the index belongs to.
        manifest: that model's manifest (``Encoder.manifest.to_dict()``); it fixes the vector
            space (fingerprint) the server checks.
        blocks: iterable of (ids, vectors, documents) blocks.
        kind, document_kind, query_kind: as for CreateIndex.

    Returns:
        The number of documents stored.
    """
    check_name(name)
    data_dir = Path(data_dir)
    final = data_dir / name
    if final.exists():
        raise StiltsError(ErrorCode.ALREADY_EXISTS, f"{final} exists", "name")
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    idx = None
    try:
        with disk_full_as(data_dir, f"the new index {name!r}", "the index was not created"):
            idx = VectorIndex.create(
                tmp, int(manifest["dim"]), kind=kind, manifest=manifest, device="cpu"
            )
            n = 0
            for ids, vectors, docs in blocks:
                n += idx.add(ids, vectors, docs)
            settings = {
                "model": model_name,
                "kind": kind,
                "document_kind": document_kind,
                "query_kind": query_kind or default_query_kind(document_kind),
                "created": time.time(),
            }
            (tmp / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n")
            idx.save()
            idx.close()
            fsync_dir(tmp)
            os.replace(tmp, final)
            fsync_dir(data_dir)
    except BaseException:
        if idx is not None:
            idx.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
