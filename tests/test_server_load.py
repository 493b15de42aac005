"""64 concurrent clients (one channel each) for a bounded time against a real server: a mix of
single-sentence Embed and Search calls, zero errors, every client served, requests coalesced."""

from __future__ import annotations

from pathlib import Path

import pytest

from stilts.benchmarks import loadgen
from stilts.client import Client, Document
from stilts.inputs import read_documents

pytestmark = pytest.mark.slow

CLIENTS = 64
SECONDS = 6.0
ROOT = Path(__file__).resolve().parent.parent


def test_64_concurrent_clients_zero_errors(encoder, tmp_path):
    from stilts.server import start_server

    srv = start_server(tmp_path / "data", encoders={"default": encoder})
    try:
        sents = [t for _, t, _, _ in read_documents(ROOT / "examples" / "sentences.tsv")]
        with Client(srv.address) as c:
            c.create_index("load", document_kind="bitext", kind="flat")
            c.add_documents("load", [Document(i, t) for i, t in enumerate(sents)])

        served: dict[int, int] = {}

        def call(client, i: int) -> int:
            text = sents[i % len(sents)]
            if i % 4 == 0:
                hits = client.search("load", [text], k=3)[0]
                assert len(hits) == 3
            else:
                assert client.embed([text]).shape == (1, encoder.dim)
            served[id(client)] = served.get(id(client), 0) + 1
            return 1

        batches_before = srv.models.get("default").batcher.batches
        res = loadgen.run(srv.address, call, CLIENTS, 10**9, SECONDS, request_timeout=60)
        batches = srv.models.get("default").batcher.batches - batches_before
        assert res.errors == {}, res.errors
        assert res.stopped_by == "time"
        assert len(served) == CLIENTS, "some clients were never answered"
        assert res.ok >= CLIENTS
        # dynamic batching: far fewer encoder batches than requests
        assert batches < res.ok / 4, (batches, res.ok)
        with Client(srv.address) as c:
            assert c.health() == "SERVING"
    finally:
        srv.stop(5)
