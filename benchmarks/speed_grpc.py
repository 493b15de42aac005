"""gRPC under load: a server of our own on loopback, bounded load at several concurrencies.

The server is ``stilts serve`` in a subprocess on a free loopback port
(:func:`stilts.server.start_server`), so the load generator does not share its GIL. For each
workload (Embed of one sentence; Search of one query in a small index of real sentences) and each
concurrency, :func:`stilts.benchmarks.loadgen.run` sends requests until its count or time limit;
the server's /metrics are scraped before and after each run and the difference is reported
(requests by status, mean dynamic batch size, queue and inference time).

Baselines measured in the same invocation: the in-process encoder on the same sentences, once
offline in batches (the throughput ceiling) and once one sentence per call (the latency floor).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from stilts.benchmarks import loadgen
from stilts.benchmarks.timing import percentiles

LOG = logging.getLogger(__name__)

INDEX = "bench-sentences"


class _Baseline:
    """The in-process encoder on the same sentences: offline batch throughput (the ceiling) and
    one-sentence latency (the floor), measured right before each load run so that each ratio
    compares two measurements taken back to back. The session is configured as the server
    configures its own (ORT spin-waiting off), so the ratio isolates the cost of serving."""

    def __init__(self, model: str, precision: str, sentences: list[str]):
        from stilts import Encoder

        self.enc = Encoder(model, precision=precision, spin=False)
        self.sentences = sentences
        self.enc.encode(sentences[:64], kind="query")
        self.runs: list[dict] = []

    def measure(self, n_batch: int = 256, n_single: int = 50) -> dict:
        batch = self.sentences[:n_batch]
        t0 = time.perf_counter()
        self.enc.encode(batch, kind="query", batch_size=32)
        rate = len(batch) / (time.perf_counter() - t0)
        single = []
        for s in self.sentences[:n_single]:
            t0 = time.perf_counter()
            self.enc.encode([s], kind="query")
            single.append(time.perf_counter() - t0)
        r = {
            "offline_sentences_per_second": rate,
            "single_latency_ms": {k: v * 1000 for k, v in percentiles(single).items()},
        }
        self.runs.append(r)
        return r

    def summary(self) -> dict:
        return {
            "offline_sentences_per_second": statistics.median(
                r["offline_sentences_per_second"] for r in self.runs
            ),
            "single_latency_ms": {
                "p50": statistics.median(r["single_latency_ms"]["p50"] for r in self.runs)
            },
            "runs": self.runs,
            "threads": self.enc.threads,
            "precision": self.enc.precision,
            "ort_spinning": False,
        }


def _one_run(srv, fn, conc, max_requests, max_seconds, request_timeout, baseline) -> dict:
    base = baseline.measure() if baseline is not None else None
    before = loadgen.scrape(srv.metrics_url)
    res = loadgen.run(srv.address, fn, conc, max_requests, max_seconds, request_timeout)
    after = loadgen.scrape(srv.metrics_url)
    r = res.to_dict()
    r["server_metrics"] = loadgen.metrics_delta(before, after)
    if base is not None:
        r["baseline"] = base
        r["throughput_vs_offline"] = res.items_per_second / base["offline_sentences_per_second"]
        if "p50" in res.latency_ms:
            r["p50_vs_in_process"] = res.latency_ms["p50"] / base["single_latency_ms"]["p50"]
    return r


def _median_run(runs: list[dict]) -> dict:
    """The figures of several runs: medians of each number, errors summed, runs kept."""

    def med(values):
        vals = [v for v in values if v is not None]
        return statistics.median(vals) if vals else None

    out = {
        "repeats": len(runs),
        "attempted": sum(r["attempted"] for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "errors": {},
        "stopped_by": "/".join(sorted({r["stopped_by"] for r in runs})),
        "latency_ms": {k: med(r["latency_ms"].get(k) for r in runs) for k in runs[0]["latency_ms"]},
        "throughput": med(r["throughput"] for r in runs),
        "items_per_second": med(r["items_per_second"] for r in runs),
        "throughput_vs_offline": med(r.get("throughput_vs_offline") for r in runs),
        "p50_vs_in_process": med(r.get("p50_vs_in_process") for r in runs),
        "server_metrics": {
            "derived": {
                k: med(r["server_metrics"]["derived"].get(k) for r in runs)
                for k in runs[-1]["server_metrics"]["derived"]
            }
        },
        "runs": runs,
    }
    for r in runs:
        for k, v in r["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + v
    return out


def run(
    sentences: list[str],
    concurrencies: list[int] = (1, 8, 64),
    workloads: tuple[str, ...] = ("embed", "search"),
    max_requests: int = 2000,
    max_seconds: float = 10.0,
    request_timeout: float = 10.0,
    model: str = "default",
    precision: str = "int8",
    index_documents: list[str] | None = None,
    repeats: int = 3,
    server_args: dict | None = None,
) -> dict:
    """Start a server, load it, stop it; returns the figures (see the module docstring)."""
    from stilts.client import Client
    from stilts.server import start_server

    out: dict = {
        "max_requests": max_requests,
        "max_seconds": max_seconds,
        "request_timeout": request_timeout,
        "concurrencies": list(concurrencies),
        "sentences": len(sentences),
    }
    baseline = _Baseline(model, precision, sentences)
    with tempfile.TemporaryDirectory(prefix="stilts-bench-grpc-") as tmp:
        t0 = time.perf_counter()
        srv = start_server(
            Path(tmp) / "data",
            subprocess=True,
            models=[model],
            precision=precision,
            **(server_args or {}),
        )
        out["server"] = {
            "address": srv.address,
            "metrics_url": srv.metrics_url,
            "start_seconds": time.perf_counter() - t0,
        }
        try:
            with Client(srv.address, timeout=600) as c:
                info = c.info()
                out["server"]["version"] = info.version
                out["server"]["models"] = [
                    {"name": m.name, "precision": m.precision, "provider": m.provider}
                    for m in info.models
                ]
                if "search" in workloads:
                    docs = index_documents or sentences
                    t0 = time.perf_counter()
                    c.create_index(INDEX, kind="flat", document_kind="passage")
                    c.add_documents(
                        INDEX, [{"id": i, "text": t, "language": "en"} for i, t in enumerate(docs)]
                    )
                    out["search_index"] = {
                        "documents": c.describe_index(INDEX).documents,
                        "build_seconds": time.perf_counter() - t0,
                    }
                for s in sentences[:32]:  # warm the serving path
                    c.embed([s])
            results: dict = {}
            for w in workloads:
                fn = (
                    loadgen.embed_workload(sentences)
                    if w == "embed"
                    else loadgen.search_workload(INDEX, sentences)
                )
                results[w] = {}
                for conc in concurrencies:
                    LOG.info("grpc %s: concurrency %d, %d runs", w, conc, repeats)
                    runs = [
                        _one_run(
                            srv,
                            fn,
                            conc,
                            max_requests,
                            max_seconds,
                            request_timeout,
                            baseline if w == "embed" else None,
                        )
                        for _ in range(repeats)
                    ]
                    results[w][str(conc)] = _median_run(runs)
            out["workloads"] = results
            out["baseline"] = baseline.summary()
        finally:
            out["server"]["exit_code"] = srv.stop()
    return out
