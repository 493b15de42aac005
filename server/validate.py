"""Request checks: every error names the offending field (conversions: :mod:`stilts.wire`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from stilts.errors import invalid, shorten, too_large
from stilts.records import Document
from stilts.server.config import ServerConfig
from stilts.v1 import types_pb2
from stilts.wire import KIND_NAMES, struct_to_dict

MAX_LANGUAGE_CHARS = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_SEARCH_PARAM = 1 << 16


def text_kind(value: int, default: str | None, field: str = "kind") -> str | None:
    """A ``TextKind`` enum value as a manifest kind name (UNSPECIFIED -> ``default``)."""
    if value == types_pb2.TEXT_KIND_UNSPECIFIED:
        return default
    name = KIND_NAMES.get(value)
    if name is None:
        raise invalid(f"{field}: unknown TextKind value {value}", field)
    return name


def texts(values: Sequence[str], config: ServerConfig, field: str = "texts") -> list[str]:
    """Check a list of texts against the limits.

    Raises:
        StiltsError: INVALID_ARGUMENT (empty list, empty or too long text),
            RESOURCE_EXHAUSTED (too many texts).
    """
    n = len(values)
    if n == 0:
        raise invalid(f"{field} is empty: send at least one text", field)
    if n > config.max_texts_per_request:
        raise too_large(
            f"{field} has {n} items, more than the limit of {config.max_texts_per_request} "
            "per request (--max-texts-per-request); split the request or use the streaming RPC",
            field,
        )
    out = list(values)
    for i, t in enumerate(out):
        check_text(t, config, f"{field}[{i}]")
    return out


def check_text(t: str, config: ServerConfig, field: str) -> None:
    if not t.strip():
        raise invalid(f"{field} is empty or whitespace only", field)
    if len(t) > config.max_chars_per_text:
        raise invalid(
            f"{field} has {len(t)} characters, more than the limit of "
            f"{config.max_chars_per_text} (--max-chars-per-text)",
            field,
        )


def k_value(k: int, config: ServerConfig, default: int = 10, field: str = "k") -> int:
    if k == 0:
        return default
    if k > config.max_k:
        raise invalid(f"{field}={k} is above the limit of {config.max_k} (--max-k)", field)
    return int(k)


def search_param(value: int, field: str) -> int | None:
    if value == 0:
        return None
    if value > MAX_SEARCH_PARAM:
        raise invalid(f"{field}={value} is above {MAX_SEARCH_PARAM}", field)
    return int(value)


def languages(values: Sequence[str], field: str = "languages") -> list[str] | None:
    if not values:
        return None
    out = list(values)
    for i, lang in enumerate(out):
        if not lang or len(lang) > MAX_LANGUAGE_CHARS or not lang.isprintable():
            raise invalid(
                f"{field}[{i}] {shorten(lang)} is not a language tag (1-{MAX_LANGUAGE_CHARS} "
                "printable characters)",
                field,
            )
    return out


def threshold(value: float | None, field: str = "threshold") -> float | None:
    if value is not None and not math.isfinite(value):
        raise invalid(f"{field} must be a finite number", field)
    return value


def documents(
    docs: Sequence[types_pb2.Document], config: ServerConfig, field: str = "documents"
) -> list[Document]:
    """Check and convert the documents of one AddDocuments message.

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``documents[i].<field>``; RESOURCE_EXHAUSTED for
            too many documents.
    """
    n = len(docs)
    if n == 0:
        raise invalid(f"{field} is empty: send at least one document", field)
    if n > config.max_texts_per_request:
        raise too_large(
            f"{field} has {n} items, more than the limit of {config.max_texts_per_request} "
            "per message (--max-texts-per-request); send them in several stream messages",
            field,
        )
    out = []
    seen: dict[int, int] = {}
    for i, d in enumerate(docs):
        f = f"{field}[{i}]"
        if d.id < 0:
            raise invalid(f"{f}.id must be >= 0, got {d.id}", f"{f}.id")
        if d.id in seen:
            raise invalid(
                f"{f}.id {d.id} repeats {field}[{seen[d.id]}].id within one message", f"{f}.id"
            )
        seen[d.id] = i
        check_text(d.text, config, f"{f}.text")
        if d.language:
            languages([d.language], f"{f}.language")
        meta: dict[str, Any] = {}
        if d.HasField("metadata"):
            if d.metadata.ByteSize() > MAX_METADATA_BYTES:
                raise invalid(
                    f"{f}.metadata is {d.metadata.ByteSize()} bytes, more than "
                    f"{MAX_METADATA_BYTES}",
                    f"{f}.metadata",
                )
            try:
                meta = struct_to_dict(d.metadata)
            except Exception as e:  # NaN / infinity have no JSON form
                raise invalid(f"{f}.metadata is not valid JSON: {e}", f"{f}.metadata") from None
        out.append(Document(int(d.id), d.text, d.language, meta))
    return out


def ids(
    values: Sequence[int], config: ServerConfig, field: str = "ids", distinct: bool = False
) -> list[int]:
    """Check a list of document ids (``distinct``: a repeated id is INVALID_ARGUMENT)."""
    n = len(values)
    if n == 0:
        raise invalid(f"{field} is empty", field)
    limit = config.max_texts_per_request * 10
    if n > limit:
        raise too_large(
            f"{field} has {n} items, more than the limit of {limit} per request",
            field,
        )
    out = [int(v) for v in values]
    if distinct and len(set(out)) < n:
        first: dict[int, int] = {}
        for i, value in enumerate(out):
            if value in first:
                raise invalid(
                    f"{field}[{i}] = {value} repeats {field}[{first[value]}]: ask for each id once",
                    f"{field}[{i}]",
                )
            first[value] = i
    return out
