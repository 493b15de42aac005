"""``stilts serve``: the gRPC server's flags (heavy imports stay inside the handler)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from stilts.cliutil import env_flag, precision_flag

LOG = logging.getLogger(__name__)


# -- serve ------------------------------------------------------------------------------------


def _models_arg(value: list[str] | str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    return [m for v in value for m in v.split(",") if m]


def config_from_args(args: argparse.Namespace):
    """A :class:`ServerConfig` from ``stilts serve`` flags."""
    from stilts.server.config import ServerConfig

    return ServerConfig(
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        http_timeout=args.http_timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        max_response_bytes=args.max_response_bytes,
        data_dir=Path(args.data_dir),
        models=_models_arg(args.model),
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        ort_spinning=args.ort_spinning,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue_texts=args.max_queue_texts,
        max_texts_per_request=args.max_texts_per_request,
        max_chars_per_text=args.max_chars_per_text,
        max_k=args.max_k,
        max_message_bytes=args.max_message_bytes,
        max_mine_texts=args.max_mine_texts,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        workers=args.workers,
        auth_token=args.auth_token,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        grace_seconds=args.grace_seconds,
    )


def serve(config, encoders=None, on_ready=None) -> int:
    """Run a server until SIGTERM / SIGINT, then stop gracefully; returns the exit code.

    Prints one JSON line ``{"event": "ready", "address": ..., "metrics_url": ...}`` on stdout
    when it serves (what :class:`stilts.server.ServerProcess` waits for).
    """
    import os
    import signal
    import threading

    from stilts.server.app import Server

    srv = Server(config, encoders=encoders).start()
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second signal while draining: leave now (acknowledged data is
            os._exit(128 + signum)  # durable already; snapshots are rebuilt on the next start)
        LOG.info("received %s; again to exit at once", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not srv._loaded.wait(0.2):
            if stop.is_set():
                srv.stop()
                return 0
        try:
            srv.wait_ready(0)
        except Exception:
            srv.stop(0)
            raise
        print(
            json.dumps(
                {
                    "event": "ready",
                    "address": srv.address,
                    "metrics_url": srv.metrics_url,
                    "http_url": srv.http_url,
                    "tls": config.tls,
                    "models": list(srv.models.models),
                    "indexes": srv.indexes.names(),
                }
            ),
            flush=True,
        )
        if on_ready is not None:
            on_ready(srv)
        while not stop.wait(0.5):
            pass
        srv.stop()
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _cmd_serve(args: argparse.Namespace) -> int:
    return serve(config_from_args(args))


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from stilts.server.config import ServerConfig, default_data_dir

    d = ServerConfig.__dataclass_fields__
    p = sub.add_parser(
        "serve",
        help="run the gRPC server, and with --http-port its HTTP/JSON front door",
        description="Serve the stilts.v1 gRPC API (see proto/stilts/v1) with dynamic batching, "
        "durable indices under --data-dir, grpc.health.v1, server reflection and Prometheus "
        "metrics; with --http-port also the OpenAI embeddings API, TEI's /embed and JSON search "
        "and mining over HTTP (GET /openapi.json). SIGTERM drains in-flight requests, writes "
        "index snapshots and exits 0.",
    )
    g = p.add_argument_group("network")
    env_flag(g, "--host", env="STILTS_HOST", default="127.0.0.1", help="interface to listen on")
    env_flag(g, "--port", env="STILTS_PORT", default=50051, type=int, help="gRPC port (0: any)")
    env_flag(
        g,
        "--http-port",
        env="STILTS_HTTP_PORT",
        default=d["http_port"].default,
        type=int,
        help="also serve HTTP/JSON on this port (OpenAI POST /v1/embeddings, GET /v1/models; "
        "TEI POST /embed, GET /info, GET /health; POST /v1/search, POST /v1/mine; "
        "GET /openapi.json) with the same models, auth and limits (0: any free port; -1: off)",
    )
    env_flag(
        g,
        "--http-timeout",
        env="STILTS_HTTP_TIMEOUT",
        default=d["http_timeout"].default,
        type=float,
        help="seconds an HTTP client may take to send a request and an idle keep-alive "
        "connection stays open (slower clients are cut off)",
    )
    env_flag(
        g,
        "--metrics-port",
        env="STILTS_METRICS_PORT",
        default=9464,
        type=int,
        help="Prometheus /metrics port (0: any free port, -1: off)",
    )
    env_flag(
        g,
        "--metrics-host",
        env="STILTS_METRICS_HOST",
        default="127.0.0.1",
        help="interface of /metrics: plain HTTP without auth, so this machine only by default; "
        "0.0.0.0 exposes it (put it behind a TLS proxy, see README)",
    )
    env_flag(
        g,
        "--auth-token",
        env="STILTS_AUTH_TOKEN",
        default=None,
        help="require metadata 'authorization: Bearer TOKEN' on every RPC but health "
        "(prefer the variable: flags show in ps)",
    )
    env_flag(g, "--tls-cert", env="STILTS_TLS_CERT", default=None, help="PEM certificate chain")
    env_flag(g, "--tls-key", env="STILTS_TLS_KEY", default=None, help="PEM private key")
    env_flag(
        g,
        "--grace-seconds",
        env="STILTS_GRACE_SECONDS",
        default=d["grace_seconds"].default,
        type=float,
        help="how long SIGTERM waits for in-flight requests (a long Mine needs more); then they "
        "end with UNAVAILABLE 'server is shutting down'",
    )
    g = p.add_argument_group("models and data")
    env_flag(
        g,
        "--data-dir",
        env="STILTS_DATA_DIR",
        default=str(default_data_dir()),
        help="directory holding one sub-directory per index",
    )
    env_flag(
        g,
        "--model",
        env="STILTS_MODEL",
        default=["default"],
        nargs="+",
        help="models to serve: installed names, model directories or NAME=DIR (the first is "
        "the default; the variable takes a comma-separated list)",
    )
    precision_flag(g)
    env_flag(
        g,
        "--device",
        env="STILTS_DEVICE",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="ONNX Runtime device",
    )
    env_flag(
        g,
        "--threads",
        env="STILTS_THREADS",
        default=None,
        type=int,
        help="ONNX intra-op threads per model (default: all cores)",
    )
    env_flag(
        g,
        "--ort-spinning",
        env="STILTS_ORT_SPINNING",
        default=False,
        action="store_true",
        help="let ONNX Runtime threads spin-wait between calls (faster alone, slower under load)",
    )
    g = p.add_argument_group("dynamic batching")
    for flag, kind, text in (
        ("max_batch_tokens", int, "most padded tokens (texts x longest) per encoder batch"),
        ("max_batch_size", int, "most texts per encoder batch"),
        ("max_wait_ms", float, "longest a text waits for company before a partial batch runs"),
        ("max_queue_texts", int, "texts allowed to wait per model; more is RESOURCE_EXHAUSTED"),
    ):
        env_flag(
            g,
            "--" + flag.replace("_", "-"),
            env="STILTS_" + flag.upper(),
            default=d[flag].default,
            type=kind,
            help=text,
        )
    g = p.add_argument_group("limits")
    for flag, text in (
        ("max_texts_per_request", "texts, queries or documents per request message"),
        ("max_chars_per_text", "characters per text (more is INVALID_ARGUMENT)"),
        ("max_k", "largest k for Search and Mine"),
        ("max_message_bytes", "largest request message in bytes (more is RESOURCE_EXHAUSTED)"),
        (
            "max_response_bytes",
            "most bytes of document texts and metadata per Search / GetDocuments response, "
            "estimated before reading them (more is RESOURCE_EXHAUSTED)",
        ),
        ("max_mine_texts", "sentences per side of a Mine request"),
        ("max_concurrent_rpcs", "RPCs handled at once (more is RESOURCE_EXHAUSTED)"),
        ("workers", "gRPC handler threads"),
    ):
        env_flag(
            g,
            "--" + flag.replace("_", "-"),
            env="STILTS_" + flag.upper(),
            default=d[flag].default,
            type=int,
            help=text,
        )
    p.set_defaults(func=_cmd_serve)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``stilts`` parser (its clients: :mod:`stilts.client_cli`)."""
    _add_serve(subparsers)
