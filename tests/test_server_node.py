"""A second-language client: tests/node/search.js (@grpc/grpc-js + @grpc/proto-loader from npm,
built from proto/ alone) calls Info and Search on a real server and gets the Python client's hits.

Its node_modules is installed here with `npm ci` (from the committed package-lock.json) when
missing; only a machine without `node` skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stilts.client import Client, Document

NODE_DIR = Path(__file__).resolve().parent / "node"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sentences.tsv"


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not installed: the Node.js client test needs it")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "node is installed but npm is not: cannot install @grpc/grpc-js"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return exe


@pytest.fixture(scope="module")
def server(encoder, tmp_path_factory):
    from stilts.server import start_server

    srv = start_server(tmp_path_factory.mktemp("data"), encoders={"default": encoder})
    rows = [line.split("\t", 1) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    with Client(srv.address) as c:
        c.create_index("node", document_kind="bitext", kind="flat")
        c.add_documents("node", [Document(i, t, lang) for i, (lang, t) in enumerate(rows)])
    yield srv
    srv.stop(5)


def run_node(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [node, str(NODE_DIR / "search.js"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_node_client_searches(node, server):
    query = "Où est la gare ?"
    p = run_node(node, server.address, "node", query, "3", "de", "ru")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["info"]["default_model"] == "default"
    (hits,) = out["results"]
    with Client(server.address) as c:
        want = c.search("node", [query], k=3, languages=["de", "ru"])[0]
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert [h["text"] for h in hits] == [h.text for h in want]
    assert hits[0]["language"] in ("de", "ru") and hits[0]["id"] in (19, 23)


def test_node_client_sees_grpc_errors(node, server):
    p = run_node(node, server.address, "no-such-index", "hello")
    assert p.returncode == 1
    assert p.stderr.startswith("NOT_FOUND") and "no-such-index" in p.stderr
