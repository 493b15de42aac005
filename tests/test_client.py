"""stilts.client.Client and the client CLI (`stilts index ...`, `stilts search`, `stilts health`,
`stilts mine --server`) against a real server on a loopback port."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from stilts.cli import main
from stilts.client import Client, Hit, IndexInfo, MinedPair, RemoteError
from stilts.errors import ErrorCode, StiltsError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sentences.tsv"


@pytest.fixture(scope="module")
def server(encoder, tmp_path_factory):
    from stilts.server import start_server

    srv = start_server(tmp_path_factory.mktemp("data"), encoders={"default": encoder})
    yield srv
    srv.stop(5)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_index_lifecycle_and_search(server, capsys, tmp_path):
    srv = ("--server", server.address)
    code, out, _ = run(capsys, "index", "create", "cli", "--document-kind", "bitext", *srv)
    assert code == 0 and "created cli" in out
    code, out, _ = run(
        capsys, "index", "add", "cli", "--input", str(EXAMPLES), "--quiet", "--json", *srv
    )
    assert code == 0 and json.loads(out)["added"] == 36
    code, out, _ = run(capsys, "index", "list", "--json", *srv)
    (info,) = [json.loads(line) for line in out.splitlines()]
    assert info["name"] == "cli" and info["documents"] == 36
    code, out, _ = run(
        capsys, "search", "--index", "cli", "-k", "2", "--language", "ja", "--json",
        "Where is the nearest train station?", *srv,
    )  # fmt: skip
    res = json.loads(out)
    assert [h["language"] for h in res["hits"]] == ["ja", "ja"]
    assert res["hits"][0]["id"] == 22  # the Japanese row of that sentence
    code, out, _ = run(capsys, "search", "--index", "cli", "Kaffee bitte", *srv)
    # the top hit is one of the six translations of "a cup of coffee, please" (rows 24-29)
    coffee = ("coffee", "Kaffee", "café", "コーヒー", "кофе")
    assert code == 0 and any(w in out.splitlines()[1] for w in coffee), out
    code, out, _ = run(capsys, "index", "get", "cli", "1", "999", *srv)
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[0]["language"] == "de" and docs[1] == {"id": 999, "missing": True}
    code, out, _ = run(capsys, "index", "delete", "cli", "0", "1", "--json", *srv)
    assert json.loads(out) == {"deleted": 2}
    code, out, _ = run(capsys, "index", "describe", "cli", *srv)
    assert json.loads(out)["documents"] == 34
    code, out, _ = run(capsys, "index", "drop", "cli", *srv)
    assert code == 0 and "34 documents" in out
    code, out, err = run(capsys, "index", "describe", "cli", *srv)
    assert code == 2 and "NOT_FOUND" in err and "cli" in err


def test_cli_add_formats_and_bad_files(server, capsys, tmp_path):
    srv = ("--server", server.address)
    run(capsys, "index", "create", "fmt", *srv)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        json.dumps({"id": 5, "text": "Hallo", "language": "de", "metadata": {"src": "x"}})
        + "\n"
        + json.dumps({"id": 6, "text": "Salut", "language": "fr"})
        + "\n"
    )
    assert run(capsys, "index", "add", "fmt", "--input", str(jsonl), "--quiet", *srv)[0] == 0
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("10\ten\tHello\n11\tes\tHola\n")
    assert run(capsys, "index", "add", "fmt", "--input", str(tsv), "--quiet", *srv)[0] == 0
    with Client(server.address) as c:
        got = c.get_documents("fmt", [5, 6, 10, 11])
    assert [d.language for d in got] == ["de", "fr", "en", "es"]
    assert got[0].metadata == {"src": "x"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("notanid\ten\tHello\n")
    code, _, err = run(capsys, "index", "add", "fmt", "--input", str(bad), "--quiet", *srv)
    assert code == 2 and "bad.tsv:1" in err
    run(capsys, "index", "drop", "fmt", *srv)


def test_cli_health_and_unreachable_server(server, capsys):
    assert run(capsys, "health", "--server", server.address) == (0, "SERVING\n", "")
    code, _, err = run(capsys, "index", "list", "--server", "127.0.0.1:1", "--timeout", "2")
    assert code == 2 and "UNAVAILABLE" in err
    code, _, _ = run(capsys, "health", "--server", "127.0.0.1:1", "--timeout", "2")
    assert code == 1


def test_mine_on_server_cli(server, capsys, tmp_path):
    rows = [line.split("\t", 1) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    de = [t for lang, t in rows if lang == "de"]
    en = [t for lang, t in rows if lang == "en"][::-1]
    (tmp_path / "de.txt").write_text("\n".join(de) + "\n")
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n")
    out = tmp_path / "pairs.tsv"
    code, _, err = run(
        capsys, "mine", str(tmp_path / "de.txt"), str(tmp_path / "en.txt"), "-o", str(out),
        "--server", server.address, "--k", "2", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    got = {tuple(line.split("\t")[-2:]) for line in lines}
    assert got == {(d, e) for d, e in zip(de, en[::-1], strict=True)}


def test_typed_results(server):
    with Client(server.address) as c:
        info = c.create_index("typed", document_kind="bitext")
        assert isinstance(info, IndexInfo) and info.dim == 384
        c.add_documents("typed", [(1, "Guten Morgen", "de"), {"id": 2, "text": "Bonjour"}])
        (hits,) = c.search("typed", "Good morning", k=2)
        assert all(isinstance(h, Hit) for h in hits) and hits[0].id == 1
        pairs = c.mine(["Good morning", "Thank you"], ["Danke schön", "Guten Morgen"], k=1)
        assert all(isinstance(p, MinedPair) for p in pairs)
        assert {(p.src_index, p.tgt_index) for p in pairs} == {(0, 1), (1, 0)}
        vecs = c.embed(["a", "b"], kind="passage")
        assert vecs.dtype == np.float32 and vecs.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        c.drop_index("typed")


def test_client_side_and_server_errors_name_the_field(server):
    with Client(server.address) as c:
        with pytest.raises(StiltsError) as e:
            c.embed("not a list")
        assert e.value.field == "texts"
        with pytest.raises(StiltsError) as e:
            c.search("x", ["q"], scoring="bm25")
        assert e.value.field == "scoring"
        with pytest.raises(StiltsError) as e:
            c.mine(["a"], None)
        assert e.value.field == "tgt_texts"
        with pytest.raises(RemoteError) as e:
            c.search("no-such-index", ["q"])
        assert e.value.status == grpc.StatusCode.NOT_FOUND
        assert e.value.code == ErrorCode.NOT_FOUND and "no-such-index" in str(e.value)
        with pytest.raises(RemoteError) as e:
            c.embed(["ok", "x" * 30000])
        assert e.value.status == grpc.StatusCode.INVALID_ARGUMENT and "texts[1]" in e.value.message


def test_serve_flags_read_environment(monkeypatch, tmp_path):
    from stilts.cli import build_parser
    from stilts.server.cli import config_from_args

    monkeypatch.setenv("STILTS_PORT", "6000")
    monkeypatch.setenv("STILTS_MAX_WAIT_MS", "7.5")
    monkeypatch.setenv("STILTS_MODEL", "default,other=/models/other")
    monkeypatch.setenv("STILTS_AUTH_TOKEN", "tok")
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--max-k", "50"])
    cfg = config_from_args(args)
    assert (cfg.port, cfg.max_wait_ms, cfg.max_k, cfg.auth_token) == (6000, 7.5, 50, "tok")
    assert cfg.models == ["default", "other=/models/other"]
    with pytest.raises(StiltsError) as e:
        config_from_args(build_parser().parse_args(["serve", "--tls-cert", "/nonexistent"]))
    assert e.value.field == "tls_cert"


def test_plain_strings_and_other_wrong_inputs_are_refused_with_the_accepted_forms(server):
    with Client(server.address, timeout=60) as c:
        c.create_index("strings")
        with pytest.raises(TypeError, match=r"documents\[0\] is a str: pass a Document\(id"):
            c.add_documents("strings", ["some text"])
        with pytest.raises(TypeError, match="documents is a str"):
            c.add_documents("strings", "some text")
        assert c.describe_index("strings").documents == 0  # nothing was sent
        # the forms the message names work, and the hint in it too
        added = c.add_documents("strings", enumerate(["some text", "other text"])).added
        assert added == 2
        assert c.add_documents("strings", [{"id": 5, "text": "x", "language": "en"}]).added == 1
        # a bad item after good ones: the good messages are stored, then the TypeError
        docs = [(10 + i, f"text {i}") for i in range(4)] + ["no id"]
        with pytest.raises(TypeError, match=r"documents\[4\] is a str"):
            c.add_documents("strings", docs, batch=2)
        assert c.describe_index("strings").documents == 7
        with pytest.raises(TypeError, match=r"documents\[0\].*invalid literal"):
            c.add_documents("strings", [("abc", "text")])
        # search: one string or a list of strings
        assert c.search("strings", "some text", k=1)[0][0].id == 0
        with pytest.raises(TypeError, match=r"queries\[1\] is a int: pass a list of strings"):
            c.search("strings", ["ok", 3])
        with pytest.raises(TypeError, match=r"queries is a bytes"):
            c.search("strings", b"bytes")
        with pytest.raises(TypeError, match=r"texts\[0\] is a NoneType: pass a list of strings"):
            c.embed([None])
        c.drop_index("strings")
