"""The server: wires models, indices, services, health, reflection, metrics; start and stop.

Start-up order: the gRPC port (and the HTTP port, with ``--http-port``) is bound and health
answers NOT_SERVING at once; models and indices load on a background thread; then health turns
SERVING (overall and per service) and stilts RPCs are accepted (before that they get UNAVAILABLE,
HTTP 503). Stop (SIGTERM): health turns NOT_SERVING, new RPCs and HTTP requests are refused,
in-flight ones drain for ``grace_seconds``, FAISS snapshots are written, indices closed.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stilts.encoding.encoder import Encoder
from stilts.errors import ErrorCode, StiltsError
from stilts.server.config import ServerConfig
from stilts.server.http import HttpFront
from stilts.server.indexes import IndexRegistry
from stilts.server.interceptor import ServingInterceptor
from stilts.server.metrics import Metrics
from stilts.server.models import ModelRegistry
from stilts.server.services import EmbeddingService, IndexService, RetrievalService
from stilts.v1 import (
    embedding_pb2,
    embedding_pb2_grpc,
    index_pb2,
    index_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

LOG = logging.getLogger(__name__)

EMBEDDING = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
INDEX = index_pb2.DESCRIPTOR.services_by_name["IndexService"].full_name
RETRIEVAL = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
SERVICES = (EMBEDDING, INDEX, RETRIEVAL)
SNAPSHOT_SECONDS = 60.0
SHUTDOWN_NOTICE_SECONDS = 1.0


class Server:
    """One stilts gRPC server.

    Args:
        config: what to serve and how.
        encoders: already-loaded encoders by served model name (shared by tests and benchmarks
            instead of loading the model again).

    Example:
        >>> srv = Server(ServerConfig(port=0, metrics_port=0, data_dir="/tmp/idx")).start()
        >>> srv.wait_ready()
        >>> srv.address
        '127.0.0.1:43121'
        >>> srv.stop()
    """

    def __init__(self, config: ServerConfig, encoders: dict[str, Encoder] | None = None):
        self.config = config
        self.metrics = Metrics()
        self.models = ModelRegistry(config, self.metrics, encoders)
        self.indexes = IndexRegistry(config.data_dir, self.models)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._ready = threading.Event()
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._grpc: grpc.Server | None = None
        self._saver: threading.Thread | None = None
        self._http: HttpFront | None = None
        self.started_at = time.time()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http_port: int | None = None

    # -- properties ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        host = self.config.host
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        if self.metrics_port is None:
            return None
        host = self.config.metrics_host
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.metrics_port}/metrics"

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the HTTP front door (None when off)."""
        if self.http_port is None:
            return None
        host = self.config.host
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- start -----------------------------------------------------------------------------

    def start(self) -> Server:
        """Bind, start answering (health NOT_SERVING), and load models and indices in the
        background. Call :meth:`wait_ready` to block until it serves.

        Raises:
            StiltsError: UNAVAILABLE when the port cannot be bound.
        """
        c = self.config
        interceptor = ServingInterceptor(
            self.metrics, c.auth_token, self._ready.is_set, c.max_concurrent_rpcs
        )
        options = [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            # responses are bounded before they are built (--max-response-bytes counts texts
            # and metadata; protobuf framing and Struct encoding add to that)
            ("grpc.max_send_message_length", max(2 * c.max_response_bytes, 64 * 1024 * 1024)),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="stilts-rpc"),
            interceptors=[interceptor],
            options=options,
        )
        if not interceptor.limit_concurrency(server):
            # grpc's own limit: refused calls never reach the interceptor (not in the metrics)
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="stilts-rpc"),
                interceptors=[interceptor],
                options=options,
                maximum_concurrent_rpcs=c.max_concurrent_rpcs,
            )
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingService(self), server)
        index_pb2_grpc.add_IndexServiceServicer_to_server(IndexService(self), server)
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(RetrievalService(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        bind = f"{c.host}:{c.port}"
        try:
            if c.tls:
                creds = grpc.ssl_server_credentials(
                    [(c.tls_key.read_bytes(), c.tls_cert.read_bytes())]
                )
                port = server.add_secure_port(bind, creds)
            else:
                port = server.add_insecure_port(bind)
        except RuntimeError as e:
            port = 0
            LOG.debug("bind failed: %s", e)
        if not port:
            raise StiltsError(
                ErrorCode.UNAVAILABLE,
                f"cannot listen on {bind}: address in use or not available (--host/--port)",
                "port",
            )
        self.port = port
        if c.metrics_port >= 0:
            try:
                self.metrics_port = self.metrics.serve(c.metrics_host, c.metrics_port)
            except OSError as e:
                server.stop(None)
                raise StiltsError(
                    ErrorCode.UNAVAILABLE,
                    f"cannot serve metrics on {c.metrics_host}:{c.metrics_port}: {e} "
                    "(--metrics-host/--metrics-port)",
                    "metrics_port",
                ) from None
        if c.http_port >= 0:
            http = HttpFront(self)
            try:
                self.http_port = http.start(c.host, c.http_port)
            except OSError as e:
                server.stop(None)
                self.metrics.close()
                raise StiltsError(
                    ErrorCode.UNAVAILABLE,
                    f"cannot serve HTTP on {c.host}:{c.http_port}: {e} (--host/--http-port)",
                    "http_port",
                ) from None
            self._http = http
        self.metrics.watch_indexes(self.indexes.sizes)
        server.start()
        self._grpc = server
        LOG.info(
            "listening on %s (%s)%s%s; loading models and indices",
            self.address,
            "TLS" if c.tls else "plaintext",
            f", HTTP on {self.http_url}" if self._http else "",
            ", auth on" if c.auth_token else "",
        )
        threading.Thread(target=self._load, name="stilts-loader", daemon=True).start()
        return self

    def _load(self) -> None:
        try:
            t0 = time.perf_counter()
            self.models.load()
            self.health.set(EMBEDDING, health_pb2.HealthCheckResponse.SERVING)
            self.indexes.load_all()
            if self._stopping.is_set():
                return
            self._ready.set()
            self.metrics.ready.set(1)
            for name in ("", INDEX, RETRIEVAL):
                self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            LOG.info(
                "serving %d model(s) and %d index(es) after %.1fs",
                len(self.models.models),
                len(self.indexes.names()),
                time.perf_counter() - t0,
            )
            self._saver = threading.Thread(target=self._snapshots, name="stilts-saver", daemon=True)
            self._saver.start()
        except BaseException as e:
            LOG.error("start-up failed: %s", e)
            self._load_error = e
        finally:
            self._loaded.set()

    def wait_ready(self, timeout: float | None = None) -> Server:
        """Block until models and indices are loaded.

        Raises:
            StiltsError: the load's error (e.g. NOT_FOUND for a missing model), or
                DEADLINE_EXCEEDED after ``timeout``.
        """
        if not self._loaded.wait(timeout):
            raise StiltsError(ErrorCode.DEADLINE_EXCEEDED, f"server not ready after {timeout}s")
        if self._load_error is not None:
            if isinstance(self._load_error, StiltsError):
                raise self._load_error
            raise StiltsError(ErrorCode.INTERNAL, f"start-up failed: {self._load_error}")
        return self

    def _snapshots(self) -> None:
        while not self._stopping.wait(SNAPSHOT_SECONDS):
            try:
                n = self.indexes.save()
                if n:
                    LOG.debug("wrote %d FAISS snapshot(s)", n)
            except Exception:
                LOG.exception("snapshot failed")

    # -- stop ------------------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: refuse new RPCs, drain in-flight ones (``grace`` seconds, default
        ``config.grace_seconds``), write FAISS snapshots, close indices. Idempotent."""
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        grace = self.config.grace_seconds if grace is None else grace
        LOG.info("stopping: draining in-flight requests (up to %.0fs)", grace)
        try:
            self.health.enter_graceful_shutdown()
            t0 = time.monotonic()
            if self._http is not None:
                self._http.drain()
            if self._grpc is not None:
                drained = self._grpc.stop(grace)
                # Shortly before grpc cancels what is left ("Cancelling all calls"), end the calls
                # waiting on the encoder with a message that says why.
                notice = min(SHUTDOWN_NOTICE_SECONDS, grace / 2)
                if not drained.wait(max(0.0, grace - notice)):
                    n = self.models.fail_queued(
                        StiltsError(
                            ErrorCode.UNAVAILABLE,
                            f"server is shutting down: in-flight calls had --grace-seconds="
                            f"{grace:g} to finish; retry on another replica or after restart",
                        )
                    )
                    LOG.warning("grace period over: ending %d queued encoder job(s)", n)
                drained.wait()
            if self._http is not None and not self._http.close(grace - (time.monotonic() - t0)):
                LOG.warning("grace period over: closing HTTP connections with requests in flight")
            self._loaded.wait(grace)
            self.models.stop()
            self.indexes.close()
            self.metrics.ready.set(0)
            self.metrics.close()
            LOG.info("stopped")
        finally:
            self._stopped.set()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
