"""``stilts data bitext``: harvest translation pairs from gettext catalogs.

Sources: directories (every ``.po``/``.mo`` under them), single catalogs, Debian packages (``.deb``,
unpacked with ``dpkg-deb -x``) and wheels (``.whl``, their catalogs read from the zip). Each
translated entry gives an (English ``msgid``, ``msgstr``) pair in the catalog's language, which is
cleaned (menu accelerators such as ``_Open``, ``(_O)`` or ``~Open`` removed, spacing collapsed) and filtered:

- untranslated, fuzzy, obsolete and English-variant (``en_GB``) entries are dropped;
- identical source and target, and strings that are placeholders only (``%s``, ``{0}``, markup),
  are dropped;
- pairs whose lengths differ by more than ``max_ratio`` (wide CJK characters count twice) or that
  are shorter than ``min_chars`` / longer than ``max_chars`` are dropped;
- pairs with either side in an ``exclude`` set (every line and field of the given files or
  directories, compared case-, space- and punctuation-folded) are dropped, so an evaluation pack
  stays a fair test;
- catalogs of the reserved projects (:data:`RESERVED`) are never read, and packages of
  :data:`RESERVED_PACKAGES` (translated man pages) are refused before anything is read, as are
  the packages listed in the ``sources.tsv`` of an ``exclude`` pack (its own sources);
- duplicates (same language, source and target after folding) are dropped.

The rest is split by source text (a source is in train or in dev for all its languages) and written
as ``pairs.tsv`` (train) and ``dev.tsv``: ``source<TAB>target<TAB>language<TAB>origin``, in a
pseudo-random order; ``summary.json`` counts pairs per language, per source and per drop reason.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.training.bitext_files import (
    MO_SUFFIXES,
    PO_SUFFIXES,
    catalog_language,
    gettext_entries,
    load_catalog,
)

LOG = logging.getLogger(__name__)

# Catalogs reserved for independent evaluation: never harvested.
RESERVED = ("django", "sphinx", "wagtail", "weblate", "allauth", "pretix", "gramps")
# Packages reserved for independent evaluation (translated man pages): refused, never unpacked.
RESERVED_PACKAGES = ("manpages",)
CATALOG_SUFFIXES = PO_SUFFIXES + MO_SUFFIXES
PAIRS_FILE = "pairs.tsv"
DEV_FILE = "dev.tsv"
SUMMARY_FILE = "summary.json"

_ACCEL_PAREN = re.compile(r"\s*\(_[^\W_]\)")  # 打开(_O)
_ACCEL = re.compile(r"(?<![\w_])_(?=[^\W_])")  # _Open, Save _As
_TILDE = re.compile(r"(?<![\w~/])~(?=[^\W_])")  # ~Open, Save ~As (LibreOffice)
_PLACEHOLDERS = re.compile(
    r"%(?:\d+\$)?(?:\([^)]*\))?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
    r"(?:hh|h|ll|l|L|q|j|z|t|I64|I32|PRI\w+)?[diouxXeEfFgGaAcCsSpn%]"
    r"|\{[^{}]*\}|\$\{?\w+\}?|<[^<>]*>|&\w+;"
)
_LETTER = re.compile(r"[^\W\d_]")
_LOOSE = re.compile(r"[\W_]+")
# Locale spellings -> the codes of the dev pack (ISO 639-1, script suffixes).
_SCRIPT_VARIANTS = {"latin": "Latn", "cyrillic": "Cyrl"}
_HANT_REGIONS = {"TW", "HK", "MO"}
_ALIASES = {"no": "nb", "iw": "he", "in": "id", "ji": "yi"}


def normalize_language(code: str) -> str:
    """A locale name as the dev pack spells languages: ``de_DE`` -> ``de``, ``zh_TW`` ->
    ``zh_Hant``, ``sr@latin`` -> ``sr_Latn``, ``pt_BR`` -> ``pt``; '' for ``C``/``POSIX``/empty."""
    code = code.strip().replace("-", "_")
    if not code or code in ("C", "POSIX") or code.startswith("C."):
        return ""
    code, _, modifier = code.partition("@")
    code = code.split(".")[0]
    lang, _, region = code.partition("_")
    lang = _ALIASES.get(lang.lower(), lang.lower())
    script = _SCRIPT_VARIANTS.get(modifier.lower(), "")
    if region in ("Latn", "Cyrl", "Hant", "Hans"):
        script = region
    if lang == "zh":
        return "zh_Hant" if script == "Hant" or region.upper() in _HANT_REGIONS else "zh"
    if script and not (lang == "uz" and script == "Latn"):
        return f"{lang}_{script}"
    return lang


def clean_text(text: str) -> str:
    """A catalog string as a sentence: accelerators removed, whitespace collapsed."""
    text = _ACCEL_PAREN.sub("", text)
    text = _ACCEL.sub("", text)
    text = _TILDE.sub("", text)
    return " ".join(text.split())


def fold(text: str) -> str:
    """Case, spacing and punctuation folded: the form two strings are compared in."""
    return _LOOSE.sub(" ", text.casefold()).strip()


def placeholders_only(text: str) -> bool:
    """True when fewer than two letters remain once placeholders and markup are removed."""
    return len(_LETTER.findall(_PLACEHOLDERS.sub(" ", text))) < 2


def display_length(text: str) -> int:
    """Characters, wide (CJK) ones counted twice: comparable across scripts."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def reserved_name(name: str) -> str | None:
    """The reserved project a path or package name belongs to, if any."""
    low = name.lower()
    return next((r for r in RESERVED if r in low), None)


@dataclasses.dataclass
class Filters:
    """Pair filters (see the module docstring)."""

    min_chars: int = 3
    max_chars: int = 300
    max_ratio: float = 3.0
    languages: frozenset[str] | None = None

    def reason(self, src: str, tgt: str) -> str | None:
        """Why a cleaned pair is dropped, or None to keep it."""
        if fold(src) == fold(tgt):
            return "identical"
        if placeholders_only(src) or placeholders_only(tgt):
            return "placeholders_only"
        if len(src) < self.min_chars or len(tgt) < 1:
            return "too_short"
        if len(src) > self.max_chars or len(tgt) > self.max_chars:
            return "too_long"
        a, b = display_length(src), display_length(tgt)
        if (max(a, b) + 4) / (min(a, b) + 4) > self.max_ratio:
            return "length_ratio"
        return None


def exclusion_set(paths: Iterable[str | os.PathLike]) -> set[str]:
    """Folded texts of every line and tab-separated field of the given files (directories:
    every UTF-8 text file under them)."""
    out: set[str] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise StiltsError(ErrorCode.NOT_FOUND, f"{p}: no such exclusion file", "exclude")
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                LOG.warning("%s: not UTF-8 text; not read for exclusion", f)
                continue
            for line in text.splitlines():
                for field in line.split("\t"):
                    key = fold(clean_text(field))
                    if key:
                        out.add(key)
    LOG.info("exclusion set: %d texts", len(out))
    return out


@dataclasses.dataclass
class Catalog:
    """One gettext catalog found in a source."""

    path: Path
    origin: str
    relative: str


def _catalogs_under(root: Path, origin: str) -> Iterator[Catalog]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in CATALOG_SUFFIXES:
            yield Catalog(p, origin, str(p.relative_to(root)))


def _unpack_deb(deb: Path, dest: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION, f"{deb}: dpkg-deb is needed to unpack .deb files"
        )
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"{deb}: dpkg-deb -x failed: {proc.stderr.strip()}", "input"
        )


def _unpack_wheel(whl: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if Path(name).suffix.lower() in CATALOG_SUFFIXES and ".." not in Path(name).parts:
                    z.extract(name, dest)
    except zipfile.BadZipFile as e:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{whl}: not a wheel: {e}", "input") from e


def check_reserved_packages(inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse inputs named after a reserved package (``manpages-de_4.18_all.deb``, a
    ``manpages-fr/`` directory) before anything is read.

    Raises:
        StiltsError: FAILED_PRECONDITION naming the input.
    """
    for item in inputs:
        name = Path(item).name.lower()
        if any(name.startswith(r) for r in RESERVED_PACKAGES):
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{item}: the {', '.join(RESERVED_PACKAGES)}* packages are reserved for "
                "independent evaluation and are never harvested",
                "input",
            )


def pack_sources(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """The packages an evaluation pack was built from: ``{package: pack name}``, read from the
    ``sources.tsv`` (column ``package``, or ``source`` as ``deb:NAME``) at the top of each
    directory among ``paths`` (the ``--exclude`` packs); such packages are never harvested."""
    out: dict[str, str] = {}
    for p in map(Path, paths):
        f = p / "sources.tsv"
        if not f.is_file():
            continue
        lines = f.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        col = next((header.index(c) for c in ("package", "source") if c in header), None)
        if col is None:
            continue
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) > col and fields[col].strip():
                out[fields[col].strip().removeprefix("deb:")] = p.name
    return out


def check_pack_sources(inputs: Iterable[str | os.PathLike], refused: dict[str, str]) -> None:
    """Refuse inputs that are packages an evaluation pack was built from (see
    :func:`pack_sources`): ``debian-reference-de_2.100_all.deb`` when docs-dev lists it.

    Raises:
        StiltsError: FAILED_PRECONDITION naming the input.
    """
    for item in inputs:
        p = Path(item)
        name = p.name.split("_")[0] if p.suffix == ".deb" else p.name
        if name in refused:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{item}: {name} is a source of the evaluation pack {refused[name]}; "
                "never harvested",
                "input",
            )


def iter_catalogs(inputs: Iterable[str | os.PathLike], work: Path) -> Iterator[Catalog]:
    """Every catalog of the inputs (packages are unpacked under ``work``)."""
    for i, item in enumerate(inputs):
        p = Path(item)
        if not p.exists():
            raise StiltsError(ErrorCode.NOT_FOUND, f"{p}: no such input", "input")
        if p.is_dir():
            yield from _catalogs_under(p, f"dir:{p.name}")
        elif p.suffix == ".deb":
            dest = work / f"{i}-deb"
            _unpack_deb(p, dest)
            yield from _catalogs_under(dest, f"deb:{p.name.split('_')[0]}")
        elif p.suffix == ".whl":
            dest = work / f"{i}-whl"
            _unpack_wheel(p, dest)
            yield from _catalogs_under(dest, f"wheel:{p.name.split('-')[0]}")
        elif p.suffix.lower() in CATALOG_SUFFIXES:
            yield Catalog(p, f"file:{p.name}", p.name)
        else:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"{p}: expected a directory, .deb, .whl, .po or .mo file",
                "input",
            )


def _dev_bucket(source: str, seed: int) -> float:
    h = hashlib.sha1(f"{seed}\0{fold(source)}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _order_key(src: str, tgt: str, lang: str, seed: int) -> bytes:
    return hashlib.sha1(f"{seed}\1{lang}\0{src}\0{tgt}".encode()).digest()


def harvest(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    exclude: Iterable[str | os.PathLike] = (),
    filters: Filters | None = None,
    dev_fraction: float = 0.02,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Harvest pairs from ``inputs`` into ``out_dir`` (pairs.tsv, dev.tsv, summary.json).

    Returns:
        the summary (also written to ``summary.json``).

    Raises:
        StiltsError: a missing input, an unreadable package, bad settings.
    """
    if not 0 <= dev_fraction < 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"dev fraction must be in [0, 1), got {dev_fraction}",
            "dev_fraction",
        )
    inputs = list(inputs)
    exclude = list(exclude)
    check_reserved_packages(inputs)
    check_pack_sources(inputs, pack_sources(exclude))
    filters = filters or Filters()
    excluded = exclusion_set(exclude)
    dropped: collections.Counter = collections.Counter()
    skipped_catalogs: dict[str, list[str]] = collections.defaultdict(list)
    seen: set[tuple[str, str, str]] = set()
    kept: list[tuple[str, str, str, str]] = []
    n_catalogs = 0
    with tempfile.TemporaryDirectory(prefix="stilts-harvest-") as tmp:
        for cat in tqdm(iter_catalogs(inputs, Path(tmp)), desc="catalogs", disable=not progress):
            reserved = reserved_name(cat.origin) or reserved_name(cat.relative)
            if reserved:
                skipped_catalogs[f"reserved:{reserved}"].append(f"{cat.origin}/{cat.relative}")
                continue
            try:
                catalog = load_catalog(cat.path)
            except StiltsError as e:
                LOG.warning("skipping %s/%s: %s", cat.origin, cat.relative, e)
                skipped_catalogs["unreadable"].append(f"{cat.origin}/{cat.relative}")
                continue
            lang = normalize_language(catalog_language(cat.path, catalog.metadata.get("Language")))
            if not lang or lang == "en":
                skipped_catalogs["no_or_english_language"].append(f"{cat.origin}/{cat.relative}")
                continue
            if filters.languages is not None and lang not in filters.languages:
                skipped_catalogs["other_language"].append(f"{cat.origin}/{cat.relative}")
                continue
            n_catalogs += 1
            for _, msgid, msgstr in gettext_entries(catalog):
                src, tgt = clean_text(msgid), clean_text(msgstr)
                if not src or not tgt:
                    dropped["untranslated"] += 1
                    continue
                why = filters.reason(src, tgt)
                if why is None and (fold(src) in excluded or fold(tgt) in excluded):
                    why = "excluded"
                if why is None:
                    key = (lang, fold(src), fold(tgt))
                    if key in seen:
                        why = "duplicate"
                    else:
                        seen.add(key)
                if why:
                    dropped[why] += 1
                    continue
                kept.append((src, tgt, lang, cat.origin))
    kept.sort(key=lambda r: _order_key(r[0], r[1], r[2], seed))
    train = [r for r in kept if _dev_bucket(r[0], seed) >= dev_fraction]
    dev = [r for r in kept if _dev_bucket(r[0], seed) < dev_fraction]
    summary = {
        "inputs": [str(x) for x in inputs],
        "catalogs_read": n_catalogs,
        "catalogs_skipped": {k: len(v) for k, v in skipped_catalogs.items()},
        "reserved_catalogs_skipped": sorted(
            x for k, v in skipped_catalogs.items() if k.startswith("reserved:") for x in v
        ),
        "pairs": {"train": len(train), "dev": len(dev)},
        "dropped": dict(sorted(dropped.items())),
        "excluded_texts": len(excluded),
        "languages": _counts(train, dev, 2),
        "sources": _counts(train, dev, 3),
        "settings": {**dataclasses.asdict(filters), "dev_fraction": dev_fraction, "seed": seed},
    }
    if filters.languages is not None:
        summary["settings"]["languages"] = sorted(filters.languages)
    with atomic_directory(out_dir) as work:
        _write_pairs(work / PAIRS_FILE, train)
        _write_pairs(work / DEV_FILE, dev)
        (work / SUMMARY_FILE).write_text(
            json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    LOG.info("harvested %d train and %d dev pairs into %s", len(train), len(dev), out_dir)
    return summary


def _counts(train, dev, column: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, rows in (("train", train), ("dev", dev)):
        for r in rows:
            out.setdefault(r[column], {"train": 0, "dev": 0})[split] += 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["train"], kv[0])))


def _write_pairs(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write("\t".join(r) + "\n")
