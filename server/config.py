"""Server configuration: one dataclass, filled from ``stilts serve`` flags / ``STILTS_*`` variables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError


def default_data_dir() -> Path:
    """``$STILTS_HOME/indexes`` (default ``~/.cache/stilts/indexes``)."""
    from stilts.home import stilts_home

    return stilts_home() / "indexes"


@dataclasses.dataclass
class ServerConfig:
    """Everything ``stilts serve`` can be told.

    Attributes:
        host: interface to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: gRPC port (0: any free port).
        http_port: HTTP port of the JSON front door (OpenAI ``/v1/embeddings``, TEI ``/embed``,
            ``/v1/search``, ``/v1/mine``; :mod:`stilts.server.http`) on ``host``, beside gRPC
            (0: any free port, negative: off, the default).
        http_timeout: seconds an HTTP client may take to send a request (headers and body) and
            an idle keep-alive connection stays open; a slower client is cut off.
        metrics_port: Prometheus /metrics port (0: any free port, negative: no metrics endpoint).
        metrics_host: interface of the /metrics endpoint (plain HTTP, no auth: this machine only
            by default, whatever ``host`` is).
        data_dir: where indices live, one directory each.
        models: models to serve: installed names, directories, or ``NAME=DIR``; the first is the
            default.
        precision: a CPU route (``q4``, ``int8``, ``fp32``, ``ov-f32``, ``ov-bf16``); None or
            ``auto``: the route measured fastest for serving on this CPU among those passing the
            parity gate (fp32 on a GPU), see :class:`stilts.Encoder`.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: ONNX Runtime intra-op threads per model (None: all cores).
        ort_spinning: let ONNX Runtime's threads spin-wait between calls (off: they yield the
            cores to the gRPC threads, see :class:`stilts.Encoder`'s ``spin``).
        max_batch_tokens: most padded tokens per encoder batch.
        max_batch_size: most texts per encoder batch.
        max_wait_ms: longest a text waits for company before a partial batch runs.
        max_queue_texts: texts allowed to wait per model before RESOURCE_EXHAUSTED.
        max_texts_per_request: texts / queries / documents per request message.
        max_chars_per_text: characters per text.
        max_k: largest k for Search and Mine.
        max_message_bytes: largest request message.
        max_response_bytes: most bytes of document texts and metadata in one Search or
            GetDocuments response, estimated from stored sizes before any document is read.
        max_mine_texts: sentences per side of a Mine request.
        max_concurrent_rpcs: RPCs handled at once; more is RESOURCE_EXHAUSTED.
        workers: gRPC handler threads.
        auth_token: when set, every RPC but health needs ``authorization: Bearer <token>``.
        tls_cert: PEM certificate chain (with tls_key: serve TLS only).
        tls_key: PEM private key.
        grace_seconds: how long SIGTERM waits for in-flight RPCs.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    http_port: int = -1
    http_timeout: float = 30.0
    metrics_port: int = 9464
    metrics_host: str = "127.0.0.1"
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    models: list[str] = dataclasses.field(default_factory=lambda: ["default"])
    precision: str | None = None
    device: str = "auto"
    threads: int | None = None
    ort_spinning: bool = False
    max_batch_tokens: int = 16384
    max_batch_size: int = 128
    max_wait_ms: float = 2.0
    max_queue_texts: int = 16384
    max_texts_per_request: int = 1024
    max_chars_per_text: int = 20000
    max_k: int = 1000
    max_message_bytes: int = 32 * 1024 * 1024
    max_response_bytes: int = 32 * 1024 * 1024
    max_mine_texts: int = 200_000
    max_concurrent_rpcs: int = 1024
    workers: int = 128
    auth_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grace_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if isinstance(self.models, str):
            self.models = [self.models]
        if not self.models:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "serve at least one model", "model")
        for name in (
            "max_batch_tokens",
            "max_batch_size",
            "max_queue_texts",
            "max_texts_per_request",
            "max_chars_per_text",
            "max_k",
            "max_message_bytes",
            "max_response_bytes",
            "max_mine_texts",
            "max_concurrent_rpcs",
            "workers",
        ):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{flag} must be >= 1", name)
        if self.max_wait_ms < 0:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "--max-wait-ms must be >= 0", "max_wait_ms"
            )
        if not 0 <= self.port < 65536:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "--port must be in 0..65535", "port")
        if self.http_port >= 65536:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "--http-port must be below 65536", "http_port"
            )
        if not self.http_timeout > 0:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "--http-timeout must be > 0", "http_timeout"
            )
        if self.metrics_port >= 65536:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "--metrics-port must be below 65536", "metrics_port"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                "--tls-cert and --tls-key go together (both or neither)",
                "tls_cert",
            )
        for name in ("tls_cert", "tls_key"):
            p = getattr(self, name)
            if p is not None:
                p = Path(p).expanduser()
                setattr(self, name, p)
                if not p.is_file():
                    flag = "--" + name.replace("_", "-")
                    raise StiltsError(ErrorCode.NOT_FOUND, f"{flag}: no file at {p}", name)
        if self.auth_token is not None:
            self.auth_token = self.auth_token.strip() or None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
