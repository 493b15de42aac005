"""One server interceptor for every RPC: auth, readiness, error mapping, metrics.

- Auth: with a token configured, every method except ``grpc.health.v1.Health`` needs metadata
  ``authorization: Bearer <token>`` (scheme case-insensitive as in RFC 7235, token compared in
  constant time); else UNAUTHENTICATED.
- Concurrency: more than ``--max-concurrent-rpcs`` calls at once (health excepted) are refused
  here with RESOURCE_EXHAUSTED naming the flag, so they are counted like every other ending.
- Readiness: stilts methods answer UNAVAILABLE until models and indices are loaded.
- Errors: :class:`StiltsError` becomes its gRPC status with the message (cut to
  ``MAX_DETAILS_CHARS``: it travels in trailing metadata); malformed request bytes become
  INVALID_ARGUMENT naming the field (grpc's default would be INTERNAL); anything unexpected is
  logged with its traceback and becomes INTERNAL, so no input takes the server down.
- Endings: a call the client cancelled, or whose deadline passed, is counted as CANCELLED or
  DEADLINE_EXCEEDED whatever the handler raised on the way out (and not logged as an error).
- Metrics: ``stilts_requests_total{method,code}``, ``stilts_request_duration_seconds{method}``,
  ``stilts_requests_in_flight{method}``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from stilts.errors import ErrorCode, StiltsError
from stilts.server.metrics import Metrics

LOG = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
STILTS_PREFIX = "/stilts."
MAX_DETAILS_CHARS = 1024  # gRPC trailing metadata is 8 KB by default; messages stay far below
MAX_NESTING = 100
DEADLINE_SLACK_SECONDS = 0.1  # protobuf's recursion limit when parsing


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def locate_parse_error(descriptor: Any, data: bytes, path: str = "", depth: int = 0) -> str | None:
    """Why request bytes did not parse, naming the field: a string field with invalid UTF-8, or
    messages nested deeper than protobuf's limit. None when neither is found.

    Walks the wire format with the message descriptor; paths look like ``documents[0].text``
    (inside ``google.protobuf`` types such as a metadata Struct the path stays at the field).
    """
    if depth > MAX_NESTING:
        return f"{path or 'request'} is nested more than {MAX_NESTING} levels deep"
    counts: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + size], pos + size
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                i = counts[number] = counts.get(number, -1) + 1
                name = path
                if not descriptor.full_name.startswith("google.protobuf."):
                    name = f"{path}.{field.name}" if path else field.name
                    if field.is_repeated:
                        name += f"[{i}]"
                if field.type == field.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return f"{name} is not valid UTF-8"
                elif field.type == field.TYPE_MESSAGE:
                    found = locate_parse_error(field.message_type, chunk, name, depth + 1)
                    if found:
                        return found
            else:
                return None
    except ValueError:
        return None
    return None


def _field_of(reason: str) -> str:
    return reason.split(" ", 1)[0]


class Malformed:
    """Stands in for a request whose bytes did not parse.

    Attributes:
        error: the parser's error.
        reason: which field is at fault (:func:`locate_parse_error`), when found.
    """

    def __init__(self, error: str, reason: str | None = None):
        self.error = error
        self.reason = reason


def check(request: Any) -> Any:
    """Raise INVALID_ARGUMENT for a request that did not parse; else return it."""
    if isinstance(request, Malformed):
        if request.reason:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"request message does not parse: {request.reason}",
                _field_of(request.reason),
            )
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"request message does not parse: {request.error[:200]}"
        )
    return request


def checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for r in requests:
        yield check(r)


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # DecodeError, invalid UTF-8 in a string field, nesting, ...
            reason = None if descriptor is None else locate_parse_error(descriptor, data)
            return Malformed(f"{type(e).__name__}: {e}", reason)

    return parse


def status_of(code: ErrorCode) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code.grpc_name, grpc.StatusCode.UNKNOWN)


def details(message: str) -> str:
    """A status message cut to ``MAX_DETAILS_CHARS``."""
    if len(message) <= MAX_DETAILS_CHARS:
        return message
    return message[: MAX_DETAILS_CHARS - 40] + f"... ({len(message)} characters in all)"


def ending(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """CANCELLED or DEADLINE_EXCEEDED when the call already ended on the client's side."""
    if context.is_active():
        return None
    left = context.time_remaining()
    # a client whose deadline passed cancels the stream itself, a moment before the server's
    # copy of the deadline runs out: count that as the deadline too
    if left is not None and left <= DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _bearer(value: str | bytes) -> bytes | None:
    """The token of an ``authorization`` value whose scheme is Bearer (any case), else None."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip()


STARTING = "server is starting: models and indices are still loading (health: NOT_SERVING)"
"""Why a stilts call is refused before the server is ready (gRPC UNAVAILABLE, HTTP 503)."""


def busy(limit: int, flag: str = "--max-concurrent-rpcs") -> str:
    """Why a call is refused when ``limit`` calls are in progress (RESOURCE_EXHAUSTED, HTTP 429)."""
    return f"server busy: {limit} calls in progress, the limit ({flag}); retry with backoff"


def auth_failure(expected: bytes | None, value: str | bytes | None, where: str) -> str | None:
    """Why a call's credentials are refused, or None when they pass (or no token is set).

    The one auth check of both fronts: ``value`` is the gRPC metadata ``authorization`` or the HTTP
    header ``Authorization`` (``where`` names which, for the message); the Bearer scheme in any
    case, the token compared in constant time.
    """
    if expected is None:
        return None
    if value is None:
        return f"missing {where} 'authorization: Bearer <token>'"
    token = _bearer(value)
    if token is None:
        return f"{where} 'authorization' must use the Bearer scheme: 'Bearer <token>'"
    if not hmac.compare_digest(token, expected):
        return f"invalid bearer token in {where} 'authorization'"
    return None


class ServingInterceptor(grpc.ServerInterceptor):
    """See the module docstring.

    Args:
        metrics: where to count.
        token: the bearer token, or None for no auth.
        is_ready: whether stilts methods may run.
        max_concurrent: calls allowed at once (``--max-concurrent-rpcs``).
    """

    def __init__(
        self,
        metrics: Metrics,
        token: str | None,
        is_ready: Callable[[], bool],
        max_concurrent: int | None = None,
    ):
        self.metrics = metrics
        self.expected = None if token is None else token.encode()
        self.is_ready = is_ready
        self.max_concurrent = max_concurrent
        self._active: Callable[[], int] | None = None

    def limit_concurrency(self, server: grpc.Server) -> bool:
        """Enforce ``max_concurrent`` here, reading the calls grpc counts as active (queued and
        running). grpc calls interceptors under the lock that guards that count, right before its
        own (uncounted, unlabelled) concurrency check, so the two agree.

        Returns:
            False when this grpc version does not expose the count (then pass
            ``maximum_concurrent_rpcs`` to ``grpc.server`` instead).
        """
        state = getattr(server, "_state", None)
        if self.max_concurrent is None or not hasattr(state, "active_rpc_count"):
            return False
        self._active = lambda: state.active_rpc_count
        return True

    def _denial(self, details: grpc.HandlerCallDetails) -> tuple[grpc.StatusCode, str] | None:
        method = details.method
        if method.startswith(HEALTH_PREFIX):
            return None
        if self._active is not None and self._active() >= self.max_concurrent:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, busy(self.max_concurrent)
        if self.expected is not None:
            got = None
            for key, value in details.invocation_metadata or ():
                if key == "authorization":
                    got = value
                    break
            failure = auth_failure(self.expected, got, "metadata")
            if failure is not None:
                return grpc.StatusCode.UNAUTHENTICATED, failure
        if method.startswith(STILTS_PREFIX) and not self.is_ready():
            return grpc.StatusCode.UNAVAILABLE, STARTING
        return None

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        denial = self._denial(handler_call_details)
        requests = self.metrics.requests
        duration = self.metrics.request_duration.labels(method)
        in_flight = self.metrics.in_flight.labels(method)

        def finish(context: grpc.ServicerContext, start: float, failed: bool) -> None:
            code = ending(context) or context.code()
            if code is None:
                code = grpc.StatusCode.INTERNAL if failed else grpc.StatusCode.OK
            requests.labels(method, code.name).inc()
            duration.observe(time.perf_counter() - start)
            in_flight.dec()

        def fail(context: grpc.ServicerContext, e: BaseException) -> None:
            ended = ending(context)
            if ended is not None and context.code() is None:
                # the client is gone: nothing reaches it; abort (rather than raise) so grpc does
                # not log an application error, and finish() counts the real ending
                LOG.debug("%s ended (%s) while the handler raised %r", method, ended.name, e)
                context.abort(ended, "the call ended on the client's side")
            if context.code() is not None:  # context.abort() already set the status
                raise e
            if isinstance(e, StiltsError):
                context.abort(status_of(e.code), details(e.message))
            LOG.exception("unexpected error in %s", method)
            context.abort(
                grpc.StatusCode.INTERNAL, details(f"internal error: {type(e).__name__}: {e}")
            )

        def unary_response(behavior):
            def run(request_or_iterator, context):
                start = time.perf_counter()
                in_flight.inc()
                failed = False
                try:
                    if denial is not None:
                        context.abort(*denial)
                    return behavior(request_or_iterator, context)
                except Exception as e:
                    failed = True
                    fail(context, e)
                finally:
                    finish(context, start, failed)

            return run

        def stream_response(behavior):
            def run(request_or_iterator, context):
                start = time.perf_counter()
                in_flight.inc()
                failed = False
                try:
                    if denial is not None:
                        context.abort(*denial)
                    yield from behavior(request_or_iterator, context)
                except GeneratorExit:
                    raise
                except Exception as e:
                    failed = True
                    fail(context, e)
                finally:
                    finish(context, start, failed)

            return run

        deser = handler.request_deserializer
        if handler_call_details.method.startswith(STILTS_PREFIX):
            deser = _tolerant(deser)
        ser = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary_response(handler.unary_unary), deser, ser
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary_response(handler.stream_unary), deser, ser
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                stream_response(handler.unary_stream), deser, ser
            )
        return grpc.stream_stream_rpc_method_handler(
            stream_response(handler.stream_stream), deser, ser
        )
