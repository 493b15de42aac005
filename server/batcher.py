"""Dynamic batching: texts from all concurrent requests are coalesced into encoder batches.

Each request's texts are tokenised in the caller's (gRPC) thread and queued as one :class:`Job`.
A single worker thread per model owns the encoder: whenever it is free it takes queued texts
(interactive before bulk, oldest first) up to ``max_batch_size`` texts and ``max_batch_tokens``
padded tokens, sorts them by length, runs them through ONNX Runtime in length-homogeneous
sub-batches and scatters the rows back to their jobs. When the queue holds less than a full batch
the worker waits at most ``max_wait_ms`` for more, and only while more work is known to be on its
way (requests still being parsed, or a recent batch that held several requests), so a lone client
pays no batching delay. This is the text-embeddings-inference / Triton dynamic-batcher design.

Jobs carry a deadline and a cancel flag: expired or cancelled texts are dropped before inference.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from stilts.encoding.encoder import Encoder
from stilts.encoding.session import Tokenized
from stilts.errors import ErrorCode, StiltsError

LOG = logging.getLogger(__name__)
CANCEL_POLL_SECONDS = 0.1

INTERACTIVE = 0
"""Priority of latency-bound requests (Embed, Search)."""
BULK = 1
"""Priority of throughput-bound requests (EmbedStream, AddDocuments, Mine)."""
RECENT_SECONDS = 0.25
"""How long the size of the last batch predicts the next one's (closed-loop clients)."""


CALL_OVERHEAD_TOKENS = 16
"""Fixed cost of an encoder call, in padded tokens. Measured on the default model (int8, 2 CPU
threads): time ~ c0 + c1 * texts * longest with c0 / c1 ~ 16 tokens; the per-token term
dominates, so padding is what dynamic batches must avoid."""


def _runs(lengths_desc: list[int]) -> list[tuple[int, int]]:
    """(start, length) of each run of equal lengths in a sorted list."""
    return [(i, n) for i, n in enumerate(lengths_desc) if i == 0 or lengths_desc[i - 1] != n]


def plan_groups(lengths_desc: list[int], overhead: float) -> list[tuple[int, int]]:
    """Cut texts sorted by decreasing length into encoder calls ``[start, end)`` that minimise
    ``sum(overhead + texts * longest)`` (exact dynamic programme, O(n^2) on n <= a batch)."""
    n = len(lengths_desc)
    if n <= 1:
        return [(0, n)] if n else []
    lengths = np.asarray(lengths_desc, dtype=np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        starts = np.arange(i)
        # a call covering [j, i) is padded to lengths[j], its longest text
        cost = best[:i] + overhead + (i - starts) * lengths[:i]
        j = int(np.argmin(cost))
        best[i], cut[i] = cost[j], j
    groups = []
    end = n
    while end > 0:
        groups.append((int(cut[end]), end))
        end = int(cut[end])
    return groups[::-1]


@dataclasses.dataclass(eq=False)
class Job:
    """One request's texts on their way through the batcher.

    Attributes:
        tokens: tokenised texts.
        out: the embeddings, filled row by row by the worker.
        deadline: ``time.monotonic()`` after which the job is dropped (None: none).
        priority: :data:`INTERACTIVE` or :data:`BULK`.
    """

    tokens: list[Tokenized]
    out: np.ndarray
    deadline: float | None = None
    priority: int = INTERACTIVE
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    remaining: int = 0
    started: float | None = None
    error: StiltsError | None = None
    cancelled: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def truncated(self) -> list[bool]:
        return [t.truncated for t in self.tokens]

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    def cancel(self) -> None:
        """Drop the job's texts that are still queued and wake its waiter."""
        self.cancelled = True
        self.done.set()

    def result(self, timeout: float | None = None) -> np.ndarray:
        """Wait for the embeddings.

        Raises:
            StiltsError: DEADLINE_EXCEEDED when ``timeout`` passes (the job is cancelled);
                UNAVAILABLE when it was cancelled or the batcher stopped; the worker's error.
        """
        if not self.done.wait(timeout):
            self.cancel()
            raise StiltsError(ErrorCode.DEADLINE_EXCEEDED, "deadline exceeded while embedding")
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise StiltsError(ErrorCode.UNAVAILABLE, "request cancelled")
        return self.out


@dataclasses.dataclass(eq=False)
class _Item:
    job: Job
    row: int

    @property
    def length(self) -> int:
        return len(self.job.tokens[self.row])


class Observer:
    """Hooks the batcher calls (the server passes its Prometheus metrics); no-ops by default."""

    def queued(self, n_texts: int, n_truncated: int) -> None: ...

    def batch(
        self, size: int, padded_tokens: int, queue_seconds: list[float], seconds: float
    ) -> None: ...

    def queue_depth(self, n_texts: int) -> None: ...


class Batcher:
    """Coalesce texts from concurrent requests into encoder batches on one worker thread.

    Args:
        encoder: the model; only the worker thread runs its graph.
        max_batch_tokens: most padded tokens (texts x longest) per encoder batch.
        max_batch_size: most texts per encoder batch.
        max_wait_ms: longest a queued text waits for company before a partial batch runs.
        max_queue_texts: texts allowed in the queue; more is RESOURCE_EXHAUSTED.
        call_overhead_tokens: the fixed cost of one graph call in padded tokens; a batch is sorted
            by length and cut into the calls that minimise padded tokens plus this per call.
            None: the figure measured for the encoder's route on this CPU when ``auto`` chose it
            (``Encoder.call_overhead_tokens``), else :data:`CALL_OVERHEAD_TOKENS`.
        observer: metrics hooks.
        name: model name, for logs and errors.
    """

    def __init__(
        self,
        encoder: Encoder,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
        max_wait_ms: float = 2.0,
        max_queue_texts: int = 16384,
        call_overhead_tokens: float | None = None,
        observer: Observer | None = None,
        name: str = "default",
    ):
        if max_batch_tokens < encoder.max_len:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"max_batch_tokens ({max_batch_tokens}) must be at least the model's max_len "
                f"({encoder.max_len}) so that the longest text fits a batch",
                "max_batch_tokens",
            )
        if max_batch_size < 1 or max_queue_texts < 1 or max_wait_ms < 0:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                "max_batch_size and max_queue_texts must be >= 1 and max_wait_ms >= 0",
                "max_batch_size",
            )
        self.encoder = encoder
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_texts = max_queue_texts
        if call_overhead_tokens is None:
            call_overhead_tokens = getattr(encoder, "call_overhead_tokens", None)
        self.call_overhead_tokens = call_overhead_tokens or CALL_OVERHEAD_TOKENS
        # routes that pad each row by its own length, one length bucket per call (OpenVINO)
        self.length_bucket = int(getattr(encoder, "length_bucket", 0))
        self.observer = observer or Observer()
        self._queues: tuple[collections.deque[_Item], ...] = (
            collections.deque(),
            collections.deque(),
        )
        self._queued = 0
        self._arriving = 0
        self._recent_jobs = 0
        self._last_end = 0.0
        self._cond = threading.Condition()
        self._running = False
        self._refusal: StiltsError | None = None
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.texts = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Batcher:
        with self._cond:
            if self._running:
                return self
            self._running = True
            self._refusal = None
        self._thread = threading.Thread(
            target=self._loop, name=f"stilts-batcher-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the queued work, then stop the worker."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.fail_queued(StiltsError(ErrorCode.UNAVAILABLE, "server is shutting down"))

    def fail_queued(self, error: StiltsError) -> int:
        """End every job that still has texts queued with ``error`` (its waiter raises it), and
        refuse new work with it; returns how many jobs. For a stop whose grace period ran out."""
        n = 0
        with self._cond:
            self._refusal = error
            for q in self._queues:
                for item in q:
                    if not item.job.done.is_set():
                        item.job.error = error
                        item.job.done.set()
                        n += 1
                q.clear()
            self._queued = 0
        return n

    # -- producer side ---------------------------------------------------------------------

    def arriving(self) -> _Arrival:
        """Context manager a request handler holds while it parses, so the worker waits for it."""
        return _Arrival(self)

    def submit(
        self,
        texts: Sequence[str],
        kind: str = "query",
        priority: int = INTERACTIVE,
        deadline: float | None = None,
    ) -> Job:
        """Tokenise ``texts`` here and queue them; returns the job to wait on.

        Raises:
            StiltsError: INVALID_ARGUMENT for a bad kind; RESOURCE_EXHAUSTED when the queue is
                full; UNAVAILABLE when the batcher is stopped.
        """
        tokens = self.encoder.tokenize(texts, kind)
        job = Job(
            tokens=tokens,
            out=np.empty((len(tokens), self.encoder.dim), dtype=np.float32),
            deadline=deadline,
            priority=priority,
            remaining=len(tokens),
        )
        self.observer.queued(len(tokens), sum(t.truncated for t in tokens))
        if not tokens:
            job.done.set()
            return job
        with self._cond:
            if self._refusal is not None:
                raise self._refusal
            if not self._running:
                raise StiltsError(ErrorCode.UNAVAILABLE, "server is shutting down")
            if self._queued + len(tokens) > self.max_queue_texts:
                raise StiltsError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"embedding queue of model {self.name!r} is full ({self._queued} texts queued, "
                    f"limit {self.max_queue_texts}); retry later or send fewer texts",
                    "texts",
                )
            job.enqueued = time.monotonic()
            q = self._queues[priority]
            q.extend(_Item(job, i) for i in range(len(tokens)))
            self._queued += len(tokens)
            self.observer.queue_depth(self._queued)
            self._cond.notify()
        return job

    def embed(
        self,
        texts: Sequence[str],
        kind: str = "query",
        priority: int = INTERACTIVE,
        timeout: float | None = None,
    ) -> tuple[np.ndarray, list[bool], int]:
        """Submit and wait. Returns (embeddings, truncated flags, tokens)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.submit(texts, kind, priority, deadline)
        return job.result(timeout), job.truncated, job.n_tokens

    def embed_chunks(
        self,
        texts: Iterable[str],
        kind: str = "bitext",
        chunk: int = 256,
        in_flight: int = 2,
        priority: int = BULK,
        deadline: float | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[np.ndarray]:
        """Embed a long stream of texts a chunk at a time, keeping ``in_flight`` chunks queued.

        Yields the embeddings of each chunk in order; memory stays bounded by the chunk size.
        """
        pending: collections.deque[Job] = collections.deque()

        def drain_one() -> np.ndarray:
            job = pending.popleft()
            try:
                # poll, so a call that ended (client cancel) stops waiting within a moment
                while not job.done.wait(CANCEL_POLL_SECONDS):
                    if is_cancelled():
                        raise StiltsError(ErrorCode.UNAVAILABLE, "request cancelled")
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                return job.result(timeout)
            except BaseException:
                job.cancel()
                for j in pending:
                    j.cancel()
                raise

        buf: list[str] = []
        for t in texts:
            buf.append(t)
            if len(buf) >= chunk:
                if is_cancelled():
                    raise StiltsError(ErrorCode.UNAVAILABLE, "request cancelled")
                pending.append(self.submit(buf, kind, priority, deadline))
                buf = []
                while len(pending) >= in_flight:
                    yield drain_one()
        if buf:
            pending.append(self.submit(buf, kind, priority, deadline))
        while pending:
            yield drain_one()

    @property
    def queued(self) -> int:
        return self._queued

    # -- worker side -----------------------------------------------------------------------

    def _expecting_more(self) -> bool:
        """Whether waiting can fill the batch: requests are being parsed, or recent batches
        served several requests at once (closed-loop clients come back right away)."""
        if self._arriving > 0:
            return True
        if time.monotonic() - self._last_end > RECENT_SECONDS:
            return False
        queued_jobs = len({id(i.job) for q in self._queues for i in q})
        return queued_jobs < self._recent_jobs

    def _take(self) -> list[_Item]:
        """Pop the next batch (called with the lock held and a non-empty queue)."""
        items: list[_Item] = []
        longest = 0
        now = time.monotonic()
        for q in self._queues:
            while q and len(items) < self.max_batch_size:
                item = q[0]
                job = item.job
                if job.cancelled or job.done.is_set():
                    q.popleft()
                    self._queued -= 1
                    continue
                if job.deadline is not None and now > job.deadline:
                    q.popleft()
                    self._queued -= 1
                    job.error = StiltsError(
                        ErrorCode.DEADLINE_EXCEEDED, "deadline exceeded while queued for embedding"
                    )
                    job.done.set()
                    continue
                # padded tokens: a bucketing route pads each row up to its length bucket
                new_longest = max(longest, self.encoder.padded_length(item.length))
                if items and (len(items) + 1) * new_longest > self.max_batch_tokens:
                    return items
                q.popleft()
                self._queued -= 1
                items.append(item)
                longest = new_longest
        return items

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and self._queued == 0:
                    self._cond.wait()
                if not self._running and self._queued == 0:
                    return
                oldest = min(q[0].job.enqueued for q in self._queues if q)
                while (
                    self._running
                    and self._queued < self.max_batch_size
                    and time.monotonic() < oldest + self.max_wait
                    and self._expecting_more()
                ):
                    self._cond.wait(max(0.0, oldest + self.max_wait - time.monotonic()))
                items = self._take()
                self.observer.queue_depth(self._queued)
            if items:
                try:
                    self._run(items)
                except Exception as e:  # a bug or ONNX failure must not kill the worker
                    LOG.exception("encoder batch of %d texts failed", len(items))
                    err = StiltsError(ErrorCode.INTERNAL, f"encoder failed: {e}")
                    for item in items:
                        item.job.error = err
                        item.job.done.set()

    def _run(self, items: list[_Item]) -> None:
        start = time.monotonic()
        jobs = {id(i.job): i.job for i in items}
        self._recent_jobs = len(jobs)
        queue_seconds = []
        for job in jobs.values():
            if job.started is None:
                job.started = start
                queue_seconds.append(start - job.enqueued)
        items.sort(key=lambda i: -i.length)
        padded = 0
        lengths = [i.length for i in items]
        if self.length_bucket:  # one call per bucket: nothing to plan
            lengths = [self.encoder.padded_length(n) for n in lengths]
            groups = [(s, s + lengths.count(n)) for s, n in _runs(lengths)]
        else:
            groups = plan_groups(lengths, self.call_overhead_tokens)
        for s, e in groups:
            part = items[s:e]
            padded += len(part) * lengths[s]
            vecs = self.encoder.embed_tokenized([i.job.tokens[i.row] for i in part])
            for item, vec in zip(part, vecs, strict=True):
                job = item.job
                job.out[item.row] = vec
                job.remaining -= 1
                if job.remaining == 0:
                    job.done.set()
        self._last_end = time.monotonic()
        self.batches += 1
        self.texts += len(items)
        self.observer.batch(len(items), padded, queue_seconds, time.monotonic() - start)


class _Arrival:
    def __init__(self, batcher: Batcher):
        self.batcher = batcher

    def __enter__(self) -> _Arrival:
        with self.batcher._cond:
            self.batcher._arriving += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self.batcher._cond:
            self.batcher._arriving -= 1
            self.batcher._cond.notify()
