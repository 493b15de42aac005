"""The HTTP front door: JSON over HTTP/1.1 beside gRPC, from the same process (``--http-port``).

Routes (the OpenAPI document: :mod:`stilts.server.openapi`, served at ``GET /openapi.json``):

- ``POST /v1/embeddings``, ``GET /v1/models``: the OpenAI embeddings API (the ``openai`` client,
  LangChain's ``OpenAIEmbeddings``, LiteLLM, ...); errors ``{"error": {"message", "type",
  "code", "param"}}``.
- ``POST /embed``, ``GET /info``, ``GET /health``: text-embeddings-inference's shape; errors
  ``{"error": ..., "error_type": ...}`` with TEI's statuses (413 for inputs over a limit, 422 for
  a request that does not validate).
- ``POST /v1/search``, ``POST /v1/mine``: the gRPC Search and Mine as JSON.

Every handler calls the service layer the gRPC servicers call (:mod:`stilts.server.services`,
:mod:`stilts.server.mine`): the same validation, batcher, limits and errors; a
:class:`StiltsError`'s HTTP status is ``error.http_status`` (:data:`stilts.errors.HTTP_STATUS`).
Auth is the gRPC check (:func:`stilts.server.interceptor.auth_failure`) on the ``Authorization``
header; ``/health`` and ``/openapi.json`` are open. Until models and indices are loaded, and once
the server drains, calls get 503. Metrics: ``stilts_requests_total{method="POST /v1/embeddings",
code}`` and the duration / in-flight series, beside the gRPC methods.

The stack is the standard library's threading HTTP server (one thread per connection, keep-alive,
Nagle off): no dependency, no event loop between the socket and the batcher. A body is read only
after its ``Content-Length`` passed ``--max-message-bytes`` (413 otherwise); a client that takes
more than ``--http-timeout`` seconds to send its request, or idles that long on a keep-alive
connection, is cut off (408 when it stalls inside a body); at most ``--max-concurrent-rpcs``
requests run at once (429 above that).
"""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import json_format

from stilts import __version__
from stilts.errors import ErrorCode, StiltsError, invalid, too_large
from stilts.records import TEXT_KINDS
from stilts.server import services
from stilts.server.interceptor import STARTING, auth_failure, busy
from stilts.server.mine import mine_request
from stilts.server.openapi import openapi_document
from stilts.v1 import retrieval_pb2
from stilts.wire import THRESHOLD_METADATA, hit_from_proto, mined_pair_from_proto

if TYPE_CHECKING:
    from stilts.server.app import Server
    from stilts.server.models import ServedModel

LOG = logging.getLogger(__name__)

DEFAULT_KIND = "passage"
"""The text kind of ``/v1/embeddings`` and ``/embed`` when the request names none."""
DRAINING = "server is shutting down: retry on another replica or after restart"
CONNECTIONS_PER_CALL = 4
"""Open connections allowed per ``--max-concurrent-rpcs`` (idle keep-alive ones count)."""

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
TEI_TYPES = {400: "validation", 413: "validation", 422: "validation", 429: "overloaded"}
TEI_TYPES.update({401: "unauthorized", 404: "not_found", 503: "unhealthy"})


class HttpError(Exception):
    """An error of the HTTP layer itself (no body, bad JSON, wrong method), with its status."""

    def __init__(self, status: int, message: str, field: str | None = None, code: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or _reason(status)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


# -- the call object the service layer sees -----------------------------------------------------


class HttpCall:
    """One HTTP request as the service layer sees a gRPC context: no client deadline, callbacks
    run when the request ends, ``is_active`` false once the client closed its connection, and the
    trailing metadata (Mine's threshold estimate) kept for the response body."""

    def __init__(self, sock: socket.socket | None):
        self._sock = sock
        self._callbacks: list[Callable[[], Any]] = []
        self.trailing: dict[str, str] = {}

    def time_remaining(self) -> float | None:
        return None

    def add_callback(self, fn: Callable[[], Any]) -> bool:
        self._callbacks.append(fn)
        return True

    def is_active(self) -> bool:
        if self._sock is None:
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return True
            return bool(self._sock.recv(1, socket.MSG_PEEK))  # b"": the client hung up
        except (OSError, ValueError):
            return False

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing.update(dict(metadata))

    def end(self) -> None:
        for fn in self._callbacks:
            try:
                fn()
            except Exception:
                LOG.exception("end-of-request callback failed")


# -- JSON fields ---------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_WORDS = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


def field(body: dict, name: str, kind: type, default: Any = None, required: bool = False) -> Any:
    """``body[name]`` checked to be of JSON type ``kind`` (null or absent: ``default``).

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``name``.
    """
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"{name} is required", name)
        return default
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise invalid(f"{name} must be {_WORDS[kind]}, got {_json_type(value)}", name)
    return value


def texts_of(body: dict, name: str) -> list[str]:
    """A string or a list of strings; token ids are refused with a message that says so."""
    value = body.get(name)
    if value is None:
        raise invalid(f"{name} is required: a string or a list of strings", name)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise invalid(
            f"{name} must be a string or a list of strings, got {_json_type(value)}", name
        )
    if value and all(
        (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, list) for x in value
    ):
        raise invalid(
            f"{name}: token-id input is not supported; send the text (a string or a list of "
            "strings): stilts tokenizes with the model's own tokenizer",
            name,
        )
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise invalid(f"{name}[{i}] must be a string, got {_json_type(x)}", f"{name}[{i}]")
    return value


def kind_of(value: Any, name: str) -> str | None:
    """A text kind name (``query``, ``passage``, ``bitext``) or None."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in TEXT_KINDS:
        raise invalid(
            f"{name} must be one of {', '.join(TEXT_KINDS)}, got {value!r}"[:300],
            name,
        )
    return value


def model_and_kind(name: str) -> tuple[str, str | None]:
    """``NAME:KIND`` (e.g. ``default:query``) -> (NAME, KIND); any other name -> (name, None)."""
    base, sep, suffix = name.rpartition(":")
    if sep and base and suffix in TEXT_KINDS:
        return base, suffix
    return name, None


def _enum(body: dict, key: str, prefix: str) -> None:
    """Let a proto enum field be given by its short name (``margin`` for ``SCORING_MARGIN``)."""
    value = body.get(key)
    if isinstance(value, str) and not value.upper().startswith(prefix):
        body[key] = prefix + value.upper()


def parse_message(body: dict, message: Any) -> Any:
    """Fill a request message from JSON with protobuf's JSON mapping (field names as in the
    proto); a wrong name or type is INVALID_ARGUMENT with the parser's message, which names it."""
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as e:
        raise invalid(f"request does not match {message.DESCRIPTOR.name}: {e}"[:1000]) from None


# -- the front door --------------------------------------------------------------------------


class HttpFront:
    """The HTTP server of one :class:`~stilts.server.app.Server`.

    Args:
        server: the stilts server whose models, indices, config and metrics it shares.
    """

    def __init__(self, server: Server):
        self.s = server
        c = server.config
        self.expected = None if c.auth_token is None else c.auth_token.encode()
        self.max_concurrent = c.max_concurrent_rpcs
        self.max_connections = CONNECTIONS_PER_CALL * c.max_concurrent_rpcs
        self._active = 0
        self._lock = threading.Condition()
        self._draining = False
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.routes: dict[tuple[str, str], tuple[str, Callable[[dict, HttpCall], Any]]] = {
            ("POST", "/v1/embeddings"): ("openai", self.embeddings),
            ("GET", "/v1/models"): ("openai", self.list_models),
            ("POST", "/v1/search"): ("openai", self.search),
            ("POST", "/v1/mine"): ("openai", self.mine),
            ("POST", "/embed"): ("tei", self.embed),
            ("GET", "/info"): ("tei", self.info),
            ("GET", "/health"): ("tei", self.health),
            ("GET", "/openapi.json"): ("openai", self.openapi),
        }
        self.open_paths = {"/health", "/openapi.json"}
        self._openapi: bytes | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Bind and serve on a background thread; returns the port.

        Raises:
            OSError: the port cannot be bound.
        """
        handler = type(
            "Handler", (_Handler,), {"front": self, "timeout": self.s.config.http_timeout}
        )
        self._httpd = _HTTPServer((host, port), handler, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="stilts-http",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def drain(self) -> None:
        """Stop accepting connections; requests that still arrive on open ones get 503."""
        with self._lock:
            self._draining = True
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def close(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for in-flight requests, then close every connection.
        Returns whether all requests had ended."""
        self.drain()
        end = time.monotonic() + max(0.0, timeout)
        with self._lock:
            while self._active and time.monotonic() < end:
                self._lock.wait(min(0.2, max(0.0, end - time.monotonic())))
            done = not self._active
            conns = list(self._connections)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return done

    # -- admission -----------------------------------------------------------------------

    def admit(self, path: str, authorization: str | None) -> None:
        """Auth and readiness; raises the refusal (counted by :meth:`enter` / :meth:`leave`)."""
        if path in self.open_paths:
            return
        failure = auth_failure(self.expected, authorization, "header")
        if failure is not None:
            raise StiltsError(ErrorCode.UNAUTHENTICATED, failure, "authorization")
        if self._draining:
            raise StiltsError(ErrorCode.UNAVAILABLE, DRAINING)
        if not self.s.ready:
            raise StiltsError(ErrorCode.UNAVAILABLE, STARTING)

    def enter(self, path: str) -> None:
        with self._lock:
            if path != "/health" and self._active >= self.max_concurrent:
                raise StiltsError(ErrorCode.RESOURCE_EXHAUSTED, busy(self.max_concurrent))
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._lock.notify_all()

    # -- handlers: OpenAI ----------------------------------------------------------------

    def embeddings(self, body: dict, call: HttpCall) -> dict:
        requested = field(body, "model", str, "")
        name, alias_kind = model_and_kind(requested)
        kind = kind_of(body.get("input_type"), "input_type")
        if kind and alias_kind and kind != alias_kind:
            raise invalid(
                f"input_type {kind!r} contradicts the model name's :{alias_kind}", "input_type"
            )
        kind = kind or alias_kind or DEFAULT_KIND
        texts = texts_of(body, "input")
        fmt = field(body, "encoding_format", str, "float")
        if fmt not in ("float", "base64"):
            raise invalid(
                f"encoding_format must be 'float' or 'base64', got {fmt!r}"[:300],
                "encoding_format",
            )
        dimensions = field(body, "dimensions", int)
        field(body, "user", str)  # accepted and ignored, as its type allows

        def check(model: ServedModel) -> None:
            if dimensions is not None and dimensions != model.encoder.dim:
                raise invalid(
                    f"dimensions={dimensions}: model {model.name!r} gives {model.encoder.dim}-"
                    "dimensional vectors and does not shorten them; leave dimensions out or "
                    f"send {model.encoder.dim}",
                    "dimensions",
                )

        model, job, vecs = services.embed_texts(
            self.s, texts, kind, name, call, field="input", check=check
        )
        if fmt == "base64":
            rows = np.ascontiguousarray(vecs, dtype="<f4")
            values: list = [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
        else:
            values = vecs.tolist()
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)
            ],
            "model": requested or model.name,
            "usage": {"prompt_tokens": job.n_tokens, "total_tokens": job.n_tokens},
        }

    def list_models(self, body: dict, call: HttpCall) -> dict:
        created = int(self.s.started_at)
        return {
            "object": "list",
            "data": [
                {
                    "id": m.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "stilts",
                    "dimensions": m.encoder.dim,
                    "max_input_tokens": m.encoder.max_len,
                    "aliases": m.aliases,
                    "kinds": [f"{m.name}:{k}" for k in TEXT_KINDS],
                }
                for m in self.s.models.models.values()
            ],
        }

    def search(self, body: dict, call: HttpCall) -> dict:
        _enum(body, "scoring", "SCORING_")
        _enum(body, "kind", "TEXT_KIND_")
        request = parse_message(body, retrieval_pb2.SearchRequest())
        resp = services.search(self.s, request, call)
        return {
            "index": resp.index,
            "model": resp.model,
            "results": [
                {"hits": [hit_from_proto(h).__dict__ for h in q.hits]} for q in resp.results
            ],
        }

    def mine(self, body: dict, call: HttpCall) -> dict:
        for side in ("src", "tgt"):
            value = body.get(side)
            if isinstance(value, dict) and isinstance(value.get("texts"), list):
                body[side] = {**value, "texts": {"texts": value["texts"]}}
        request = parse_message(body, retrieval_pb2.MineRequest())
        pairs = [mined_pair_from_proto(p).__dict__ for p in mine_request(self.s, request, call)]
        estimate = call.trailing.get(THRESHOLD_METADATA)
        return {"pairs": pairs, "threshold": json.loads(estimate) if estimate else None}

    def openapi(self, body: dict, call: HttpCall) -> bytes:
        if self._openapi is None:
            self._openapi = json.dumps(openapi_document(__version__)).encode()
        return self._openapi

    # -- handlers: text-embeddings-inference ---------------------------------------------

    def embed(self, body: dict, call: HttpCall) -> list:
        texts = texts_of(body, "inputs")
        normalize = field(body, "normalize", bool, True)
        truncate = field(body, "truncate", bool, True)
        direction = field(body, "truncation_direction", str, "right")
        if direction.lower() != "right":
            raise invalid(
                "truncation_direction: only 'right' is supported (the end of a long text is cut)",
                "truncation_direction",
            )
        kind = kind_of(body.get("prompt_name"), "prompt_name") or DEFAULT_KIND

        def check(model: ServedModel) -> None:
            if not normalize and model.encoder.manifest.normalize:
                raise invalid(
                    f"normalize=false: model {model.name!r} gives L2-normalised vectors only",
                    "normalize",
                )

        model, job = services.submit_texts(
            self.s, texts, kind, "", services.INTERACTIVE, call, field="inputs", check=check
        )
        if not truncate:
            for i, cut in enumerate(job.truncated):
                if cut:
                    job.cancel()
                    raise too_large(
                        f"inputs[{i}] is longer than the model's {model.encoder.max_len} tokens "
                        "and truncate is false; send truncate: true to embed its beginning",
                        f"inputs[{i}]",
                    )
        vecs = services.wait(job, call)
        if normalize and not model.encoder.manifest.normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.maximum(norms, 1e-12)
        return vecs.tolist()

    def info(self, body: dict, call: HttpCall) -> dict:
        c = self.s.config
        m = self.s.models.get("")
        enc = m.encoder
        return {
            "model_id": m.name,
            "model_sha": m.fingerprint,
            "model_dtype": enc.precision,
            "model_type": {"embedding": {"pooling": enc.manifest.pooling}},
            "max_concurrent_requests": c.max_concurrent_rpcs,
            "max_input_length": enc.max_len,
            "max_batch_tokens": c.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": c.max_texts_per_request,
            "auto_truncate": True,
            "version": __version__,
            "dimensions": enc.dim,
            "prompts": enc.manifest.prefixes,
            "models": [x.name for x in self.s.models.models.values()],
        }

    def health(self, body: dict, call: HttpCall) -> dict:
        if self._draining:
            raise StiltsError(ErrorCode.UNAVAILABLE, DRAINING)
        if not self.s.ready:
            raise StiltsError(ErrorCode.UNAVAILABLE, STARTING)
        return {"status": "ok"}


# -- the socket side -------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, front: HttpFront):
        self.front = front
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        f = self.front
        with f._lock:
            over = len(f._connections) >= f.max_connections
            if not over:
                f._connections.add(request)
        if over:  # refuse at once, without a thread
            body = json.dumps(
                {
                    "error": {
                        "message": busy(
                            f.max_connections, "4 x --max-concurrent-rpcs open connections"
                        ),
                        "type": "rate_limit_error",
                        "code": "resource_exhausted",
                    }
                }
            ).encode()
            try:
                request.sendall(
                    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.front._lock:
            self.front._connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stilts/" + __version__
    sys_version = ""
    disable_nagle_algorithm = True
    front: HttpFront

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """The standard library's own refusals (bad request line, headers too long) as JSON."""
        self.close_connection = True
        text = message or _reason(code)
        if explain:
            text = f"{text}: {explain}"
        self._send(
            code,
            {
                "error": {
                    "message": text,
                    "type": OPENAI_TYPES.get(code, "server_error"),
                    "code": _reason(code),
                    "param": None,
                }
            },
        )

    # -- one request -------------------------------------------------------------------

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = (
            payload
            if isinstance(payload, bytes)
            else json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # headers and body in one write (one segment for small answers: no Nagle / delayed-ACK
        # stall between them)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    def _body(self) -> dict:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise HttpError(
                411, "send the body with a Content-Length (chunked bodies are not read)"
            )
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise HttpError(411, "Content-Length is required with a JSON body")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise HttpError(400, f"Content-Length {raw[:40]!r} is not a byte count") from None
        limit = self.front.s.config.max_message_bytes
        if length > limit:
            self.close_connection = True  # the body is left unread
            raise StiltsError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"body is {length} bytes, more than the limit of {limit} (--max-message-bytes)",
                "body",
                http_status=413,
            )
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise HttpError(
                408,
                f"the body did not arrive within {self.front.s.config.http_timeout:g}s "
                "(--http-timeout)",
                "body",
            ) from None
        if len(data) < length:
            self.close_connection = True
            raise HttpError(400, f"body ended after {len(data)} of {length} bytes", "body")
        try:
            body = json.loads(data)
        except UnicodeDecodeError:
            raise invalid("body is not UTF-8 JSON", "body") from None
        except json.JSONDecodeError as e:
            raise invalid(f"body is not valid JSON: {e}", "body") from None
        except RecursionError:
            raise invalid("body is nested too deeply", "body") from None
        if not isinstance(body, dict):
            raise invalid(f"body must be a JSON object, got {_json_type(body)}", "body")
        return body

    def _dispatch(self, method: str) -> None:
        front = self.front
        path = self.path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        route = front.routes.get((method, path))
        family = "tei" if path in ("/embed", "/info", "/health") else "openai"
        if route is None:
            allowed = [m for (m, p) in front.routes if p == path]
            if allowed:
                if method == "POST":
                    self._drain_body()
                self._error(
                    family,
                    HttpError(405, f"{method} {path}: use {', '.join(allowed)}"),
                    {"Allow": ", ".join(allowed)},
                )
            else:
                self._drain_body()
                self._error(
                    family, HttpError(404, f"no route {method} {path[:200]}; see GET /openapi.json")
                )
            return
        label = f"{method} {path}"
        metrics = front.s.metrics
        start = time.perf_counter()
        code = "OK"
        entered = False
        call = HttpCall(self.connection)
        in_flight = metrics.in_flight.labels(label)
        in_flight.inc()
        try:
            front.admit(path, self.headers.get("Authorization"))
            front.enter(path)
            entered = True
            body = self._body() if method == "POST" else {}
            self._send(200, route[1](body, call))
        except (StiltsError, HttpError) as e:
            if isinstance(e, StiltsError):
                code = e.code.name
            else:
                code = "INVALID_ARGUMENT" if e.status < 500 else "INTERNAL"
            if method == "POST" and not entered:
                self._drain_body()
            headers = {"WWW-Authenticate": "Bearer"} if code == "UNAUTHENTICATED" else None
            self._error(route[0], e, headers)
        except (BrokenPipeError, ConnectionResetError):
            code = "CANCELLED"
            self.close_connection = True
        except Exception as e:
            code = "INTERNAL"
            LOG.exception("unexpected error in %s", label)
            self._error(
                route[0],
                StiltsError(ErrorCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"[:1000]),
            )
        finally:
            call.end()
            if entered:
                front.leave()
            in_flight.dec()
            metrics.requests.labels(label, code).inc()
            metrics.request_duration.labels(label).observe(time.perf_counter() - start)

    def _drain_body(self) -> None:
        """Read (and drop) a small refused body so the connection stays usable; else close."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if (
            0 <= length <= 65536
            and "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower()
        ):
            try:
                self.rfile.read(length)
                return
            except OSError:
                pass
        self.close_connection = True

    def _error(self, family: str, e: StiltsError | HttpError, headers=None) -> None:
        if isinstance(e, StiltsError):
            status, message, param = e.http_status, e.message, e.field
            code = e.code.name.lower()
            if family == "tei" and e.code == ErrorCode.INVALID_ARGUMENT and status == 400:
                status = 422  # TEI: a request that does not validate
        else:
            status, message, param, code = e.status, e.message, e.field, e.code
        if family == "tei":
            payload: dict = {"error": message, "error_type": TEI_TYPES.get(status, "backend")}
        else:
            payload = {
                "error": {
                    "message": message,
                    "type": OPENAI_TYPES.get(status, "server_error"),
                    "code": code,
                    "param": param,
                }
            }
        try:
            self._send(status, payload, headers)
        except OSError:
            self.close_connection = True
