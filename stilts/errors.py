"""One error type for the whole project, with a code that maps onto gRPC status codes.

Library code raises :class:`StiltsError` with an :class:`ErrorCode`; the server maps the code to a
gRPC status (``ErrorCode.grpc_name``), the CLI prints the message and exits non-zero.
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


class StiltsError(Exception):
    """An error the user can act on.

    Args:
        code: the kind of error.
        message: what went wrong, naming the offending field or file.
        field: the request field or option at fault, when there is one.
    """

    def __init__(self, code: ErrorCode, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

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
