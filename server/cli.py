"""``stilts serve``, ``stilts search``, ``stilts index create|add|delete|get|list|describe|drop``,
``stilts health``: the server and thin clients of it (heavy imports stay inside handlers)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from stilts.cliutil import env_flag

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
        help="run the gRPC server (embedding, indices, search, mining)",
        description="Serve the stilts.v1 gRPC API (see proto/stilts/v1) with dynamic batching, "
        "durable indices under --data-dir, grpc.health.v1, server reflection and Prometheus "
        "metrics. SIGTERM drains in-flight requests, writes index snapshots and exits 0.",
    )
    g = p.add_argument_group("network")
    env_flag(g, "--host", env="STILTS_HOST", default="127.0.0.1", help="interface to listen on")
    env_flag(g, "--port", env="STILTS_PORT", default=50051, type=int, help="gRPC port (0: any)")
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
    env_flag(
        g,
        "--precision",
        env="STILTS_PRECISION",
        default="int8",
        choices=["int8", "fp32"],
        help="which ONNX graph to run",
    )
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


# -- client commands --------------------------------------------------------------------------


def _client_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    env_flag(g, "--server", env="STILTS_SERVER", default="127.0.0.1:50051", help="server host:port")
    env_flag(g, "--token", env="STILTS_AUTH_TOKEN", default=None, help="bearer token")
    env_flag(
        g,
        "--tls-ca",
        env="STILTS_TLS_CA",
        default=None,
        help="PEM CA certificate to verify the server (turns TLS on)",
    )
    env_flag(g, "--tls", env="STILTS_TLS", default=False, action="store_true", help="use TLS")
    env_flag(g, "--timeout", env="STILTS_TIMEOUT", default=60.0, type=float, help="seconds per RPC")


def client_from_args(args: argparse.Namespace):
    from stilts.client import Client

    return Client(
        args.server,
        token=args.token,
        tls=args.tls,
        root_certificates=args.tls_ca,
        timeout=args.timeout,
    )


def _print_json(obj) -> None:
    import dataclasses

    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        raise TypeError(type(o).__name__)

    print(json.dumps(obj, default=default, ensure_ascii=False, indent=None))


def _cmd_search(args: argparse.Namespace) -> int:
    from stilts.cliutil import read_lines

    queries = list(args.query)
    if args.input:
        queries += read_lines(args.input)[1]
    if not queries:
        from stilts.errors import ErrorCode, StiltsError

        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "give queries or --input FILE", "query")
    with client_from_args(args) as c:
        results = c.search(
            args.index,
            queries,
            k=args.k,
            languages=args.language or None,
            scoring=args.scoring,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
        )
    for q, hits in zip(queries, results, strict=True):
        if args.json:
            _print_json({"query": q, "hits": hits})
            continue
        print(q)
        for h in hits:
            print(f"  {h.score:7.3f}  {h.id:>8}  [{h.language}] {h.text}")
    return 0


def read_documents(
    path: str, language: str = "", first_id: int = 0
) -> Iterator[tuple[int, str, str, dict]]:
    """Documents from a file: ``.jsonl`` ({"id", "text", "language", "metadata"}), or TSV lines
    ``text``, ``lang<TAB>text`` or ``id<TAB>lang<TAB>text`` (ids default to the line number plus
    ``first_id``).

    Raises:
        StiltsError: INVALID_ARGUMENT naming the file and line for malformed input.
    """
    from stilts.errors import ErrorCode, StiltsError

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            where = f"{path}:{n + 1}"
            if path.endswith(".jsonl"):
                try:
                    obj = json.loads(line)
                    yield (
                        int(obj.get("id", first_id + n)),
                        str(obj["text"]),
                        str(obj.get("language", language)),
                        dict(obj.get("metadata") or {}),
                    )
                except (ValueError, KeyError, TypeError) as e:
                    raise StiltsError(
                        ErrorCode.INVALID_ARGUMENT, f"{where}: bad JSON document: {e}", "input"
                    ) from None
                continue
            cols = line.split("\t")
            if len(cols) == 1:
                yield first_id + n, cols[0], language, {}
            elif len(cols) == 2:
                yield first_id + n, cols[1], cols[0], {}
            else:
                try:
                    doc_id = int(cols[0])
                except ValueError:
                    raise StiltsError(
                        ErrorCode.INVALID_ARGUMENT,
                        f"{where}: with 3 columns the first must be an integer id",
                        "input",
                    ) from None
                yield doc_id, "\t".join(cols[2:]), cols[1], {}


def _cmd_index(args: argparse.Namespace) -> int:
    with client_from_args(args) as c:
        if args.action == "create":
            info = c.create_index(
                args.name,
                model=args.model,
                kind=args.kind,
                document_kind=args.document_kind,
                query_kind=args.query_kind,
            )
            _print_json(info) if args.json else print(
                f"created {info.name}: model={info.model} dim={info.dim} kind={info.kind} "
                f"documents={info.document_kind} queries={info.query_kind}"
            )
        elif args.action == "add":
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"add {args.name}", unit="doc", disable=args.quiet)
            res = c.add_documents(
                args.name,
                read_documents(args.input, args.language, args.first_id),
                batch=args.batch,
                upsert=args.upsert,
                on_ack=lambda ack: bar.update(ack.added),
            )
            bar.close()
            _print_json(res) if args.json else print(
                f"added {res.added} documents to {args.name} (now {res.index_documents})"
            )
        elif args.action == "delete":
            n = c.delete_documents(args.name, args.ids)
            print(json.dumps({"deleted": n}) if args.json else f"deleted {n} documents")
        elif args.action == "get":
            docs = c.get_documents(args.name, args.ids)
            for i, d in zip(args.ids, docs, strict=True):
                _print_json(d if d is not None else {"id": i, "missing": True})
        elif args.action == "list":
            for info in c.list_indexes():
                _print_json(info) if args.json else print(
                    f"{info.name}\t{info.documents} docs\tmodel={info.model}\tkind={info.kind}"
                    f"\tdim={info.dim}" + ("" if info.model_loaded else "\t(model not served)")
                )
        elif args.action == "describe":
            _print_json(c.describe_index(args.name))
        elif args.action == "drop":
            n = c.drop_index(args.name)
            print(
                json.dumps({"dropped": args.name, "documents": n})
                if args.json
                else f"dropped {args.name} ({n} documents)"
            )
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    from stilts.client import RemoteError

    with client_from_args(args) as c:
        try:
            status = c.health(args.service)
        except RemoteError as e:
            print(f"{args.server}: {e}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1


def _add_client_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an index on a stilts server",
        description="Send queries to a server's Search RPC and print the hits.",
    )
    p.add_argument("query", nargs="*", help="query sentences")
    p.add_argument("--index", required=True, help="index name")
    p.add_argument("--input", default=None, help="file with one query per line")
    p.add_argument("-k", "--k", type=int, default=5, help="hits per query")
    p.add_argument(
        "--language", action="append", default=[], help="keep only this language (repeatable)"
    )
    p.add_argument("--scoring", choices=["cosine", "margin"], default="cosine", help="scoring")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists to probe")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    _client_flags(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser(
        "index",
        help="create, fill, inspect and drop indices on a stilts server",
        description="Manage indices on a running server (`stilts serve`).",
    )
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = isub.add_parser("create", help="create an empty index")
    q.add_argument("name", help="index name ([A-Za-z0-9][A-Za-z0-9_.-]*)")
    q.add_argument("--model", default="default", help="served model")
    q.add_argument(
        "--kind", default="auto", help="auto, flat, ivf, hnsw, ivfpq or a FAISS factory string"
    )
    q.add_argument(
        "--document-kind",
        choices=["passage", "bitext", "query"],
        default="passage",
        help="how documents are embedded (bitext: translation retrieval)",
    )
    q.add_argument(
        "--query-kind",
        choices=["query", "passage", "bitext"],
        default=None,
        help="how queries are embedded (default: query for passage documents, else the same)",
    )
    q = isub.add_parser("add", help="stream documents from a file into an index")
    q.add_argument("name", help="index name")
    q.add_argument(
        "--input",
        required=True,
        help="text (one per line), TSV lang<TAB>text or id<TAB>lang<TAB>text, or .jsonl",
    )
    q.add_argument("--language", default="", help="language of one-column input")
    q.add_argument("--first-id", type=int, default=0, help="id of the first line (TSV)")
    q.add_argument("--batch", type=int, default=256, help="documents per stream message")
    q.add_argument("--upsert", action="store_true", help="replace existing ids")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q = isub.add_parser("delete", help="delete documents by id")
    q.add_argument("name", help="index name")
    q.add_argument("ids", nargs="+", type=int, help="document ids")
    q = isub.add_parser("get", help="print documents by id")
    q.add_argument("name", help="index name")
    q.add_argument("ids", nargs="+", type=int, help="document ids")
    isub.add_parser("list", help="list indices")
    q = isub.add_parser("describe", help="print an index's settings and statistics")
    q.add_argument("name", help="index name")
    q = isub.add_parser("drop", help="delete an index and its files")
    q.add_argument("name", help="index name")
    for q in isub.choices.values():
        q.add_argument("--json", action="store_true", help="JSON output")
        _client_flags(q)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser(
        "health",
        help="check a server's grpc.health.v1 status (exit 0 when SERVING)",
        description="Ask the standard health service; used by the Docker HEALTHCHECK.",
    )
    p.add_argument("--service", default="", help="service name ('' = overall)")
    _client_flags(p)
    p.set_defaults(func=_cmd_health)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``search``, ``index`` and ``health`` to the ``stilts`` parser."""
    _add_serve(subparsers)
    _add_client_commands(subparsers)
