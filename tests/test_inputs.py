"""The one input reader (stilts.inputs) and the one atomic write (stilts.fsutil), on real files."""

from __future__ import annotations

import os

import pytest

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_path, atomic_write, atomic_write_text
from stilts.inputs import read_documents, read_sentences


def test_sentence_files_two_columns_mean_id_and_sentence(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("a1\tGuten Morgen\r\na2\tWo\tist es?\n", encoding="utf-8")
    assert read_sentences(path) == (["a1", "a2"], ["Guten Morgen", "Wo\tist es?"])
    assert read_sentences(path, "lines") == (None, ["a1\tGuten Morgen", "a2\tWo\tist es?"])
    plain = tmp_path / "p.txt"
    plain.write_text("Hallo\n\nWelt\n", encoding="utf-8")
    assert read_sentences(plain) == (None, ["Hallo", "", "Welt"])


def test_sentence_file_errors_name_file_and_line(tmp_path):
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("a\tHallo\n" * 3 + "kein tab\n", encoding="utf-8")
    with pytest.raises(StiltsError, match=r"mixed.tsv:4: expected id<TAB>sentence"):
        read_sentences(mixed)
    with pytest.raises(StiltsError, match=r"mixed.tsv:4: expected id<TAB>sentence"):
        read_sentences(mixed, "ids")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Grüße\n".encode("latin-1"))
    with pytest.raises(StiltsError, match=r"latin1.txt:1: not valid UTF-8"):
        read_sentences(latin1)
    with pytest.raises(StiltsError) as e:
        read_sentences(tmp_path / "missing.txt")
    assert e.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(StiltsError, match="input format"):
        read_sentences(latin1, "csv")


def test_document_files_two_columns_mean_language_and_text(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("only text\nde\tHallo\n\n42\tfr\tBonjour\tà tous\n", encoding="utf-8")
    assert list(read_documents(path, language="xx", first_id=100)) == [
        (100, "only text", "xx", {}),
        (101, "Hallo", "de", {}),
        (42, "Bonjour\tà tous", "fr", {}),
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "Hi", "metadata": {"n": 1}}\n{"id": 7, "text": "Yo"}\n')
    assert list(read_documents(jsonl, language="en")) == [
        (0, "Hi", "en", {"n": 1}),
        (7, "Yo", "en", {}),
    ]


def test_document_file_errors_name_file_and_line(tmp_path):
    bad_id = tmp_path / "bad.tsv"
    bad_id.write_text("x\tde\tHallo\n", encoding="utf-8")
    with pytest.raises(StiltsError, match=r"bad.tsv:1: with 3 columns the first must be"):
        list(read_documents(bad_id))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": 1, "text": "ok"}\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(StiltsError, match=r"bad.jsonl:2: bad JSON document"):
        list(read_documents(bad_json))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.tsv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the new")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"], "no temp file left"
    with atomic_write(target, "wb") as f:
        f.write(b"new\n")
    assert target.read_bytes() == b"new\n"
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def test_atomic_path_for_writers_that_need_a_name(tmp_path):
    target = tmp_path / "sub" / "index.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"\x00\x01")
        assert not target.exists()
    assert target.read_bytes() == b"\x00\x01"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
