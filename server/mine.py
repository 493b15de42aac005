"""The Mine RPC: check the request, then mine as :mod:`stilts.index.textmine` does (text sides are
deduplicated and embedded through the batcher; index sides use their stored vectors); stream the
pairs back best first."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import numpy as np

from stilts.errors import ErrorCode, StiltsError, too_large
from stilts.index.textmine import MineSide, mine_sides, text_side
from stilts.server import validate as v
from stilts.server.batcher import BULK
from stilts.server.deadlines import deadline_of
from stilts.server.indexes import ServedIndex
from stilts.server.models import ServedModel
from stilts.v1 import retrieval_pb2
from stilts.wire import THRESHOLD_METADATA, mined_pair_to_proto

if TYPE_CHECKING:
    from stilts.server.app import Server

LOG = logging.getLogger(__name__)

DEFAULT_K = 4


def _text_side(
    server: Server,
    model: ServedModel,
    texts: list[str],
    field: str,
    context: grpc.ServicerContext,
) -> MineSide:
    c = server.config
    if not texts:
        raise v.invalid(f"{field}.texts is empty", field)
    if len(texts) > c.max_mine_texts:
        raise too_large(
            f"{field}.texts has {len(texts)} sentences, more than the limit of "
            f"{c.max_mine_texts} (--max-mine-texts); mine large corpora with `stilts mine`",
            field,
        )
    for i, t in enumerate(texts):
        v.check_text(t, c, f"{field}.texts[{i}]")

    def embed(unique: list[str]) -> np.ndarray:
        chunks = model.batcher.embed_chunks(
            unique,
            kind="bitext",
            chunk=256,
            priority=BULK,
            deadline=deadline_of(context),
            is_cancelled=lambda: not context.is_active(),
        )
        return np.concatenate(list(chunks))

    return text_side(texts, embed, f"{field}.texts")


def _index_side(server: Server, si: ServedIndex, field: str) -> MineSide:
    """Every document of an index with its stored vector, in insertion order."""
    c = server.config
    n = len(si)
    if n == 0:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION, f"{field}: index {si.name!r} is empty", field
        )
    if n > c.max_mine_texts:
        raise too_large(
            f"{field}: index {si.name!r} has {n} documents, more than the limit of "
            f"{c.max_mine_texts} (--max-mine-texts)",
            field,
        )
    ids, texts, vecs = [], [], []
    for docs, block_vecs in si.index.iter_documents(block=16384):
        ids.extend(d.id for d in docs)
        texts.extend(d.text for d in docs)
        vecs.append(block_vecs)
    if not vecs:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION, f"{field}: index {si.name!r} is empty", field
        )
    return MineSide(texts, np.concatenate(vecs), np.arange(len(ids)), np.asarray(ids, np.int64))


def mine_request(
    server: Server, request: retrieval_pb2.MineRequest, context: grpc.ServicerContext
) -> Iterator[retrieval_pb2.MinedPair]:
    """Validate, gather both sides, mine, and yield the pairs best first."""
    from stilts.index import autothreshold, mining

    k = v.k_value(request.k, server.config, default=DEFAULT_K)
    threshold = v.threshold(request.threshold if request.HasField("threshold") else None)
    if request.auto_threshold:
        if threshold is not None:
            raise v.invalid("give threshold or auto_threshold, not both", "auto_threshold")
        threshold = autothreshold.AUTO
    target_precision = request.target_precision if request.HasField("target_precision") else None
    margin = request.margin or "ratio"
    retrieval = request.retrieval or "max"
    mining.check_options(k, margin, retrieval, threshold, target_precision)
    model = server.models.get(request.model)
    sides = []
    for field, side in (("src", request.src), ("tgt", request.tgt)):
        which = side.WhichOneof("source")
        if which is None:
            raise v.invalid(f"{field} is required: give {field}.texts or {field}.index", field)
        if which == "index":
            si = server.indexes.get(side.index, f"{field}.index")
            index_model = server.indexes.model_for(si)
            if sides and index_model.fingerprint != sides[0][1]:
                raise StiltsError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"{field}.index {si.name!r} holds vectors of another model than src",
                    f"{field}.index",
                )
            sides.append((_index_side(server, si, field), index_model.fingerprint))
        else:
            if sides and model.fingerprint != sides[0][1]:
                raise StiltsError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"{field}.texts would be embedded by model {model.name!r}, but src is an "
                    "index of another model; set model to the index's",
                    "model",
                )
            sides.append(
                (
                    _text_side(server, model, list(side.texts.texts), field, context),
                    model.fingerprint,
                )
            )
    (src, _), (tgt, _) = sides
    t0 = time.perf_counter()
    pairs, estimate = mine_sides(
        src,
        tgt,
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
        index="flat",
    )
    if estimate is not None:
        context.set_trailing_metadata(
            ((THRESHOLD_METADATA, json.dumps(estimate.to_dict(), separators=(",", ":"))),)
        )
    LOG.info(
        "mined %d pairs from %d x %d sentences in %.2fs",
        len(pairs),
        len(src.texts),
        len(tgt.texts),
        time.perf_counter() - t0,
    )
    for p in pairs:
        if not context.is_active():
            return
        yield mined_pair_to_proto(p)
