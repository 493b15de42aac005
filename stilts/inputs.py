"""Reading input files: the one reader per layout, for every command.

Two kinds of file, each with one meaning per layout:

- **sentence files** (``stilts encode``, ``stilts search --input``, ``stilts mine``): one sentence
  per line, or BUCC ``id<TAB>sentence``. The layout is detected on the first
  :data:`DETECT_LINES` non-empty lines (all hold a TAB: ids; most but not all: an error) or given
  (``lines`` / ``ids``). In the ids layout every line must have an id; a second TAB belongs to
  the sentence.
- **document files** (``stilts index add``, ``make run``): ``.jsonl`` objects
  ``{"id", "text", "language", "metadata"}``, or TSV lines ``text``, ``language<TAB>text`` or
  ``id<TAB>language<TAB>text``; ids default to ``first_id`` plus the line number (0-based). Blank
  lines are skipped.

Files are UTF-8; a bad byte is an INVALID_ARGUMENT naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError, invalid

LAYOUTS = ("auto", "lines", "ids")
DETECT_LINES = 1000


def _where(path: str | os.PathLike, line: int) -> str:
    return f"{path}:{line + 1}"


def decode_line(raw: bytes, path: str | os.PathLike, line: int) -> str:
    """One line's text without its line ending (``line`` is 0-based)."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise invalid(f"{_where(path, line)}: not valid UTF-8 ({e.reason})", "input") from None


def split_sentence(text: str, has_ids: bool, path: str | os.PathLike, line: int) -> tuple[str, str]:
    """(id or "", sentence) of one decoded line of a sentence file."""
    if not has_ids:
        return "", text
    sid, tab, sentence = text.partition("\t")
    if not tab or not sid:
        raise invalid(
            f"{_where(path, line)}: expected id<TAB>sentence (the file's first lines have ids); "
            "pass --input-format lines for one sentence per line",
            "input",
        )
    return sid, sentence


def detect_ids(path: str | os.PathLike) -> bool:
    """Whether a sentence file is in the ``id<TAB>sentence`` layout (see the module docstring).

    Raises:
        StiltsError: INVALID_ARGUMENT when most but not all of the first lines hold a TAB.
    """
    seen = with_tab = 0
    first_without = None
    with open(path, "rb") as f:
        for line, raw in enumerate(f):
            if not raw.strip():
                continue
            seen += 1
            if b"\t" in raw:
                with_tab += 1
            elif first_without is None:
                first_without = line
            if seen >= DETECT_LINES:
                break
    if seen and with_tab == seen:
        return True
    if with_tab > seen // 2:
        raise invalid(
            f"{_where(path, first_without)}: expected id<TAB>sentence like most lines; "
            "pass --input-format lines or ids",
            "input",
        )
    return False


def has_ids(path: str | os.PathLike, layout: str = "auto") -> bool:
    """Check that ``path`` is a file and resolve ``layout`` (``auto``: detected)."""
    if not Path(path).is_file():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{path}: no such file", "input")
    if layout not in LAYOUTS:
        raise invalid(f"input format must be one of {LAYOUTS}, got {layout!r}", "input_format")
    return detect_ids(path) if layout == "auto" else layout == "ids"


def read_sentences(
    path: str | os.PathLike, layout: str = "auto"
) -> tuple[list[str] | None, list[str]]:
    """A whole sentence file in memory: row i is line i.

    Returns:
        (ids, or None in the lines layout; sentences).
    """
    ids_layout = has_ids(path, layout)
    ids, sentences = [], []
    with open(path, "rb") as f:
        for line, raw in enumerate(f):
            sid, sentence = split_sentence(decode_line(raw, path, line), ids_layout, path, line)
            ids.append(sid)
            sentences.append(sentence)
    return (ids if ids_layout else None), sentences


def read_documents(
    path: str | os.PathLike, language: str = "", first_id: int = 0
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(id, text, language, metadata) per document of a document file (module docstring).

    Args:
        path: the file (``.jsonl`` or TSV).
        language: the language of documents that do not name one.
        first_id: added to the line number for documents without an id.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the file and line for malformed input.
    """
    jsonl = str(path).endswith(".jsonl")
    with open(path, "rb") as f:
        for n, raw in enumerate(f):
            line = decode_line(raw, path, n)
            if not line.strip():
                continue
            if jsonl:
                try:
                    obj = json.loads(line)
                    yield (
                        int(obj.get("id", first_id + n)),
                        str(obj["text"]),
                        str(obj.get("language", language)),
                        dict(obj.get("metadata") or {}),
                    )
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise invalid(f"{_where(path, n)}: bad JSON document: {e}", "input") from None
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
                    raise invalid(
                        f"{_where(path, n)}: with 3 columns the first must be an integer id",
                        "input",
                    ) from None
                yield doc_id, "\t".join(cols[2:]), cols[1], {}
