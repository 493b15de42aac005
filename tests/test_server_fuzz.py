"""Property-based fuzzing of every RPC through a reflection-built client (hypothesis).

Requests are generated from the method descriptors the server publishes: every field of every
request message, with values biased towards the edges (empty, huge, newlines, NaN, negative,
unknown enum values, deep metadata). Properties, for a bounded number of examples so the test
fits CI:

- no request ends in INTERNAL, UNKNOWN, UNAVAILABLE or DATA_LOSS, and every error carries a
  bounded message;
- the server stays up (health SERVING);
- the documents of an index no request may write to (``fuzz-keep``) never change.

``STILTS_FUZZ_EXAMPLES`` raises the budget for a longer local run.
"""

from __future__ import annotations

import os

import grpc
import pytest
from generic_client import Generic, loopback_server
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from grpc_health.v1 import health_pb2, health_pb2_grpc

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("STILTS_FUZZ_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples in every CI run
    database=None,  # write nothing next to the project
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LIMITS = dict(
    max_texts_per_request=8,
    max_chars_per_text=300,
    max_k=50,
    max_message_bytes=1 << 20,
    max_mine_texts=16,
    max_response_bytes=256 * 1024,
)
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}
KEEP, PLAY = "fuzz-keep", "fuzz-play"
# (method, field naming the index it writes)
WRITES = {
    "AddDocuments": "index",
    "DeleteDocuments": "index",
    "SetMarginReference": "index",
    "DropIndex": "name",
}
SERVICES = {
    "EmbeddingService": ["Embed", "EmbedStream", "Info"],
    "IndexService": [
        "CreateIndex",
        "ListIndexes",
        "DescribeIndex",
        "DropIndex",
        "AddDocuments",
        "DeleteDocuments",
        "GetDocuments",
        "SetMarginReference",
    ],
    "RetrievalService": ["Search", "Mine"],
}
METHODS = [(s, m) for s, ms in SERVICES.items() for m in ms]

EDGE_TEXT = st.sampled_from(["", " ", "\t\n", "abc\n", "../etc", "\x00", "héllo wörld"]) | (
    st.sampled_from([("x", 20_000), ("IVF", 5000)]).map(lambda p: p[0] * p[1])  # huge, built late
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | EDGE_TEXT
# plausible values, so that requests also get past validation (weighted by repetition)
SENTENCE = st.sampled_from(
    ["kept sentence 1", "Guten Morgen", "Où est la gare ?", "ネットワーク接続", "a b c"]
) | st.text(st.characters(categories=("L", "Nd")), min_size=1, max_size=30)
INDEX_NAME = st.one_of(
    st.sampled_from([KEEP, PLAY]), st.sampled_from([KEEP, PLAY, "", "nope"]), TEXT
)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
BY_NAME = {
    "name": INDEX_NAME,
    "index": INDEX_NAME,
    "model": st.one_of(st.just(""), st.just("default"), st.sampled_from(["nope"]) | TEXT),
    "kind": st.sampled_from(["flat", "auto", "hnsw", "ivf", "IVF4,Flat", "NoSuch"]) | TEXT,
    "margin": st.sampled_from(["", "ratio", "distance", "absolute"]) | TEXT,
    "retrieval": st.sampled_from(["", "max", "intersect", "forward", "backward"]) | TEXT,
    "language": st.sampled_from(["", "en", "de"]) | TEXT,
}
REPEATED_BY_NAME = {
    "texts": st.lists(SENTENCE, min_size=1, max_size=4) | st.lists(TEXT, max_size=4),
    "queries": st.lists(SENTENCE, min_size=1, max_size=4) | st.lists(TEXT, max_size=4),
    "ids": st.lists(st.integers(0, 12), unique=True, max_size=6)
    | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6),
    "languages": st.lists(st.sampled_from(["en", "de"]), max_size=2) | st.lists(TEXT, max_size=3),
}
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field) -> st.SearchStrategy:
    if field.name in BY_NAME and field.type == F.TYPE_STRING:
        return BY_NAME[field.name]
    if field.type == F.TYPE_STRING:
        return st.one_of(SENTENCE, TEXT)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type in INT_RANGES:
        lo, hi = INT_RANGES[field.type]
        return st.integers(max(lo, -3), 2100) | st.integers(lo, hi)  # mostly small, any
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(width=32 if field.type == F.TYPE_FLOAT else 64)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_ENUM:  # proto3 enums are open: unknown values arrive as ints
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(-2, 12)
    raise AssertionError(field.type)


def message_of(desc, depth: int = 0) -> st.SearchStrategy:
    """Any message of type ``desc``: each field maybe set, values from the edges inwards."""
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "google.protobuf.Struct":
        return st.dictionaries(TEXT, JSON, max_size=4).map(_struct(cls))
    optional = {}
    for f in desc.fields:
        if f.type == F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value = message_of(f.message_type, depth + 1)
        else:
            value = _scalar(f)
        if f.is_repeated:
            value = REPEATED_BY_NAME.get(f.name, st.lists(value, max_size=4))
        optional[f.name] = value
    return st.fixed_dictionaries({}, optional=optional).map(_build(cls))


def _struct(cls):
    def make(d):
        m = cls()
        m.update(d)
        return m

    return make


def _build(cls):
    def make(values: dict):
        m = cls()
        for name, v in values.items():
            field = m.DESCRIPTOR.fields_by_name[name]
            target = getattr(m, name) if field.type == F.TYPE_MESSAGE or field.is_repeated else None
            if field.is_repeated and field.type == F.TYPE_MESSAGE:
                for item in v:
                    target.add().CopyFrom(item)
            elif field.is_repeated:
                target.extend(v)
            elif field.type == F.TYPE_MESSAGE:
                target.CopyFrom(v)
            else:
                setattr(m, name, v)
        return m

    return make


@pytest.fixture(scope="module")
def server(encoder, tmp_path_factory):
    with loopback_server(tmp_path_factory.mktemp("data"), encoder, **LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def g(server):
    c = Generic(server.address)
    c.call("IndexService", "CreateIndex", name=KEEP, kind="flat")
    c.call("IndexService", "CreateIndex", name=PLAY, kind="flat")
    docs = [
        {"id": i, "text": f"kept sentence {i}", "language": "en", "metadata": {"n": i}}
        for i in range(6)
    ]
    c.call("IndexService", "AddDocuments", index=KEEP, documents=docs)
    yield c
    c.close()


def kept(g) -> list:
    r = g.call("IndexService", "GetDocuments", index=KEEP, ids=list(range(6)))
    return [d.SerializeToString(deterministic=True) for d in r.documents]


def _send(g, service: str, method: str, request):
    m = g.descriptor(service, method)
    if m.client_streaming:
        # a stream of 1-2 messages: the request, then the same again (a second write message)
        request = [request, request] if request.ByteSize() % 2 else [request]
    return g.call(service, method, request, timeout=60)


def _check(e: grpc.RpcError, service: str, method: str, request) -> None:
    where = f"{service}/{method} {str(request)[:300]!r}"
    assert e.code() not in NEVER, (e.code(), e.details()[:500], where)
    assert e.details() and len(e.details()) <= 1100, where


@pytest.fixture(scope="module")
def baseline(g):
    return kept(g)


def test_fuzz_every_rpc_never_crashes_never_internal_never_changes_a_kept_document(
    g, server, baseline
):
    health = health_pb2_grpc.HealthStub(g.channel)

    @SETTINGS
    @given(data=st.data())
    def one(data):
        service, method = data.draw(st.sampled_from(METHODS), label="method")
        desc = g.descriptor(service, method).input_type
        request = data.draw(message_of(desc), label="request")
        if method in WRITES and getattr(request, WRITES[method]) == KEEP:
            setattr(request, WRITES[method], PLAY)  # fuzz-keep is read-only by construction
        try:
            _send(g, service, method, request)
        except grpc.RpcError as e:
            _check(e, service, method, request)
        assert kept(g) == baseline, f"{service}/{method} changed a kept document"

    one()
    serving = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert serving == health_pb2.HealthCheckResponse.SERVING
    assert kept(g) == baseline


def test_fuzz_raw_bytes_never_internal(g, baseline):
    @SETTINGS
    @given(method=st.sampled_from(METHODS), payload=st.binary(max_size=96))
    def one(method, payload):
        service, name = method
        fn = g.stub(service, name, raw=True)
        m = g.descriptor(service, name)
        try:
            if m.client_streaming:
                out = fn(iter([payload]), timeout=60)
            else:
                out = fn(payload, timeout=60)
            if m.server_streaming:
                list(out)
        except grpc.RpcError as e:
            _check(e, service, name, payload)

    one()
    assert kept(g) == baseline


def _fields_generated(desc, examples: int = 60) -> set[str]:
    seen: set[str] = set()

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None)
    @given(message_of(desc))
    def collect(m):
        seen.update(f.name for f, _ in m.ListFields())

    collect()
    return seen


def test_generated_requests_cover_every_field(g):
    """The generator sets every field of every request message within 60 examples."""
    for service, method in METHODS:
        desc = g.descriptor(service, method).input_type
        missing = {f.name for f in desc.fields} - _fields_generated(desc)
        assert not missing, (method, missing)
