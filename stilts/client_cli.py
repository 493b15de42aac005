"""``stilts search``, ``stilts index create|add|delete|get|list|describe|drop``, ``stilts health``:
thin clients of a running server (``stilts serve``), built on :class:`stilts.client.Client`
(imported inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys

from stilts.cliutil import env_flag
from stilts.records import SCORINGS, TEXT_KINDS


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
    from stilts.inputs import read_sentences

    queries = list(args.query)
    if args.input:
        queries += read_sentences(args.input)[1]
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

            from stilts.inputs import read_documents

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``search``, ``index`` and ``health`` to the ``stilts`` parser."""
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
    p.add_argument("--scoring", choices=SCORINGS, default="cosine", help="scoring")
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
        choices=TEXT_KINDS,
        default="passage",
        help="how documents are embedded (bitext: translation retrieval)",
    )
    q.add_argument(
        "--query-kind",
        choices=TEXT_KINDS,
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
