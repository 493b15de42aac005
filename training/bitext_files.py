"""Readers for translation pairs: tab-separated pairs, TMX, XLIFF and gettext PO/MO.

TMX and XLIFF are read with translate-toolkit, PO and MO with polib; no format is parsed by hand.
Every reader yields :class:`~stilts.training.examples.BitextExample` (source, target, language);
entries without a translation, fuzzy and obsolete entries are skipped. For gettext catalogs the
source is the English ``msgid`` (the first plural form for plural entries) and the language comes
from the catalog's ``Language`` header or, failing that, its path (``<lang>.po`` or
``<lang>/LC_MESSAGES/<domain>.mo``).

Tab-separated pairs: ``source<TAB>target`` per line, optionally followed by ``<TAB>language`` and
more columns (``stilts data bitext`` writes ``source, target, language, origin``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.training.examples import BitextExample

LOG = logging.getLogger(__name__)

TSV_SUFFIXES = (".tsv", ".txt")
TMX_SUFFIXES = (".tmx",)
XLIFF_SUFFIXES = (".xlf", ".xliff")
PO_SUFFIXES = (".po", ".pot")
MO_SUFFIXES = (".mo", ".gmo")
SUFFIXES = TSV_SUFFIXES + TMX_SUFFIXES + XLIFF_SUFFIXES + PO_SUFFIXES + MO_SUFFIXES

_LOCALE_DIR = re.compile(r"^[a-z]{2,3}([_@.-][A-Za-z0-9@._-]+)?$")


def _malformed(path: Path, where: int | str, message: str) -> StiltsError:
    return StiltsError(ErrorCode.INVALID_ARGUMENT, f"{path}:{where}: {message}", field="data")


def _check(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{path}: no such data file", field="data")
    return path


def read_tsv_pairs(path: Path) -> Iterator[BitextExample]:
    """``source<TAB>target[<TAB>language...]`` lines; blank lines are skipped.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the line with fewer than two fields or an empty side.
    """
    path = _check(path)
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise _malformed(path, lineno, "expected source<TAB>target")
            src, tgt = fields[0].strip(), fields[1].strip()
            if not src or not tgt:
                raise _malformed(path, lineno, "empty source or target")
            lang = fields[2].strip() if len(fields) > 2 else ""
            yield BitextExample(f"{path.name}:{lineno}", src, tgt, lang)


_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _tmx_language(unit) -> str:
    """The language of a TMX unit's second variant (its ``xml:lang``)."""
    nodes = unit.getlanguageNodes()
    return (nodes[1].get(_XML_LANG) or nodes[1].get("lang") or "") if len(nodes) > 1 else ""


def _units(path: Path, store, unit_language=None, skip_fuzzy=True) -> Iterator[BitextExample]:
    target_lang = ""
    getter = getattr(store, "gettargetlanguage", None)
    if getter is not None:
        target_lang = getter() or ""
    for i, unit in enumerate(store.units, 1):
        if getattr(unit, "isheader", lambda: False)():
            continue
        src, tgt = unit.source, unit.target
        if not src or not tgt or not str(src).strip() or not str(tgt).strip():
            continue
        if skip_fuzzy and getattr(unit, "isfuzzy", lambda: False)():
            continue
        lang = unit_language(unit) if unit_language else target_lang
        yield BitextExample(f"{path.name}:{i}", str(src).strip(), str(tgt).strip(), lang)


def read_tmx(path: Path) -> Iterator[BitextExample]:
    """Translation units of a TMX file (translate-toolkit; its first two variants per unit)."""
    from translate.storage import tmx

    path = _check(path)
    try:
        with path.open("rb") as f:
            store = tmx.tmxfile(f)
    except Exception as e:  # lxml and translate-toolkit raise several kinds
        raise _malformed(path, 0, f"not a readable TMX file: {e}") from e
    yield from _units(path, store, _tmx_language)


def read_xliff(path: Path) -> Iterator[BitextExample]:
    """``trans-unit`` source/target pairs of an XLIFF 1.x file (translate-toolkit)."""
    from translate.storage import xliff

    path = _check(path)
    try:
        with path.open("rb") as f:
            store = xliff.xlifffile(f)
    except Exception as e:
        raise _malformed(path, 0, f"not a readable XLIFF file: {e}") from e
    # translate-toolkit calls every unit without approved="yes" fuzzy; most memories never set it
    yield from _units(path, store, skip_fuzzy=False)


def catalog_language(path: Path, header: str | None = None) -> str:
    """A gettext catalog's language: its ``Language`` header, else its path
    (``…/<lang>/LC_MESSAGES/x.mo`` or ``<lang>.po``); '' when neither tells."""
    if header and header.strip():
        return header.strip()
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-2] == "LC_MESSAGES":
        return parts[-3]
    stem = Path(path).stem
    return stem if _LOCALE_DIR.match(stem) else ""


def gettext_entries(catalog) -> Iterator[tuple[int, str, str]]:
    """``(index, msgid, msgstr)`` of a polib catalog's translated entries (first plural form)."""
    for i, e in enumerate(catalog, 1):
        if e.obsolete or "fuzzy" in e.flags:
            continue
        msgstr = e.msgstr
        if e.msgid_plural:
            forms = e.msgstr_plural or {}
            msgstr = forms.get(0, forms.get("0", ""))
        if e.msgid and msgstr:
            yield i, e.msgid, msgstr


def load_catalog(path: Path):
    """A polib catalog from a PO or MO file.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the file when polib cannot read it.
    """
    import polib

    path = _check(path)
    try:
        if path.suffix.lower() in MO_SUFFIXES:
            return polib.mofile(str(path))
        return polib.pofile(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _malformed(path, 0, f"not a readable gettext catalog: {e}") from e


def read_gettext(path: Path) -> Iterator[BitextExample]:
    """Translated entries of a PO or MO catalog (polib)."""
    path = Path(path)
    catalog = load_catalog(path)
    lang = catalog_language(path, catalog.metadata.get("Language"))
    for i, src, tgt in gettext_entries(catalog):
        if src.strip() and tgt.strip():
            yield BitextExample(f"{path.name}:{i}", src.strip(), tgt.strip(), lang)


def read_pairs(path: Path) -> Iterator[BitextExample]:
    """Any supported pair file, by its suffix (see :data:`SUFFIXES`).

    Raises:
        StiltsError: INVALID_ARGUMENT for an unknown suffix (naming the supported ones).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TSV_SUFFIXES:
        return read_tsv_pairs(path)
    if suffix in TMX_SUFFIXES:
        return read_tmx(path)
    if suffix in XLIFF_SUFFIXES:
        return read_xliff(path)
    if suffix in PO_SUFFIXES + MO_SUFFIXES:
        return read_gettext(path)
    raise StiltsError(
        ErrorCode.INVALID_ARGUMENT,
        f"{path}: unknown pair file type {suffix!r}; expected one of {', '.join(SUFFIXES)}",
        field="data",
    )
