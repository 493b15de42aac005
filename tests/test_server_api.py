"""Every RPC of a real server on a loopback port (in this process, sharing the session encoder),
against the in-process encoder and index layer; bad inputs; reflection; health; metrics."""

from __future__ import annotations

import math
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from stilts.client import Client, Document, RemoteError
from stilts.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    index_pb2,
    index_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    types_pb2,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sentences.tsv"
LIMITS = dict(
    max_texts_per_request=64,
    max_chars_per_text=3000,
    max_k=100,
    max_message_bytes=1 << 20,
    max_mine_texts=500,
)


def read_examples() -> list[tuple[str, str]]:
    """(language, text) rows; rows 6g..6g+5 are one sentence in six languages."""
    rows = [line.rstrip("\n").split("\t", 1) for line in EXAMPLES.open(encoding="utf-8")]
    return [(lang, text) for lang, text in rows]


def assert_same_vectors(got: np.ndarray, want: np.ndarray, exact: bool) -> None:
    """fp32 is batch-invariant; int8 dynamic quantisation takes activation scales per batch, so
    a text's int8 vector moves slightly with its batch companions (cosine > 0.99)."""
    assert got.shape == want.shape
    if exact:
        np.testing.assert_allclose(got, want, atol=2e-5)
    else:
        assert (got * want).sum(axis=1).min() > 0.99


@pytest.fixture(scope="module")
def server(encoder, encoder_fp32, default_model_dir, tmp_path_factory):
    from stilts.server import start_server

    srv = start_server(
        tmp_path_factory.mktemp("data"),
        encoders={"default": encoder, "fp32": encoder_fp32},
        models=["default", f"fp32={default_model_dir}"],
        **LIMITS,
    )
    yield srv
    srv.stop(5)


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.address)
    yield (
        embedding_pb2_grpc.EmbeddingServiceStub(channel),
        index_pb2_grpc.IndexServiceStub(channel),
        retrieval_pb2_grpc.RetrievalServiceStub(channel),
        channel,
    )
    channel.close()


@pytest.fixture(scope="module")
def demo(client):
    """A bitext index of examples/sentences.tsv, ids = row numbers."""
    rows = read_examples()
    client.create_index("demo", document_kind="bitext", kind="flat")
    res = client.add_documents(
        "demo",
        [Document(i, text, lang, {"group": i // 6}) for i, (lang, text) in enumerate(rows)],
        batch=8,
    )
    assert res.added == len(rows) and res.messages == math.ceil(len(rows) / 8)
    client.create_index("scratch", kind="flat")
    return rows


def scrape(server) -> dict:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict, family: str, name: str, **labels) -> float:
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


# -- health, reflection, info -----------------------------------------------------------------


def test_health_overall_and_per_service(server, stubs):
    health = health_pb2_grpc.HealthStub(stubs[3])
    for service in (
        "",
        "stilts.v1.EmbeddingService",
        "stilts.v1.IndexService",
        "stilts.v1.RetrievalService",
    ):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as e:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_a_generic_client_can_call_search(server, stubs, demo):
    """What grpcurl does: discover the schema through reflection alone and call Search."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(stubs[3])
    services = set(db.get_services())
    assert {
        "stilts.v1.EmbeddingService",
        "stilts.v1.IndexService",
        "stilts.v1.RetrievalService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    pool = descriptor_pool.DescriptorPool(db)
    search = pool.FindServiceByName("stilts.v1.RetrievalService").methods_by_name["Search"]
    req_cls = message_factory.GetMessageClass(search.input_type)
    resp_cls = message_factory.GetMessageClass(search.output_type)
    call = stubs[3].unary_unary(
        "/stilts.v1.RetrievalService/Search",
        request_serializer=req_cls.SerializeToString,
        response_deserializer=resp_cls.FromString,
    )
    resp = call(req_cls(index="demo", queries=["Wo ist der nächste Bahnhof?"], k=2), timeout=30)
    assert resp.results[0].hits[0].text == "Wo ist der nächste Bahnhof?"


def test_info(client, encoder):
    info = client.info()
    assert info.default_model == "default"
    m, m32 = info.models
    assert (m32.name, m32.precision, m32.fingerprint) == ("fp32", "fp32", m.fingerprint)
    assert (m.name, m.dim, m.max_len, m.precision) == (
        "default",
        encoder.dim,
        encoder.max_len,
        encoder.precision,
    )
    assert m.fingerprint == encoder.manifest.fingerprint
    assert m.manifest["name"] == encoder.manifest.name and encoder.manifest.name in m.aliases
    assert info.limits["max_k"] == LIMITS["max_k"] and not info.auth_required


# -- embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["query", "passage", "bitext"])
@pytest.mark.parametrize("model", ["default", "fp32"])
def test_embed_equals_in_process_encoder(client, encoder, encoder_fp32, kind, model):
    enc = encoder_fp32 if model == "fp32" else encoder
    texts = ["Guten Morgen", "The network connection was lost.", "ネットワーク接続が失われました。"]
    got = client.embed(texts, kind=kind, model=model)
    want = enc.encode(texts, kind=kind)
    assert got.shape == want.shape == (3, enc.dim)
    assert_same_vectors(got, want, exact=model == "fp32")


def test_embed_floats_encoding_and_truncation_flags(stubs, encoder_fp32):
    long = "word " * 600  # > max_len tokens
    r = stubs[0].Embed(
        embedding_pb2.EmbedRequest(
            texts=["short", long],
            kind=types_pb2.TEXT_KIND_PASSAGE,
            model="fp32",
            encoding=embedding_pb2.EMBEDDING_ENCODING_FLOATS,
            request_id=7,
        ),
        timeout=60,
    )
    assert r.request_id == 7 and r.model == "fp32" and r.dim == encoder_fp32.dim
    assert list(r.truncated) == [False, True]
    got = np.array([e.values for e in r.embeddings], dtype=np.float32)
    want = encoder_fp32.encode(["short", long], kind="passage")
    assert_same_vectors(got, want, exact=True)
    assert r.tokens == sum(len(t) for t in encoder_fp32.tokenize(["short", long], "passage"))


@pytest.mark.parametrize("model", ["default", "fp32"])
def test_embed_stream_answers_in_order(stubs, encoder, encoder_fp32, model):
    enc = encoder_fp32 if model == "fp32" else encoder
    batches = [[f"sentence {i} of batch {b}" for i in range(b + 1)] for b in range(5)]
    reqs = [
        embedding_pb2.EmbedRequest(
            texts=t,
            model=model,
            encoding=embedding_pb2.EMBEDDING_ENCODING_FLOAT32_BYTES,
            request_id=100 + b,
        )
        for b, t in enumerate(batches)
    ]
    resps = list(stubs[0].EmbedStream(iter(reqs), timeout=120))
    assert [r.request_id for r in resps] == [100 + b for b in range(5)]
    assert {r.model for r in resps} == {model}
    for r, texts in zip(resps, batches, strict=True):
        got = np.frombuffer(r.data, dtype="<f4").reshape(len(texts), r.dim)
        assert_same_vectors(got, enc.encode(texts), exact=model == "fp32")


def test_client_embed_streams_large_inputs(client, encoder_fp32):
    texts = [f"line {i}: the file could not be opened" for i in range(150)]
    got = client.embed(texts, kind="bitext", model="fp32", batch=64)  # 3 EmbedStream messages
    assert_same_vectors(got, encoder_fp32.encode(texts, kind="bitext"), exact=True)


# -- indices ----------------------------------------------------------------------------------


def test_index_lifecycle(client):
    info = client.create_index("life", kind="flat")
    assert (info.name, info.documents, info.document_kind, info.query_kind) == (
        "life",
        0,
        "passage",
        "query",
    )
    assert info.model_loaded and info.details["exact"] is True
    docs = [
        Document(10, "Open the file", "en", {"n": 1, "tags": ["a"]}),
        Document(11, "Datei öffnen", "de"),
        Document(12, "Ouvrir le fichier", "fr", {"nested": {"x": 1.5}}),
    ]
    assert client.add_documents("life", docs).added == 3
    assert "life" in {i.name for i in client.list_indexes()}
    assert client.describe_index("life").documents == 3
    got = client.get_documents("life", [12, 99, 10])
    assert got[1] is None
    assert got[0] == docs[2] and got[2] == docs[0]  # metadata round-trips, ints stay ints
    assert client.delete_documents("life", [11, 99]) == 1
    assert client.describe_index("life").documents == 2
    # upsert replaces; without it the id is refused
    with pytest.raises(RemoteError) as e:
        client.add_documents("life", [Document(10, "Open a file", "en")])
    assert e.value.status == grpc.StatusCode.ALREADY_EXISTS
    client.add_documents("life", [Document(10, "Open a file", "en")], upsert=True)
    assert client.get_documents("life", [10])[0].text == "Open a file"
    assert client.drop_index("life") == 2
    assert "life" not in {i.name for i in client.list_indexes()}
    with pytest.raises(RemoteError) as e:
        client.describe_index("life")
    assert e.value.status == grpc.StatusCode.NOT_FOUND


def test_add_documents_acknowledges_each_message(client):
    client.create_index("acks", kind="flat")
    acks = []
    docs = [Document(i, f"sentence number {i}", "en") for i in range(10)]
    res = client.add_documents("acks", docs, batch=3, on_ack=acks.append)
    assert [a.sequence for a in acks] == [0, 1, 2, 3]
    assert [a.added for a in acks] == [3, 3, 3, 1]
    assert [a.acknowledged for a in acks] == [3, 6, 9, 10]
    assert res.added == 10 and res.index_documents == 10
    client.drop_index("acks")


# -- retrieval --------------------------------------------------------------------------------


def test_search_finds_translations_across_languages(client, demo):
    queries = [text for lang, text in demo if lang == "de"]
    results = client.search("demo", queries, k=6, languages=["en", "ja"])
    for q, hits in zip(queries, results, strict=True):
        assert {h.language for h in hits} <= {"en", "ja"}
        group = next(i // 6 for i, (_, t) in enumerate(demo) if t == q)
        assert hits[0].metadata["group"] == group, (q, hits[0])
        assert hits[0].score >= hits[-1].score


def test_search_matches_the_index_layer(client, demo, encoder, server):
    q = ["Le fichier n'a pas pu être ouvert."]
    via_grpc = client.search("demo", q, k=5)[0]
    idx = server.indexes.get("demo").index
    direct = idx.search(encoder.encode(q, kind="bitext"), k=5)[0]
    assert [h.id for h in via_grpc] == [h.id for h in direct]
    np.testing.assert_allclose([h.score for h in via_grpc], [h.score for h in direct], atol=1e-4)


def test_margin_scoring(client, demo):
    with pytest.raises(RemoteError) as e:
        client.search("demo", ["Where is the station?"], scoring="margin")
    assert e.value.status == grpc.StatusCode.FAILED_PRECONDITION
    info = client.set_margin_reference("demo", k=4)
    assert info.details["margin"]["k"] == 4
    hits = client.search("demo", ["Where is the station?"], k=3, scoring="margin")[0]
    assert hits[0].metadata["group"] == 3
    cos = client.search("demo", ["Where is the station?"], k=3)[0]
    assert hits[0].score > cos[0].score  # a ratio margin of a real match is > its cosine


def test_mine_texts_recovers_translations(client, demo):
    de = [t for lang, t in demo if lang == "de"]
    en = [t for lang, t in demo if lang == "en"]
    order = [3, 0, 5, 1, 4, 2]
    en_shuffled = [en[i] for i in order]
    pairs = client.mine(de, en_shuffled, k=2, threshold=1.0)
    assert len(pairs) == 6
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    for p in pairs:
        assert order[p.tgt_index] == p.src_index
        assert p.src_text == de[p.src_index] and p.tgt_text == en_shuffled[p.tgt_index]
    # a repeated sentence is mined once, at its first position (as `stilts mine` does)
    again = client.mine([*de, de[0]], en_shuffled, k=2, threshold=1.0)
    assert {(p.src_index, p.tgt_index) for p in again} == {
        (p.src_index, p.tgt_index) for p in pairs
    }


def test_mine_between_indices(client, demo):
    client.create_index("mine-fr", document_kind="bitext", kind="flat")
    client.create_index("mine-es", document_kind="bitext", kind="flat")
    client.add_documents(
        "mine-fr", [Document(1000 + i, t, "fr") for i, (lg, t) in enumerate(demo) if lg == "fr"]
    )
    client.add_documents(
        "mine-es", [Document(2000 + i, t, "es") for i, (lg, t) in enumerate(demo) if lg == "es"]
    )
    pairs = client.mine(None, None, src_index="mine-fr", tgt_index="mine-es", k=2)
    assert len(pairs) == 6
    for p in pairs:  # fr row i and es row i+1 are translations
        assert p.tgt_id - 2000 == p.src_id - 1000 + 1
    client.drop_index("mine-fr")
    client.drop_index("mine-es")


# -- bad input --------------------------------------------------------------------------------

C = grpc.StatusCode
E = embedding_pb2
I = index_pb2  # noqa: E741
R = retrieval_pb2


def _doc(id=1, text="a sentence", language="en", **kw):
    return types_pb2.Document(id=id, text=text, language=language, **kw)


def _nan_meta():
    d = _doc()
    d.metadata.update({"x": float("nan")})
    return d


def _side(texts=None, index=None):
    if index is not None:
        return R.MineSide(index=index)
    return R.MineSide(texts=R.TextList(texts=texts))


# (name, service, method, request or list of requests for streams, expected code)
BAD = [
    ("embed: no texts", 0, "Embed", E.EmbedRequest(), C.INVALID_ARGUMENT),
    ("embed: empty text", 0, "Embed", E.EmbedRequest(texts=["ok", ""]), C.INVALID_ARGUMENT),
    ("embed: blank text", 0, "Embed", E.EmbedRequest(texts=[" \t\n"]), C.INVALID_ARGUMENT),
    ("embed: text too long", 0, "Embed", E.EmbedRequest(texts=["x" * 3001]), C.INVALID_ARGUMENT),
    ("embed: too many texts", 0, "Embed", E.EmbedRequest(texts=["a"] * 65), C.RESOURCE_EXHAUSTED),
    ("embed: unknown model", 0, "Embed", E.EmbedRequest(texts=["a"], model="nope"), C.NOT_FOUND),
    ("embed: bad kind", 0, "Embed", E.EmbedRequest(texts=["a"], kind=42), C.INVALID_ARGUMENT),
    (
        "embed: bad encoding",
        0,
        "Embed",
        E.EmbedRequest(texts=["a"], encoding=9),
        C.INVALID_ARGUMENT,
    ),
    (
        "embed: message too large",
        0,
        "Embed",
        E.EmbedRequest(texts=["y" * (1 << 20)]),
        C.RESOURCE_EXHAUSTED,
    ),
    (
        "stream: second message empty",
        0,
        "EmbedStream",
        [E.EmbedRequest(texts=["a"]), E.EmbedRequest()],
        C.INVALID_ARGUMENT,
    ),
    ("create: bad name", 1, "CreateIndex", I.CreateIndexRequest(name="../x"), C.INVALID_ARGUMENT),
    ("create: empty name", 1, "CreateIndex", I.CreateIndexRequest(), C.INVALID_ARGUMENT),
    (
        "create: name too long",
        1,
        "CreateIndex",
        I.CreateIndexRequest(name="n" * 65),
        C.INVALID_ARGUMENT,
    ),
    ("create: exists", 1, "CreateIndex", I.CreateIndexRequest(name="demo"), C.ALREADY_EXISTS),
    (
        "create: unknown model",
        1,
        "CreateIndex",
        I.CreateIndexRequest(name="x1", model="nope"),
        C.NOT_FOUND,
    ),
    (
        "create: bad kind",
        1,
        "CreateIndex",
        I.CreateIndexRequest(name="x2", kind="NoSuchFactory99"),
        C.INVALID_ARGUMENT,
    ),
    (
        "create: bad document kind",
        1,
        "CreateIndex",
        I.CreateIndexRequest(name="x3", document_kind=17),
        C.INVALID_ARGUMENT,
    ),
    ("describe: unknown", 1, "DescribeIndex", I.DescribeIndexRequest(name="nope"), C.NOT_FOUND),
    ("drop: unknown", 1, "DropIndex", I.DropIndexRequest(name="nope"), C.NOT_FOUND),
    (
        "add: no index",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(documents=[_doc()])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: unknown index",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="nope", documents=[_doc()])],
        C.NOT_FOUND,
    ),
    (
        "add: duplicate ids",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(500), _doc(500)])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: negative id",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(-5)])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: empty text",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(501, "")])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: existing id",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(0)])],
        C.ALREADY_EXISTS,
    ),
    (
        "add: index switch",
        1,
        "AddDocuments",
        [
            I.AddDocumentsRequest(index="scratch", documents=[_doc(1)]),
            I.AddDocumentsRequest(index="demo", documents=[_doc(2)]),
        ],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: no documents",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo")],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: NaN metadata",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_nan_meta()])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: language too long",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(502, language="l" * 65)])],
        C.INVALID_ARGUMENT,
    ),
    (
        "add: too many documents",
        1,
        "AddDocuments",
        [I.AddDocumentsRequest(index="demo", documents=[_doc(600 + i) for i in range(65)])],
        C.RESOURCE_EXHAUSTED,
    ),
    (
        "delete: unknown index",
        1,
        "DeleteDocuments",
        I.DeleteDocumentsRequest(index="nope", ids=[1]),
        C.NOT_FOUND,
    ),
    (
        "delete: no ids",
        1,
        "DeleteDocuments",
        I.DeleteDocumentsRequest(index="demo"),
        C.INVALID_ARGUMENT,
    ),
    ("get: no index name", 1, "GetDocuments", I.GetDocumentsRequest(ids=[1]), C.INVALID_ARGUMENT),
    (
        "margin ref: unknown index",
        1,
        "SetMarginReference",
        I.SetMarginReferenceRequest(index="nope"),
        C.NOT_FOUND,
    ),
    (
        "search: k too large",
        2,
        "Search",
        R.SearchRequest(index="demo", queries=["a"], k=101),
        C.INVALID_ARGUMENT,
    ),
    ("search: no queries", 2, "Search", R.SearchRequest(index="demo"), C.INVALID_ARGUMENT),
    (
        "search: unknown index",
        2,
        "Search",
        R.SearchRequest(index="nope", queries=["a"]),
        C.NOT_FOUND,
    ),
    (
        "search: bad scoring",
        2,
        "Search",
        R.SearchRequest(index="demo", queries=["a"], scoring=7),
        C.INVALID_ARGUMENT,
    ),
    (
        "search: nprobe too large",
        2,
        "Search",
        R.SearchRequest(index="demo", queries=["a"], params=R.SearchParams(nprobe=1 << 20)),
        C.INVALID_ARGUMENT,
    ),
    (
        "search: empty language",
        2,
        "Search",
        R.SearchRequest(index="demo", queries=["a"], languages=[""]),
        C.INVALID_ARGUMENT,
    ),
    ("mine: no sides", 2, "Mine", R.MineRequest(), C.INVALID_ARGUMENT),
    (
        "mine: bad margin",
        2,
        "Mine",
        R.MineRequest(src=_side(["a"]), tgt=_side(["b"]), margin="golden"),
        C.INVALID_ARGUMENT,
    ),
    (
        "mine: bad retrieval",
        2,
        "Mine",
        R.MineRequest(src=_side(["a"]), tgt=_side(["b"]), retrieval="sideways"),
        C.INVALID_ARGUMENT,
    ),
    (
        "mine: NaN threshold",
        2,
        "Mine",
        R.MineRequest(src=_side(["a"]), tgt=_side(["b"]), threshold=float("nan")),
        C.INVALID_ARGUMENT,
    ),
    (
        "mine: unknown index",
        2,
        "Mine",
        R.MineRequest(src=_side(index="nope"), tgt=_side(["b"])),
        C.NOT_FOUND,
    ),
    (
        "mine: too many texts",
        2,
        "Mine",
        R.MineRequest(src=_side(["a"] * 501), tgt=_side(["b"])),
        C.RESOURCE_EXHAUSTED,
    ),
]


def _call(stubs, service, method, request):
    fn = getattr(stubs[service], method)
    if isinstance(request, list):  # client streams (EmbedStream, AddDocuments)
        return list(fn(iter(request), timeout=30))
    if method == "Mine":  # server stream
        return list(fn(request, timeout=30))
    return fn(request, timeout=30)


@pytest.mark.parametrize("name,service,method,request_,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_status(stubs, demo, name, service, method, request_, code):
    with pytest.raises(grpc.RpcError) as e:
        _call(stubs, service, method, request_)
    assert e.value.code() == code, (name, e.value.details())
    assert e.value.details(), "the status carries a message"


def test_bad_bytes_and_unknown_methods(stubs, demo):
    channel = stubs[3]
    raw = channel.unary_unary("/stilts.v1.EmbeddingService/Embed")
    for payload in (b"\xff\xff\xff\xff", b"\x0a\x02\xff\xfe"):  # garbage; invalid UTF-8 text
        with pytest.raises(grpc.RpcError) as e:
            raw(payload, timeout=10)
        assert e.value.code() == C.INVALID_ARGUMENT, e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/stilts.v1.EmbeddingService/Nope")(b"", timeout=10)
    assert e.value.code() == C.UNIMPLEMENTED


def test_deadline_exceeded_cancels_queued_work(stubs, server):
    """A request whose deadline passes while it waits behind another is never embedded."""
    before = sample(scrape(server), "stilts_embedded_texts", "stilts_embedded_texts_total")
    busy = [f"sentence {i} " + "word " * 60 for i in range(64)]
    background = stubs[0].Embed.future(E.EmbedRequest(texts=busy), timeout=60)
    time.sleep(0.05)  # the worker is now encoding `busy` (hundreds of ms on 2 cores)
    late = [f"other sentence {i}" for i in range(40)]
    with pytest.raises(grpc.RpcError) as e:
        stubs[0].Embed(E.EmbedRequest(texts=late), timeout=0.05)
    assert e.value.code() == C.DEADLINE_EXCEEDED
    assert len(background.result().embeddings) == len(busy)
    time.sleep(0.3)
    after = sample(scrape(server), "stilts_embedded_texts", "stilts_embedded_texts_total")
    assert after - before == len(busy), "texts past their deadline were still embedded"


def test_server_healthy_after_all_bad_inputs(server, client, stubs, demo):
    # runs after the table above (pytest keeps file order)
    assert client.health() == "SERVING"
    assert client.embed(["still fine"]).shape == (1, 384)
    assert client.search("demo", ["Save your changes"], k=1)[0][0].metadata["group"] == 1
    assert client.describe_index("demo").documents == len(demo)  # no bad add stored anything


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_scraped_and_parsed(server, client, stubs, demo):
    client.search("demo", ["Delete all selected messages?"], k=2)
    client.embed(["word " * 600])  # truncated
    with pytest.raises(grpc.RpcError):
        stubs[0].Embed(E.EmbedRequest(), timeout=10)  # INVALID_ARGUMENT
    fams = scrape(server)
    for name in (
        "stilts_requests",
        "stilts_request_duration_seconds",
        "stilts_queue_duration_seconds",
        "stilts_inference_duration_seconds",
        "stilts_batch_size",
        "stilts_batch_tokens",
        "stilts_index_documents",
        "stilts_truncated_inputs",
        "stilts_embedded_texts",
        "stilts_ready",
    ):
        assert name in fams, name
    assert fams["stilts_requests"].type == "counter"
    assert fams["stilts_request_duration_seconds"].type == "histogram"
    search = "stilts.v1.RetrievalService/Search"
    assert sample(fams, "stilts_requests", "stilts_requests_total", method=search, code="OK") >= 1
    assert (
        sample(
            fams,
            "stilts_requests",
            "stilts_requests_total",
            method="stilts.v1.EmbeddingService/Embed",
            code="INVALID_ARGUMENT",
        )
        >= 1
    )
    assert sample(fams, "stilts_index_documents", "stilts_index_documents", index="demo") == len(
        demo
    )
    assert (
        sample(fams, "stilts_truncated_inputs", "stilts_truncated_inputs_total", model="default")
        >= 1
    )
    count = sample(fams, "stilts_batch_size", "stilts_batch_size_count", model="default")
    assert count >= 1
    assert sample(fams, "stilts_ready", "stilts_ready") == 1
