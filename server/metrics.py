"""Prometheus metrics of the server (prefix ``stilts_``), served on ``--metrics-port`` at /metrics.

Each server owns its own :class:`prometheus_client.CollectorRegistry`, so several servers can run in
one process (tests, benchmarks) without clashing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stilts.server.batcher import Observer

LOG = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class _IndexCollector(Collector):
    """``stilts_index_documents{index}``, read from the live indices at scrape time."""

    def __init__(self, sizes: Callable[[], Iterable[tuple[str, int]]]):
        self.sizes = sizes

    def collect(self):
        g = GaugeMetricFamily(
            "stilts_index_documents", "Documents stored per index", labels=["index"]
        )
        for name, n in self.sizes():
            g.add_metric([name], n)
        yield g


class Metrics:
    """All server metrics in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "stilts_requests",
            "RPCs handled, by method and gRPC status code",
            ["method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "stilts_request_duration_seconds",
            "Time from the RPC handler's start to its end, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "stilts_requests_in_flight", "RPCs being handled", ["method"], registry=r
        )
        self.queue_duration = Histogram(
            "stilts_queue_duration_seconds",
            "Time a request's texts wait in the batcher before their first encoder batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "stilts_inference_duration_seconds",
            "Encoder time per dynamic batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "stilts_batch_size",
            "Texts per dynamic batch",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "stilts_batch_tokens",
            "Padded tokens per dynamic batch (what the encoder computes)",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_texts = Gauge(
            "stilts_queue_texts", "Texts waiting in the batcher", ["model"], registry=r
        )
        self.embedded_texts = Counter(
            "stilts_embedded_texts", "Texts embedded", ["model"], registry=r
        )
        self.truncated_inputs = Counter(
            "stilts_truncated_inputs",
            "Texts longer than the model's max_len tokens, cut before embedding",
            ["model"],
            registry=r,
        )
        self.documents_added = Counter(
            "stilts_documents_added",
            "Documents acknowledged by AddDocuments",
            ["index"],
            registry=r,
        )
        self.documents_deleted = Counter(
            "stilts_documents_deleted", "Documents deleted", ["index"], registry=r
        )
        self.ready = Gauge(
            "stilts_ready", "1 when models and indices are loaded and serving", registry=r
        )
        self.model_info = Gauge(
            "stilts_model_info",
            "Served models (value 1)",
            ["model", "name", "precision", "fingerprint"],
            registry=r,
        )
        self._http = None
        self._thread = None
        self.port: int | None = None

    def watch_indexes(self, sizes: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Report ``stilts_index_documents`` from ``sizes()`` at every scrape."""
        self.registry.register(_IndexCollector(sizes))

    def observer(self, model: str) -> Observer:
        """Batcher hooks that feed this registry for one model."""
        return _BatchMetrics(self, model)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server on a daemon thread; returns the bound port."""
        from prometheus_client import start_http_server

        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._http.server_port
        LOG.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _BatchMetrics(Observer):
    def __init__(self, m: Metrics, model: str):
        self.queue = m.queue_duration.labels(model)
        self.inference = m.inference_duration.labels(model)
        self.size = m.batch_size.labels(model)
        self.tokens = m.batch_tokens.labels(model)
        self.depth = m.queue_texts.labels(model)
        self.texts = m.embedded_texts.labels(model)
        self.truncated = m.truncated_inputs.labels(model)

    def queued(self, n_texts: int, n_truncated: int) -> None:
        if n_truncated:
            self.truncated.inc(n_truncated)

    def batch(
        self, size: int, padded_tokens: int, queue_seconds: list[float], seconds: float
    ) -> None:
        self.size.observe(size)
        self.tokens.observe(padded_tokens)
        self.inference.observe(seconds)
        self.texts.inc(size)
        for s in queue_seconds:
            self.queue.observe(s)

    def queue_depth(self, n_texts: int) -> None:
        self.depth.set(n_texts)
