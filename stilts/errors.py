"""One error type for the whole project, with a code that maps onto gRPC status codes.

Library code raises :class:`StiltsError` with an :class:`ErrorCode`; the server maps the code to a
gRPC status (``ErrorCode.grpc_name``) on its gRPC port and to an HTTP status (:func:`http_status`)
on its HTTP port, the CLI prints the message and exits non-zero.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """What went wrong, named after the gRPC status it maps to."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"

    @property
    def grpc_name(self) -> str:
        return self.value

    @property
    def http_status(self) -> int:
        """The HTTP status of this code (the mapping of ``google.rpc.Code`` to HTTP)."""
        return HTTP_STATUS[self]


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
"""ErrorCode -> HTTP status, as Google's API gateways map gRPC codes (FAILED_PRECONDITION: 400)."""
TOO_LARGE = 413
"""The HTTP status of a request over a size limit (RESOURCE_EXHAUSTED on gRPC: see
:func:`too_large`)."""


class StiltsError(Exception):
    """An error the user can act on.

    Args:
        code: the kind of error.
        message: what went wrong, naming the offending field or file.
        field: the request field or option at fault, when there is one.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        http_status: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message
        self.http_status = http_status if http_status is not None else code.http_status

    def __str__(self) -> str:
        return self.message


SHOWN_CHARS = 80


def shorten(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for echoing request values in messages.

    Error messages travel in gRPC trailing metadata (8 KB by default), so an echoed value must
    never be unbounded.

    Example:
        >>> shorten("x" * 1000, 10)
        "'xxxxxxxxx...' (1000 characters)"
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 1]!r}... ({len(value)} characters)".replace("'...", "...'", 1)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid(message: str, field: str | None = None) -> StiltsError:
    """An INVALID_ARGUMENT error naming ``field``."""
    return StiltsError(ErrorCode.INVALID_ARGUMENT, message, field)


def too_large(message: str, field: str | None = None) -> StiltsError:
    """A request over a size limit (too many texts, a body too big): RESOURCE_EXHAUSTED on gRPC,
    413 on HTTP (429 is kept for a busy server, which a retry may get past)."""
    return StiltsError(ErrorCode.RESOURCE_EXHAUSTED, message, field, http_status=TOO_LARGE)
