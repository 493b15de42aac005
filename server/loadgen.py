"""Load generation and the serving speed figures (issue 4, section 6).

- :func:`closed_loop`: N concurrent clients, each sending one request after the other for a fixed
  time; throughput, latency percentiles and errors by status code.
- :func:`measure_speed`: the three serving figures, each a ratio against a baseline measured in
  the same process (medians of repeated blocks, so machine noise cancels out):

  1. ``embed_latency_ratio``: p50 of a gRPC Embed of one sentence / p50 of an in-process
     ``Encoder.encode`` of the same sentence (goal <= 1.15);
  2. ``concurrent_throughput_ratio``: sentences/s of 64 concurrent single-sentence clients /
     sentences/s of an offline ``Encoder.encode`` of the same sentences (goal >= 0.9);
  3. ``search_p99_ms``: p99 latency of one-query Search RPCs on a 100k-document index
     (synthetic unit vectors stored under the model's fingerprint; the query is embedded live),
     for the default kind (``auto``: exact below 100k) and ``hnsw``.

The baseline is the ``Encoder`` as the library ships it (ONNX Runtime spin-waiting off, as the
server runs it). The ``concurrent_cpu_efficiency_ratio`` (sentences per CPU-second of the server
process / of the offline encode) compares what each path costs regardless of the share of a busy
machine it got.

The server runs as a subprocess (``stilts serve``) on a free loopback port so that it does not
share this process's GIL with the load generator.

Run: ``python -m stilts.server.loadgen [--docs 100000] [--clients 64] [--seconds 15]
[--data-dir DIR (keeps the 100k indices for the next run)] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class LoadResult:
    """What a closed-loop run measured."""

    clients: int
    seconds: float
    requests: int
    errors: dict[str, int]
    latencies_ms: dict[str, float]
    items: int
    probe_delta: float | None = None

    @property
    def throughput(self) -> float:
        """Items (sentences) per second."""
        return self.items / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["throughput"] = self.throughput
        return d


def percentiles(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    if not len(values_s):
        return {}
    a = np.asarray(values_s) * 1000.0
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


def closed_loop(
    make_call: Callable[[int], Callable[[int], int]],
    clients: int = 64,
    seconds: float = 10.0,
    warmup: float = 1.0,
    probe: Callable[[], float] | None = None,
) -> LoadResult:
    """Run ``clients`` threads, each calling its ``make_call(client_no)(i)`` in a loop.

    Each call returns how many items it carried; a raised ``RemoteError`` / ``RpcError`` counts as
    an error by status name. Calls that start during ``warmup`` are not measured. ``probe`` (e.g.
    the server's CPU seconds) is read when measuring starts and stops; its difference is returned.
    """
    start_gate = threading.Barrier(clients + 1)
    stop = threading.Event()
    lock = threading.Lock()
    lat: list[float] = []
    errors: Counter = Counter()
    counts = {"requests": 0, "items": 0}
    t_measure = [0.0]

    def worker(n: int) -> None:
        call = make_call(n)
        start_gate.wait()
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                items = call(i)
                err = None
            except Exception as e:  # counted, never raised: the run must finish
                items = 0
                status = getattr(e, "status", None)
                if status is None and callable(getattr(e, "code", None)):
                    status = e.code()
                err = status.name if status is not None else type(e).__name__
            t1 = time.perf_counter()
            i += 1
            if t0 < t_measure[0] or stop.is_set():
                continue
            with lock:
                if err is None:
                    lat.append(t1 - t0)
                    counts["requests"] += 1
                    counts["items"] += items
                else:
                    errors[err] += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    t_measure[0] = time.perf_counter() + 1e9
    start_gate.wait()
    t_measure[0] = time.perf_counter() + warmup
    time.sleep(warmup)
    p0 = probe() if probe else None
    time.sleep(max(0.0, t_measure[0] + seconds - time.perf_counter()))
    p1 = probe() if probe else None
    stop.set()
    elapsed = time.perf_counter() - t_measure[0]
    for t in threads:
        t.join(60)
    return LoadResult(
        clients=clients,
        seconds=elapsed,
        requests=counts["requests"],
        errors=dict(errors),
        latencies_ms=percentiles(lat),
        items=counts["items"],
        probe_delta=None if p0 is None else p1 - p0,
    )


def sample_sentences(n: int = 1000, seed: int = 0) -> list[str]:
    """Real multilingual sentences: the dev pack's Tatoeba files when present (beside the
    project), else the examples file repeated with numbering."""
    root = Path(__file__).resolve().parent.parent
    pack = root.parent / "shared" / "data" / "bitext-dev" / "tatoeba"
    out: list[str] = []
    if pack.is_dir():
        for f in sorted(pack.glob("*-en.tsv"))[:40]:
            for line in f.open(encoding="utf-8"):
                cols = line.rstrip("\n").split("\t")
                out.extend(c for c in cols[:2] if c.strip())
    if not out:
        rows = (root / "examples" / "sentences.tsv").read_text(encoding="utf-8").splitlines()
        out = [r.split("\t", 1)[1] for r in rows if "\t" in r]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(out), size=n, replace=n > len(out))
    return [out[i] for i in picked]


def measure_speed(
    model: str = "default",
    clients: int = 64,
    seconds: float = 15.0,
    docs: int = 100_000,
    repeats: int = 30,
    block: int = 10,
    throughput_rounds: int = 3,
    search_kinds: Sequence[str] = ("auto", "hnsw"),
    search_queries: int = 300,
    data_dir: str | None = None,
    server_args: dict | None = None,
) -> dict:
    """Measure the three serving figures (see the module docstring); returns a dict of them
    with their raw inputs."""
    from stilts.client import Client
    from stilts.encoder import Encoder
    from stilts.server import start_server
    from stilts.server.indexes import build_index

    enc = Encoder(model)
    baselines = {"offline": enc}  # the library as it ships, run in this process
    tmp = tempfile.TemporaryDirectory(prefix="stilts-loadgen-")
    data = Path(data_dir or tmp.name) / "data"
    out: dict = {"model": model, "precision": enc.precision, "threads": enc.threads}

    # 100k-document indices of synthetic unit vectors in the model's space, one per kind
    t0 = time.perf_counter()
    from stilts.index import Document

    for kind in search_kinds if docs else ():
        name = f"bench-{kind}"
        if (data / name).exists():
            continue

        def doc_blocks(size: int = 20_000):
            rng = np.random.default_rng(0)
            for start in range(0, docs, size):
                n = min(size, docs - start)
                v = rng.standard_normal((n, enc.dim), dtype=np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                ids = np.arange(start, start + n)
                yield ids, v, [Document(int(i), f"synthetic document {i}", "xx") for i in ids]

        build_index(data, name, "default", enc.manifest.to_dict(), doc_blocks(), kind=kind)
    out["index_build_seconds"] = time.perf_counter() - t0

    srv = start_server(data, subprocess=True, metrics_port=0, **(server_args or {}))
    try:
        sentence = "The file could not be opened because permission was denied."
        with Client(srv.address) as c:
            for _ in range(20):  # warm every path
                c.embed([sentence])
                for e in baselines.values():
                    e.encode([sentence])
            # 1. single-sentence latency: short blocks of each path, rotated so that load from
            # other processes hits all alike; medians over all calls
            paths = {
                "rpc": lambda: c.embed([sentence]),
                **{name: (lambda e=e: e.encode([sentence])) for name, e in baselines.items()},
            }
            times: dict[str, list[float]] = {name: [] for name in paths}
            order = list(paths)
            for r in range(repeats):
                for name in order[r % len(order) :] + order[: r % len(order)]:
                    for _ in range(block):
                        t0 = time.perf_counter()
                        paths[name]()
                        times[name].append(time.perf_counter() - t0)
            p50 = {name: float(np.median(ts) * 1000) for name, ts in times.items()}
            out["embed_rpc_p50_ms"] = p50["rpc"]
            out["encode_p50_ms"] = p50["offline"]
            out["embed_latency_ratio"] = p50["rpc"] / p50["offline"]
            out["latency_calls"] = len(times["rpc"])

            # 3. Search latency on the 100k indices (one query per RPC, sequential)
            queries = sample_sentences(search_queries + 20, seed=1)
            out["search"] = {}
            for kind in search_kinds if docs else ():
                name = f"bench-{kind}"
                ts = []
                for q in queries:
                    t0 = time.perf_counter()
                    c.search(name, [q], k=10)
                    ts.append(time.perf_counter() - t0)
                info = c.describe_index(name)
                out["search"][kind] = {
                    "documents": info.documents,
                    "factory": info.details.get("factory"),
                    "latency_ms": percentiles(ts[20:]),
                }
            if docs:
                first = out["search"][search_kinds[0]]
                out["search_index_documents"] = first["documents"]
                out["search_p99_ms"] = first["latency_ms"]["p99"]

        # 2. concurrent single-sentence clients vs offline batch encode of the same sentences,
        # alternated in rounds; the figure is the median of the per-round ratios
        sents = sample_sentences(4000, seed=2)

        opened: list = []

        def make_call(n: int):
            client = Client(srv.address, timeout=60)
            opened.append(client)
            mine = sents[n::clients]

            def call(i: int) -> int:
                client.embed([mine[i % len(mine)]])
                return 1

            return call

        rounds = []
        for r in range(throughput_rounds):
            part = sents[r * 500 : (r + 1) * 500]
            row: dict = {}
            for name, e in baselines.items():
                t0, c0 = time.perf_counter(), time.process_time()
                e.encode(part, batch_size=32)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                row[f"{name}_sentences_per_s"] = len(part) / wall
                row[f"{name}_sentences_per_cpu_s"] = len(part) / cpu
            res = closed_loop(
                make_call,
                clients=clients,
                seconds=seconds / throughput_rounds,
                probe=lambda: _cpu_seconds(srv.pid),
            )
            for client in opened:
                client.close()
            opened.clear()
            # sentences per CPU-second: what each path costs, whatever share of a busy machine
            # it got
            row["concurrent_sentences_per_s"] = res.throughput
            row["server_sentences_per_cpu_s"] = (
                res.items / res.probe_delta if res.probe_delta else 0.0
            )
            for name in baselines:
                row[f"ratio_{name}"] = res.throughput / row[f"{name}_sentences_per_s"]
                row[f"cpu_ratio_{name}"] = (
                    row["server_sentences_per_cpu_s"] / row[f"{name}_sentences_per_cpu_s"]
                )
            row["errors"] = res.errors
            row["latencies_ms"] = res.latencies_ms
            rounds.append(row)

        def med(key: str) -> float:
            return float(np.median([r[key] for r in rounds]))

        out["throughput_rounds"] = rounds
        out["offline_sentences_per_s"] = med("offline_sentences_per_s")
        out["concurrent_sentences_per_s"] = med("concurrent_sentences_per_s")
        out["concurrent_throughput_ratio"] = med("ratio_offline")
        out["concurrent_cpu_efficiency_ratio"] = med("cpu_ratio_offline")
        out["metrics"] = _batch_stats(srv.metrics_url)
    finally:
        srv.stop()
        tmp.cleanup()
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batch_stats(url: str | None) -> dict:
    """Mean dynamic batch size and tokens from the server's /metrics."""
    if not url:
        return {}
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    vals = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (
                "stilts_batch_size_sum",
                "stilts_batch_size_count",
                "stilts_batch_tokens_sum",
            ):
                vals[s.name] = vals.get(s.name, 0.0) + s.value
    n = vals.get("stilts_batch_size_count", 0.0)
    return {
        "batches": n,
        "mean_batch_size": vals.get("stilts_batch_size_sum", 0.0) / n if n else 0.0,
        "mean_batch_tokens": vals.get("stilts_batch_tokens_sum", 0.0) / n if n else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the serving speed figures (issue 4, §6).")
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
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument(
        "--data-dir",
        default=None,
        help="keep the benchmark indices here and reuse them on the next run (default: a temp dir)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server_args = {}
    if args.max_wait_ms is not None:
        server_args["max_wait_ms"] = args.max_wait_ms
    res = measure_speed(
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
