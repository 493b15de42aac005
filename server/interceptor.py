"""One server interceptor for every RPC: auth, readiness, error mapping, metrics.

- Auth: with a token configured, every method except ``grpc.health.v1.Health`` needs metadata
  ``authorization: Bearer <token>`` (compared in constant time); else UNAUTHENTICATED.
- Readiness: stilts methods answer UNAVAILABLE until models and indices are loaded.
- Errors: :class:`StiltsError` becomes its gRPC status with the message; malformed request bytes
  become INVALID_ARGUMENT (grpc's default would be INTERNAL); anything unexpected is logged with its
  traceback and becomes INTERNAL, so no input takes the server down.
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


class Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: str):
        self.error = error


def check(request: Any) -> Any:
    """Raise INVALID_ARGUMENT for a request that did not parse; else return it."""
    if isinstance(request, Malformed):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"request message does not parse: {request.error}"
        )
    return request


def checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for r in requests:
        yield check(r)


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # DecodeError, invalid UTF-8 in a string field, ...
            return Malformed(f"{type(e).__name__}: {e}")

    return parse


def status_of(code: ErrorCode) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code.grpc_name, grpc.StatusCode.UNKNOWN)


class ServingInterceptor(grpc.ServerInterceptor):
    """See the module docstring.

    Args:
        metrics: where to count.
        token: the bearer token, or None for no auth.
        is_ready: whether stilts methods may run.
    """

    def __init__(self, metrics: Metrics, token: str | None, is_ready: Callable[[], bool]):
        self.metrics = metrics
        self.expected = None if token is None else f"Bearer {token}".encode()
        self.is_ready = is_ready

    def _denial(self, details: grpc.HandlerCallDetails) -> tuple[grpc.StatusCode, str] | None:
        method = details.method
        if method.startswith(HEALTH_PREFIX):
            return None
        if self.expected is not None:
            got = None
            for key, value in details.invocation_metadata or ():
                if key == "authorization":
                    got = value.encode() if isinstance(value, str) else value
                    break
            if got is None:
                return (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing metadata 'authorization: Bearer <token>'",
                )
            if not hmac.compare_digest(got, self.expected):
                return grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token in 'authorization'"
        if method.startswith(STILTS_PREFIX) and not self.is_ready():
            return (
                grpc.StatusCode.UNAVAILABLE,
                "server is starting: models and indices are still loading (health: NOT_SERVING)",
            )
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
            code = context.code()
            if code is None:
                if failed:
                    code = grpc.StatusCode.INTERNAL
                elif not context.is_active():
                    code = (
                        grpc.StatusCode.DEADLINE_EXCEEDED
                        if context.time_remaining() <= 0
                        else grpc.StatusCode.CANCELLED
                    )
                else:
                    code = grpc.StatusCode.OK
            requests.labels(method, code.name).inc()
            duration.observe(time.perf_counter() - start)
            in_flight.dec()

        def fail(context: grpc.ServicerContext, e: BaseException) -> None:
            if context.code() is not None:  # context.abort() already set the status
                raise e
            if isinstance(e, StiltsError):
                context.abort(status_of(e.code), e.message)
            LOG.exception("unexpected error in %s", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")

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
