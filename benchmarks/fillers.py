"""``stilts bench fillers``: monolingual sentences of translated HTML documentation, by page.

The realistic mining pools (:mod:`stilts.benchmarks.pools`) fill their sides with untranslated
text of the pack's domain. For prose that is documentation translated page by page (GIMP's user
manual: ``gimp-help-<xx>`` packages, ``/usr/share/gimp/2.0/help/<lang>/<page>.html``): the xx side
takes the sentences of one half of the pages, the English side those of the other half, so no
filler translates another. This module reads such trees (directories, or ``.deb`` packages
unpacked with ``dpkg-deb -x``) into ``pages.tsv``: ``language TAB page TAB sentence``.

Sentences are the paragraphs (``<p>``) split after ``. ! ?`` (and the CJK stops), whitespace
collapsed, kept when they have 20 to 400 display characters and at least five letters; repeats
within a language are dropped, and so are the sentences of a translated page that are also on an
English page (a translation falls back to the English paragraph it has not translated yet).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from tqdm.auto import tqdm

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write_text
from stilts.training.harvest import check_reserved_packages, display_length, normalize_language

LOG = logging.getLogger(__name__)

MIN_CHARS, MAX_CHARS = 20, 400
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？])")
_LETTER = re.compile(r"[^\W\d_]")


class _Paragraphs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.buf: list[str] = []
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            if not self.depth:
                self.buf = []
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "p" and self.depth:
            self.depth -= 1
            if not self.depth:
                self.out.append(" ".join("".join(self.buf).split()))

    def handle_data(self, data):
        if self.depth:
            self.buf.append(data)


def sentences(html: str) -> list[str]:
    """The kept sentences of one HTML page, in order."""
    p = _Paragraphs()
    p.feed(html)
    out = []
    for para in p.out:
        for s in _SPLIT.split(para):
            s = s.strip()
            if MIN_CHARS <= display_length(s) <= MAX_CHARS and len(_LETTER.findall(s)) >= 5:
                out.append(s)
    return out


def _pages(root: Path) -> Iterator[tuple[str, str, Path]]:
    """``(language, page, path)`` of ``.../<lang>/<page>.html`` under ``root``."""
    for path in sorted(root.rglob("*.html")):
        lang = normalize_language(path.parent.name)
        if lang:
            yield lang, path.stem, path


def read_pages(inputs: Iterable[str | Path], progress: bool = True) -> list[tuple[str, str, str]]:
    """``(language, page, sentence)`` rows of every HTML page under ``inputs`` (directories or
    ``.deb`` files); a sentence seen before in the same language is dropped."""
    inputs = [Path(p) for p in inputs]
    check_reserved_packages(inputs)
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="stilts-fillers-") as tmp:
        for n, src in enumerate(inputs):
            if not src.exists():
                raise StiltsError(ErrorCode.NOT_FOUND, f"no such input {src}", "inputs")
            root = src
            if src.suffix == ".deb":
                root = Path(tmp) / str(n)
                subprocess.run(["dpkg-deb", "-x", str(src), str(root)], check=True)
            pages = list(_pages(root))
            for lang, page, path in tqdm(pages, desc=src.name, disable=not progress):
                for s in sentences(path.read_text(encoding="utf-8", errors="replace")):
                    if (lang, s) not in seen:
                        seen.add((lang, s))
                        rows.append((lang, page, s))
    # a page not (yet) translated keeps its English paragraphs: those are not xx text
    english = {s for lang, _, s in rows if lang == "en"}
    rows = [r for r in rows if r[0] == "en" or r[2] not in english]
    LOG.info("%d sentences of %d languages", len(rows), len({r[0] for r in rows}))
    return rows


def write_pages(rows: list[tuple[str, str, str]], out: str | Path) -> None:
    atomic_write_text(Path(out), "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
