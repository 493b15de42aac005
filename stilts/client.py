"""``stilts.client.Client``: a synchronous, typed client for a stilts gRPC server.

Example:
    >>> from stilts.client import Client, Document
    >>> with Client("127.0.0.1:50051") as c:
    ...     c.create_index("docs", document_kind="bitext")
    ...     c.add_documents("docs", [Document(1, "Guten Morgen", "de")])
    ...     hits = c.search("docs", ["Good morning"], k=3)
    >>> hits[0][0].text
    'Guten Morgen'

Errors come back as :class:`RemoteError` (a :class:`stilts.StiltsError` whose ``status`` is the
gRPC status code and whose message is the server's, naming the offending field).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from stilts.errors import ErrorCode, StiltsError
from stilts.records import TEXT_KINDS, Document, Hit, MinedPair
from stilts.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    index_pb2,
    index_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    types_pb2,
)
from stilts.wire import (
    KIND_NAMES,
    KIND_VALUES,
    SCORING_VALUES,
    THRESHOLD_METADATA,
    document_from_proto,
    document_to_proto,
    hit_from_proto,
    mined_pair_from_proto,
    struct_to_dict,
)

DEFAULT_ADDRESS = "127.0.0.1:50051"
__all__ = [
    "AddResult",
    "Client",
    "Document",
    "Hit",
    "IndexInfo",
    "MinedPair",
    "ModelInfo",
    "RemoteError",
    "ServerInfo",
    "struct_to_dict",
]


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    name: str
    model: str
    model_fingerprint: str
    model_loaded: bool
    dim: int
    kind: str
    document_kind: str
    query_kind: str
    documents: int
    details: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    aliases: list[str]
    dim: int
    max_len: int
    precision: str
    provider: str
    fingerprint: str
    manifest: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    version: str
    default_model: str
    models: list[ModelInfo]
    limits: dict[str, Any]
    auth_required: bool


@dataclasses.dataclass(frozen=True)
class AddResult:
    """What an :meth:`Client.add_documents` stream stored."""

    added: int
    messages: int
    index_documents: int


class RemoteError(StiltsError):
    """An RPC failed; ``status`` is the gRPC status code, the message is the server's."""

    def __init__(self, status: grpc.StatusCode, message: str):
        code = ErrorCode.__members__.get(status.name, ErrorCode.INTERNAL)
        super().__init__(code, message)
        self.status = status

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}"


class MinedPairs(list):
    """The pairs of :meth:`Client.mine`, best first; ``threshold_estimate`` is the server's
    estimate (a dict) when it chose the threshold, else None."""

    threshold_estimate: dict | None = None


def _raise(e: grpc.RpcError) -> None:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    raise RemoteError(code, details or code.name) from None


DOCUMENT_FORMS = (
    "a Document(id, text, language, metadata), a dict with those keys or an "
    "(id, text[, language[, metadata]]) tuple; ids are the caller's (unique within the index, "
    ">= 0: the server assigns none, see Document.id in proto/stilts/v1/types.proto), so a "
    "plain string needs one, e.g. enumerate(texts) gives (id, text) tuples"
)
TEXT_FORMS = "a list of strings (search also takes one string)"


def _doc_proto(d: Document | dict | tuple, out: types_pb2.Document, row: int) -> None:
    try:
        if isinstance(d, dict):
            d = Document(**d)
        elif isinstance(d, tuple):
            d = Document(*d)
        elif not isinstance(d, Document):
            raise TypeError(f"is a {type(d).__name__}")
        document_to_proto(d, out)
    except (TypeError, ValueError) as e:
        raise TypeError(f"documents[{row}] {e}: pass {DOCUMENT_FORMS}") from None


def _texts(values: str | Sequence[str], field: str) -> list[str]:
    """A list of strings from one string or a sequence of them (TypeError for anything else)."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, bytes | Document) or not hasattr(values, "__iter__"):
        raise TypeError(f"{field} is a {type(values).__name__}: pass {TEXT_FORMS}")
    out = list(values)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{field}[{i}] is a {type(t).__name__}: pass {TEXT_FORMS}")
    return out


def _index_info(p: index_pb2.IndexInfo) -> IndexInfo:
    return IndexInfo(
        name=p.name,
        model=p.model,
        model_fingerprint=p.model_fingerprint,
        model_loaded=p.model_loaded,
        dim=p.dim,
        kind=p.kind,
        document_kind=KIND_NAMES.get(p.document_kind, ""),
        query_kind=KIND_NAMES.get(p.query_kind, ""),
        documents=p.documents,
        details=struct_to_dict(p.details),
    )


class Client:
    """A connection to a stilts server.

    Args:
        address: ``host:port``.
        token: bearer token for servers started with ``--auth-token``.
        tls: connect with TLS (implied by ``root_certificates``).
        root_certificates: PEM bytes or a path to the CA that signed the server's certificate
            (None with ``tls=True``: the system roots).
        timeout: seconds per unary RPC (None: no deadline); streams take their own.
        server_name: TLS name to verify when it differs from the address's host.

    ``token`` and ``root_certificates`` default to the ``STILTS_AUTH_TOKEN`` and ``STILTS_TLS_CA``
    environment variables, so every tool built on the client works with a protected server.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        timeout: float | None = 60.0,
        server_name: str | None = None,
    ):
        self.address = address
        self.timeout = timeout
        if token is None:
            token = os.environ.get("STILTS_AUTH_TOKEN") or None
        if root_certificates is None and os.environ.get("STILTS_TLS_CA"):
            root_certificates = os.environ["STILTS_TLS_CA"]
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if root_certificates is not None or tls:
            roots = root_certificates
            if isinstance(roots, str | Path):
                roots = Path(roots).read_bytes()
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._embedding = embedding_pb2_grpc.EmbeddingServiceStub(self.channel)
        self._index = index_pb2_grpc.IndexServiceStub(self.channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata or None)
        except grpc.RpcError as e:
            _raise(e)

    # -- health and info -------------------------------------------------------------------

    def health(self, service: str = "") -> str:
        """The server's health status name (``SERVING``, ``NOT_SERVING``, ...) for ``service``
        ("" = overall)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll health until the server is SERVING.

        Raises:
            StiltsError: DEADLINE_EXCEEDED after ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = self.health()
                if last == "SERVING":
                    return
            except RemoteError as e:
                last = str(e)
            time.sleep(0.1)
        raise StiltsError(
            ErrorCode.DEADLINE_EXCEEDED, f"{self.address} not serving after {timeout}s ({last})"
        )

    def info(self) -> ServerInfo:
        """Served models and the server's limits."""
        r = self._call(self._embedding.Info, embedding_pb2.InfoRequest())
        return ServerInfo(
            version=r.version,
            default_model=r.default_model,
            models=[
                ModelInfo(
                    m.name,
                    list(m.aliases),
                    m.dim,
                    m.max_len,
                    m.precision,
                    m.provider,
                    m.fingerprint,
                    struct_to_dict(m.manifest),
                )
                for m in r.models
            ],
            limits=json_format.MessageToDict(r.limits, preserving_proto_field_name=True),
            auth_required=r.auth_required,
        )

    # -- embeddings ------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        kind: str = "query",
        model: str = "default",
        batch: int = 256,
    ) -> np.ndarray:
        """Embed texts on the server: float32 (len(texts), dim), L2-normalised.

        ``texts``: a list of strings. More than ``batch`` texts go through the EmbedStream RPC,
        ``batch`` per message.

        Raises:
            StiltsError: INVALID_ARGUMENT for a single string (a list is expected).
            TypeError: an item is not a string (the message names the accepted forms).
        """
        if isinstance(texts, str):
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "texts must be a list of strings, not a string", "texts"
            )
        texts = _texts(texts, "texts")
        kind_value = KIND_VALUES.get(kind)
        if kind_value is None:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "kind must be one of query, passage, bitext", "kind"
            )
        model = "" if model == "default" else model

        def req(part: list[str], i: int = 0) -> embedding_pb2.EmbedRequest:
            return embedding_pb2.EmbedRequest(
                texts=part,
                kind=kind_value,
                model=model,
                encoding=embedding_pb2.EMBEDDING_ENCODING_FLOAT32_BYTES,
                request_id=i,
            )

        def rows(r: embedding_pb2.EmbedResponse) -> np.ndarray:
            return np.frombuffer(r.data, dtype="<f4").reshape(-1, r.dim).astype(np.float32)

        if len(texts) <= batch:
            return rows(self._call(self._embedding.Embed, req(texts)))
        parts = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        try:
            out = [
                rows(r)
                for r in self._embedding.EmbedStream(
                    (req(p, i) for i, p in enumerate(parts)), metadata=self._metadata or None
                )
            ]
        except grpc.RpcError as e:
            _raise(e)
        return np.concatenate(out)

    # -- indices ---------------------------------------------------------------------------

    def create_index(
        self,
        name: str,
        model: str = "default",
        kind: str = "auto",
        document_kind: str = "passage",
        query_kind: str | None = None,
    ) -> IndexInfo:
        """Create an empty index embedding documents as ``document_kind`` (``bitext`` for
        translation retrieval) with a served model."""
        for field, value in (("document_kind", document_kind), ("query_kind", query_kind)):
            if value is not None and value not in TEXT_KINDS:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT, f"{field} must be query, passage or bitext", field
                )
        r = self._call(
            self._index.CreateIndex,
            index_pb2.CreateIndexRequest(
                name=name,
                model="" if model == "default" else model,
                kind=kind,
                document_kind=KIND_VALUES[document_kind],
                query_kind=KIND_VALUES[query_kind],
            ),
        )
        return _index_info(r)

    def list_indexes(self) -> list[IndexInfo]:
        r = self._call(self._index.ListIndexes, index_pb2.ListIndexesRequest())
        return [_index_info(i) for i in r.indexes]

    def describe_index(self, name: str) -> IndexInfo:
        return _index_info(
            self._call(self._index.DescribeIndex, index_pb2.DescribeIndexRequest(name=name))
        )

    def drop_index(self, name: str) -> int:
        """Delete an index; returns how many documents it held."""
        r = self._call(self._index.DropIndex, index_pb2.DropIndexRequest(name=name))
        return r.documents

    def add_documents(
        self,
        index: str,
        documents: Iterable[Document | dict | tuple],
        batch: int = 256,
        upsert: bool = False,
        on_ack: Callable[[index_pb2.AddDocumentsResponse], None] | None = None,
        timeout: float | None = None,
    ) -> AddResult:
        """Stream documents into an index, ``batch`` per message.

        Every acknowledged message is durable on the server; ``on_ack`` sees each
        acknowledgement as it arrives (e.g. to checkpoint a long upload).

        ``documents``: :class:`Document` objects, dicts with its fields, or
        ``(id, text[, language[, metadata]])`` tuples. Ids are the caller's: the server assigns
        none, so plain strings are refused (``enumerate(texts)`` numbers them).

        Raises:
            TypeError: an item of another form (before anything is sent when it is the first;
                else after the messages before it were stored).
        """
        if isinstance(documents, str | bytes | Document):
            raise TypeError(
                f"documents is a {type(documents).__name__}: pass an iterable of {DOCUMENT_FORMS}"
            )
        if batch < 1:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "batch must be >= 1", "batch")

        failure: list[BaseException] = []

        def messages() -> Iterator[index_pb2.AddDocumentsRequest]:
            # grpc consumes this on its own thread and would swallow an error into CANCELLED:
            # keep it, end the stream cleanly, and raise it below (what was sent is stored)
            msg = index_pb2.AddDocumentsRequest(index=index, upsert=upsert)
            try:
                for row, d in enumerate(documents):
                    _doc_proto(d, msg.documents.add(), row)
                    if len(msg.documents) >= batch:
                        yield msg
                        msg = index_pb2.AddDocumentsRequest(upsert=upsert)
            except Exception as e:
                failure.append(e)
                return
            if len(msg.documents):
                yield msg

        added = n = size = 0
        try:
            for ack in self._index.AddDocuments(
                messages(), timeout=timeout, metadata=self._metadata or None
            ):
                added, n, size = ack.acknowledged, n + 1, ack.index_documents
                if on_ack is not None:
                    on_ack(ack)
        except grpc.RpcError as e:
            if failure:  # the stream ended early because of the caller's item: that error
                raise failure[0] from None
            _raise(e)
        if failure:
            raise failure[0]
        return AddResult(added, n, size)

    def delete_documents(self, index: str, ids: Sequence[int]) -> int:
        """Delete by id; returns how many existed."""
        r = self._call(
            self._index.DeleteDocuments,
            index_pb2.DeleteDocumentsRequest(index=index, ids=[int(i) for i in ids]),
        )
        return r.deleted

    def get_documents(self, index: str, ids: Sequence[int]) -> list[Document | None]:
        """Documents by id, in order; None where an id is unknown (each id is asked once: the
        server refuses repeats)."""
        ids = [int(i) for i in ids]
        r = self._call(
            self._index.GetDocuments,
            index_pb2.GetDocumentsRequest(index=index, ids=list(dict.fromkeys(ids))),
        )
        found = {d.id: document_from_proto(d) for d in r.documents}
        return [found.get(i) for i in ids]

    def set_margin_reference(
        self, index: str, texts: Sequence[str] | None = None, k: int = 4
    ) -> IndexInfo:
        """Enable ``scoring="margin"`` on an index: a reference set of typical queries
        (``texts``), or None for a sample of the index itself."""
        return _index_info(
            self._call(
                self._index.SetMarginReference,
                index_pb2.SetMarginReferenceRequest(index=index, k=k, texts=list(texts or ())),
                timeout=None,
            )
        )

    # -- retrieval -------------------------------------------------------------------------

    def search(
        self,
        index: str,
        queries: Sequence[str],
        k: int = 10,
        languages: Sequence[str] | None = None,
        scoring: str = "cosine",
        nprobe: int | None = None,
        ef_search: int | None = None,
        kind: str | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best documents per query (best first), one list per query.

        ``queries``: a string (one query) or a list of strings.

        Raises:
            TypeError: ``queries`` is neither (the message names the accepted forms).
        """
        queries = _texts(queries, "queries")
        if scoring not in SCORING_VALUES:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "scoring must be cosine or margin", "scoring"
            )
        if kind is not None and kind not in TEXT_KINDS:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "kind must be query, passage or bitext", "kind"
            )
        r = self._call(
            self._retrieval.Search,
            retrieval_pb2.SearchRequest(
                index=index,
                queries=list(queries),
                k=k,
                languages=list(languages or ()),
                scoring=SCORING_VALUES[scoring],
                params=retrieval_pb2.SearchParams(nprobe=nprobe or 0, ef_search=ef_search or 0),
                kind=KIND_VALUES[kind],
            ),
        )
        return [[hit_from_proto(h) for h in q.hits] for q in r.results]

    def mine(
        self,
        src_texts: Sequence[str] | None,
        tgt_texts: Sequence[str] | None,
        k: int = 4,
        margin: str = "ratio",
        retrieval: str = "max",
        threshold: float | str | None = None,
        model: str = "default",
        *,
        src_index: str | None = None,
        tgt_index: str | None = None,
        timeout: float | None = None,
        target_precision: float | None = None,
    ) -> MinedPairs:
        """Bitext mining on the server: margin-scored pairs, best first.

        Each side is a list of sentences, or (``src_index=`` / ``tgt_index=``) every document of
        an index on the server. Pairs carry positions in the lists (``src_index``,
        ``tgt_index``) and, for index sides, document ids.

        ``threshold="auto"`` (or a ``target_precision`` in (0, 1]) lets the server choose the
        threshold from the job's own scores; its estimate (threshold, precision, recall, ...) is
        the returned list's ``threshold_estimate`` dict.
        """

        def side(texts: Sequence[str] | None, index: str | None, field: str):
            if (texts is None) == (index is None):
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"give either {field}_texts or {field}_index",
                    f"{field}_texts",
                )
            if index is not None:
                return retrieval_pb2.MineSide(index=index)
            return retrieval_pb2.MineSide(texts=retrieval_pb2.TextList(texts=list(texts)))

        auto = isinstance(threshold, str)
        if auto and threshold != "auto":
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "threshold must be a number or 'auto'", "threshold"
            )
        if threshold is not None and not auto and not math.isfinite(threshold):
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "threshold must be finite", "threshold")
        req = retrieval_pb2.MineRequest(
            src=side(src_texts, src_index, "src"),
            tgt=side(tgt_texts, tgt_index, "tgt"),
            k=k,
            margin=margin,
            retrieval=retrieval,
            model="" if model == "default" else model,
        )
        if auto:
            req.auto_threshold = True
        elif threshold is not None:
            req.threshold = threshold
        if target_precision is not None:
            req.target_precision = target_precision
        try:
            call = self._retrieval.Mine(req, timeout=timeout, metadata=self._metadata or None)
            pairs = MinedPairs(mined_pair_from_proto(p) for p in call)
            for key, value in call.trailing_metadata() or ():
                if key == THRESHOLD_METADATA:
                    pairs.threshold_estimate = json.loads(value)
            return pairs
        except grpc.RpcError as e:
            _raise(e)
