"""``make run``: serve the default model on localhost with a demo index of ``examples/``.

Starts ``stilts serve`` in this process, (re)builds the index ``demo`` from a ``lang<TAB>text``
file through the gRPC API (so it also shows the client), prints how to query it, and serves until
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from stilts.cliutil import env_flag, setup_logging

EXAMPLES = Path("examples") / "sentences.tsv"  # relative to the working directory (the checkout)
INDEX = "demo"


def load_demo(address: str, path: Path, token: str | None = None) -> tuple[int, list[str]]:
    """Drop and rebuild the ``demo`` index from the document file ``path`` (``lang<TAB>text``;
    id = line number).

    Returns:
        (documents added, their languages).
    """
    from stilts.client import Client, Document, RemoteError
    from stilts.inputs import read_documents

    rows = [Document(*d) for d in read_documents(path)]
    with Client(address, token=token) as c:
        try:
            c.drop_index(INDEX)
        except RemoteError:
            pass
        c.create_index(INDEX, document_kind="bitext", kind="flat")
        return c.add_documents(INDEX, rows).added, sorted({d.language for d in rows})


def instructions(address: str, metrics_url: str | None, n: int, langs: list[str]) -> str:
    stilts = shlex.quote(str(Path(sys.executable).parent / "stilts"))
    py = shlex.quote(sys.executable)
    srv = "" if address == "127.0.0.1:50051" else f" --server {address}"
    return f"""
stilts is serving on {address}  (metrics: {metrics_url or "off"})
index "{INDEX}": {n} sentences in {len(langs)} languages ({", ".join(langs)}), embedded as bitext

Query it:
  {stilts} search{srv} --index {INDEX} "Wo ist der Bahnhof?"
  {stilts} search{srv} --index {INDEX} --language ja --language ru "I'd like a coffee"
  {stilts} index list{srv}
  {py} -c 'from stilts.client import Client; c = Client("{address}"); print(c.search("{INDEX}", ["Kaffee, bitte"], k=3)[0])'
  grpcurl -plaintext -d '{{"index": "{INDEX}", "queries": ["Kaffee, bitte"], "k": 3}}' {address} stilts.v1.RetrievalService/Search

Ctrl-C stops the server.
"""


def main(argv: list[str] | None = None) -> int:
    from stilts.server.cli import serve
    from stilts.server.config import ServerConfig, default_data_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env_flag(p, "--host", env="STILTS_HOST", default="127.0.0.1", help="interface")
    env_flag(p, "--port", env="STILTS_PORT", default=50051, type=int, help="gRPC port")
    env_flag(p, "--metrics-port", env="STILTS_METRICS_PORT", default=9464, type=int, help="metrics")
    p.add_argument(
        "--data-dir",
        default=str(default_data_dir().parent / "demo"),
        help="where the demo index lives",
    )
    p.add_argument(
        "--examples",
        default=str(EXAMPLES),
        help="lang<TAB>text file to index (default: examples/sentences.tsv in the checkout, "
        "relative to the working directory)",
    )
    p.add_argument("--model", default="default", help="model to serve")
    args = p.parse_args(argv)
    setup_logging(0)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        data_dir=Path(args.data_dir),
        models=[args.model],
    )
    examples = Path(args.examples)
    if not examples.is_file():
        print(f"make run: error: {examples}: no such file (pass --examples)", file=sys.stderr)
        return 2

    def on_ready(srv) -> None:
        n, langs = load_demo(srv.address, examples)
        print(instructions(srv.address, srv.metrics_url, n, langs), flush=True)

    from stilts.errors import StiltsError

    try:
        return serve(config, on_ready=on_ready)
    except StiltsError as e:
        print(f"make run: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
