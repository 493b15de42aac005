"""The HTTP front door (``--http-port``) of a real server on a loopback port, in this process
(sharing the session encoders), with the real clients: ``openai``, LangChain's ``OpenAIEmbeddings``,
``httpx``, ``curl``; every vector is compared with the gRPC answer to the same request; the bad
requests of issue 29 each get their status and a message naming the field, and leave both fronts
serving."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest

from stilts.client import Client, Document
from stilts.v1 import embedding_pb2, embedding_pb2_grpc, types_pb2

TOKEN = "http-test-token"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "serving.md"
README = DOCS.parent.parent / "README.md"
LIMITS = dict(
    max_texts_per_request=16,
    max_chars_per_text=2000,
    max_k=50,
    max_message_bytes=64 * 1024,
    max_mine_texts=40,
    http_timeout=1.0,
)
TEXTS = ["Where is the nearest station?", "Wo ist der nächste Bahnhof?", "駅はどこですか?"]
PASSAGE = types_pb2.TEXT_KIND_PASSAGE
QUERY = types_pb2.TEXT_KIND_QUERY


@pytest.fixture(scope="module")
def server(encoder, encoder_fp32, default_model_dir, tmp_path_factory):
    from stilts.server import start_server

    srv = start_server(
        tmp_path_factory.mktemp("data"),
        encoders={"default": encoder, "fp32": encoder_fp32},
        models=["default", f"fp32={default_model_dir}"],
        http_port=0,
        auth_token=TOKEN,
        **LIMITS,
    )
    yield srv
    srv.stop(5)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_embed(server):
    channel = grpc.insecure_channel(server.address)
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)

    def embed(texts, kind=PASSAGE, model="default", raw=False):
        r = stub.Embed(
            embedding_pb2.EmbedRequest(
                texts=texts,
                kind=kind,
                model=model,
                encoding=embedding_pb2.EMBEDDING_ENCODING_FLOAT32_BYTES
                if raw
                else embedding_pb2.EMBEDDING_ENCODING_FLOATS,
            ),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=60,
        )
        return r if raw else ([list(e.values) for e in r.embeddings], r)

    yield embed
    channel.close()


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, TOKEN, timeout=60) as c:
        yield c


def doc_block(marker: str) -> str:
    """The fenced block after ``<!-- tested: MARKER -->`` in docs/serving.md or the README."""
    path = README if marker.startswith("readme-") else DOCS
    m = re.search(rf"<!-- tested: {marker} -->\s*```\w*\n(.*?)```", path.read_text("utf-8"), re.S)
    assert m, f"{path.name} has no block marked {marker}"
    return m.group(1)


def run_doc_python(marker: str, server) -> dict:
    code = doc_block(marker).replace("http://localhost:8080", server.http_url)
    code = code.replace('"my-token"', repr(TOKEN))
    scope: dict = {}
    exec(compile(code, marker, "exec"), scope)
    return scope


# -- the real clients -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["default", "fp32"])
def test_openai_client_floats_and_base64_equal_grpc(server, grpc_embed, encoder, model):
    from openai import OpenAI

    oa = OpenAI(base_url=f"{server.http_url}/v1", api_key=TOKEN, max_retries=0)
    got = oa.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    want, resp = grpc_embed(TEXTS, model=model)
    assert [d.index for d in got.data] == [0, 1, 2] and got.model == model
    assert [d.embedding for d in got.data] == want  # exactly: the same float32 values
    tokens = sum(len(t) for t in encoder.tokenize(TEXTS, "passage"))
    assert got.usage.prompt_tokens == got.usage.total_tokens == resp.tokens == tokens

    # the client's default asks for base64 and decodes it: the same numbers
    default = oa.embeddings.create(model=model, input=TEXTS)
    assert [d.embedding for d in default.data] == want
    # base64 on the wire: the same float32 bytes as gRPC's FLOAT32_BYTES
    raw = httpx.post(
        f"{server.http_url}/v1/embeddings",
        json={"model": model, "input": TEXTS, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    ).json()
    data = b"".join(base64.b64decode(d["embedding"]) for d in raw["data"])
    assert data == grpc_embed(TEXTS, model=model, raw=True).data


def test_text_kind_by_alias_and_extension_field(http, grpc_embed):
    query, _ = grpc_embed(TEXTS[:1], kind=QUERY)
    passage, _ = grpc_embed(TEXTS[:1], kind=PASSAGE)
    assert query != passage
    by_alias = http.post("/v1/embeddings", json={"model": "default:query", "input": TEXTS[0]})
    by_field = http.post("/v1/embeddings", json={"input": TEXTS[0], "input_type": "query"})
    assert by_alias.json()["data"][0]["embedding"] == query[0]
    assert by_field.json()["data"][0]["embedding"] == query[0]
    r = http.post(
        "/v1/embeddings", json={"model": "default:bitext", "input": "x", "input_type": "query"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_type"


def test_readme_examples_openai_and_langchain(server, grpc_embed):
    """The examples of docs/serving.md (and the README), run against this server."""
    scope = run_doc_python("openai", server)
    want, _ = grpc_embed(["Where is the station?", "Wo ist der Bahnhof?"])
    assert scope["vectors"] == want
    scope = run_doc_python("readme-openai", server)
    assert scope["vector"] == grpc_embed(["Wo ist der Bahnhof?"])[0][0]

    pytest.importorskip("langchain_openai")
    scope = run_doc_python("langchain", server)
    want, _ = grpc_embed(["Wo ist der Bahnhof?"])  # int8: a vector depends on its batch
    assert scope["doc_vectors"] == want
    query, _ = grpc_embed(["Where is the station?"], kind=QUERY)
    assert scope["query_vector"] == query[0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("marker", "text"), [("curl", "Where is the station?"), ("readme-curl", "Wo ist der Bahnhof?")]
)
def test_readme_example_curl(server, grpc_embed, marker, text):
    cmd = doc_block(marker).replace("http://localhost:8080", server.http_url)
    cmd = cmd.replace("my-token", TOKEN)
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    want, _ = grpc_embed([text])
    assert json.loads(out.stdout)["data"][0]["embedding"] == want[0]


# -- TEI shape, models, info, health, OpenAPI, search and mine ---------------------------------


def test_tei_embed_info_health(server, http, grpc_embed, encoder):
    r = http.post("/embed", json={"inputs": TEXTS})
    assert r.status_code == 200 and r.json() == grpc_embed(TEXTS)[0]
    r = http.post("/embed", json={"inputs": TEXTS[0], "prompt_name": "query"})
    assert r.json() == grpc_embed(TEXTS[:1], kind=QUERY)[0]
    long = "a " * 990  # > max_len tokens, < --max-chars-per-text
    r = http.post("/embed", json={"inputs": ["ok", long], "truncate": False})
    assert r.status_code == 413 and r.json()["error_type"] == "validation"
    assert "inputs[1]" in r.json()["error"]
    assert http.post("/embed", json={"inputs": [long]}).status_code == 200  # truncate: true
    for body, name in (
        ({"inputs": "x", "normalize": False}, "normalize"),
        ({"inputs": 5}, "inputs"),
        ({"inputs": ["a", None]}, "inputs[1]"),
        ({"inputs": "x", "prompt_name": "title"}, "prompt_name"),
        ({"inputs": ""}, "inputs[0]"),
    ):
        r = http.post("/embed", json=body)
        assert r.status_code == 422, body
        assert r.json()["error_type"] == "validation" and name in r.json()["error"], r.json()
    r = http.post("/embed", json={"inputs": ["x"] * 17})
    assert r.status_code == 413 and "--max-texts-per-request" in r.json()["error"]

    info = http.get("/info").json()
    assert (info["model_id"], info["max_input_length"], info["max_client_batch_size"]) == (
        "default",
        encoder.max_len,
        16,
    )
    models = http.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["default", "fp32"]
    assert models["object"] == "list" and models["data"][0]["dimensions"] == encoder.dim
    # open without a token: health and the OpenAPI document
    assert httpx.get(f"{server.http_url}/health").json() == {"status": "ok"}
    doc = httpx.get(f"{server.http_url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    served = {p for (_, p) in server._http.routes}
    assert set(doc["paths"]) == served
    for path, ops in doc["paths"].items():
        assert {m.upper() for m in ops} == {m for (m, p) in server._http.routes if p == path}


def test_search_and_mine_equal_grpc(http, client):
    rows = [
        ("en", "Where is the nearest station?"),
        ("de", "Wo ist der nächste Bahnhof?"),
        ("en", "The cat sleeps on the sofa."),
        ("de", "Die Katze schläft auf dem Sofa."),
        ("en", "I lost my keys yesterday."),
        ("de", "Ich habe gestern meine Schlüssel verloren."),
    ]
    client.create_index("http", kind="flat", document_kind="bitext")
    client.add_documents(
        "http", [Document(i, t, lang, {"n": i}) for i, (lang, t) in enumerate(rows)]
    )
    want = client.search("http", ["Katze", "keys"], k=3, languages=["de"])
    r = http.post(
        "/v1/search",
        json={"index": "http", "queries": ["Katze", "keys"], "k": 3, "languages": ["de"]},
    )
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [[h["id"] for h in q["hits"]] for q in got] == [[h.id for h in q] for q in want]
    assert [[h["score"] for h in q["hits"]] for q in got] == [[h.score for h in q] for q in want]
    assert got[0]["hits"][0]["metadata"] == {"n": 3}
    r = http.post("/v1/search", json={"index": "http", "queries": ["x"], "scoring": "margin"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "scoring"
    r = http.post("/v1/search", json={"index": "nope", "queries": ["x"]})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = http.post("/v1/search", json={"index": "http", "queries": ["x"], "k": "many"})
    assert r.status_code == 400 and "k" in r.json()["error"]["message"]

    src = [t for lang, t in rows if lang == "en"]
    tgt = [t for lang, t in rows if lang == "de"][::-1]
    want = client.mine(src, tgt, k=2)
    r = http.post("/v1/mine", json={"src": {"texts": src}, "tgt": {"texts": tgt}, "k": 2})
    assert r.status_code == 200, r.text
    pairs = r.json()["pairs"]
    assert [(p["src_index"], p["tgt_index"], p["score"]) for p in pairs] == [
        (p.src_index, p.tgt_index, p.score) for p in want
    ]
    r = http.post("/v1/mine", json={"src": {"index": "http"}, "tgt": {"texts": ["x"] * 41}})
    assert r.status_code == 413 and "--max-mine-texts" in r.json()["error"]["message"]


# -- errors --------------------------------------------------------------------------------------

BAD = [
    # (body or raw bytes, status, the field the message names)
    (b"{not json", 400, "body"),
    (b"[1, 2]", 400, "body"),
    ({"model": "default"}, 400, "input"),
    ({"input": 42}, 400, "input"),
    ({"input": [1, 2, 3]}, 400, "token-id"),
    ({"input": [[1, 2], [3]]}, 400, "token-id"),
    ({"input": ["ok", 7]}, 400, "input[1]"),
    ({"input": ["ok", "  "]}, 400, "input[1]"),
    ({"input": "x" * 2001}, 400, "--max-chars-per-text"),
    ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "x", "dimensions": 64}, 400, "dimensions"),
    ({"input": "x", "dimensions": "384"}, 400, "dimensions"),
    ({"input": "x", "model": 3}, 400, "model"),
    ({"input": "x", "model": "gpt-4"}, 404, "model"),
    ({"input": ["x"] * 17}, 413, "--max-texts-per-request"),
    ({"input": "x" * 70_000}, 413, "--max-message-bytes"),
]


@pytest.mark.parametrize(("body", "status", "names"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_status_and_field(http, body, status, names):
    if isinstance(body, bytes):
        r = http.post("/v1/embeddings", content=body)
    else:
        r = http.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert names in err["message"], err
    assert err["type"] == ("invalid_request_error" if status != 429 else "rate_limit_error")


def test_auth_routes_and_methods(server, http):
    url = f"{server.http_url}/v1/embeddings"
    for headers, says in (
        ({}, "missing header"),
        ({"Authorization": "Basic abc"}, "Bearer scheme"),
        ({"Authorization": "Bearer wrong"}, "invalid bearer token"),
    ):
        r = httpx.post(url, json={"input": "x"}, headers=headers)
        assert r.status_code == 401 and says in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(f"{server.http_url}/embed", json={"inputs": "x"})
    assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
    assert httpx.post(
        url, json={"input": "x"}, headers={"authorization": f"bearer {TOKEN}"}
    ).is_success
    r = http.get("/v1/embeddings")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = http.post("/v2/embeddings", json={})
    assert r.status_code == 404 and "/openapi.json" in r.json()["error"]["message"]
    r = http.post(
        "/v1/embeddings", content=b'{"input": "x"}', headers={"Transfer-Encoding": "chunked"}
    )
    assert r.status_code in (400, 411)


def _raw(server) -> socket.socket:
    host, port = server.http_url.rsplit("/", 1)[-1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def test_slow_and_abandoned_clients_leave_both_fronts_serving(server, http, grpc_embed):
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    stalled = _raw(server)
    stalled.sendall(head + b'{"input": ')  # 10 of 100 bytes, then nothing
    half = _raw(server)
    half.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # headers never end
    gone = _raw(server)
    gone.sendall(head + b'{"input"')
    gone.close()  # abandoned mid-body
    # meanwhile both fronts answer
    want, _ = grpc_embed(TEXTS[:1])
    assert (
        http.post("/v1/embeddings", json={"input": TEXTS[0]}).json()["data"][0]["embedding"]
        == want[0]
    )
    t0 = time.monotonic()
    reply = b""
    while chunk := stalled.recv(65536):  # the server closes after the answer
        reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "--http-timeout" in reply
    assert time.monotonic() - t0 < 5
    assert half.recv(65536) == b""  # cut off without a request to answer
    stalled.close()
    half.close()
    assert grpc_embed(TEXTS[:1])[0] == want
    assert httpx.get(f"{server.http_url}/health").status_code == 200
    deadline = time.monotonic() + 5
    while len(server._http._connections) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server._http._connections) <= 1  # the keep-alive one of the httpx client


def test_metrics_count_http_requests(server, http):
    from prometheus_client.parser import text_string_to_metric_families

    def count(code: str) -> float:
        text = httpx.get(server.metrics_url).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "stilts_requests_total" and s.labels == {
                    "method": "POST /v1/embeddings",
                    "code": code,
                }:
                    return s.value
        return 0.0

    ok, bad = count("OK"), count("INVALID_ARGUMENT")
    http.post("/v1/embeddings", json={"input": "x"})
    http.post("/v1/embeddings", json={"input": ""})
    assert (count("OK"), count("INVALID_ARGUMENT")) == (ok + 1, bad + 1)


def test_503_while_loading_and_draining(default_model_dir, tmp_path):
    from stilts.server.app import Server
    from stilts.server.config import ServerConfig

    srv = Server(
        ServerConfig(
            data_dir=tmp_path,
            models=[str(default_model_dir)],
            precision="int8",
            port=0,
            metrics_port=-1,
            http_port=0,
        )
    ).start()
    try:
        r = httpx.get(f"{srv.http_url}/health")
        assert r.status_code == 503 and r.json()["error_type"] == "unhealthy"
        r = httpx.post(f"{srv.http_url}/v1/embeddings", json={"input": "x"})
        assert r.status_code == 503 and "starting" in r.json()["error"]["message"]
        srv.wait_ready(120)
        with httpx.Client(base_url=srv.http_url) as kept:  # a keep-alive connection
            assert kept.get("/health").status_code == 200
            srv._http.drain()  # what SIGTERM does first: no new connections, 503 on open ones
            r = kept.post("/v1/embeddings", json={"input": "x"})
            assert r.status_code == 503 and "shutting down" in r.json()["error"]["message"]
            assert kept.get("/health").status_code == 503
    finally:
        srv.stop(1)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{srv.http_url}/health", timeout=2)
