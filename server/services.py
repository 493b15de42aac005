"""The service layer and the three stilts.v1 servicers. Handlers validate, hand texts to the
model's batcher, call the index layer, and build responses; errors are raised as
:class:`StiltsError` and mapped to gRPC statuses by :mod:`stilts.server.interceptor`.

The HTTP front door (:mod:`stilts.server.http`) calls the same functions (:func:`submit_texts`,
:func:`embed_texts`, :func:`wait`, :func:`search`, :func:`stilts.server.mine.mine_request`) with a
call object that stands in for the gRPC context (the deadline, callbacks at the end of the call,
whether the client is still there), so validation, batching and errors are one implementation."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from stilts import __version__
from stilts.errors import ErrorCode, StiltsError, shorten, too_large
from stilts.server import validate as v
from stilts.server.batcher import BULK, INTERACTIVE, Job
from stilts.server.deadlines import deadline_of, remaining
from stilts.server.indexes import ServedIndex
from stilts.server.interceptor import check, checked_stream
from stilts.server.mine import mine_request
from stilts.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    index_pb2,
    index_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from stilts.wire import KIND_VALUES, SCORING_NAMES, dict_to_struct, document_to_proto, hit_to_proto

if TYPE_CHECKING:
    from stilts.server.app import Server
    from stilts.server.models import ServedModel


PIPELINE_DEPTH = 4


def wait(job: Job, context: grpc.ServicerContext, current: _Current | None = None) -> np.ndarray:
    """Wait for a batcher job; the RPC ending (cancel, deadline) cancels the job's queued texts.

    Streams pass their :class:`_Current` (one callback per stream, not one per message).
    """
    if current is None:
        context.add_callback(job.cancel)
        return job.result(remaining(context))
    current.job = job
    try:
        return job.result(remaining(context))
    finally:
        current.job = None


class _Current:
    """The job a stream is waiting on, cancelled when the RPC ends."""

    def __init__(self, context: grpc.ServicerContext):
        self.job: Job | None = None
        context.add_callback(self.cancel)

    def cancel(self) -> None:
        job = self.job
        if job is not None:
            job.cancel()


def pipelined(
    requests: Iterator[Any],
    prepare: Callable[[Any, int], Any],
    context: grpc.ServicerContext,
    depth: int = PIPELINE_DEPTH,
) -> Iterator[Any]:
    """Read a request stream on a helper thread, ``prepare`` each message there (validate, queue
    its texts), and yield the prepared items in order; at most ``depth`` are ahead.

    Clients that wait for each response before sending the next message work too: the reader never
    blocks the responses.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for seq, request in enumerate(checked_stream(requests)):
                if stop.is_set() or not put(("ok", prepare(request, seq))):
                    return
            put(("end", end))
        except BaseException as e:  # handed to the response side, which raises it
            put(("error", e))

    reader = threading.Thread(target=read, name="stilts-stream-reader", daemon=True)
    reader.start()
    try:
        while True:
            try:
                tag, item = q.get(timeout=0.1)
            except queue.Empty:
                if not context.is_active():
                    return
                continue
            if tag == "end":
                return
            if tag == "error":
                raise item
            yield item
    finally:
        stop.set()
        while True:  # cancel whatever was prepared but not consumed
            try:
                tag, item = q.get_nowait()
            except queue.Empty:
                break
            if tag == "ok" and isinstance(item, tuple):
                for part in item:
                    if isinstance(part, Job):
                        part.cancel()


def submit_texts(
    server: Server,
    texts: Sequence[str],
    kind: str,
    model_name: str,
    priority: int,
    context: grpc.ServicerContext,
    field: str = "texts",
    check: Callable[[ServedModel], None] | None = None,
) -> tuple[ServedModel, Job]:
    """The one way texts reach a model: look the model up (NOT_FOUND naming ``model``), check
    ``check(model)`` and the texts against the limits (errors name ``field[i]``), queue them on
    the model's batcher (RESOURCE_EXHAUSTED when its queue is full)."""
    model = server.models.get(model_name)
    with model.batcher.arriving():
        if check is not None:
            check(model)
        texts = v.texts(texts, server.config, field)
        job = model.batcher.submit(texts, kind, priority, deadline_of(context))
    return model, job


def embed_texts(
    server: Server,
    texts: Sequence[str],
    kind: str,
    model_name: str,
    context: grpc.ServicerContext,
    field: str = "texts",
    check: Callable[[ServedModel], None] | None = None,
) -> tuple[ServedModel, Job, np.ndarray]:
    """:func:`submit_texts` at interactive priority and wait: (model, job, vectors)."""
    model, job = submit_texts(server, texts, kind, model_name, INTERACTIVE, context, field, check)
    return model, job, wait(job, context)


def search(
    server: Server, request: retrieval_pb2.SearchRequest, context: grpc.ServicerContext
) -> retrieval_pb2.SearchResponse:
    """Validate a Search request, embed its queries through the batcher, search the index."""
    c = server.config
    si = server.indexes.get(request.index)
    model = server.indexes.model_for(si)
    with model.batcher.arriving():
        queries = v.texts(request.queries, c, "queries")
        k = v.k_value(request.k, c)
        scoring = SCORING_NAMES.get(request.scoring)
        if scoring is None:
            raise v.invalid(f"scoring: unknown value {request.scoring}", "scoring")
        languages = v.languages(request.languages)
        nprobe = v.search_param(request.params.nprobe, "params.nprobe")
        ef_search = v.search_param(request.params.ef_search, "params.ef_search")
        kind = v.text_kind(request.kind, si.query_kind)
        if scoring == "margin" and not si.index.has_margin_reference:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"scoring: SCORING_MARGIN needs a margin reference on index {si.name!r}; "
                "call SetMarginReference first",
                "scoring",
            )
        job = model.batcher.submit(queries, kind, INTERACTIVE, deadline_of(context))
    vecs = wait(job, context)
    results = si.index.search(
        vecs,
        k,
        languages=languages,
        scoring=scoring,
        nprobe=nprobe,
        ef_search=ef_search,
        fingerprint=model.fingerprint,
        max_bytes=c.max_response_bytes,
    )
    resp = retrieval_pb2.SearchResponse(index=si.name, model=model.name)
    for hits in results:
        qh = resp.results.add()
        for h in hits:
            hit_to_proto(h, qh.hits.add())
    return resp


class EmbeddingService(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, server: Server):
        self.s = server

    def _respond(
        self,
        request: embedding_pb2.EmbedRequest,
        model_name: str,
        vecs: np.ndarray,
        job: Job,
    ) -> embedding_pb2.EmbedResponse:
        resp = embedding_pb2.EmbedResponse(
            dim=vecs.shape[1],
            model=model_name,
            truncated=job.truncated,
            tokens=job.n_tokens,
            request_id=request.request_id,
        )
        if request.encoding == embedding_pb2.EMBEDDING_ENCODING_FLOAT32_BYTES:
            resp.data = np.ascontiguousarray(vecs, dtype="<f4").tobytes()
        elif request.encoding in (
            embedding_pb2.EMBEDDING_ENCODING_UNSPECIFIED,
            embedding_pb2.EMBEDDING_ENCODING_FLOATS,
        ):
            resp.embeddings.extend(embedding_pb2.Embedding(values=row) for row in vecs.tolist())
        return resp

    def _submit(self, request: embedding_pb2.EmbedRequest, priority: int, context) -> tuple:
        def check_request(model: ServedModel) -> None:
            if request.encoding not in embedding_pb2.EmbeddingEncoding.values():
                raise v.invalid(f"encoding: unknown value {request.encoding}", "encoding")

        return submit_texts(
            self.s,
            request.texts,
            v.text_kind(request.kind, "query"),
            request.model,
            priority,
            context,
            check=check_request,
        )

    def Embed(self, request, context):
        request = check(request)
        model, job = self._submit(request, INTERACTIVE, context)
        vecs = wait(job, context)
        return self._respond(request, model.name, vecs, job)

    def EmbedStream(self, request_iterator, context):
        def prepare(request, seq):
            model, job = self._submit(request, BULK, context)
            return request, model, job

        current = _Current(context)
        for request, model, job in pipelined(request_iterator, prepare, context):
            vecs = wait(job, context, current)
            yield self._respond(request, model.name, vecs, job)

    def Info(self, request, context):
        check(request)
        c = self.s.config
        resp = embedding_pb2.InfoResponse(
            version=__version__,
            default_model=self.s.models.default_name or "",
            auth_required=c.auth_token is not None,
            limits=embedding_pb2.Limits(
                max_texts_per_request=c.max_texts_per_request,
                max_chars_per_text=c.max_chars_per_text,
                max_k=c.max_k,
                max_message_bytes=c.max_message_bytes,
                max_batch_tokens=c.max_batch_tokens,
                max_batch_size=c.max_batch_size,
                max_wait_ms=c.max_wait_ms,
                max_queue_texts=c.max_queue_texts,
                max_mine_texts=c.max_mine_texts,
            ),
        )
        for m in self.s.models.models.values():
            enc = m.encoder
            info = resp.models.add(
                name=m.name,
                aliases=m.aliases,
                dim=enc.dim,
                max_len=enc.max_len,
                precision=enc.precision,
                provider=enc.provider,
                fingerprint=m.fingerprint,
                prompts=enc.manifest.prefixes,
                similarity=enc.manifest.similarity,
                normalized=enc.manifest.normalize,
            )
            dict_to_struct(enc.manifest.to_dict(), info.manifest)
        return resp


class IndexService(index_pb2_grpc.IndexServiceServicer):
    def __init__(self, server: Server):
        self.s = server

    def _info(self, si: ServedIndex) -> index_pb2.IndexInfo:
        model = self.s.models.by_fingerprint(si.fingerprint or "", si.settings.get("model", ""))
        info = index_pb2.IndexInfo(
            name=si.name,
            model=si.settings.get("model") or (si.index.manifest or {}).get("name", ""),
            model_fingerprint=si.fingerprint or "",
            model_loaded=model is not None,
            dim=si.index.dim,
            kind=si.index.kind,
            document_kind=KIND_VALUES.get(si.document_kind, 0),
            query_kind=KIND_VALUES.get(si.query_kind, 0),
            documents=len(si),
        )
        details = si.index.describe()
        details["settings"] = si.settings
        dict_to_struct(details, info.details)
        return info

    def CreateIndex(self, request, context):
        request = check(request)
        model = self.s.models.get(request.model)
        document_kind = v.text_kind(request.document_kind, "passage", "document_kind")
        query_kind = v.text_kind(request.query_kind, None, "query_kind")
        si = self.s.indexes.create(
            request.name, model, request.kind or "auto", document_kind, query_kind
        )
        return self._info(si)

    def ListIndexes(self, request, context):
        check(request)
        return index_pb2.ListIndexesResponse(
            indexes=[self._info(si) for si in self.s.indexes.all()]
        )

    def DescribeIndex(self, request, context):
        request = check(request)
        return self._info(self.s.indexes.get(request.name, "name"))

    def DropIndex(self, request, context):
        request = check(request)
        n = self.s.indexes.drop(request.name)
        return index_pb2.DropIndexResponse(name=request.name, documents=n)

    def AddDocuments(self, request_iterator, context):
        target: dict[str, Any] = {}

        def prepare(request, seq):
            name = request.index or target.get("name", "")
            if not name:
                raise v.invalid("index is required in the first message", "index")
            if target and name != target["name"]:
                raise v.invalid(
                    f"index {shorten(name)} differs from {target['name']!r} given earlier in the "
                    "stream: one stream writes one index",
                    "index",
                )
            si = self.s.indexes.get(name)
            model = self.s.indexes.model_for(si)
            target["name"] = name
            with model.batcher.arriving():
                docs = v.documents(request.documents, self.s.config)
                job = model.batcher.submit(
                    [d.text for d in docs], si.document_kind, BULK, deadline_of(context)
                )
            return si, model, docs, job, request.upsert

        acknowledged = 0
        current = _Current(context)
        for seq, (si, model, docs, job, upsert) in enumerate(
            pipelined(request_iterator, prepare, context)
        ):
            vecs = wait(job, context, current)
            added = si.index.add(
                [d.id for d in docs], vecs, docs, upsert=upsert, fingerprint=model.fingerprint
            )
            si.writes += added
            acknowledged += added
            self.s.metrics.documents_added.labels(si.name).inc(added)
            yield index_pb2.AddDocumentsResponse(
                sequence=seq, added=added, acknowledged=acknowledged, index_documents=len(si)
            )

    def DeleteDocuments(self, request, context):
        request = check(request)
        si = self.s.indexes.get(request.index)
        ids = v.ids(request.ids, self.s.config)
        n = si.index.delete(ids)
        si.writes += n
        self.s.metrics.documents_deleted.labels(si.name).inc(n)
        return index_pb2.DeleteDocumentsResponse(deleted=n, index_documents=len(si))

    def GetDocuments(self, request, context):
        request = check(request)
        si = self.s.indexes.get(request.index)
        ids = v.ids(request.ids, self.s.config, distinct=True)
        resp = index_pb2.GetDocumentsResponse()
        docs = si.index.get(ids, max_bytes=self.s.config.max_response_bytes)
        for i, doc in zip(ids, docs, strict=True):
            if doc is None:
                resp.missing_ids.append(i)
            else:
                document_to_proto(doc, resp.documents.add())
        return resp

    def SetMarginReference(self, request, context):
        request = check(request)
        si = self.s.indexes.get(request.index)
        k = v.k_value(request.k, self.s.config, default=4)
        vectors = None
        if not request.texts and len(si) < 2:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"texts is empty and index {si.name!r} has {len(si)} document(s): send reference "
                "texts, or add at least 2 documents for the index to sample its own reference",
                "texts",
            )
        if request.texts:
            model = self.s.indexes.model_for(si)
            c = self.s.config
            if len(request.texts) > c.max_mine_texts:
                raise too_large(
                    f"texts has {len(request.texts)} items, more than the limit of "
                    f"{c.max_mine_texts} (--max-mine-texts)",
                    "texts",
                )
            texts = list(request.texts)
            for i, t in enumerate(texts):
                v.check_text(t, c, f"texts[{i}]")
            vectors = np.concatenate(
                list(
                    model.batcher.embed_chunks(
                        texts,
                        si.query_kind,
                        deadline=deadline_of(context),
                        is_cancelled=lambda: not context.is_active(),
                    )
                )
            )
        si.index.set_margin_reference(vectors, k=k)
        si.writes += 1
        return self._info(si)


class RetrievalService(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, server: Server):
        self.s = server

    def Search(self, request, context):
        return search(self.s, check(request), context)

    def Mine(self, request, context):
        request = check(request)
        yield from mine_request(self.s, request, context)
