"""The bounded load generator against a real gRPC server on loopback: it stops by itself."""

from __future__ import annotations

import socket
import time

import pytest

from stilts.benchmarks import loadgen

SENTENCES = ["Guten Morgen", "Datei konnte nicht geöffnet werden", "Bonjour à tous", "こんにちは"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoder):
    from stilts.server import start_server

    srv = start_server(tmp_path_factory.mktemp("data"), encoders={"default": encoder})
    yield srv
    srv.stop(5)


def test_count_limit_and_metrics_delta(server):
    before = loadgen.scrape(server.metrics_url)
    t0 = time.perf_counter()
    res = loadgen.run(
        server.address,
        loadgen.embed_workload(SENTENCES),
        concurrency=4,
        max_requests=30,
        max_seconds=60,
    )
    assert time.perf_counter() - t0 < 60
    after = loadgen.scrape(server.metrics_url)
    assert (res.attempted, res.ok, res.errors, res.stopped_by) == (30, 30, {}, "count")
    assert res.items == 30 and res.throughput > 0
    lat = res.latency_ms
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    d = loadgen.metrics_delta(before, after)
    embed_ok = [
        v
        for k, v in d["delta"].items()
        if k.startswith("stilts_requests_total") and 'Service/Embed"' in k and 'code="OK"' in k
    ]
    assert sum(embed_ok) == 30  # the server counted exactly what we sent
    assert d["derived"]["mean_batch_size"] >= 1


def test_time_limit_stops_an_unbounded_budget(server):
    t0 = time.perf_counter()
    res = loadgen.run(
        server.address,
        loadgen.embed_workload(SENTENCES),
        concurrency=8,
        max_requests=10**9,
        max_seconds=1.5,
        request_timeout=5,
    )
    wall = time.perf_counter() - t0
    assert res.stopped_by == "time"
    assert 0 < res.attempted < 10**9 and res.ok == res.attempted
    assert wall < 1.5 + 5 + 1  # time limit + one request deadline (+ thread start-up)
    assert res.seconds >= 1.5 * 0.9


def test_failures_are_counted_not_raised(server):
    res = loadgen.run(
        server.address,
        loadgen.search_workload("no-such-index", SENTENCES),
        concurrency=2,
        max_requests=10,
        max_seconds=30,
    )
    assert res.ok == 0 and res.errors == {"NOT_FOUND": 10} and res.attempted == 10
    assert res.to_dict()["error_count"] == 10


def test_unresponsive_server_is_bounded_by_deadlines():
    """A socket that accepts TCP but never speaks gRPC: every request hits its deadline."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        t0 = time.perf_counter()
        res = loadgen.run(
            address,
            loadgen.embed_workload(SENTENCES),
            concurrency=3,
            max_requests=1000,
            max_seconds=1.0,
            request_timeout=0.5,
        )
        wall = time.perf_counter() - t0
    finally:
        sock.close()
    assert res.ok == 0 and sum(res.errors.values()) == res.attempted > 0
    assert set(res.errors) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
    assert wall < 1.0 + 0.5 + 2


def test_bad_limits_are_rejected():
    from stilts.errors import StiltsError

    with pytest.raises(StiltsError, match="max_requests"):
        loadgen.run("127.0.0.1:1", loadgen.embed_workload(SENTENCES), max_requests=0)
