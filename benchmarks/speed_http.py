"""HTTP against gRPC: the same Embed over both fronts of one server, in one run.

The server is ``stilts serve --http-port 0`` in a subprocess on loopback (the load generator does
not share its GIL). For each batch size (texts per request) and each concurrency,
:func:`stilts.benchmarks.loadgen.run` drives gRPC (:class:`stilts.client.Client`, float32 bytes)
and HTTP (``POST /v1/embeddings`` with ``encoding_format: base64``, what the ``openai`` client
asks for, decoded to the same float32 array) in alternating rounds; each round gives
``http / grpc`` ratios of p50 latency and of sentences per second, and the figures are the
medians of the rounds, so load from other processes hits both alike.

The HTTP client is the standard library's ``http.client`` on one keep-alive connection per worker,
as lean as the gRPC client's channel: the ratio is the cost of the server's HTTP front door plus
JSON and base64 on the wire, not of a client library (the ``openai`` client adds its own
parsing on top).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import statistics
import tempfile
import time
import types
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from stilts.benchmarks import loadgen

LOG = logging.getLogger(__name__)


class HttpStatusError(Exception):
    """A non-200 answer; ``status.name`` is how the load generator counts it (``HTTP_413``)."""

    def __init__(self, code: int, body: bytes):
        super().__init__(f"HTTP {code}: {body[:200]!r}")
        self.status = types.SimpleNamespace(name=f"HTTP_{code}")


class HttpEmbedClient:
    """``POST /v1/embeddings`` on one keep-alive connection; ``embed`` mirrors
    :meth:`stilts.client.Client.embed` (float32 array out).

    Args:
        url: ``http://host:port`` of the server's HTTP front door.
        token: bearer token (None: none).
        timeout: socket timeout per request, seconds.
        encoding: ``base64`` or ``float``.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 30.0, encoding: str = "base64"
    ):
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.encoding = encoding

    def embed(self, texts: list[str], kind: str = "query", model: str = "default") -> np.ndarray:
        body = {
            "model": model,
            "input": texts,
            "encoding_format": self.encoding,
            "input_type": kind,
        }
        self.conn.request("POST", "/v1/embeddings", json.dumps(body).encode(), self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise HttpStatusError(r.status, data)
        rows = json.loads(data)["data"]
        if self.encoding == "base64":
            raw = b"".join(base64.b64decode(d["embedding"]) for d in rows)
            return np.frombuffer(raw, dtype="<f4").reshape(len(rows), -1)
        return np.asarray([d["embedding"] for d in rows], dtype=np.float32)

    def close(self) -> None:
        self.conn.close()


def batch_workload(sentences: list[str], batch: int, kind: str = "query") -> loadgen.Workload:
    """``batch`` sentences per Embed request, round-robin over ``sentences``."""
    n = len(sentences)

    def call(client, i: int) -> int:
        start = (i * batch) % n
        texts = [sentences[(start + j) % n] for j in range(batch)]
        client.embed(texts, kind=kind)
        return batch

    return call


def run(
    sentences: list[str],
    batches: tuple[int, ...] = (1, 32),
    concurrencies: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    seconds: float = 3.0,
    request_timeout: float = 30.0,
    model: str = "default",
    precision: str | None = None,
    encoding: str = "base64",
    server_args: dict | None = None,
) -> dict:
    """Start a server with both fronts, load each in alternating rounds, stop it; returns the
    figures (see the module docstring)."""
    from stilts.client import Client
    from stilts.server import start_server

    out: dict = {
        "batches": list(batches),
        "concurrencies": list(concurrencies),
        "repeats": repeats,
        "seconds_per_run": seconds,
        "http_encoding": encoding,
        "http_client": "http.client (keep-alive)",
        "grpc_client": "stilts.client.Client (float32 bytes)",
        "sentences": len(sentences),
    }
    with tempfile.TemporaryDirectory(prefix="stilts-bench-http-") as tmp:
        t0 = time.perf_counter()
        srv = start_server(
            Path(tmp) / "data",
            subprocess=True,
            models=[model],
            precision=precision,
            http_port=0,
            **(server_args or {}),
        )
        out["server"] = {
            "address": srv.address,
            "http_url": srv.http_url,
            "start_seconds": time.perf_counter() - t0,
        }
        paths = {
            "grpc": lambda: Client(srv.address, timeout=request_timeout),
            "http": lambda: HttpEmbedClient(
                srv.http_url, timeout=request_timeout, encoding=encoding
            ),
        }
        try:
            with Client(srv.address) as c:
                info = c.info()
                out["server"]["models"] = [
                    {"name": m.name, "precision": m.precision} for m in info.models
                ]
            # warm both paths, and check they give the same vectors
            g, h = paths["grpc"](), paths["http"]()
            for i in range(20):
                a = g.embed(sentences[i : i + 1 + (i % 4) * 8])
                b = h.embed(sentences[i : i + 1 + (i % 4) * 8])
            out["same_vectors"] = bool(np.array_equal(a, b)) if encoding == "base64" else None
            g.close()
            h.close()
            results: dict = {}
            for batch in batches:
                fn = batch_workload(sentences, batch)
                for conc in concurrencies:
                    LOG.info(
                        "http vs grpc: batch %d, concurrency %d, %d rounds", batch, conc, repeats
                    )
                    rounds = []
                    for r in range(repeats):
                        order = ("grpc", "http") if r % 2 == 0 else ("http", "grpc")
                        row: dict = {}
                        for name in order:
                            res = loadgen.run(
                                srv.address,
                                fn,
                                conc,
                                10**9,
                                seconds,
                                request_timeout,
                                connect=paths[name],
                            )
                            row[name] = {
                                "ok": res.ok,
                                "errors": res.errors,
                                "latency_ms": res.latency_ms,
                                "sentences_per_second": res.items_per_second,
                            }
                        row["p50_ratio"] = (
                            row["http"]["latency_ms"]["p50"] / row["grpc"]["latency_ms"]["p50"]
                        )
                        row["throughput_ratio"] = (
                            row["http"]["sentences_per_second"]
                            / row["grpc"]["sentences_per_second"]
                        )
                        rounds.append(row)

                    def med(f, rounds=rounds):
                        return statistics.median(f(x) for x in rounds)

                    results[f"batch{batch}_c{conc}"] = {
                        "batch": batch,
                        "concurrency": conc,
                        "grpc_p50_ms": med(lambda x: x["grpc"]["latency_ms"]["p50"]),
                        "http_p50_ms": med(lambda x: x["http"]["latency_ms"]["p50"]),
                        "grpc_sentences_per_second": med(
                            lambda x: x["grpc"]["sentences_per_second"]
                        ),
                        "http_sentences_per_second": med(
                            lambda x: x["http"]["sentences_per_second"]
                        ),
                        "p50_ratio": med(lambda x: x["p50_ratio"]),
                        "throughput_ratio": med(lambda x: x["throughput_ratio"]),
                        "errors": sum(
                            sum(x[p]["errors"].values()) for x in rounds for p in ("grpc", "http")
                        ),
                        "rounds": rounds,
                    }
            out["results"] = results
        finally:
            out["server"]["exit_code"] = srv.stop()
    return out


def table(r: dict) -> list[str]:
    """The section of the speed report (markdown lines)."""
    lines = [
        "## HTTP against gRPC (Embed)",
        "",
        f"One server, both fronts (`{r['server']['http_url']}`, `{r['server']['address']}`); "
        f"{r['repeats']} alternating rounds of {r['seconds_per_run']} s per transport; HTTP "
        f"`POST /v1/embeddings` with `encoding_format: {r['http_encoding']}` over "
        f"{r['http_client']}, gRPC {r['grpc_client']}; same vectors: {r.get('same_vectors')}. "
        "Ratios are HTTP / gRPC, medians of the per-round ratios (goal: p50 ratio <= 1.15).",
        "",
        "| batch | concurrency | gRPC p50 ms | HTTP p50 ms | p50 ratio | gRPC sent/s | HTTP sent/s "
        "| throughput ratio | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["results"].values():
        lines.append(
            f"| {s['batch']} | {s['concurrency']} | {s['grpc_p50_ms']:.2f} | "
            f"{s['http_p50_ms']:.2f} | **{s['p50_ratio']:.3f}x** | "
            f"{s['grpc_sentences_per_second']:.0f} | {s['http_sentences_per_second']:.0f} | "
            f"{s['throughput_ratio']:.3f}x | {s['errors']} |"
        )
    return lines + [""]
