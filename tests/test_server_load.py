"""64 concurrent clients (one channel each) for a bounded time against a real server: a mix of
single-sentence Embed and Search calls, zero errors, every client served, requests coalesced."""

from __future__ import annotations

import pytest

from stilts.client import Client, Document
from stilts.server.loadgen import closed_loop, sample_sentences

pytestmark = pytest.mark.slow

CLIENTS = 64
SECONDS = 6.0


def test_64_concurrent_clients_zero_errors(encoder, tmp_path):
    from stilts.server import start_server

    srv = start_server(tmp_path / "data", encoders={"default": encoder})
    try:
        sents = sample_sentences(600, seed=3)
        with Client(srv.address) as c:
            c.create_index("load", document_kind="bitext", kind="flat")
            c.add_documents("load", [Document(i, t) for i, t in enumerate(sents[:64])])

        served = [0] * CLIENTS
        clients = []

        def make_call(n: int):
            client = Client(srv.address, timeout=60)
            clients.append(client)
            mine = sents[n::CLIENTS]

            def call(i: int) -> int:
                text = mine[i % len(mine)]
                if (n + i) % 4 == 0:
                    hits = client.search("load", [text], k=3)[0]
                    assert len(hits) == 3
                else:
                    assert client.embed([text]).shape == (1, encoder.dim)
                served[n] += 1
                return 1

            return call

        batches_before = srv.models.get("default").batcher.batches
        res = closed_loop(make_call, clients=CLIENTS, seconds=SECONDS, warmup=0.5)
        batches = srv.models.get("default").batcher.batches - batches_before
        for client in clients:
            client.close()
        assert res.errors == {}, res.errors
        assert all(n > 0 for n in served), "some clients were never answered"
        assert res.requests >= CLIENTS
        # dynamic batching: far fewer encoder batches than requests
        assert batches < sum(served) / 4, (batches, sum(served))
        with Client(srv.address) as c:
            assert c.health() == "SERVING"
    finally:
        srv.stop(5)
