"""A bounded load generator for the gRPC server: count AND time limits, per-request deadlines.

``concurrency`` worker threads, each with its own :class:`stilts.client.Client` (own channel),
take request tickets from a shared budget until ``max_requests`` were issued or ``max_seconds``
have passed, whichever comes first; no new request starts after either limit. Every request
carries a deadline (``request_timeout``), so the whole run ends within
``max_seconds + request_timeout`` even against a server that stops answering. Failures are
counted by gRPC status name and never stop the run.

The one load generator: ``stilts bench speed`` (gRPC section) and the serving figures
(:mod:`stilts.benchmarks.speed_grpc`) both run it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from stilts.benchmarks.timing import latency_ms

LOG = logging.getLogger(__name__)

# A workload: given a client and the request number, send one request; returns items carried.
Workload = Callable[[object, int], int]
# Told of every request as it ends: (request number, seconds since the start at its end,
# latency seconds, gRPC status name or None for success).
Observer = Callable[[int, float, float, str | None], None]


@dataclasses.dataclass
class LoadResult:
    """One bounded run.

    Attributes:
        concurrency: worker threads (clients).
        attempted: requests started.
        ok: requests answered successfully.
        errors: failed requests by status name.
        items: items carried by successful requests (e.g. sentences).
        seconds: wall time from the first request to the last answer.
        stopped_by: ``count`` or ``time`` (which limit ended the run).
        latency_ms: p50 / p95 / p99 / mean / max of successful requests.
    """

    concurrency: int
    attempted: int
    ok: int
    errors: dict[str, int]
    items: int
    seconds: float
    stopped_by: str
    latency_ms: dict[str, float]
    max_requests: int
    max_seconds: float

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["throughput"] = self.throughput
        d["items_per_second"] = self.items_per_second
        d["error_count"] = sum(self.errors.values())
        return d


def _status(e: BaseException) -> str:
    status = getattr(e, "status", None)
    if status is None and callable(getattr(e, "code", None)):
        try:
            status = e.code()
        except Exception:
            status = None
    return getattr(status, "name", None) or type(e).__name__


def run(
    address: str,
    workload: Workload,
    concurrency: int = 8,
    max_requests: int = 1000,
    max_seconds: float = 10.0,
    request_timeout: float = 10.0,
    token: str | None = None,
    observe: Observer | None = None,
    connect: Callable[[], object] | None = None,
) -> LoadResult:
    """Run one bounded load (see the module docstring).

    Args:
        address: ``host:port`` of the server.
        workload: ``fn(client, i) -> items``, called once per request.
        concurrency: worker threads, each with its own client.
        max_requests: request budget over all workers (>= 1).
        max_seconds: no request starts after this many seconds (> 0).
        request_timeout: deadline of each request, seconds.
        token: bearer token for servers with auth.
        observe: called with every request's ending (for figures over time).
        connect: makes one worker's client (default: a gRPC :class:`stilts.client.Client` of
            ``address``); it must have ``close()`` (the HTTP mode of ``stilts bench speed``
            passes an HTTP client).

    Returns:
        A :class:`LoadResult`.
    """
    from stilts.client import Client
    from stilts.errors import ErrorCode, StiltsError

    if concurrency < 1 or max_requests < 1 or not max_seconds > 0 or not request_timeout > 0:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "concurrency and max_requests must be >= 1, max_seconds and request_timeout > 0",
            "concurrency",
        )
    lock = threading.Lock()
    state = {"issued": 0, "ok": 0, "items": 0, "last_end": 0.0, "stopped_by": "count"}
    errors: Counter = Counter()
    latencies: list[float] = []
    if connect is None:

        def connect():
            return Client(address, token, timeout=request_timeout)

    clients = [connect() for _ in range(concurrency)]
    gate = threading.Barrier(concurrency + 1)
    t_start = [0.0]

    def ticket() -> int | None:
        with lock:
            if state["issued"] >= max_requests:
                return None
            if time.perf_counter() - t_start[0] >= max_seconds:
                state["stopped_by"] = "time"
                return None
            state["issued"] += 1
            return state["issued"] - 1

    def worker(client) -> None:
        gate.wait()
        while (i := ticket()) is not None:
            t0 = time.perf_counter()
            try:
                items = int(workload(client, i))
                err = None
            except Exception as e:  # counted, never raised: the run must end by its limits
                items, err = 0, _status(e)
            t1 = time.perf_counter()
            with lock:
                state["last_end"] = max(state["last_end"], t1)
                if err is None:
                    state["ok"] += 1
                    state["items"] += items
                    latencies.append(t1 - t0)
                else:
                    errors[err] += 1
                if observe is not None:
                    observe(i, t1 - t_start[0], t1 - t0, err)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    t_start[0] = time.perf_counter()
    gate.wait()
    hard_end = t_start[0] + max_seconds + request_timeout + 5.0
    for t in threads:
        t.join(max(0.0, hard_end - time.perf_counter()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        LOG.warning("%d load workers still blocked after the hard limit", stuck)
        errors["STUCK"] += stuck
    for c in clients:
        c.close()
    end = state["last_end"] or time.perf_counter()
    return LoadResult(
        concurrency=concurrency,
        attempted=state["issued"],
        ok=state["ok"],
        errors=dict(errors),
        items=state["items"],
        seconds=end - t_start[0],
        stopped_by=state["stopped_by"] if state["issued"] < max_requests else "count",
        latency_ms=latency_ms(latencies),
        max_requests=max_requests,
        max_seconds=max_seconds,
    )


def embed_workload(sentences: list[str], kind: str = "query", model: str = "default") -> Workload:
    """One sentence per Embed request, round-robin over ``sentences``."""

    def call(client, i: int) -> int:
        client.embed([sentences[i % len(sentences)]], kind=kind, model=model)
        return 1

    return call


def search_workload(index: str, queries: list[str], k: int = 10) -> Workload:
    """One query per Search request (k hits), round-robin over ``queries``."""

    def call(client, i: int) -> int:
        client.search(index, [queries[i % len(queries)]], k=k)
        return 1

    return call


def scrape(url: str | None, timeout: float = 10.0) -> dict[str, float]:
    """The server's Prometheus samples as ``{'name{label="v",...}': value}`` (empty without URL)."""
    if not url:
        return {}
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode("utf-8")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    """What changed between two scrapes: counters and histogram sums/counts (buckets left out),
    plus the derived means the report shows."""
    delta = {}
    for key, v in after.items():
        name = key.split("{", 1)[0]
        if not name.startswith("stilts_") or name.endswith("_bucket") or name.endswith("_created"):
            continue
        if name.endswith(("_total", "_sum", "_count")):
            d = v - before.get(key, 0.0)
            if d:
                delta[key] = d

    def total(prefix: str) -> float:
        return sum(v for k, v in delta.items() if k.split("{", 1)[0] == prefix)

    derived = {}
    for hist, label in (
        ("stilts_batch_size", "mean_batch_size"),
        ("stilts_batch_tokens", "mean_batch_tokens"),
        ("stilts_queue_duration_seconds", "mean_queue_ms"),
        ("stilts_inference_duration_seconds", "mean_inference_ms"),
        ("stilts_request_duration_seconds", "mean_request_ms"),
    ):
        n = total(hist + "_count")
        if n:
            scale = 1000.0 if label.endswith("_ms") else 1.0
            derived[label] = total(hist + "_sum") / n * scale
    derived["requests"] = total("stilts_requests_total")
    return {"delta": delta, "derived": derived}
