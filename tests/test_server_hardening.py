"""Regression tests for issue 11 (hardening), each against a real server on loopback through a
generic client built from server reflection alone (what grpcurl or an independent client does):
the exact status code and a message that names the field or flag.

Numbered as in the issue: 1 crash on a long ``kind``, 2 ONNX Runtime telemetry, 3 unbounded echo,
4 index-name bypass, 5 unbounded responses, 6 mislabelled endings, 7 unclear messages,
8 metrics port exposure.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import in_flight
from generic_client import Generic, loopback_server
from prometheus_client.parser import text_string_to_metric_families

C = grpc.StatusCode
ROOT = Path(__file__).resolve().parent.parent
LIMITS = dict(
    max_texts_per_request=64,
    max_chars_per_text=3000,
    max_k=100,
    max_message_bytes=1 << 20,
    max_mine_texts=500,
    max_response_bytes=1 << 20,
)
TOKEN = "s3cret-token"


def status(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)
    return e.value


def scrape(url: str) -> dict[tuple[str, str], float]:
    """``stilts_requests_total`` by (method, code)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "stilts_requests_total":
                out[(s.labels["method"].rsplit("/", 1)[-1], s.labels["code"])] = s.value
    return out


def counted(before: dict, after: dict, method: str) -> dict[str, float]:
    """Endings of ``method`` counted between two scrapes, by code."""
    codes = {c for (m, c) in after if m == method}
    out = {c: after.get((method, c), 0) - before.get((method, c), 0) for c in codes}
    return {c: n for c, n in out.items() if n}


def words(i: int, n: int = 60) -> str:
    return f"sentence number {i} " + " ".join(f"w{j % 97}" for j in range(n))


@pytest.fixture(scope="module")
def server(encoder, tmp_path_factory):
    with loopback_server(tmp_path_factory.mktemp("data"), encoder, **LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def g(server):
    c = Generic(server.address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def heavy(g):
    """An index of 40 documents with 30 KB of metadata each (1.2 MB in all)."""
    g.call("IndexService", "CreateIndex", name="heavy", kind="flat")
    blob = "m" * 30_000
    docs = [
        {"id": i, "text": f"document {i} about trains", "language": "en", "metadata": {"b": blob}}
        for i in range(40)
    ]
    reqs = [
        g.message("IndexService", "AddDocuments", index="heavy", documents=docs[i : i + 10])
        for i in range(0, 40, 10)
    ]
    assert g.call("IndexService", "AddDocuments", reqs)[-1].acknowledged == 40
    return docs


# -- 1. a long kind must not reach FAISS --------------------------------------------------------


@pytest.fixture(scope="module")
def child(default_model_dir, tmp_path_factory):
    """``stilts serve`` in a child process with HOME and the cache pointed at empty directories
    and ONNX Runtime's own switch set to *enable* telemetry (stilts must override it)."""
    from stilts.server import start_server

    root = tmp_path_factory.mktemp("child")
    home, data, stilts_home = root / "home", root / "data", root / "stilts-home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "STILTS_HOME": str(stilts_home),
        "ORT_DISABLE_TELEMETRY": "0",
    }
    srv = start_server(
        data, subprocess=True, env=env, models=[str(default_model_dir)], metrics_port=-1
    )
    yield srv, home, data, stilts_home
    srv.stop()


def test_1_kind_of_15000_characters_is_invalid_argument_and_the_server_lives(child):
    srv = child[0]
    c = Generic(srv.address)
    try:
        for kind in ("IVF" * 5000, "((((Flat))))", "IVF99999999,Flat", "Flat;rm"):
            e = status(c.call, "IndexService", "CreateIndex", name="k1", kind=kind)
            assert e.code() == C.INVALID_ARGUMENT, e.details()
            assert e.details().startswith("kind "), e.details()
            assert len(e.details()) < 400
        assert srv.proc.poll() is None, "the server died"
        info = c.call("IndexService", "CreateIndex", name="k1", kind="IVF4,Flat")
        assert info.name == "k1"
    finally:
        c.close()


def test_1_vector_index_create_checks_kind_before_faiss(tmp_path):
    """The library path too: in a child, so a regression shows as a failure, not a dead run."""
    code = (
        "import sys\n"
        "from stilts.index import VectorIndex\n"
        "from stilts.errors import StiltsError\n"
        "try:\n"
        f"    VectorIndex.create({str(tmp_path / 'x')!r}, 8, kind='IVF' * 5000)\n"
        "except StiltsError as e:\n"
        "    print(e.code.name, e.field); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["INVALID_ARGUMENT", "kind"]


# -- 2. nothing written outside the data directory and cache --------------------------------------


def test_2_no_onnxruntime_telemetry_nothing_written_outside_data_and_cache(child):
    srv, home, data, stilts_home = child
    c = Generic(srv.address)
    try:
        c.call("IndexService", "CreateIndex", name="t2", kind="flat")
        c.call(
            "IndexService",
            "AddDocuments",
            c.message(
                "IndexService", "AddDocuments", index="t2", documents=[{"id": 1, "text": "hi"}]
            ),
        )
        assert c.call("RetrievalService", "Search", index="t2", queries=["hello"]).results
    finally:
        c.close()
    written = [p for p in home.rglob("*")]
    assert written == [], f"written under HOME: {written}"
    assert (data / "t2").is_dir()
    # auto chose the serving route on this CPU (OpenVINO where it won: its telemetry is stubbed)
    # and recorded it in the cache, not under HOME
    assert list((stilts_home / "cpu-routes").glob("*.json"))
    assert os.environ.get("ORT_DISABLE_TELEMETRY") == "1"  # importing stilts set it here too


# -- 3. echoed values are cut short -------------------------------------------------------------


LONG = "z" * 20_000


@pytest.mark.parametrize(
    "service,method,fields,code,field",
    [
        ("IndexService", "DescribeIndex", {"name": LONG}, C.NOT_FOUND, "name"),
        ("IndexService", "CreateIndex", {"name": LONG}, C.INVALID_ARGUMENT, "name"),
        ("IndexService", "DropIndex", {"name": LONG}, C.NOT_FOUND, "name"),
        ("RetrievalService", "Search", {"index": LONG, "queries": ["a"]}, C.NOT_FOUND, "index"),
        ("EmbeddingService", "Embed", {"texts": ["a"], "model": LONG}, C.NOT_FOUND, "model"),
        (
            "RetrievalService",
            "Mine",
            {
                "src": {"texts": {"texts": ["a"]}},
                "tgt": {"texts": {"texts": ["b"]}},
                "margin": LONG,
            },
            C.INVALID_ARGUMENT,
            "margin",
        ),
        (
            "RetrievalService",
            "Mine",
            {"src": {"index": LONG}, "tgt": {"texts": {"texts": ["b"]}}},
            C.NOT_FOUND,
            "src.index",
        ),
    ],
)
def test_3_long_values_get_their_status_not_metadata_overflow(
    g, service, method, fields, code, field
):
    e = status(g.call, service, method, **fields)
    assert e.code() == code, e.details()
    assert field in e.details() and len(e.details()) < 1100, e.details()[:300]


# -- 4. names are full-matched -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc", "ab\nc"])
def test_4_index_name_with_newline_is_invalid(g, server, name):
    e = status(g.call, "IndexService", "CreateIndex", name=name)
    assert e.code() == C.INVALID_ARGUMENT and e.details().startswith("name "), e.details()
    assert not [p for p in Path(server.config.data_dir).iterdir() if "\n" in p.name]


# -- 5. responses are bounded before they are built ----------------------------------------------


def test_5_search_response_over_the_limit_is_refused_early(g, heavy, server):
    e = status(g.call, "RetrievalService", "Search", index="heavy", queries=["train"] * 8, k=40)
    assert e.code() == C.RESOURCE_EXHAUSTED, e.details()
    assert "--max-response-bytes" in e.details() and e.details().startswith("k:"), e.details()
    # under the limit it answers (8 x 4 hits x 30 KB = 960 KB < 1 MB)
    r = g.call("RetrievalService", "Search", index="heavy", queries=["train"] * 8, k=4)
    assert [len(q.hits) for q in r.results] == [4] * 8


def test_5_get_documents_refuses_repeats_and_oversized_answers(g, heavy):
    e = status(g.call, "IndexService", "GetDocuments", index="heavy", ids=[1, 2, 1])
    assert e.code() == C.INVALID_ARGUMENT and "ids[2]" in e.details(), e.details()
    e = status(g.call, "IndexService", "GetDocuments", index="heavy", ids=list(range(40)))
    assert e.code() == C.RESOURCE_EXHAUSTED and "--max-response-bytes" in e.details()
    r = g.call("IndexService", "GetDocuments", index="heavy", ids=[3, 4, 999])
    assert [d.id for d in r.documents] == [3, 4] and list(r.missing_ids) == [999]


# -- 6. endings are labelled as they happened ----------------------------------------------------


def _cancel_while_running(server, method: str, stream_call) -> None:
    """Cancel once the server is handling the call (its in-flight gauge is up)."""
    t0 = time.monotonic()
    while in_flight(server.metrics_url, method) < 1 and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    time.sleep(0.1)  # now waiting on the encoder
    stream_call.cancel()
    with pytest.raises(grpc.RpcError) as e:
        list(stream_call)
    assert e.value.code() == C.CANCELLED


def _settled(server, before: dict, method: str) -> dict[str, float]:
    t0 = time.monotonic()
    while in_flight(server.metrics_url, method) > 0 and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    return counted(before, scrape(server.metrics_url), method)


def test_6_client_cancel_of_add_documents_and_mine_is_cancelled(g, server):
    g.call("IndexService", "CreateIndex", name="cancel6", kind="flat")
    before = scrape(server.metrics_url)
    docs = [{"id": i, "text": words(i, 120)} for i in range(64)]
    req = g.message("IndexService", "AddDocuments", index="cancel6", documents=docs)
    add = g.stub("IndexService", "AddDocuments")(iter([req]), timeout=60)
    _cancel_while_running(server, "AddDocuments", add)
    assert _settled(server, before, "AddDocuments") == {"CANCELLED": 1}
    mine = g.message(
        "RetrievalService",
        "Mine",
        src={"texts": {"texts": [words(i, 80) for i in range(300)]}},
        tgt={"texts": {"texts": [words(i + 1, 80) for i in range(300)]}},
    )
    _cancel_while_running(server, "Mine", g.stub("RetrievalService", "Mine")(mine, timeout=60))
    assert _settled(server, before, "Mine") == {"CANCELLED": 1}


def test_6_embed_stream_deadline_is_deadline_exceeded_without_error_logs(g, server, caplog):
    before = scrape(server.metrics_url)
    texts = [words(i, 40) for i in range(32)]
    stub = g.stub("EmbeddingService", "EmbedStream")
    with caplog.at_level(logging.ERROR, logger="stilts"):
        for _ in range(30):
            reqs = [g.message("EmbeddingService", "EmbedStream", texts=texts) for _ in range(4)]
            with pytest.raises(grpc.RpcError) as e:
                list(stub(iter(reqs), timeout=0.001))
            assert e.value.code() == C.DEADLINE_EXCEEDED
        time.sleep(1.5)
    after = scrape(server.metrics_url)
    # every call the client abandoned ends DEADLINE_EXCEEDED on the server, except a stream the
    # server had already answered before the expiry reached it (OK): never an error code
    codes = set(counted(before, after, "EmbedStream"))
    assert "DEADLINE_EXCEEDED" in codes and codes <= {"DEADLINE_EXCEEDED", "OK"}, codes
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]


def test_6_concurrency_refusals_are_counted_and_name_the_flag(encoder, tmp_path):
    from stilts.server import start_server

    srv = start_server(tmp_path, encoders={"default": encoder}, max_concurrent_rpcs=2)
    c = Generic(srv.address)
    try:
        texts = [words(i, 60) for i in range(16)]  # the 8 calls are issued at once
        embed = c.stub("EmbeddingService", "Embed")
        calls = [
            embed.future(c.message("EmbeddingService", "Embed", texts=texts), timeout=120)
            for _ in range(8)
        ]
        refused = []
        for f in calls:
            try:
                f.result()
            except grpc.RpcError as e:
                refused.append((e.code(), e.details()))
        assert refused and len(refused) < 8
        for code, msg in refused:
            assert code == C.RESOURCE_EXHAUSTED and "--max-concurrent-rpcs" in msg, msg
        time.sleep(0.3)
        counts = scrape(srv.metrics_url)
        assert counts.get(("Embed", "RESOURCE_EXHAUSTED")) == len(refused)
        assert counts.get(("Embed", "OK")) == 8 - len(refused)
    finally:
        c.close()
        srv.stop(5)


# -- 7. clear messages --------------------------------------------------------------------------


def _len(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _len(len(payload)) + payload


def test_7_invalid_utf8_names_the_field(g):
    raw = g.stub("EmbeddingService", "Embed", raw=True)
    e = status(raw, _field(1, b"fine") + _field(1, b"\xff\xfe"), timeout=10)
    assert e.code() == C.INVALID_ARGUMENT and "texts[1]" in e.details(), e.details()
    doc = _field(2, b"ok\xc3")  # Document.text = 2
    add = g.stub("IndexService", "AddDocuments", raw=True)
    req = _field(1, b"heavy") + _field(2, doc)
    e = status(lambda: list(add(iter([req]), timeout=10)))
    assert e.code() == C.INVALID_ARGUMENT and "documents[0].text" in e.details(), e.details()


def test_7_nesting_too_deep_names_the_field(g):
    value = _field(3, b"x")  # Value.string_value
    for _ in range(120):  # Value{struct_value: Struct{fields: {"a": value}}}
        entry = _field(1, b"a") + _field(2, value)
        value = _field(5, _field(1, entry))
    struct = _field(1, _field(1, b"a") + _field(2, value))
    doc = b"\x08\x01" + _field(2, b"text") + _field(4, struct)  # id=1, text, metadata
    add = g.stub("IndexService", "AddDocuments", raw=True)
    e = status(lambda: list(add(iter([_field(1, b"heavy") + _field(2, doc)]), timeout=10)))
    assert e.code() == C.INVALID_ARGUMENT, e.details()
    assert "documents[0].metadata" in e.details() and "nested" in e.details(), e.details()


def test_7_margin_without_reference_names_the_rpc(g, heavy):
    e = status(
        g.call, "RetrievalService", "Search", index="heavy", queries=["a"], scoring="SCORING_MARGIN"
    )
    assert e.code() == C.FAILED_PRECONDITION, e.details()
    assert "SetMarginReference" in e.details() and "set_margin_reference" not in e.details()
    assert e.details().startswith("scoring:")


def test_7_bad_kind_message_has_no_faiss_internals(g):
    e = status(g.call, "IndexService", "CreateIndex", name="k7", kind="NoSuchFactory99")
    assert e.code() == C.INVALID_ARGUMENT
    for internal in ("faiss::", "Error in", ".cpp", "/project/", "index_factory"):
        assert internal not in e.details(), e.details()
    assert e.details().startswith("kind 'NoSuchFactory99'")


def test_7_margin_reference_on_an_empty_index_names_texts(g):
    g.call("IndexService", "CreateIndex", name="empty7", kind="flat")
    e = status(g.call, "IndexService", "SetMarginReference", index="empty7")
    assert e.code() == C.FAILED_PRECONDITION and e.details().startswith("texts "), e.details()


def test_7_mine_k_limit_matches_the_proto(g):
    e = status(
        g.call,
        "RetrievalService",
        "Mine",
        src={"texts": {"texts": ["a"]}},
        tgt={"texts": {"texts": ["b"]}},
        k=LIMITS["max_k"] + 1,
    )
    assert e.code() == C.INVALID_ARGUMENT and "--max-k" in e.details(), e.details()
    proto = (ROOT / "proto" / "stilts" / "v1" / "retrieval.proto").read_text()
    mine_k = proto.split("message MineRequest", 1)[1].split("uint32 k = 3;", 1)[0]
    assert "--max-k" in mine_k and "1024" not in mine_k
    assert "--grace-seconds" in proto.split("rpc Mine(", 1)[0].rsplit("rpc Search(", 1)[1]


def test_7_lowercase_bearer_scheme_is_accepted(encoder, tmp_path):
    from stilts.server import start_server

    srv = start_server(tmp_path, encoders={"default": encoder}, auth_token=TOKEN)
    try:
        channel = grpc.insecure_channel(srv.address)
        info = channel.unary_unary("/stilts.v1.EmbeddingService/Info")  # raw bytes in and out
        for scheme in ("bearer", "BEARER", "Bearer"):
            assert info(b"", timeout=10, metadata=(("authorization", f"{scheme} {TOKEN}"),))
        e = status(info, b"", timeout=10, metadata=(("authorization", f"Basic {TOKEN}"),))
        assert e.code() == C.UNAUTHENTICATED and "Bearer" in e.details()
        e = status(info, b"", timeout=10, metadata=(("authorization", f"bearer {TOKEN}x"),))
        assert e.code() == C.UNAUTHENTICATED
        channel.close()
    finally:
        srv.stop(5)


def test_7_mine_cut_by_shutdown_says_the_server_is_shutting_down(encoder, tmp_path):
    from stilts.server import start_server

    srv = start_server(tmp_path, encoders={"default": encoder}, max_mine_texts=2000)
    c = Generic(srv.address)
    try:
        texts = [words(i, 100) for i in range(1500)]
        mine = c.message(
            "RetrievalService",
            "Mine",
            src={"texts": {"texts": texts}},
            tgt={"texts": {"texts": texts}},
        )
        call = c.stub("RetrievalService", "Mine")(mine, timeout=120)
        time.sleep(0.5)  # embedding 3000 long sentences takes far longer than the grace below
        stopper = threading.Thread(target=srv.stop, args=(1.0,))
        stopper.start()
        e = status(lambda: list(call))
        stopper.join()
        assert e.code() == C.UNAVAILABLE, e.details()
        assert "server is shutting down" in e.details() and "--grace-seconds" in e.details()
    finally:
        c.close()
        srv.stop(0)


# -- 8. metrics on this machine only by default ------------------------------------------------


def test_8_metrics_bind_localhost_even_when_grpc_listens_everywhere(encoder, tmp_path):
    from stilts.server import start_server
    from stilts.server.config import ServerConfig

    assert ServerConfig(data_dir=tmp_path).metrics_host == "127.0.0.1"
    srv = start_server(tmp_path, encoders={"default": encoder}, host="0.0.0.0", auth_token=TOKEN)
    try:
        assert srv.metrics._http.server_address[0] == "127.0.0.1"
        assert srv.metrics_url.startswith("http://127.0.0.1:")
        assert "stilts_ready 1.0" in urllib.request.urlopen(srv.metrics_url).read().decode()
    finally:
        srv.stop(5)
    r = subprocess.run(
        [sys.executable, "-m", "stilts.cli", "serve", "--help"], capture_output=True, text=True
    )
    assert "--metrics-host" in r.stdout and "STILTS_METRICS_HOST" in r.stdout
