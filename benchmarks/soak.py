"""Soak: hours-long mixed traffic against one server, and how it holds up over time.

``stilts bench speed --soak MINUTES``: ``stilts serve`` in a subprocess on a free loopback port
with one index seeded from real sentences; :func:`stilts.benchmarks.loadgen.run` then keeps
``clients`` concurrent clients busy for MINUTES with a fixed mix per cycle of 20 requests
(``MIX``): Search (one query, k=10), AddDocuments (8 new documents), DeleteDocuments (the 8
documents of an add one cycle earlier) and GetDocuments (4 ids). Every request is recorded as it
ends; the server's resident memory (``VmRSS`` of its process) is sampled every few seconds.

Reported per time window: requests and errors by operation and gRPC status, p50/p99 latency per
operation, and RSS; over the whole run: errors by code, the RSS at start, end and peak, and the
index's final size against the adds and deletes acknowledged.
"""

from __future__ import annotations

import collections
import logging
import tempfile
import threading
import time
from pathlib import Path

from stilts.benchmarks import loadgen
from stilts.benchmarks.timing import latency_ms

LOG = logging.getLogger(__name__)

INDEX = "soak"
CYCLE = 20
# request slot in a cycle of 20 -> operation
MIX = ["search"] * 12 + ["add"] * 5 + ["delete"] * 2 + ["get"]
ADD_BATCH = 8
FIRST_NEW_ID = 10_000_000


def operation(i: int) -> str:
    """The operation of request number ``i``."""
    return MIX[i % CYCLE]


def _add_ids(i: int) -> list[int]:
    return [FIRST_NEW_ID + i * ADD_BATCH + j for j in range(ADD_BATCH)]


def mixed_workload(sentences: list[str], index: str = INDEX) -> loadgen.Workload:
    """Request ``i`` does ``operation(i)``; deletes remove the documents of the add in the same
    slot one cycle earlier, so deleted documents exist (unless that add failed)."""
    first_add = MIX.index("add")

    def call(client, i: int) -> int:
        op = operation(i)
        if op == "search":
            client.search(index, [sentences[i % len(sentences)]], k=10)
            return 1
        if op == "add":
            docs = [
                {"id": d, "text": sentences[d % len(sentences)], "language": "xx"}
                for d in _add_ids(i)
            ]
            return client.add_documents(index, docs).added
        if op == "delete":
            earlier = i - i % CYCLE - CYCLE + first_add + (i % CYCLE - MIX.index("delete"))
            # in the first cycle there is no earlier add: delete ids that never existed
            ids = _add_ids(earlier) if earlier >= 0 else [FIRST_NEW_ID - 1 - i]
            return client.delete_documents(index, ids)
        ids = [i % 1000, 1000 + i % 997, FIRST_NEW_ID + i * ADD_BATCH]  # distinct
        return sum(d is not None for d in client.get_documents(index, ids))

    return call


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux /proc), None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Recorder:
    """Request endings and RSS samples, bucketed by time window."""

    def __init__(self, window_seconds: float):
        self.window = window_seconds
        self.lock = threading.Lock()
        self.latency: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
        self.errors: dict[tuple[int, str], collections.Counter] = collections.defaultdict(
            collections.Counter
        )
        self.rss: dict[int, list[float]] = collections.defaultdict(list)

    def request(self, i: int, t_end: float, seconds: float, error: str | None) -> None:
        key = (int(t_end // self.window), operation(i))
        with self.lock:
            if error is None:
                self.latency[key].append(seconds)
            else:
                self.errors[key][error] += 1

    def memory(self, t: float, mb: float) -> None:
        with self.lock:
            self.rss[int(t // self.window)].append(mb)

    def windows(self) -> list[dict]:
        keys = set(self.latency) | set(self.errors)
        n = max([w for w, _ in keys] + list(self.rss) + [-1]) + 1
        out = []
        for w in range(n):
            row: dict = {"start_s": w * self.window, "operations": {}}
            for op in dict.fromkeys(MIX):
                lat = self.latency.get((w, op), [])
                errs = dict(self.errors.get((w, op), {}))
                if not lat and not errs:
                    continue
                p = latency_ms(lat)
                row["operations"][op] = {
                    "ok": len(lat),
                    "errors": errs,
                    "p50_ms": p.get("p50"),
                    "p99_ms": p.get("p99"),
                }
            mem = self.rss.get(w, [])
            row["rss_mb"] = {"max": max(mem), "last": mem[-1]} if mem else None
            out.append(row)
        return out


def _sample_rss(pid: int, rec: Recorder, t0: float, stop: threading.Event, every: float):
    while not stop.is_set():
        mb = rss_mb(pid)
        if mb is not None:
            rec.memory(time.perf_counter() - t0, mb)
        stop.wait(every)


def run(
    sentences: list[str],
    minutes: float,
    clients: int = 64,
    window_seconds: float = 60.0,
    request_timeout: float = 30.0,
    rss_every: float = 5.0,
    model: str = "default",
    precision: str = "int8",
    seed_documents: int = 2000,
    server_args: dict | None = None,
) -> dict:
    """Start a server, soak it for ``minutes``, stop it; returns the figures.

    Args:
        sentences: texts for queries and documents (round-robin).
        minutes: how long new requests start (> 0).
        clients: concurrent clients, each with its own channel.
        window_seconds: width of a reporting window.
        request_timeout: deadline of every request.
        rss_every: seconds between RSS samples of the server process.
        model, precision: what the server serves.
        seed_documents: documents in the index before the soak starts (at most one per
            sentence).
        server_args: more :class:`~stilts.server.config.ServerConfig` fields.
    """
    from stilts.client import Client
    from stilts.errors import ErrorCode, StiltsError
    from stilts.server import start_server

    if not minutes > 0 or clients < 1 or not window_seconds > 0:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "--soak MINUTES must be > 0, clients >= 1, window > 0",
            "soak",
        )
    out: dict = {
        "minutes": minutes,
        "clients": clients,
        "window_seconds": window_seconds,
        "request_timeout": request_timeout,
        "mix_per_20_requests": dict(collections.Counter(MIX)),
        "add_batch": ADD_BATCH,
    }
    rec = Recorder(window_seconds)
    with tempfile.TemporaryDirectory(prefix="stilts-bench-soak-") as tmp:
        srv = start_server(
            Path(tmp) / "data",
            subprocess=True,
            models=[model],
            precision=precision,
            **(server_args or {}),
        )
        try:
            with Client(srv.address, timeout=600) as c:
                c.create_index(INDEX, kind="flat", document_kind="passage")
                seed = [
                    {"id": i, "text": sentences[i % len(sentences)], "language": "xx"}
                    for i in range(min(seed_documents, len(sentences)))
                ]
                c.add_documents(INDEX, seed)
            out["server"] = {"address": srv.address, "pid": srv.pid}
            out["rss_mb_after_seed"] = rss_mb(srv.pid)
            stop = threading.Event()
            t0 = time.perf_counter()
            sampler = threading.Thread(
                target=_sample_rss, args=(srv.pid, rec, t0, stop, rss_every), daemon=True
            )
            sampler.start()
            LOG.info("soak: %d clients for %.1f min against %s", clients, minutes, srv.address)
            res = loadgen.run(
                srv.address,
                mixed_workload(sentences),
                concurrency=clients,
                max_requests=10**12,
                max_seconds=minutes * 60,
                request_timeout=request_timeout,
                observe=rec.request,
            )
            stop.set()
            sampler.join()
            with Client(srv.address, timeout=60) as c:
                out["index_documents_end"] = c.describe_index(INDEX).documents
            out["server_alive_at_end"] = srv.proc.poll() is None
        finally:
            out["server_exit_code"] = srv.stop()
    totals = res.to_dict()
    out["totals"] = {
        k: totals[k]
        for k in ("attempted", "ok", "errors", "error_count", "seconds", "throughput", "latency_ms")
    }
    out["windows"] = rec.windows()
    samples = [mb for w in sorted(rec.rss) for mb in rec.rss[w]]
    out["rss_mb"] = (
        {"first": samples[0], "last": samples[-1], "max": max(samples), "samples": len(samples)}
        if samples
        else None
    )
    return out


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(results: dict, plot_paths=None, base=None) -> str:
    """The soak figures as Markdown tables."""
    r = results["sections"]["soak"] if "sections" in results else results
    t = r["totals"]
    lines = [
        f"## Soak: {r['clients']} clients for {r['minutes']:g} min",
        "",
        f"Mix per 20 requests: {r['mix_per_20_requests']} (adds of {r['add_batch']} documents). "
        f"{t['attempted']:,} requests, {t['ok']:,} ok, throughput {_f(t['throughput'])}/s, "
        f"p50 {_f(t['latency_ms'].get('p50'))} ms, p99 {_f(t['latency_ms'].get('p99'))} ms.",
        "",
        "Errors by code: "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(t["errors"].items())) or "none"),
        "",
    ]
    if r.get("rss_mb"):
        m = r["rss_mb"]
        lines += [
            f"Server RSS: after seeding {_f(r.get('rss_mb_after_seed'))} MiB, first sample "
            f"{_f(m['first'])}, last {_f(m['last'])}, peak {_f(m['max'])} MiB "
            f"({m['samples']} samples). Index documents at the end: "
            f"{r.get('index_documents_end', '-'):,}; server alive at the end: "
            f"{r.get('server_alive_at_end')}, exit code {r.get('server_exit_code')}.",
            "",
        ]
    ops = list(dict.fromkeys(MIX))
    header = ["window start (s)", *[f"{op} ok / p50 / p99 ms" for op in ops], "errors", "RSS MiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for w in r["windows"]:
        cells = [f"{w['start_s']:g}"]
        errs: collections.Counter = collections.Counter()
        for op in ops:
            o = w["operations"].get(op)
            if o is None:
                cells.append("-")
                continue
            errs.update(o["errors"])
            cells.append(f"{o['ok']:,} / {_f(o['p50_ms'])} / {_f(o['p99_ms'])}")
        cells.append(", ".join(f"{k} {v}" for k, v in sorted(errs.items())) or "0")
        cells.append(_f(w["rss_mb"]["max"]) if w.get("rss_mb") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plots(results: dict, out_dir: Path, stem: str) -> list[Path]:
    """No charts: the windows table is the figure."""
    return []
