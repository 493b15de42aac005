"""gRPC under load: a server of our own on loopback, bounded load at several concurrencies.

The server is ``stilts serve`` in a subprocess on a free loopback port
(:func:`stilts.server.start_server`), so the load generator does not share its GIL. For each
workload (Embed of one sentence; Search of one query in a small index of real sentences) and each
concurrency, :func:`stilts.benchmarks.loadgen.run` sends requests until its count or time limit;
the server's /metrics are scraped before and after each run and the difference is reported
(requests by status, mean dynamic batch size, queue and inference time).

Baselines measured in the same invocation: the in-process encoder on the same sentences, once
offline in batches (the throughput ceiling) and once one sentence per call (the latency floor).

:func:`serving_figures` (``python -m stilts.benchmarks.speed_grpc``) measures the README's three
serving figures with the same load generator and percentiles.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stilts.benchmarks import loadgen
from stilts.benchmarks.timing import latency_ms, percentiles

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
            "single_latency_ms": latency_ms(single),
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


# --- the serving figures ----------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _search_indices(data: Path, enc, docs: int, kinds: tuple[str, ...]) -> None:
    """``bench-<kind>`` indices of ``docs`` synthetic unit vectors in the model's space (kept
    when ``data`` already has them)."""
    import numpy as np

    from stilts.records import Document
    from stilts.server.indexes import build_index

    def doc_blocks(size: int = 20_000):
        rng = np.random.default_rng(0)
        for start in range(0, docs, size):
            n = min(size, docs - start)
            v = rng.standard_normal((n, enc.dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ids = np.arange(start, start + n)
            yield ids, v, [Document(int(i), f"synthetic document {i}", "xx") for i in ids]

    for kind in kinds:
        if not (data / f"bench-{kind}").exists():
            build_index(
                data, f"bench-{kind}", "default", enc.manifest.to_dict(), doc_blocks(), kind
            )


def serving_figures(
    sentences: list[str],
    model: str = "default",
    clients: int = 64,
    seconds: float = 15.0,
    docs: int = 100_000,
    repeats: int = 30,
    block: int = 10,
    throughput_rounds: int = 3,
    search_kinds: tuple[str, ...] = ("auto", "hnsw"),
    search_queries: int = 300,
    data_dir: str | None = None,
    server_args: dict | None = None,
) -> dict:
    """The three serving figures, each a ratio against a baseline measured in the same process
    (medians of repeated blocks, so machine noise cancels out).

    1. ``embed_latency_ratio``: p50 of a gRPC Embed of one sentence / p50 of an in-process
       ``Encoder.encode`` of the same sentence, in rotated blocks;
    2. ``concurrent_throughput_ratio``: sentences/s of ``clients`` concurrent single-sentence
       clients (:func:`stilts.benchmarks.loadgen.run`) / sentences/s of an offline
       ``Encoder.encode`` of the same sentences, alternated in rounds; with
       ``concurrent_cpu_efficiency_ratio`` (sentences per CPU-second of the server process / of
       the offline encode: what each path costs, whatever share of a busy machine it got);
    3. ``search_p99_ms``: p99 of one-query Search RPCs on a ``docs``-document index of synthetic
       unit vectors stored under the model's fingerprint (the query is embedded live), for each
       of ``search_kinds`` (``auto``: exact below 100k).

    The baseline is the ``Encoder`` as the library ships it (ONNX Runtime spin-waiting off, as
    the server runs it). The server is ``stilts serve`` in a subprocess on a free loopback port.
    """
    import numpy as np

    from stilts.client import Client
    from stilts.encoding.encoder import Encoder
    from stilts.server import start_server

    enc = Encoder(model)
    tmp = tempfile.TemporaryDirectory(prefix="stilts-bench-serving-")
    data = Path(data_dir or tmp.name) / "data"
    out: dict = {"model": model, "precision": enc.precision, "threads": enc.threads}
    t0 = time.perf_counter()
    if docs:
        _search_indices(data, enc, docs, search_kinds)
    out["index_build_seconds"] = time.perf_counter() - t0

    srv = start_server(data, subprocess=True, metrics_port=0, **(server_args or {}))
    try:
        sentence = "The file could not be opened because permission was denied."
        with Client(srv.address) as c:
            for _ in range(20):  # warm both paths
                c.embed([sentence])
                enc.encode([sentence])
            # 1. rotated blocks of each path, so that load from other processes hits both alike
            paths = {"rpc": lambda: c.embed([sentence]), "offline": lambda: enc.encode([sentence])}
            times: dict[str, list[float]] = {name: [] for name in paths}
            order = list(paths)
            for r in range(repeats):
                for name in order[r % len(order) :] + order[: r % len(order)]:
                    for _ in range(block):
                        t0 = time.perf_counter()
                        paths[name]()
                        times[name].append(time.perf_counter() - t0)
            p50 = {name: percentiles(ts)["p50"] * 1000 for name, ts in times.items()}
            out["embed_rpc_p50_ms"] = p50["rpc"]
            out["encode_p50_ms"] = p50["offline"]
            out["embed_latency_ratio"] = p50["rpc"] / p50["offline"]
            out["latency_calls"] = len(times["rpc"])

            # 3. Search latency (one query per RPC, sequential, 20 warm-up queries)
            out["search"] = {}
            queries = sentences[: search_queries + 20]
            for kind in search_kinds if docs else ():
                ts = []
                for q in queries:
                    t0 = time.perf_counter()
                    c.search(f"bench-{kind}", [q], k=10)
                    ts.append(time.perf_counter() - t0)
                info = c.describe_index(f"bench-{kind}")
                out["search"][kind] = {
                    "documents": info.documents,
                    "factory": info.details.get("factory"),
                    "latency_ms": latency_ms(ts[20:]),
                }
            if docs:
                first = out["search"][search_kinds[0]]
                out["search_index_documents"] = first["documents"]
                out["search_p99_ms"] = first["latency_ms"]["p99"]

        # 2. concurrent single-sentence clients vs offline batch encode, alternated in rounds
        workload = loadgen.embed_workload(sentences)
        before = loadgen.scrape(srv.metrics_url)
        rounds = []
        for r in range(throughput_rounds):
            part = sentences[r * 500 : (r + 1) * 500]
            t0, c0 = time.perf_counter(), time.process_time()
            enc.encode(part, batch_size=32)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            row: dict = {
                "offline_sentences_per_s": len(part) / wall,
                "offline_sentences_per_cpu_s": len(part) / cpu,
            }
            loadgen.run(srv.address, workload, clients, 4 * clients, 1.0, 60.0)  # warm-up
            cpu0 = _cpu_seconds(srv.pid)
            res = loadgen.run(
                srv.address, workload, clients, 10**9, seconds / throughput_rounds, 60.0
            )
            server_cpu = _cpu_seconds(srv.pid) - cpu0
            row["concurrent_sentences_per_s"] = res.items_per_second
            row["server_sentences_per_cpu_s"] = res.items / server_cpu if server_cpu else 0.0
            row["ratio_offline"] = res.items_per_second / row["offline_sentences_per_s"]
            row["cpu_ratio_offline"] = (
                row["server_sentences_per_cpu_s"] / row["offline_sentences_per_cpu_s"]
            )
            row["errors"] = res.errors
            row["latencies_ms"] = res.latency_ms
            rounds.append(row)

        def med(key: str) -> float:
            return float(np.median([r[key] for r in rounds]))

        out["throughput_rounds"] = rounds
        out["offline_sentences_per_s"] = med("offline_sentences_per_s")
        out["concurrent_sentences_per_s"] = med("concurrent_sentences_per_s")
        out["concurrent_throughput_ratio"] = med("ratio_offline")
        out["concurrent_cpu_efficiency_ratio"] = med("cpu_ratio_offline")
        out["metrics"] = loadgen.metrics_delta(before, loadgen.scrape(srv.metrics_url))["derived"]
    finally:
        srv.stop()
        tmp.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m stilts.benchmarks.speed_grpc``: print (and save) :func:`serving_figures`."""
    import argparse
    import json
    import os

    from stilts.sample import dev_sentences

    dev_pack = os.environ.get("STILTS_DEV_PACK", "../shared/data/bitext-dev")
    p = argparse.ArgumentParser(description="Measure the serving speed figures.")
    p.add_argument("--model", default="default", help="model to serve")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients")
    p.add_argument(
        "--seconds", type=float, default=15.0, help="measured seconds of load (all rounds)"
    )
    p.add_argument("--docs", type=int, default=100_000, help="documents in the Search index")
    p.add_argument("--repeats", type=int, default=30, help="alternated latency blocks")
    p.add_argument("--block", type=int, default=10, help="calls per latency block")
    p.add_argument("--rounds", type=int, default=3, help="alternated throughput rounds")
    p.add_argument("--max-wait-ms", type=float, default=None, help="server --max-wait-ms")
    p.add_argument(
        "--tatoeba",
        default=str(Path(dev_pack) / "tatoeba"),
        help="Tatoeba-layout dir the sentences come from [env: STILTS_DEV_PACK (its parent)]",
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument(
        "--data-dir",
        default=None,
        help="keep the benchmark indices here and reuse them on the next run (default: a temp dir)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server_args = {} if args.max_wait_ms is None else {"max_wait_ms": args.max_wait_ms}
    res = serving_figures(
        dev_sentences(args.tatoeba, 4000),
        args.model,
        args.clients,
        args.seconds,
        args.docs,
        args.repeats,
        args.block,
        args.rounds,
        data_dir=args.data_dir,
        server_args=server_args,
    )
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
