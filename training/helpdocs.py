"""``stilts data help``: sentence pairs from translated documentation (help prose).

Sources (directories, or Debian packages unpacked with ``dpkg-deb -x``; all inputs are read
together, since the English help and its translations come in different packages):

- LibreOffice's help: ``.../libreoffice/help/<lang>/<file>.html`` (the built help of
  ``libreoffice-help-<lang>``) or ``.xhp`` sources, English in ``en-US``. Units are the elements
  that carry a paragraph or heading id (``par_id3150278``, ``hd_id3147226``); a translated page is
  aligned with the English page of the same path by id.
- Mallard help (GNOME's ``gnome-user-docs`` and applications' help):
  ``.../share/help/<lang>/<document>/<page>.page``, English in ``C``. Units are the text blocks
  (``p``, ``title``, ``desc``, ...) under the nearest element with an id (the page or a section);
  a section is aligned block by block when both sides hold the same sequence of block paths.
- DocBook help in the same folders (``<file>.docbook`` / ``.xml``: MATE's user guide, older GNOME
  applications), aligned the same way (``para``, ``title``, ``term``, ... under the nearest
  ``id`` / ``xml:id``).

Text is plain: markup stripped (inline elements kept as text, key sequences joined with ``+``,
``Edit ▸ Copy`` menu paths, code, screens, media, bookmarks, comments and ``<info>`` dropped; a unit with an empty link,
whose text the viewer fills in, is dropped). A unit pair is split into sentence pairs when both
sides give the same number of sentences (each sentence pair passing the filters), else kept whole.
Pairs are then filtered: the filters of ``stilts data bitext`` (identical, placeholders, length
and length ratio), a script check per language (most of the translation's letters in the
language's script, the English side's in Latin), text left in English (three or more English
function words in a Latin-script translation), near-duplicates (same language and the same word
set on the English or the translated side), and anything close to the ``--exclude`` packs (the
same folded text or, from four words, the same word set).

Whole documents (a page in every language) are held out by a hash of their path: ``help-dev``,
written in the dev packs' layouts (``tatoeba/<xx>-en.tsv``, up to 1000 pairs; BUCC-style
``bucc/<xx>-en/<xx>-en.training.{xx,en,gold}`` for a few languages: gold pairs hidden among
sentences with no partner on the other side). No held-out text (nor a pair with the same English
or translated text, or word set) is trained on. The rest is split by document into ``pairs.tsv``
and ``dev.tsv`` (``source, target, language, origin``, as ``stilts data bitext`` writes them) and
``summary.json`` (pairs per language, document collection and package, drop reasons, licences).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import html.parser
import json
import logging
import os
import random
import re
import subprocess
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.training.harvest import (
    DEV_FILE,
    PAIRS_FILE,
    SUMMARY_FILE,
    Filters,
    _unpack_deb,
    check_pack_sources,
    check_reserved_packages,
    exclusion_set,
    fold,
    normalize_language,
    pack_sources,
)

LOG = logging.getLogger(__name__)

ORIGIN_PREFIX = "help:"
DEFAULT_BUCC_LANGUAGES = ("de", "es", "fr", "ja", "ru", "zh")

# ---- documents ----


@dataclasses.dataclass
class HelpFile:
    """One help page of one language."""

    collection: str  # "libreoffice", "gnome:gnome-help", ...
    page: str  # path inside the language folder
    lang: str  # normalized; "en" for the English original
    path: Path
    package: str
    raw: str = ""  # the language folder's own name (pt, pt-BR)


@dataclasses.dataclass
class Unit:
    """One text block: aligned by ``section`` and ``path``."""

    section: str
    path: str
    text: str
    ok: bool = True  # False: a block whose text the viewer completes (an empty link)


def classify(rel_parts: Sequence[str]) -> tuple[str, str, str] | None:
    """``(collection, page, raw language)`` of a file path inside a package tree, or None when it
    is not a help page this module reads."""
    parts = list(rel_parts)
    name = parts[-1] if parts else ""
    for i in range(len(parts) - 3):
        if parts[i] == "libreoffice" and parts[i + 1] == "help":
            if name.endswith((".html", ".xhp")) and len(parts) > i + 3:
                return "libreoffice", "/".join(parts[i + 3 :]), parts[i + 2]
            return None
    for i in range(len(parts) - 4):
        if parts[i] == "share" and parts[i + 1] == "help":
            page = "/".join(parts[i + 4 :])
            if name.endswith(".page"):
                return f"gnome:{parts[i + 3]}", page, parts[i + 2]
            if name.endswith((".docbook", ".xml")) and name != "legal.xml":
                return f"docbook:{parts[i + 3]}", page, parts[i + 2]
    return None


def _help_language(raw: str) -> str:
    if raw in ("C", "en-US", "en_US"):
        return "en"
    return normalize_language(raw)


def scan(root: Path, package: str) -> Iterator[HelpFile]:
    """Every help page under ``root`` (a package tree or a directory)."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).parts
            found = classify(rel)
            if found is None:
                continue
            collection, page, raw = found
            lang = _help_language(raw)
            if raw.lower().startswith("en") and lang == "en" and raw not in ("en-US", "en_US"):
                continue  # en-GB, en-ZA: English variants, not translations
            if lang:
                yield HelpFile(collection, page, lang, p, package, raw)


# ---- markup -> units ----

_LO_ID = re.compile(r"^(?:par|hd)_id\w*$")
_MALLARD_BLOCKS = {"p", "title", "subtitle", "desc", "caption"}
_MALLARD_SKIP = {"info", "code", "screen", "media", "comment", "synopsis", "links", "include"}
_SEQUENCES = {"keyseq": ("key", "+"), "guiseq": ("gui", " ▸ ")}  # as the help viewer shows them
_DOCBOOK_BLOCKS = {"para", "simpara", "title", "subtitle", "term", "member", "glossterm"}
_DOCBOOK_SKIP = {
    "screen",
    "programlisting",
    "synopsis",
    "cmdsynopsis",
    "funcsynopsis",
    "literallayout",
    "indexterm",
    "remark",
    "mediaobject",
    "inlinemediaobject",
    "graphic",
    "address",
    "author",
    "authorgroup",
    "othercredit",
    "copyright",
    "publisher",
    "legalnotice",
    "revhistory",
    "releaseinfo",
    "include",
    "comment",
}
_DOCBOOK_SEQUENCES = {"keycombo": (None, "+"), "menuchoice": (None, " ▸ ")}
_LINKS = {"link", "xref", "ulink"}
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
_XHP_SKIP = {"bookmark_value", "comment", "caseinline", "embedvar", "image", "alt", "bookmark"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _squash(text: str) -> str:
    return " ".join(text.split())


def _parse_xml(path: Path) -> ET.Element | None:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        LOG.warning("%s: not readable XML (%s); skipped", path, e)
        return None


def _block_text(el: ET.Element, skip: set[str], sequences: dict) -> tuple[str, bool]:
    """The plain text of an XML block, and False when it holds an empty link or cross-reference
    (its text is filled in by the viewer)."""
    out: list[str] = []
    ok = True

    def walk(e: ET.Element) -> None:
        nonlocal ok
        tag = _local(e.tag)
        if tag in skip:
            out.append(" ")
        elif tag in sequences:
            part, joiner = sequences[tag]
            keys = [_squash("".join(k.itertext())) for k in e if part in (None, _local(k.tag))]
            out.append(joiner.join(keys) if keys else _squash("".join(e.itertext())))
        else:
            if tag in _LINKS and not _squash("".join(e.itertext())):
                ok = False
            if e.text:
                out.append(e.text)
            for child in e:
                walk(child)
                if child.tail:
                    out.append(child.tail)

    walk(el)
    return _squash("".join(out)), ok


def _xml_units(path: Path, blocks: set[str], skip: set[str], sequences: dict) -> list[Unit]:
    root = _parse_xml(path)
    if root is None:
        return []
    units: list[Unit] = []

    def walk(e: ET.Element, section: str, trail: tuple[str, ...]) -> None:
        tag = _local(e.tag)
        if tag in skip:
            return
        ident = e.get("id") or e.get(_XML_ID)
        if ident:
            section, trail = ident, ()
        if tag in blocks:
            text, ok = _block_text(e, skip, sequences)
            units.append(Unit(section, "/".join((*trail, tag)), text, ok))
            return
        inner = () if ident else (*trail, tag)
        for child in e:
            walk(child, section, inner)

    walk(root, root.get("id") or root.get(_XML_ID) or path.stem, ())
    return units


def mallard_units(path: Path) -> list[Unit]:
    """The text blocks of a Mallard page, keyed by nearest id and block path."""
    return _xml_units(path, _MALLARD_BLOCKS, _MALLARD_SKIP, _SEQUENCES)


def docbook_units(path: Path) -> list[Unit]:
    """The text blocks of a DocBook (4 or 5) help file, keyed by nearest id and block path."""
    return _xml_units(path, _DOCBOOK_BLOCKS, _DOCBOOK_SKIP, _DOCBOOK_SEQUENCES)


def _xhp_text(el: ET.Element) -> str:
    out: list[str] = []

    def walk(e: ET.Element) -> None:
        if _local(e.tag) in _XHP_SKIP:
            return
        if e.text:
            out.append(e.text)
        for child in e:
            walk(child)
            if child.tail:
                out.append(child.tail)

    walk(el)
    return _squash("".join(out))


def xhp_units(path: Path) -> list[Unit]:
    """The paragraphs and headings of a LibreOffice ``.xhp`` file, keyed by their ids."""
    root = _parse_xml(path)
    if root is None:
        return []
    units = []
    for e in root.iter():
        ident = e.get("id") or ""
        if _LO_ID.match(ident) and _local(e.tag) in ("paragraph", "title", "h1", "h2", "h3", "h4"):
            units.append(Unit(ident, "p", _xhp_text(e)))
    return units


class _LOHtml(html.parser.HTMLParser):
    """Elements with a paragraph/heading id of a built LibreOffice help page, and their text.

    Inline switches (``<span class="switchinline">`` holding one hidden ``<span>`` per platform or
    application, which the viewer's script picks from) keep their ``default...`` variant only;
    scripts, styles and bookmarks are left out."""

    VOID = {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "area", "col", "embed"}
    SKIP_CLASSES = ("bookmark", "caseinline", "comment", "debug")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.units: list[Unit] = []
        self.stack: list[tuple[str, str | None, bool, bool]] = []  # tag, unit, skip, switch
        self.buf: list[str] = []
        self.current: str | None = None

    def _skipping(self) -> bool:
        return any(s for _, _, s, _ in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            if tag == "br" and self.current is not None:
                self.buf.append(" ")
            return
        a = dict(attrs)
        ident = a.get("id") or ""
        cls = a.get("class") or ""
        skip = tag in ("script", "style") or any(c in cls for c in self.SKIP_CLASSES)
        in_switch = bool(self.stack) and self.stack[-1][3]
        if in_switch and "hidden" in a and not ident.startswith("default"):
            skip = True  # another platform's or application's variant
        unit = None
        if self.current is None and not self._skipping() and _LO_ID.match(ident):
            unit, self.current, self.buf = ident, ident, []
        self.stack.append((tag, unit, skip, "switchinline" in cls.split()))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        # pop to the matching element (tolerates unclosed inline elements)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, unit, _, _ in self.stack[i:]:
                    if unit is not None:
                        self.units.append(Unit(unit, "p", _squash("".join(self.buf))))
                        self.current = None
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.current is not None and not self._skipping():
            self.buf.append(data)


def lo_html_units(path: Path) -> list[Unit]:
    """The paragraphs and headings of a built LibreOffice help page, keyed by their ids."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        LOG.warning("%s: unreadable (%s); skipped", path, e)
        return []
    p = _LOHtml()
    p.feed(text)
    p.close()
    return p.units


def units_of(f: HelpFile) -> list[Unit]:
    if f.collection == "libreoffice":
        return xhp_units(f.path) if f.path.suffix == ".xhp" else lo_html_units(f.path)
    if f.collection.startswith("docbook:"):
        return docbook_units(f.path)
    return mallard_units(f.path)


def align(en: list[Unit], xx: list[Unit]) -> list[tuple[Unit, Unit]]:
    """Pairs of units: per section (an id), block by block when both sides hold the same block
    paths in the same order; sections whose id occurs on one side only are dropped."""

    def groups(units: list[Unit]) -> dict[str, list[Unit]]:
        g: dict[str, list[Unit]] = {}
        for u in units:
            g.setdefault(u.section, []).append(u)
        return g

    ge, gx = groups(en), groups(xx)
    out = []
    for section, eu in ge.items():
        xu = gx.get(section)
        if xu is None or [u.path for u in eu] != [u.path for u in xu]:
            continue
        out.extend(
            (a, b) for a, b in zip(eu, xu, strict=True) if a.ok and b.ok and a.text and b.text
        )
    return out


# ---- sentences and filters ----

_ABBREV = {
    "e.g",
    "i.e",
    "etc",
    "vs",
    "cf",
    "z.b",
    "bzw",
    "usw",
    "d.h",
    "ca",
    "mr",
    "dr",
    "no",
    "nr",
    "p.ex",
    "ex",
    "fig",
    "approx",
}
_CANDIDATE = re.compile(r"[.!?][\"'»”’)\]]*\s+|[。！？][\"'»”’)\]」』]*\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph: after . ! ? followed by a space (not after an abbreviation, a
    single letter or a number, nor before a lower-case letter), and after 。！？."""
    out: list[str] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        cut = m.end()
        if cut >= len(text):
            break
        if text[m.start()] in ".!?":
            before = text[start : m.start()].rsplit(None, 1)
            last = before[-1].lower() if before else ""
            if (
                text[cut].islower()
                or len(last) <= 1
                or last in _ABBREV
                or last.replace(".", "").isdigit()
            ):
                continue
        piece = text[start:cut].strip()
        if piece:
            out.append(piece)
            start = cut
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


# Each language's script (first word of the characters' Unicode names); Latin when not listed.
_SCRIPTS: dict[str, tuple[str, ...]] = {}
for _codes, _names in (
    ("ar fa ur ug ps ckb sd ks", ("ARABIC",)),
    ("ru uk be bg mk sr kk ky tg mn tt ba cv os ab sah uz_Cyrl", ("CYRILLIC",)),
    ("el", ("GREEK",)),
    ("he yi", ("HEBREW",)),
    ("ka", ("GEORGIAN",)),
    ("hy", ("ARMENIAN",)),
    ("hi mr ne sa mai kok brx doi", ("DEVANAGARI",)),
    ("bn as mni", ("BENGALI",)),
    ("pa", ("GURMUKHI",)),
    ("gu", ("GUJARATI",)),
    ("or", ("ORIYA",)),
    ("ta", ("TAMIL",)),
    ("te", ("TELUGU",)),
    ("kn", ("KANNADA",)),
    ("ml", ("MALAYALAM",)),
    ("si", ("SINHALA",)),
    ("th", ("THAI",)),
    ("lo", ("LAO",)),
    ("km", ("KHMER",)),
    ("my", ("MYANMAR",)),
    ("bo dz", ("TIBETAN",)),
    ("am ti", ("ETHIOPIC",)),
    ("dv", ("THAANA",)),
    ("ja", ("CJK", "HIRAGANA", "KATAKANA")),
    ("zh zh_Hant", ("CJK",)),
    ("ko", ("HANGUL", "CJK")),
):
    for _c in _codes.split():
        _SCRIPTS[_c] = _names


@functools.lru_cache(maxsize=65536)
def _script(ch: str) -> str:
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def script_share(text: str, scripts: tuple[str, ...]) -> float:
    """Share of the letters of ``text`` in one of ``scripts`` (1.0 when it has no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(_script(c) in scripts for c in letters) / len(letters)


def expected_scripts(lang: str) -> tuple[str, ...]:
    return _SCRIPTS.get(lang, _SCRIPTS.get(lang.split("_")[0], ("LATIN",)))


_EN_FUNCTION = frozenset(
    "the of and that which with this you your are from will should would have has been when "
    "where these those into only their them they what while there then than must been".split()
)
_WORD = re.compile(r"[^\W\d_]+")


def english_left(src: str, tgt: str) -> bool:
    """True when a translation reads as English left in place: three or more distinct English
    function words, or 70 % of the English word types (of at least 4) reappearing in it."""
    words = {w.casefold() for w in _WORD.findall(tgt)}
    if len(words & _EN_FUNCTION) >= 3:
        return True
    en = {w.casefold() for w in _WORD.findall(src)}
    return len(en) >= 4 and len(en & words) / len(en) >= 0.7


def wordset(text: str) -> frozenset[str]:
    """The word set of a folded text: near-duplicate key."""
    return frozenset(fold(text).split())


@dataclasses.dataclass
class HelpFilters(Filters):
    """The catalog filters plus prose checks (see the module docstring)."""

    min_chars: int = 10
    max_chars: int = 400
    max_ratio: float = 2.5
    min_script_share: float = 0.5

    def reason(self, src: str, tgt: str, lang: str = "") -> str | None:  # type: ignore[override]
        why = super().reason(src, tgt)
        if why:
            return why
        if script_share(src, ("LATIN",)) < self.min_script_share:
            return "script"
        scripts = expected_scripts(lang)
        if script_share(tgt, scripts) < self.min_script_share:
            return "script"
        if scripts == ("LATIN",) and english_left(src, tgt):
            return "english_left"
        return None


# ---- packages, licences ----


def _deb_field(deb: Path, field: str) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def licence_of(tree: Path, package: str) -> str:
    """The ``Files: *`` licence of a package's DEP-5 copyright file (else its first
    ``License:`` line, else 'see copyright file')."""
    doc = tree / "usr" / "share" / "doc" / package
    copyright_file = doc / "copyright"
    if doc.is_symlink():  # dh_installdocs --link-doc: the licence is the linked package's
        return f"{LINKED}{Path(os.readlink(doc)).name}"
    if not copyright_file.is_file():
        return "unknown (no copyright file)"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    first = None
    for stanza in re.split(r"\n\s*\n", text):
        lic = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
        if lic and first is None:
            first = lic.group(1).strip()
        if lic and re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            return lic.group(1).strip()
    return first or "see copyright file (free text)"


LINKED = "as its docs' package: "


@dataclasses.dataclass
class Source:
    package: str
    version: str
    licence: str
    tree: Path


def unpack_inputs(inputs: Sequence[str | os.PathLike], work: Path) -> list[Source]:
    """Directories as they are; ``.deb`` packages unpacked under ``work``."""
    out = []
    for i, item in enumerate(inputs):
        p = Path(item)
        if not p.exists():
            raise StiltsError(ErrorCode.NOT_FOUND, f"{p}: no such input", "input")
        if p.is_dir():
            out.append(Source(f"dir:{p.name}", "", "see the directory", p))
        elif p.suffix == ".deb":
            dest = work / f"{i}-deb"
            _unpack_deb(p, dest)
            package = _deb_field(p, "Package") or p.name.split("_")[0]
            out.append(Source(package, _deb_field(p, "Version"), licence_of(dest, package), dest))
        else:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"{p}: expected a directory or a .deb", "input"
            )
    return out


# ---- the harvest ----


def _bucket(key: str, seed: int, salt: str) -> float:
    h = hashlib.sha1(f"{seed}\0{salt}\0{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclasses.dataclass
class Pair:
    src: str
    tgt: str
    lang: str
    origin: str
    document: str


def pairs_of(en: list[Unit], xx: list[Unit], lang: str, filters: HelpFilters):
    """Sentence (or whole-unit) pairs of two aligned pages, and the reasons of the drops."""
    for a, b in align(en, xx):
        sa, sb = split_sentences(a.text), split_sentences(b.text)
        if 1 < len(sa) == len(sb) and all(
            filters.reason(x, y, lang) is None for x, y in zip(sa, sb, strict=True)
        ):
            yield from ((x, y, None) for x, y in zip(sa, sb, strict=True))
        else:
            yield a.text, b.text, filters.reason(a.text, b.text, lang)


def harvest_help(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    dev_pack: str | os.PathLike,
    *,
    exclude: Iterable[str | os.PathLike] = (),
    filters: HelpFilters | None = None,
    holdout_fraction: float = 0.08,
    dev_fraction: float = 0.02,
    dev_min_pairs: int = 300,
    dev_max_pairs: int = 1000,
    bucc_languages: Sequence[str] = DEFAULT_BUCC_LANGUAGES,
    bucc_gold: int = 1000,
    seed: int = 0,
    work: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Harvest help prose from ``inputs``: training pairs into ``out_dir`` (pairs.tsv, dev.tsv,
    summary.json), the held-out documents into the ``dev_pack`` (help-dev).

    Raises:
        StiltsError: a missing or reserved input, an unreadable package, bad settings.
    """
    for name, v in (("holdout_fraction", holdout_fraction), ("dev_fraction", dev_fraction)):
        if not 0 <= v < 1:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"{name} must be in [0, 1), got {v}", name
            )
    if holdout_fraction + dev_fraction >= 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "holdout_fraction + dev_fraction must be under 1",
            "holdout_fraction",
        )
    if dev_min_pairs < 1 or dev_max_pairs < dev_min_pairs:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"need 1 <= dev_min_pairs <= dev_max_pairs, got {dev_min_pairs}, {dev_max_pairs}",
            "dev_min_pairs",
        )
    inputs = [Path(x) for x in inputs]
    exclude = list(exclude)
    check_reserved_packages(inputs)
    check_pack_sources(inputs, pack_sources(exclude))
    filters = filters or HelpFilters()
    excluded = exclusion_set(exclude)
    excluded_sets = {wordset(t) for t in excluded if len(t.split()) >= 4}
    dropped: collections.Counter = collections.Counter()
    documents: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    help_languages: dict[str, set[str]] = collections.defaultdict(set)
    held, kept = [], []
    with tempfile.TemporaryDirectory(prefix="stilts-help-", dir=work) as tmp:
        sources = unpack_inputs(inputs, Path(tmp))
        # per page, its files by language folder (pt and pt-BR both give "pt" pairs)
        by_doc: dict[tuple[str, str], dict[str, HelpFile]] = collections.defaultdict(dict)
        for s in sources:
            for f in scan(s.tree, s.package):
                by_doc[(f.collection, f.page)].setdefault(f.raw, f)
        seen: set[int] = set()
        seen_src: set[int] = set()
        seen_tgt: set[int] = set()
        for (collection, page), files in tqdm(
            sorted(by_doc.items()), desc="help pages", disable=not progress
        ):
            en = next((f for f in files.values() if f.lang == "en"), None)
            for f in files.values():
                help_languages[collection].add(f.lang)
            if en is None:
                dropped["page_without_english"] += len(files)
                continue
            en_units = units_of(en)
            document = f"{collection}/{page.rsplit('.', 1)[0]}"
            bucket = _bucket(document, seed, "document")
            split = (
                "help-dev"
                if bucket < holdout_fraction
                else "dev"
                if bucket < holdout_fraction + dev_fraction
                else "train"
            )
            documents[collection][split] += 1
            origin = ORIGIN_PREFIX + collection
            for _, f in sorted(files.items()):
                lang = f.lang
                if lang == "en" or (
                    filters.languages is not None and lang not in filters.languages
                ):
                    continue
                for src, tgt, why in pairs_of(en_units, units_of(f), lang, filters):
                    if why is None:
                        fs, ft, ws, wt = fold(src), fold(tgt), wordset(src), wordset(tgt)
                        if (
                            fs in excluded
                            or ft in excluded
                            or ws in excluded_sets
                            or (wt in excluded_sets)
                        ):
                            why = "excluded"
                    if why is None:  # hashes, not texts: millions of pairs stay small
                        ks, kt = hash((lang, ws)), hash((lang, wt))
                        key = hash((lang, fs, ft))
                        if key in seen or ks in seen_src or kt in seen_tgt:
                            why = "duplicate"
                        else:
                            seen.add(key)
                            seen_src.add(ks)
                            seen_tgt.add(kt)
                    if why:
                        dropped[why] += 1
                        continue
                    pair = Pair(src, tgt, lang, origin, document)
                    (held if split == "help-dev" else kept).append((pair, split))
        licences = {s.package: (s.version, s.licence) for s in sources}
        for pkg, (version, lic) in licences.items():  # a linked licence, where the package is read
            target = lic.removeprefix(LINKED)
            if lic.startswith(LINKED) and target in licences:
                licences[pkg] = (version, f"{licences[target][1]} (as {target})")
        packages_of = collections.defaultdict(set)
        for files in by_doc.values():
            for f in files.values():
                packages_of[f.collection].add(f.package)

    # nothing held out is trained on: no pair sharing a held-out text or word set
    held_keys = {hash(k) for p, _ in held for k in _keys(p)}
    train, dev = [], []
    for p, split in kept:
        if any(hash(k) in held_keys for k in _keys(p)):
            dropped["held_out_text"] += 1
            continue
        (dev if split == "dev" else train).append(p)
    order = functools.partial(_order, seed=seed)
    train.sort(key=order)
    dev.sort(key=order)
    held_pairs = sorted((p for p, _ in held), key=order)
    pack = write_dev_pack(
        held_pairs,
        dev_pack,
        dev_min_pairs=dev_min_pairs,
        dev_max_pairs=dev_max_pairs,
        bucc_languages=bucc_languages,
        bucc_gold=bucc_gold,
        seed=seed,
        sources=[
            (pkg, *licences[pkg], coll)
            for coll, pkgs in sorted(packages_of.items())
            for pkg in sorted(pkgs)
        ],
    )
    summary = {
        "inputs": [str(x) for x in inputs],
        "pairs": {"train": len(train), "dev": len(dev), "help-dev": len(held_pairs)},
        "dropped": dict(sorted(dropped.items())),
        "excluded_texts": len(excluded),
        "documents": {c: dict(v) for c, v in sorted(documents.items())},
        "languages": _counts(train, dev, held_pairs, "lang"),
        "collections": _counts(train, dev, held_pairs, "origin"),
        "help_languages": {c: sorted(v) for c, v in sorted(help_languages.items())},
        "packages": {
            pkg: {
                "version": v,
                "licence": lic,
                "collections": sorted(c for c, pkgs in packages_of.items() if pkg in pkgs),
            }
            for pkg, (v, lic) in sorted(licences.items())
        },
        "dev_pack": {"path": str(dev_pack), **pack},
        "settings": {
            **dataclasses.asdict(filters),
            "holdout_fraction": holdout_fraction,
            "dev_fraction": dev_fraction,
            "seed": seed,
        },
    }
    if filters.languages is not None:
        summary["settings"]["languages"] = sorted(filters.languages)
    with atomic_directory(out_dir) as w:
        _write(w / PAIRS_FILE, train)
        _write(w / DEV_FILE, dev)
        (w / SUMMARY_FILE).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    LOG.info(
        "help: %d train, %d dev, %d held-out pairs into %s and %s",
        len(train),
        len(dev),
        len(held_pairs),
        out_dir,
        dev_pack,
    )
    return summary


def _keys(p: Pair) -> tuple:
    """What a held-out pair shares with a pair that must not be trained on: either side's folded
    text or word set."""
    return (fold(p.src), fold(p.tgt), wordset(p.src), wordset(p.tgt))


def _order(p: Pair, seed: int) -> bytes:
    return hashlib.sha1(f"{seed}\1{p.lang}\0{p.src}\0{p.tgt}".encode()).digest()


def _counts(train, dev, held, attr: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, rows in (("train", train), ("dev", dev), ("help-dev", held)):
        for p in rows:
            out.setdefault(getattr(p, attr), {"train": 0, "dev": 0, "help-dev": 0})[split] += 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["train"], kv[0])))


def _write(path: Path, rows: Iterable[Pair]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for p in rows:
            f.write(f"{p.src}\t{p.tgt}\t{p.lang}\t{p.origin}\n")


# ---- the help-dev pack ----

_STOP = frozenset(
    "a an the of and or to in on at for with by from is are be this that it as not you your "
    "can will".split()
)


def _content(text: str) -> frozenset[str]:
    return frozenset(w for w in fold(text).split() if w not in _STOP)


class _NearIndex:
    """English texts by content word: is a text within Jaccard ``threshold`` of one of them?"""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.sets: list[frozenset[str]] = []
        self.by_word: dict[str, list[int]] = collections.defaultdict(list)

    def add(self, text: str) -> None:
        s = _content(text)
        for w in s:
            self.by_word[w].append(len(self.sets))
        self.sets.append(s)

    def near(self, text: str) -> bool:
        s = _content(text)
        if not s:
            return False
        shared: collections.Counter = collections.Counter()
        for w in s:
            shared.update(self.by_word.get(w, ()))
        return any(
            n / (len(s) + len(self.sets[i]) - n) >= self.threshold for i, n in shared.items()
        )


def write_dev_pack(
    pairs: Sequence[Pair],
    out: str | os.PathLike,
    *,
    dev_min_pairs: int = 300,
    dev_max_pairs: int = 1000,
    bucc_languages: Sequence[str] = DEFAULT_BUCC_LANGUAGES,
    bucc_gold: int = 1000,
    seed: int = 0,
    sources: Sequence[tuple[str, str, str, str]] = (),
) -> dict[str, Any]:
    """Write the held-out pairs as a dev pack in the layouts of the shared packs.

    Per language (with at least ``dev_min_pairs`` pairs): ``tatoeba/<xx>-en.tsv`` with up to
    ``dev_max_pairs`` pairs; for the ``bucc_languages`` whose remaining pairs allow
    ``dev_min_pairs`` gold pairs: ``bucc/<xx>-en/<xx>-en.training.{<xx>,en,gold}``, gold pairs
    (up to ``bucc_gold``) among unpaired sentences (half of the rest gives its xx side, half its
    English side, up to twice the gold each; a distractor whose English is close to English on the
    other side, content-word Jaccard >= 0.5, is left out).

    Returns:
        counts per language for the summary.
    """
    by_lang: dict[str, list[Pair]] = collections.defaultdict(list)
    for p in pairs:
        by_lang[p.lang].append(p)
    counts: dict[str, dict[str, int]] = {}
    with atomic_directory(out) as w:
        (w / "tatoeba").mkdir()
        (w / "bucc").mkdir()
        for lang, pool in sorted(by_lang.items()):
            rng = random.Random(f"{seed}:{lang}")
            pool = list(pool)
            rng.shuffle(pool)
            row = {"pool": len(pool), "tatoeba": 0, "bucc_gold": 0, "bucc_xx": 0, "bucc_en": 0}
            counts[lang] = row
            if len(pool) < dev_min_pairs:
                continue
            tat, rest = pool[:dev_max_pairs], pool[dev_max_pairs:]
            with (w / "tatoeba" / f"{lang}-en.tsv").open("w", encoding="utf-8") as f:
                f.writelines(f"{p.tgt}\t{p.src}\n" for p in tat)
            row["tatoeba"] = len(tat)
            n_gold = min(bucc_gold, max(dev_min_pairs, len(rest) // 4))
            if lang not in bucc_languages or len(rest) < 2 * n_gold:
                continue
            row.update(_write_bucc(w / "bucc", lang, rest, n_gold, rng))
        _write_pack_files(w, counts, sources)
    return {"languages": counts}


def _write_bucc(root: Path, lang: str, rest: list[Pair], n_gold: int, rng: random.Random):
    gold, others = rest[:n_gold], rest[n_gold:]
    half = len(others) // 2
    xx_only, en_only = others[:half][: 2 * n_gold], others[half:][: 2 * n_gold]
    en_index, hidden_index = _NearIndex(), _NearIndex()
    for p in gold:
        en_index.add(p.src)
        hidden_index.add(p.src)
    en_side = list(gold)
    for p in en_only:  # English with no partner: not close to any English behind the xx side
        if not hidden_index.near(p.src):
            en_side.append(p)
    for p in en_side[len(gold) :]:
        en_index.add(p.src)
    xx_side = list(gold)
    for p in xx_only:  # xx with no partner: its English not close to any English listed
        if not en_index.near(p.src):
            xx_side.append(p)
    rng.shuffle(xx_side)
    rng.shuffle(en_side)
    xx_ids = {id(p): f"{lang}-{i:09d}" for i, p in enumerate(xx_side, 1)}
    en_ids = {id(p): f"en-{i:09d}" for i, p in enumerate(en_side, 1)}
    d = root / f"{lang}-en"
    d.mkdir()
    stem = f"{lang}-en.training"
    with (d / f"{stem}.{lang}").open("w", encoding="utf-8") as f:
        f.writelines(f"{xx_ids[id(p)]}\t{p.tgt}\n" for p in xx_side)
    with (d / f"{stem}.en").open("w", encoding="utf-8") as f:
        f.writelines(f"{en_ids[id(p)]}\t{p.src}\n" for p in en_side)
    with (d / f"{stem}.gold").open("w", encoding="utf-8") as f:
        f.writelines(
            f"{xx_ids[id(p)]}\t{en_ids[id(p)]}\n" for p in sorted(gold, key=lambda p: xx_ids[id(p)])
        )
    return {"bucc_gold": len(gold), "bucc_xx": len(xx_side), "bucc_en": len(en_side)}


def _write_pack_files(w: Path, counts, sources) -> None:
    with (w / "counts.tsv").open("w", encoding="utf-8") as f:
        f.write(
            "lang\tclean_pairs_in_pool\ttatoeba_pairs\tbucc_gold\tbucc_xx_sentences"
            "\tbucc_en_sentences\n"
        )
        for lang, r in sorted(counts.items(), key=lambda kv: (-kv[1]["pool"], kv[0])):
            f.write(
                f"{lang}\t{r['pool']}\t{r['tatoeba']}\t{r['bucc_gold']}\t{r['bucc_xx']}"
                f"\t{r['bucc_en']}\n"
            )
    with (w / "sources.tsv").open("w", encoding="utf-8") as f:
        # not "package": the packs' sources.tsv "package" column makes `--exclude PACK` refuse a
        # package whole, but only these packages' help pages are held out (not their catalogs)
        f.write("help_package\tversion\tlicence\tcollection\n")
        for row in sources:
            f.write("\t".join(str(x).replace("\t", " ") for x in row) + "\n")
    (w / "README.md").write_text(
        "# help-dev: held-out documents of translated help (LibreOffice, GNOME)\n\n"
        "Written by `stilts data help` (see docs/training.md, 'Prose and rare languages'): whole\n"
        "help pages, in every language, held out of the training pairs by a hash of their path.\n"
        "Same layout as shared/data/docs-dev: `tatoeba/<xx>-en.tsv` (xx TAB en, up to 1000 pairs)\n"
        "and `bucc/<xx>-en/<xx>-en.training.{<xx>,en,gold}` (gold pairs among unpaired sentences\n"
        "on both sides). `counts.tsv` counts per language, `sources.tsv` the packages and\n"
        "licences (only their help pages are held out: their interface catalogs may be trained\n"
        "on, less any text of this pack). Pairs were chosen by document structure and surface\n"
        "rules only.\n",
        encoding="utf-8",
    )


# ---- the language report ----


def language_report(
    summaries: Sequence[str | os.PathLike], strategy: str = "temperature:2"
) -> list[dict[str, Any]]:
    """Per language: training pairs per domain (interface catalogs from ``stilts data bitext``,
    help prose from ``stilts data help``: told apart by their summaries' shape), the total, and
    the share of the draws it gets under ``--language-sampling strategy`` (against its share of
    the pairs)."""
    from stilts.training.sampling import task_probabilities  # torch: only for the report

    per: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"interface": 0, "help": 0})
    for s in summaries:
        path = Path(s)
        if path.is_dir():
            path = path / SUMMARY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            langs = data["languages"]
        except (OSError, ValueError, KeyError) as e:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"{path}: not a harvest summary ({e})", "summary"
            ) from e
        domain = "help" if "help-dev" in data.get("pairs", {}) else "interface"
        for lang, c in langs.items():
            per[lang][domain] += int(c["train"])
    sizes = {lang: c["interface"] + c["help"] for lang, c in per.items() if sum(c.values())}
    probs = task_probabilities(sizes, strategy)
    total = sum(sizes.values())
    rows = [
        {
            "lang": lang,
            **per[lang],
            "pairs": sizes[lang],
            "pair_share": sizes[lang] / total,
            "draw_share": probs[lang],
        }
        for lang in sizes
    ]
    return sorted(rows, key=lambda r: (-r["pairs"], r["lang"]))
