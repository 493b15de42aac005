"""``VectorIndex``: a durable FAISS index with documents in SQLite and margin scoring.

A directory holds ``index.sqlite`` (documents, vectors, settings: the source of truth, every write
durable when the call returns) and ``index.faiss`` (a snapshot of the FAISS structure, written
atomically by :meth:`VectorIndex.save`). FAISS labels are internal sequence numbers that are never
reused, so opening reconciles any snapshot with the database: rows added after it are added,
rows deleted after it are removed (or tombstoned for HNSW).

The snapshot's SHA-256 and size are recorded in the database's settings (``snapshot``, and the one
before as ``snapshot_previous``) when it is written and checked when it is opened; a snapshot that fails the check, or that FAISS cannot read,
is rebuilt from the database with a WARNING naming the file. The database itself is checked with
``PRAGMA quick_check`` on open: a damaged one is refused (FAILED_PRECONDITION), since nothing can
rebuild it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from stilts.catalog import model_hint
from stilts.errors import ErrorCode, StiltsError, invalid
from stilts.fsutil import atomic_path, disk_full_as
from stilts.index import factory as fx
from stilts.index import snapshot as snapfile
from stilts.index.knn import empty_topk, knn, merge_topk, rerank
from stilts.index.margin import MarginReference
from stilts.index.margin import ratio as margin_ratio
from stilts.index.rebuild import Background, build_from_store
from stilts.index.store import DB_NAME, Store
from stilts.index.threads import SINGLE_THREAD_BELOW, RWLock, omp_threads
from stilts.records import SCORINGS, Document, Hit

LOG = logging.getLogger(__name__)

FAISS_NAME = "index.faiss"
FORMAT = 1
MAX_K = 10_000
HIT_OVERHEAD_BYTES = 32  # id, score and protobuf framing per hit or document
# Sized kinds (ivf, ivfpq) collect vectors in an exact buffer until this many exist, then train.
TRAIN_SIZE = {"ivf": 20_000, "ivfpq": 65_536}
DEFAULT_TRAIN_SIZE = 50_000
# With a language filter this selective, exact search over the matching rows is faster and exact.
EXACT_FILTER_MAX = 4096
MARGIN_SAMPLE = 20_000
COMPACT_RATIO = 0.2
# ``auto``'s IVF tier is rebuilt (nlist for the new size) once it holds this many times the
# vectors it was built with.
REGROW_FACTOR = 4


def _check_response_bytes(total: int, max_bytes: int, field: str, advice: str) -> None:
    if total > max_bytes:
        raise StiltsError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"{field}: the response would hold about {total:,} bytes of document texts and "
            f"metadata, more than the limit of {max_bytes:,} bytes (--max-response-bytes); "
            f"{advice}",
            field,
        )


def _flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _thresholds(value: Any) -> tuple[int, int]:
    """``auto``'s (exact_max, ivf_max), validated; None = the defaults."""
    if value is None:
        return fx.AUTO_EXACT_MAX, fx.AUTO_IVF_MAX
    try:
        exact_max, ivf_max = (int(v) for v in value)
    except (TypeError, ValueError):
        raise invalid(
            "auto_thresholds must be two integers (exact_max, ivf_max)", "auto_thresholds"
        ) from None
    if not 1 <= exact_max <= ivf_max:
        raise invalid("auto_thresholds must satisfy 1 <= exact_max <= ivf_max", "auto_thresholds")
    return exact_max, ivf_max


def _normalise(x: np.ndarray, field: str) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True, order="C")
    if not np.isfinite(x).all():
        raise invalid(f"{field} contains NaN or infinite values", field)
    norms = np.linalg.norm(x, axis=1)
    if len(x) and norms.min() == 0:
        raise invalid(f"{field} row {int(norms.argmin())} is all zeros", field)
    x /= norms[:, None]
    return x


class VectorIndex:
    """Vectors + documents, searchable by cosine or ratio margin. Build with :meth:`create`,
    load with :meth:`open`.

    Re-adding an existing id raises ``ALREADY_EXISTS`` unless ``add(..., upsert=True)``.
    Vectors are L2-normalised on the way in, so inner product = cosine.
    All methods are thread-safe: searches run concurrently, writes exclusively.
    """

    def __init__(
        self,
        path: Path | None,
        store: Store,
        meta: dict[str, Any],
        device: str = "auto",
        shard: bool = False,
    ):
        self.path = path
        self._store = store
        self._meta = meta
        self.dim = int(meta["dim"])
        self.kind = str(meta["kind"])
        self._factory: str | None = meta.get("factory")
        self._want_device = device
        self._shard = shard
        self.device = "cpu"
        self._cpu: faiss.Index | None = None  # the trained main index (CPU copy)
        self._index: faiss.Index | None = None  # what we search (GPU clone or the CPU one)
        self._gpu_stale = False  # the GPU clone lags the CPU index (refreshed before a search)
        self._gpu_lock = threading.Lock()
        self._pending = _flat(self.dim)  # exact buffer for vectors the main index lacks
        self._tomb: set[int] = set()  # labels deleted from SQLite but still in an HNSW graph
        self._lock = RWLock()
        self._closed = False
        self._count = store.count()
        self._trained_n = int(meta.get("trained_n", 0))
        self._margin_k = int(meta.get("margin_k", 0))
        self._margin: MarginReference | None = None
        self._mapped = False  # self._cpu is memory-mapped from the snapshot (read-only lists)
        self._want_mmap = False
        self._growth = Background()
        self._dropped_since: list[np.ndarray] | None = None  # deletions during a background build
        self._last_build: dict[str, Any] | None = None  # timings of the last (re)build

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike | None,
        dim: int,
        kind: str = "auto",
        manifest: dict | None = None,
        *,
        device: str = "auto",
        shard: bool = False,
        train_size: int | None = None,
        auto_thresholds: tuple[int, int] | None = None,
    ) -> VectorIndex:
        """Create an empty index.

        Args:
            path: a directory (created; must not already hold an index), or None for in-memory.
            dim: vector dimension.
            kind: ``auto`` (exact below 100k vectors, IVF up to 10M, OPQ+IVF+PQ beyond),
                ``flat``, ``ivf``, ``hnsw``, ``ivfpq`` or any FAISS factory string.
            manifest: the encoder manifest (``Encoder.manifest.to_dict()``); recorded with its
                fingerprint, and vectors of another encoder are refused.
            device: ``auto`` (GPU when FAISS has one), ``cpu`` or ``gpu``.
            shard: on several GPUs, split vectors across them instead of replicating.
            train_size: for kinds that need training, train once this many vectors were added
                (they are searched exactly until then).
            auto_thresholds: ``(exact_max, ivf_max)``, the sizes at which ``auto`` moves up a
                tier (default ``(100_000, 10_000_000)``): exact search up to ``exact_max``
                vectors, IVF-Flat up to ``ivf_max``, OPQ+IVF+PQ beyond. Each move is a rebuild
                in the background (see :meth:`wait_for_rebuild`); searches keep using the old
                structure until the new one is swapped in. Stored in the index's settings.

        Raises:
            StiltsError: INVALID_ARGUMENT (dim, kind, manifest), ALREADY_EXISTS (path).
        """
        if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or dim < 1:
            raise invalid(f"dim must be a positive integer, got {dim!r}", "dim")
        dim = int(dim)
        if device not in ("auto", "cpu", "gpu"):
            raise invalid("device must be one of auto, cpu, gpu", "device")
        fingerprint = None
        name = None
        if manifest is not None:
            from stilts.manifest import Manifest

            if not isinstance(manifest, dict):
                raise invalid("manifest must be a dict (Manifest.to_dict())", "manifest")
            m = Manifest.from_dict(manifest)
            if m.dim != dim:
                raise invalid(
                    f"dim {dim} does not match the manifest's dim {m.dim} ({m.name})", "dim"
                )
            fingerprint, name = m.fingerprint, m.name
        factory = fx.resolve_kind(kind, 0, dim)
        sized = fx.is_sized(kind) or fx.needs_training(factory)
        if kind.lower() == "auto":
            factory = "Flat"
            sized = False
        p = None
        if path is not None:
            p = Path(path)
            if (p / DB_NAME).exists():
                raise StiltsError(
                    ErrorCode.ALREADY_EXISTS, f"{p} already holds an index; open it", "path"
                )
            try:
                with disk_full_as(p.parent, f"the index directory {p.name}", "nothing was created"):
                    p.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise invalid(f"{p}: cannot create the index directory: {e}", "path") from None
        if train_size is not None and train_size < 1:
            raise invalid("train_size must be >= 1", "train_size")
        thresholds = _thresholds(auto_thresholds)
        meta = {
            "format": FORMAT,
            "dim": dim,
            "kind": kind.lower() if kind.lower() in fx.KINDS else kind,
            "factory": None if sized else factory,
            "manifest": manifest,
            "fingerprint": fingerprint,
            "model": name,
            "train_size": train_size
            or TRAIN_SIZE.get(kind.lower(), DEFAULT_TRAIN_SIZE if sized else 0),
            "next_seq": 0,
            "auto_thresholds": list(thresholds),
        }
        store = Store(None if p is None else p / DB_NAME, dim)
        store.set_meta(**meta)
        self = cls(p, store, meta, device, shard)
        if not sized:
            self._install(fx.build(factory, dim), trained_n=0)
        LOG.info("created %s index (dim %d) at %s", self.kind, dim, p or "memory")
        return self

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "auto",
        shard: bool = False,
        mmap: bool = False,
    ) -> VectorIndex:
        """Load an index directory, replaying whatever the database holds beyond the snapshot.

        Args:
            path: the index directory.
            device: ``auto``, ``cpu`` or ``gpu``.
            shard: on several GPUs, split vectors across them.
            mmap: memory-map the snapshot's IVF inverted lists instead of reading them into RAM
                (CPU only), so an index larger than RAM serves from the page cache. The mapped
                lists are read-only: vectors added later are searched exactly from an in-memory
                buffer, deletions are masked, and :meth:`compact` (or an ``auto`` tier move)
                writes a new snapshot and maps it. ``describe()["storage"]`` says which mode.

        Raises:
            StiltsError: NOT_FOUND when ``path`` holds no index.
        """
        p = Path(path)
        if not (p / DB_NAME).is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND, f"{p}: no index here ({DB_NAME} missing)", "path"
            )
        probe = None
        try:
            probe = Store(p / DB_NAME, 1)
            probe.quick_check()
            meta = probe.get_meta()
        except sqlite3.DatabaseError as e:  # not a database at all (e.g. a damaged header)
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{p / DB_NAME}: the document store is damaged ({e}); this index is not served. "
                f"Restore {DB_NAME} from a backup (the FAISS snapshot cannot restore documents)",
            ) from None
        finally:
            if probe is not None:
                probe.close()
        if "dim" not in meta or "kind" not in meta:
            raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"{p}: index settings are missing")
        for leftover in p.glob(f".{FAISS_NAME}.*.tmp"):  # a snapshot write killed midway
            LOG.info("removing %s (interrupted snapshot write)", leftover)
            leftover.unlink(missing_ok=True)
        store = Store(p / DB_NAME, int(meta["dim"]))
        self = cls(p, store, meta, "cpu" if mmap else device, shard)
        self._want_mmap = bool(mmap)
        snap = p / FAISS_NAME
        cpu = None
        repaired = False
        if snap.is_file():
            try:
                cpu = self._read_snapshot(snap)
            except (RuntimeError, snapfile.SnapshotMismatch) as e:
                # damaged or unreadable snapshot: the database has everything
                LOG.warning(
                    "%s fails its check (%s); rebuilding the FAISS structure from %s",
                    snap,
                    e,
                    DB_NAME,
                )
                repaired = True
            if cpu is not None and cpu.d != self.dim:
                raise StiltsError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"{snap}: dimension {cpu.d} differs from the database's {self.dim}",
                )
        if cpu is not None:
            self._install(cpu, trained_n=self._trained_n)
        elif self._factory is not None:
            fresh = fx.build(self._factory, self.dim)
            if not fresh.is_trained:  # a trained kind without its snapshot: retrain (and save)
                with self._lock.write():
                    self._rebuild_locked(self._factory)
                self._load_reference()
                return self
            self._install(fresh, trained_n=0)
        self._replay()
        self._load_reference()
        if repaired:  # replace the damaged file now (a full disk leaves it: the check repeats)
            try:
                self.save()
            except StiltsError as e:
                LOG.warning("%s: the rebuilt snapshot was not written: %s", snap, e)
        LOG.info("opened %s: %s", p, self.describe())
        return self

    def _read_snapshot(self, snap: Path) -> faiss.Index:
        """Read the snapshot, checked against the SHA-256 recorded when it was written,
        memory-mapping IVF lists in mmap mode.

        Raises:
            SnapshotMismatch, RuntimeError: a damaged or unreadable snapshot.
        """
        expected = [self._meta.get("snapshot"), self._meta.get("snapshot_previous")]
        cpu = snapfile.read(snap, expected, mmap=self._want_mmap)
        self._mapped = self._want_mmap and fx.ivf_of(cpu) is not None
        return cpu

    def _install(self, cpu: faiss.Index, trained_n: int) -> None:
        self._cpu = cpu
        self._index, self.device = fx.to_device(cpu, self._want_device, self._shard)
        self._gpu_stale = False
        self._trained_n = trained_n

    def _replay(self) -> None:
        """Make FAISS hold exactly the database's live rows."""
        live = self._store.seqs()
        if self._cpu is not None:
            have = fx.labels_of(self._cpu)
            extra = np.setdiff1d(have, live, assume_unique=False)
            if len(extra):
                self._drop(extra)
            missing = np.setdiff1d(live, have)
        else:
            missing = live
        if len(missing):
            LOG.info("replaying %d rows newer than the snapshot", len(missing))
            for start in range(0, len(missing), 65536):
                part = missing[start : start + 65536]
                self._insert_faiss(part, self._store.vectors(part))
        self._maybe_grow()

    # --- validation ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StiltsError(ErrorCode.FAILED_PRECONDITION, "the index is closed")

    def check_fingerprint(self, fingerprint: str | None) -> None:
        """Refuse vectors from an encoder other than the one the index was built with.

        Raises:
            StiltsError: FAILED_PRECONDITION when both fingerprints are known and differ.
        """
        mine = self._meta.get("fingerprint")
        if fingerprint is not None and mine is not None and fingerprint != mine:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"encoder fingerprint {fingerprint} does not match the index's {mine} "
                f"({self._meta.get('model')}): vectors of different encoders are not comparable; "
                f"{model_hint(mine, self._meta.get('model'))}",
                "model",
            )

    def check_manifest(self, manifest: dict | Any) -> None:
        """Like :meth:`check_fingerprint` for a manifest (dict or ``Manifest``); checks dim too."""
        from stilts.manifest import Manifest

        m = Manifest.from_dict(manifest) if isinstance(manifest, dict) else manifest
        if m.dim != self.dim:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"encoder {m.name} has dimension {m.dim}, the index {self.dim}",
                "model",
            )
        self.check_fingerprint(m.fingerprint)

    def _vectors(self, vectors: Any, field: str = "vectors") -> np.ndarray:
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise invalid(f"{field} must be a float array: {e}", field) from None
        if arr.ndim == 1 and arr.shape[0] == self.dim:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise invalid(f"{field} must have shape (n, {self.dim}), got {tuple(arr.shape)}", field)
        return _normalise(arr, field)

    @staticmethod
    def _ids(ids: Any) -> np.ndarray:
        try:
            arr = np.asarray(ids)
        except (TypeError, ValueError):
            raise invalid("ids must be a list of integers", "ids") from None
        if arr.ndim == 0:
            arr = arr[None]
        if arr.ndim != 1 or (len(arr) and not np.issubdtype(arr.dtype, np.integer)):
            raise invalid("ids must be a 1-D list of 64-bit integers", "ids")
        return arr.astype(np.int64)

    # --- writes -------------------------------------------------------------------------------

    def add(
        self,
        ids: np.ndarray | Sequence[int],
        vectors: np.ndarray,
        docs: Sequence[Document] | None = None,
        *,
        upsert: bool = False,
        fingerprint: str | None = None,
    ) -> int:
        """Add documents; durable (committed to SQLite) when it returns.

        Args:
            ids: 64-bit ids, unique within the call.
            vectors: (n, dim) float32; L2-normalised here.
            docs: one :class:`Document` per id (same id), or None for bare vectors.
            upsert: replace documents whose id exists instead of raising ALREADY_EXISTS.
            fingerprint: the encoder fingerprint of ``vectors``, checked against the index's.

        Returns:
            The number of documents added.

        Raises:
            StiltsError: INVALID_ARGUMENT (shapes, values, docs), ALREADY_EXISTS (ids),
            FAILED_PRECONDITION (another encoder).
        """
        self._check_open()
        self.check_fingerprint(fingerprint)
        id_arr = self._ids(ids)
        vecs = self._vectors(vectors)
        n = len(id_arr)
        if len(vecs) != n:
            raise invalid(f"got {n} ids but {len(vecs)} vectors", "vectors")
        if len(np.unique(id_arr)) != n:
            raise invalid("ids contains duplicates", "ids")
        if docs is None:
            docs = [Document(int(i)) for i in id_arr]
        if len(docs) != n:
            raise invalid(f"got {n} ids but {len(docs)} docs", "docs")
        texts, langs, metas = [], [], []
        for row, (i, doc) in enumerate(zip(id_arr, docs, strict=True)):
            if not isinstance(doc, Document):
                raise invalid(f"docs[{row}] must be a Document", "docs")
            if doc.id is not None and int(doc.id) != int(i):
                raise invalid(f"docs[{row}].id {doc.id} differs from ids[{row}] {i}", "docs")
            if not isinstance(doc.text, str) or not isinstance(doc.language, str):
                raise invalid(f"docs[{row}].text and .language must be strings", "docs")
            if not isinstance(doc.metadata, dict):
                raise invalid(f"docs[{row}].metadata must be a dict", "metadata")
            try:
                metas.append(json.dumps(doc.metadata, ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as e:
                raise invalid(
                    f"docs[{row}].metadata is not JSON-serialisable: {e}", "metadata"
                ) from None
            texts.append(doc.text)
            langs.append(doc.language)
        if n == 0:
            return 0
        with self._lock.write():
            existing = self._store.existing(id_arr.tolist())
            if existing and not upsert:
                some = sorted(existing)[:5]
                raise StiltsError(
                    ErrorCode.ALREADY_EXISTS,
                    f"{len(existing)} ids already exist (e.g. {some}); delete them or upsert",
                    "ids",
                )
            margin_r = self._margin.doc_terms(vecs) if self._margin is not None else None
            old = np.asarray(sorted(existing.values()), dtype=np.int64)
            seqs = self._store.insert(id_arr, vecs, texts, langs, metas, margin_r, old.tolist())
            if len(old):
                self._drop(old)
            self._count += n - len(old)
            self._insert_faiss(seqs, vecs)
            self._maybe_grow()
        return n

    def delete(self, ids: np.ndarray | Sequence[int]) -> int:
        """Delete documents by id (unknown ids are ignored); returns how many were removed."""
        self._check_open()
        id_arr = self._ids(ids)
        if not len(id_arr):
            return 0
        with self._lock.write():
            seqs = self._store.delete(id_arr.tolist())
            self._count -= len(seqs)
            if len(seqs):
                self._drop(seqs)
                self._maybe_grow()
        return len(seqs)

    def _insert_faiss(self, seqs: np.ndarray, vecs: np.ndarray) -> None:
        if self._cpu is not None and not self._mapped:
            self._cpu.add_with_ids(vecs, seqs)
            self._gpu_stale = self.device == "gpu"
        else:  # untrained, or mapped read-only lists: the exact buffer holds the rest
            self._pending.add_with_ids(vecs, seqs)
            if self._cpu is None and self._pending.ntotal >= int(
                self._meta.get("train_size") or DEFAULT_TRAIN_SIZE
            ):
                self._train_locked()

    def _drop(self, seqs: np.ndarray) -> None:
        seqs = np.ascontiguousarray(seqs, dtype=np.int64)
        if self._dropped_since is not None:
            self._dropped_since.append(seqs.copy())
        if self._pending.ntotal:
            self._pending.remove_ids(seqs)
        if self._cpu is None:
            return
        if not self._mapped and fx.supports_remove(self._cpu):
            self._cpu.remove_ids(seqs)
            self._gpu_stale = self.device == "gpu"
        else:
            self._tomb.update(int(s) for s in seqs)

    def _searchable(self) -> faiss.Index | None:
        """The index to search: the CPU index, or its GPU clone refreshed after writes (the CPU
        index stays the one that is written, removed from and saved)."""
        if self.device == "gpu" and self._gpu_stale:
            with self._gpu_lock:
                if self._gpu_stale:
                    self._index, _ = fx.to_device(self._cpu, "gpu", self._shard)
                    self._gpu_stale = False
        return self._index

    def _maybe_grow(self) -> None:
        """``auto``: move up a tier in the background when a threshold is crossed; HNSW: compact
        when 20% are tombstones."""
        if self._factory is None:
            return
        if self.kind == "auto":
            exact_max, ivf_max = _thresholds(self._meta.get("auto_thresholds"))
            want = fx.resolve_kind("auto", self._count, self.dim, exact_max, ivf_max)
            up = fx.tier(want) > fx.tier(self._factory)
            regrow = (
                fx.tier(want) == fx.tier(self._factory) > 0
                and self._count > REGROW_FACTOR * max(self._trained_n, 1)
                and want != self._factory
            )
            if (up or regrow) and not self._growth.running:
                LOG.info("auto index reached %d vectors: rebuilding as %s", self._count, want)
                self._start_rebuild(want)
                return
        if self._tomb and len(self._tomb) > COMPACT_RATIO * max(self._count, 1):
            LOG.info("%d tombstones: compacting", len(self._tomb))
            self._rebuild_locked(self._factory)

    # --- training / rebuilding ----------------------------------------------------------------

    def _start_rebuild(self, factory: str) -> None:
        """Build ``factory`` on a thread (called under the write lock); swap it in when done."""
        max_seq = int(self._store.max_seq())
        self._dropped_since = []

        def work() -> None:
            cpu, _, timings = build_from_store(self._store, factory, self.dim, max_seq)
            with self._lock.write():
                dropped, self._dropped_since = self._dropped_since, None
                if self._closed:
                    return
                if dropped:
                    cpu.remove_ids(np.unique(np.concatenate(dropped)))
                for seqs, vecs in self._store.iter_vectors(min_seq=max_seq):
                    cpu.add_with_ids(vecs, seqs)
                self._swap_locked(cpu, factory)
                self._last_build = {"factory": factory, "background": True, **timings}
                LOG.info("auto index now %s (%d vectors)", factory, cpu.ntotal)

        if not self._growth.start(factory, work):
            self._dropped_since = None

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a background tier move (``auto``) to finish and be swapped in.

        Returns:
            True when no rebuild is running any more.

        Raises:
            StiltsError: INTERNAL when the rebuild failed (the old structure keeps serving).
        """
        done = self._growth.wait(timeout)
        if done and self._growth.error is not None:
            err, self._growth.error = self._growth.error, None
            if isinstance(err, StiltsError):
                raise err
            raise StiltsError(ErrorCode.INTERNAL, f"background rebuild failed: {err}")
        return done

    def train(self) -> None:
        """Train a kind that needs it now, on the vectors added so far (else it trains itself
        once ``train_size`` vectors were added).

        Raises:
            StiltsError: FAILED_PRECONDITION when there are too few vectors.
        """
        self._check_open()
        with self._lock.write():
            if self._index is None:
                self._train_locked()

    def _train_locked(self) -> None:
        n = int(self._pending.ntotal)
        if n == 0:
            raise StiltsError(ErrorCode.FAILED_PRECONDITION, "no vectors to train on")
        factory = fx.resolve_kind(self.kind, n, self.dim)
        self._rebuild_locked(factory)

    def compact(self) -> None:
        """Rebuild the FAISS structure from the database (drops HNSW tombstones; IVF kinds
        re-pick nlist for the current size and retrain)."""
        self._check_open()
        with self._lock.write():
            factory = self._factory
            if self.kind in ("auto", "ivf", "ivfpq"):
                factory = fx.resolve_kind(self.kind, max(self._count, 1), self.dim)
            if factory is None:
                return
            self._rebuild_locked(factory)

    def _rebuild_locked(self, factory: str) -> None:
        cpu, _, timings = build_from_store(self._store, factory, self.dim)
        self._swap_locked(cpu, factory)
        self._last_build = {"factory": factory, "background": False, **timings}

    def _swap_locked(self, cpu: faiss.Index, factory: str) -> None:
        """Make ``cpu`` (holding every live row) the main index; save it (and map it in mmap
        mode)."""
        self._mapped = False
        self._install(cpu, trained_n=self._count)
        self._pending = _flat(self.dim)
        self._tomb = set()
        self._factory = factory
        if self.path is not None:
            try:
                self._save_locked()
            except StiltsError as e:  # the new structure serves; the database has every row
                LOG.warning("%s: snapshot not written after the rebuild: %s", self.path, e)
                return
            if self._want_mmap and fx.ivf_of(cpu) is not None:
                self._install(self._read_snapshot(self.path / FAISS_NAME), trained_n=self._count)

    # --- reads --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def get(
        self, ids: np.ndarray | Sequence[int], *, max_bytes: int | None = None
    ) -> list[Document | None]:
        """Documents by id, in order; None where an id is unknown.

        Args:
            ids: document ids.
            max_bytes: refuse (RESOURCE_EXHAUSTED, before reading them) documents whose texts and
                metadata together hold more bytes than this.
        """
        self._check_open()
        id_arr = self._ids(ids)
        if max_bytes is not None:
            sizes = self._store.stored_bytes("id", np.unique(id_arr).tolist())
            total = sum(sizes.get(int(i), 0) + HIT_OVERHEAD_BYTES for i in id_arr.tolist())
            _check_response_bytes(total, max_bytes, "ids", "ask for fewer ids")
        rows = self._store.rows_by_id(id_arr.tolist())
        out: list[Document | None] = []
        for i in id_arr.tolist():
            r = rows.get(int(i))
            out.append(None if r is None else r.document())
        return out

    def iter_documents(self, block: int = 16384) -> Iterator[tuple[list[Document], np.ndarray]]:
        """Every live document with its stored (normalised) vector, in insertion order.

        Yields:
            (documents, (len(documents), dim) float32 vectors) per block.
        """
        self._check_open()
        for seqs, vecs in self._store.iter_vectors(block=block):
            rows = self._store.rows_by_seq(seqs.tolist())
            keep = np.array([int(s) in rows for s in seqs], dtype=bool)
            docs = [rows[int(s)].document() for s in seqs[keep]]
            if docs:
                yield docs, vecs[keep]

    def vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Stored (normalised) vectors by id.

        Raises:
            StiltsError: NOT_FOUND for an unknown id.
        """
        id_arr = self._ids(ids)
        found = self._store.existing(id_arr.tolist())
        missing = [int(i) for i in id_arr if int(i) not in found]
        if missing:
            raise StiltsError(ErrorCode.NOT_FOUND, f"unknown ids: {missing[:5]}", "ids")
        return self._store.vectors([found[int(i)] for i in id_arr])

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        languages: Sequence[str] | None = None,
        scoring: str = "cosine",
        nprobe: int | None = None,
        ef_search: int | None = None,
        fingerprint: str | None = None,
        candidates: int | None = None,
        max_bytes: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best documents per query.

        Args:
            queries: (nq, dim) vectors (normalised here).
            k: hits per query (1..10000).
            languages: only documents whose language is one of these.
            scoring: ``cosine``, or ``margin``: the ratio margin of Artetxe & Schwenk (2019),
                cos(x, y) / ((r(x) + r(y)) / 2) with r = mean cosine to the k nearest
                neighbours in the margin reference set (see :meth:`set_margin_reference`).
                Hubs (documents close to everything) are ranked down.
            nprobe: IVF lists to visit (default 16, or as trained).
            ef_search: HNSW search breadth (default 128).
            fingerprint: the queries' encoder fingerprint, checked against the index's.
            candidates: cosine candidates re-ranked by margin (default max(4k, 32)).
            max_bytes: refuse (RESOURCE_EXHAUSTED) before reading any document when the hits'
                texts and metadata would hold more bytes than this (estimated from their stored
                sizes; under margin scoring, from the k largest candidates per query).

        Returns:
            One list of :class:`Hit` per query, best first (fewer than k if the index is small).
        """
        self._check_open()
        self.check_fingerprint(fingerprint)
        q = self._vectors(queries, "queries")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
            raise invalid(f"k must be an integer in 1..{MAX_K}, got {k!r}", "k")
        if scoring not in SCORINGS:
            raise invalid(f"scoring must be one of {SCORINGS}, got {scoring!r}", "scoring")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (not isinstance(value, int | np.integer) or value < 1):
                raise invalid(f"{name} must be a positive integer", name)
        if languages is not None:
            if isinstance(languages, str) or not all(isinstance(x, str) for x in languages):
                raise invalid("languages must be a list of strings", "languages")
            languages = list(languages)
        with self._lock.read():
            if scoring == "margin" and self._margin is None:
                raise StiltsError(
                    ErrorCode.FAILED_PRECONDITION,
                    "scoring='margin' needs a margin reference: call set_margin_reference()",
                    "scoring",
                )
            fetch = k
            if scoring == "margin":
                fetch = max(k, candidates or max(4 * k, 32))
            with omp_threads(1 if len(q) < SINGLE_THREAD_BELOW else None):
                scores, labels = self._search_labels(q, fetch, languages, nprobe, ef_search)
                r_q = self._margin.query_terms(q) if scoring == "margin" else None
            if max_bytes is not None:
                self._check_hit_bytes(labels, k, max_bytes)
            rows = self._store.rows_by_seq(np.unique(labels[labels >= 0]).tolist())
        out: list[list[Hit]] = []
        for qi in range(len(q)):
            hits = []
            for s, lab in zip(scores[qi], labels[qi], strict=True):
                r = rows.get(int(lab))
                if lab < 0 or r is None:
                    continue
                score = float(s)
                if r_q is not None:
                    r_doc = r.margin_r if r.margin_r is not None else r_q[qi]
                    score = margin_ratio(score, float(r_q[qi]), float(r_doc))
                hits.append(Hit(int(r.id), score, r.text, r.language, json.loads(r.metadata)))
            if r_q is not None:
                hits.sort(key=lambda h: -h.score)
            out.append(hits[:k])
        return out

    def _check_hit_bytes(self, labels: np.ndarray, k: int, max_bytes: int) -> None:
        sizes = self._store.stored_bytes("seq", np.unique(labels[labels >= 0]).tolist())
        total = 0
        for row in labels:
            per_hit = sorted((sizes.get(int(s), 0) for s in row if s >= 0), reverse=True)[:k]
            total += sum(per_hit) + HIT_OVERHEAD_BYTES * len(per_hit)
        _check_response_bytes(total, max_bytes, "k", "ask for a smaller k or fewer queries")

    def _search_labels(
        self,
        q: np.ndarray,
        k: int,
        languages: list[str] | None,
        nprobe: int | None,
        ef_search: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, labels) over the main index and the exact buffer, filtered."""
        allowed = None
        if languages is not None:
            allowed = self._store.seqs(languages)
            if len(allowed) <= max(EXACT_FILTER_MAX, k):
                return self._exact_subset(q, allowed, k)
        best_d, best_i = empty_topk(len(q), k)
        main = self._searchable()
        for index in (main, self._pending):
            if index is None or index.ntotal == 0:
                continue
            on_gpu = index is main and self.device == "gpu"
            sel = None
            fetch = k
            if on_gpu:  # GPU indices take no selector: over-fetch and filter below
                fetch = min(
                    index.ntotal,
                    k + len(self._tomb) + (3 * k if allowed is not None else 0),
                    fx.GPU_MAX_K,
                )
            elif allowed is not None:
                sel = faiss.IDSelectorBatch(allowed)
            elif self._tomb and index is main:
                sel = faiss.IDSelectorNot(
                    faiss.IDSelectorBatch(np.fromiter(self._tomb, dtype=np.int64))
                )
            params = fx.search_params(self._cpu if index is main else index, nprobe, ef_search, sel)
            refine = index is main and fx.is_compressed(self._factory)
            if refine:
                fetch = max(fetch, k * fx.REFINE_FACTOR)
            d, i = index.search(q, min(fetch, max(index.ntotal, 1)), params=params)
            if refine:  # PQ scores are approximate: re-rank the candidates with stored vectors
                d, i = rerank(q, i, self._store.vectors, min(k, i.shape[1]))
            if on_gpu:
                bad = np.isin(i, np.fromiter(self._tomb, dtype=np.int64))
                if allowed is not None:
                    bad |= ~np.isin(i, allowed)
                d = np.where(bad, -np.inf, d)
                i = np.where(bad, -1, i)
            d = np.where(i < 0, -np.inf, d).astype(np.float32)
            if d.shape[1] < k:
                pad_d, pad_i = empty_topk(len(q), k - d.shape[1])
                d, i = np.concatenate([d, pad_d], 1), np.concatenate([i, pad_i], 1)
            best_d, best_i = merge_topk(best_d, best_i, d, i.astype(np.int64), k)
        return best_d, best_i

    def _exact_subset(
        self, q: np.ndarray, seqs: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not len(seqs):
            return empty_topk(len(q), k)
        d, i = knn(q, self._store.vectors(seqs.tolist()), k)
        labels = np.where(i >= 0, seqs[np.clip(i, 0, None)], -1)
        return d, labels

    # --- margin -------------------------------------------------------------------------------

    def set_margin_reference(self, vectors: np.ndarray | None = None, k: int = 4) -> None:
        """Enable ``scoring="margin"``: store per document its mean cosine to its ``k`` nearest
        neighbours in a reference set.

        Args:
            vectors: the reference set, e.g. the other side of a mining job or a sample of
                typical queries; None = a sample of the index itself (CSLS-style; a document
                does not count itself).
            k: neighbours averaged (4 as in Artetxe & Schwenk 2019).
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise invalid("k must be a positive integer", "k")
        with self._lock.write():
            if vectors is None:
                live = self._store.seqs()
                if len(live) < 2:
                    raise StiltsError(
                        ErrorCode.FAILED_PRECONDITION,
                        "the index needs at least 2 documents to be its own margin reference",
                        "vectors",
                    )
                rng = np.random.default_rng(len(live))
                seqs = np.sort(rng.choice(live, min(MARGIN_SAMPLE, len(live)), replace=False))
                ref = self._store.vectors(seqs.tolist())
            else:
                ref = self._vectors(vectors, "vectors")
                seqs = np.full(len(ref), -1, dtype=np.int64)
            self._store.set_reference(ref, seqs)
            self._margin_k = int(k)
            self._meta["margin_k"] = self._margin_k
            self._store.set_meta(margin_k=self._margin_k)
            self._margin = MarginReference(ref, seqs, self._margin_k)
            for block_seqs, vecs in self._store.iter_vectors(block=16384):
                self._store.set_margins(block_seqs, self._margin.doc_terms(vecs, block_seqs))
        LOG.info("margin reference: %d vectors, k=%d", len(ref), k)

    @property
    def has_margin_reference(self) -> bool:
        """Whether :meth:`set_margin_reference` was called (margin scoring is possible)."""
        return self._margin is not None

    def _load_reference(self) -> None:
        if not self._margin_k:
            return
        ref, seqs = self._store.reference()
        if len(ref):
            self._margin = MarginReference(ref, seqs, self._margin_k)

    # --- persistence --------------------------------------------------------------------------

    def save(self) -> None:
        """Write the FAISS snapshot atomically (temp file, fsync, rename, fsync directory).

        The documents are durable already; the snapshot only saves the rebuild on open.
        """
        self._check_open()
        if self.path is None:
            return
        with self._lock.read():
            self._save_locked()

    def _save_locked(self) -> None:
        """Write the snapshot; its checksum is committed to the settings (beside the previous
        snapshot's) before the rename, so whichever file a crash leaves in place passes the
        check on open.

        Raises:
            StiltsError: RESOURCE_EXHAUSTED on a full disk (the previous snapshot is kept).
        """
        target = self.path / FAISS_NAME
        if self._cpu is None:
            target.unlink(missing_ok=True)
            self._store.set_meta(
                factory=self._factory, trained_n=0, snapshot=None, snapshot_previous=None
            )
            self._meta.update(snapshot=None, snapshot_previous=None)
            return
        if self._mapped:  # the snapshot is what is mapped; newer rows are in the database
            return
        cpu = self._cpu
        with disk_full_as(
            self.path,
            f"the FAISS snapshot {FAISS_NAME}",
            "the previous snapshot is kept and every document is safe in " + DB_NAME,
        ):
            with atomic_path(target) as tmp:
                written = snapfile.write(cpu, tmp)  # fsynced: the rename follows at once
                previous = self._meta.get("snapshot")
                self._store.set_meta(
                    factory=self._factory,
                    trained_n=self._trained_n,
                    snapshot=written,
                    snapshot_previous=previous,
                )
        self._meta.update(snapshot=written, snapshot_previous=previous)
        LOG.debug("saved %s (%d vectors)", target, cpu.ntotal)

    def close(self) -> None:
        """Close the database (the FAISS snapshot is not written: call :meth:`save` for that).

        A background rebuild still running is abandoned (the database has every row).
        """
        if self._closed:
            return
        with self._lock.write():
            self._closed = True
            self._store.close()
            self._index = self._cpu = self._margin = None

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._closed:
            if self.path is not None and exc[0] is None:
                self.save()
            self.close()

    # --- introspection ------------------------------------------------------------------------

    @property
    def manifest(self) -> dict | None:
        return self._meta.get("manifest")

    @property
    def fingerprint(self) -> str | None:
        return self._meta.get("fingerprint")

    @property
    def model_name(self) -> str | None:
        """The manifest name of the encoder that built the index."""
        return self._meta.get("model")

    def describe(self) -> dict[str, Any]:
        """What the index is: kind, FAISS factory, size, dim, device, encoder, training, params."""
        params: dict[str, Any] = {}
        if self._cpu is not None:
            ivf = fx.ivf_of(self._cpu)
            hnsw = fx.hnsw_of(self._cpu)
            if ivf is not None:
                params.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
            if hnsw is not None:
                params.update(
                    M=int(hnsw.hnsw.nb_neighbors(1)),
                    ef_search=int(hnsw.hnsw.efSearch),
                    ef_construction=int(hnsw.hnsw.efConstruction),
                )
        return {
            "path": None if self.path is None else str(self.path),
            "kind": self.kind,
            "factory": self._factory,
            "size": self._count,
            "dim": self.dim,
            "device": self.device,
            "gpus": fx.gpu_count(),
            "model": self._meta.get("model"),
            "fingerprint": self._meta.get("fingerprint"),
            "trained": self._cpu is not None,
            "untrained_buffer": int(self._pending.ntotal),
            "train_size": self._meta.get("train_size"),
            "tombstones": len(self._tomb),
            "exact": self._factory == "Flat" or self._cpu is None,
            "storage": "mmap" if self._mapped else "memory",
            "rerank": fx.is_compressed(self._factory),
            "auto_thresholds": list(_thresholds(self._meta.get("auto_thresholds"))),
            "rebuilding": self._growth.target if self._growth.running else None,
            "last_build": self._last_build,
            "params": params,
            "margin": {"k": self._margin_k, "reference": self._margin.size}
            if self._margin is not None
            else None,
        }

    def recall(
        self,
        k: int = 10,
        sample: int = 1000,
        *,
        queries: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        seed: int = 0,
    ) -> float:
        """recall@k of this index against exact search over the stored vectors.

        Args:
            k: neighbours compared.
            sample: stored vectors used as queries when ``queries`` is None (a stored vector finds
                itself, so this reads a little higher than real queries do).
            queries: real queries (preferred), e.g. a sample of traffic.
            nprobe, ef_search: search parameters to evaluate.

        Returns:
            The mean fraction of the exact top-k found (1.0 for exact kinds).
        """
        self._check_open()
        with self._lock.read():
            live = self._store.seqs()
            if not len(live):
                raise StiltsError(ErrorCode.FAILED_PRECONDITION, "the index is empty")
            if queries is None:
                rng = np.random.default_rng(seed)
                qs = np.sort(rng.choice(live, min(sample, len(live)), replace=False))
                q = self._store.vectors(qs.tolist())
            else:
                q = self._vectors(queries, "queries")
            kk = min(k, len(live))
            _, approx = self._search_labels(q, kk, None, nprobe, ef_search)

            def shards():
                for _, vecs in self._store.iter_vectors():
                    yield vecs

            _, exact_rows = knn(q, shards, kk)
            exact = live[exact_rows]
        hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True))
        return hits / (len(q) * kk)
