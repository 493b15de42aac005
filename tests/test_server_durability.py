"""Crash and restart of a `stilts serve` subprocess: kill -9 in the middle of an AddDocuments
stream loses nothing that was acknowledged; a restart restores every index; SIGTERM drains the
in-flight request, writes snapshots and exits 0."""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest
from conftest import in_flight

from stilts.client import Client, Document, RemoteError

pytestmark = pytest.mark.slow

WORDS = (
    "apple river mountain window keyboard garden yellow quiet engine letter winter music "
    "doctor bridge candle silver forest market ticket pocket planet rabbit coffee shadow "
    "thunder pencil harbor violin desert castle mirror blanket island jacket lemon rocket "
    "saddle tomato velvet wallet zebra anchor basket cactus dragon feather glacier helmet "
    "igloo jungle kettle ladder magnet needle orange parrot quilt ribbon spider tunnel"
).split()


def sentence(i: int) -> str:
    rng = random.Random(i)
    return f"Record {i}: " + " ".join(rng.sample(WORDS, 9)) + "."


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, default_model_dir):
    return tmp_path_factory.mktemp("durable") / "data"


def start(data_dir, metrics_port: int = -1):
    from stilts.server import start_server

    return start_server(data_dir, subprocess=True, metrics_port=metrics_port, grace_seconds=30)


def test_kill_9_during_add_documents_keeps_every_acknowledged_document(data_dir):
    srv = start(data_dir)
    try:
        with Client(srv.address, timeout=60) as c:
            c.create_index("dur")
            c.create_index("other", document_kind="bitext", kind="hnsw")
            c.add_documents("other", [Document(7, "Guten Morgen", "de"), Document(8, "Hi", "en")])
            acked = []
            enough = threading.Event()

            def on_ack(ack):
                acked.append(ack.acknowledged)
                if len(acked) >= 6:
                    enough.set()

            def upload():
                docs = (Document(i, sentence(i), "en", {"i": i}) for i in range(100_000))
                try:
                    c.add_documents("dur", docs, batch=16, on_ack=on_ack)
                except RemoteError as e:
                    errors.append(e)

            errors: list = []
            t = threading.Thread(target=upload)
            t.start()
            assert enough.wait(120), "no acknowledgements"
            srv.kill()  # SIGKILL mid-stream: no drain, no snapshot
            t.join(30)
    finally:
        srv.kill()
    assert errors and errors[0].status == grpc.StatusCode.UNAVAILABLE
    n_acked = acked[-1]
    assert n_acked >= 6 * 16

    srv = start(data_dir)
    try:
        with Client(srv.address, timeout=60) as c:
            assert {i.name for i in c.list_indexes()} == {"dur", "other"}
            info = c.describe_index("dur")
            # every acknowledged document, plus at most what was in flight (never half a message)
            assert n_acked <= info.documents <= n_acked + 16 * 8
            assert info.documents % 16 == 0
            docs = c.get_documents("dur", list(range(info.documents)))
            assert all(d is not None and d.text == sentence(d.id) for d in docs)
            assert docs[-1].metadata == {"i": info.documents - 1}
            for i in (0, n_acked // 2, n_acked - 1):
                hit = c.search("dur", [sentence(i)], k=1)[0][0]
                assert hit.id == i and hit.score > 0.9  # query: vs passage: prefixes
            assert c.search("other", ["Good morning"], k=1)[0][0].id == 7
        assert "replaying" in srv.log()  # FAISS rebuilt from the database, not a stale snapshot
    finally:
        assert srv.stop() == 0


def test_sigterm_drains_in_flight_requests_then_restart_restores_all(data_dir):
    srv = start(data_dir, metrics_port=0)
    result: dict = {}
    try:
        with Client(srv.address, timeout=120) as c:
            before = c.describe_index("dur").documents
            texts = [sentence(10**6 + i) + " " + sentence(i) for i in range(400)]

            def slow_request():
                try:
                    result["vectors"] = c.embed(texts, batch=400)
                except RemoteError as e:
                    result["error"] = e

            t = threading.Thread(target=slow_request)
            t.start()
            # SIGTERM once the server handles the request (a request that arrives after it is
            # refused, as it should be: on a loaded machine a fixed sleep could come first)
            t0 = time.monotonic()
            while (seen := in_flight(srv.metrics_url, "Embed")) < 1 and time.monotonic() - t0 < 60:
                time.sleep(0.01)
            assert seen >= 1, "the server never handled the request"
            t0 = time.monotonic()
            code = srv.stop(timeout=120)
            t.join(60)
            assert code == 0
            assert "error" not in result, (result.get("error"), srv.log()[-3000:])
            assert result["vectors"].shape == (400, 384)
            assert time.monotonic() - t0 < 60
            log = srv.log()
            assert "received SIGTERM" in log and "stopped" in log
    finally:
        srv.kill()
    srv = start(data_dir)
    try:
        with Client(srv.address, timeout=60) as c:
            assert {i.name for i in c.list_indexes()} == {"dur", "other"}
            assert c.describe_index("dur").documents == before
            assert c.describe_index("other").documents == 2
        # the graceful stop wrote snapshots: nothing to replay on this start
        assert "replaying" not in srv.log()
    finally:
        assert srv.stop() == 0
