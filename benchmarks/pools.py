"""Realistic mining pools: a pack's gold pairs at a chosen share of large pools.

In real mining jobs (BUCC 2017/2018, web crawls) 1-3 % of the sentences have their translation on
the other side. A pool here is a BUCC set built that way from

- **gold**: the pack's BUCC gold pairs and its Tatoeba-style pairs of the same language (human
  translations of the same domain; the pack keeps the two apart), and where the largest pool needs
  more, one-to-one pairs of the filler catalogs after them;
- **fillers**: untranslated text of the same language and domain from a filler directory
  (:func:`read_fillers`), never the gold's other side:

  - ``<pack>/pairs.tsv`` (``stilts data bitext`` output: English, translation, language, origin):
    the translations of some English strings fill the xx side (half of them at most, and no more
    than a pool needs), the other English strings fill the English side;
  - ``<pack>/pages.tsv`` (``language TAB page TAB sentence``, from ``stilts bench fillers``):
    documents translated page by page, xx sentences of one half of the pages and English
    sentences of the other half (minus those close to an English sentence of the first half:
    manuals repeat paragraphs across pages);
  - the pack's own English sentences that have no partner in its BUCC files.

  The pack's xx sentences without a partner are not used: their English is unknown, so nothing
  could show that a filler is not their translation.

Every English filler whose words are close to the English of anything on the xx side (word-set
Jaccard >= 0.5 without stop words and accelerator marks, words cut to 5 characters, or the same
letters and digits when folded) is dropped, and so is every xx filler whose known English is close
to a gold English sentence: the only translations in a pool are its gold pairs. The English of an
xx filler is every English string the catalogs translate by it ("Aube" translates "Dawn" and
"Twilight"), and an English filler close to an xx text itself (an untranslated name, a format
string) counts as its translation too. Everything is deterministic from ``seed``, and the
shares of one pair are nested (the fillers and gold pairs of a smaller pool are a prefix of a
larger one's).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import re
from pathlib import Path

from stilts.benchmarks import data as bdata
from stilts.errors import ErrorCode, StiltsError

LOG = logging.getLogger(__name__)

PAIRS_FILE = "pairs.tsv"
PAGES_FILE = "pages.tsv"
NEAR_JACCARD = 0.5
STEM = 5
_WORD = re.compile(r"\w+")
_ACCELERATOR = re.compile(r"[~&_]")  # menu accelerators: "Print text in blac~k", "Ma_ximum"
_NOT_ALNUM = re.compile(r"[\W_]+")
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were "
    "will with you your not no can".split()
)


@dataclasses.dataclass
class Fillers:
    """Untranslated text of one pack's domain.

    Attributes:
        pairs: ``{xx: [(English, translation), ...]}`` of catalogs that are not sources of the
            pack (English known, so a filler is checked against the other side).
        english: every English string of ``pairs`` (one entry each).
        pages: ``{language: {page: [sentence, ...]}}`` of monolingual documents.
    """

    pairs: dict[str, list[tuple[str, str]]]
    english: list[str]
    pages: dict[str, dict[str, list[str]]]

    def __bool__(self) -> bool:
        return bool(self.pairs or self.pages)


def read_fillers(directory: str | Path) -> Fillers:
    """Read ``pairs.tsv`` and ``pages.tsv`` of one pack's filler directory (either may be absent).

    Raises:
        StiltsError: INVALID_ARGUMENT for a missing directory or a malformed line (file:line).
    """
    d = Path(directory)
    if not d.is_dir():
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"no filler directory {d}", "fillers")
    pairs: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    english: dict[str, None] = {}
    pages: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)
    for en, xx, lang, _ in _rows(d / PAIRS_FILE, 4):
        pairs[lang].append((en, xx))
        english[en] = None
    for lang, page, sentence in _rows(d / PAGES_FILE, 3):
        pages[lang].setdefault(page, []).append(sentence)
    return Fillers(dict(pairs), list(english), dict(pages))


def _rows(path: Path, n: int):
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != n or not all(fields[:n]):
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"{path}:{no}: expected {n} non-empty tab-separated fields",
                    "fillers",
                )
            yield fields


def words(text: str) -> frozenset[str]:
    """The word set two English strings are compared by: case-folded, stop words removed, each
    word cut to its first :data:`STEM` characters (so "Kenyans" and "Kenyan", "compiled" and
    "compile" are the same word: a filler that differs from a translated string only in such
    endings translates it); accelerator marks (``~ & _``) go first."""
    plain = _ACCELERATOR.sub("", text.casefold())
    return frozenset(w[:STEM] for w in _WORD.findall(plain) if w not in _STOP)


def letters(text: str) -> str:
    """Case-folded letters and digits alone: "All evaluated data-blocks" and "All evaluated
    datablocks" are the same string."""
    return _NOT_ALNUM.sub("", text.casefold())


class NearIndex:
    """English strings, asked whether a query is close to any of them: the same :func:`letters`
    or word set, or a word-set Jaccard of at least :data:`NEAR_JACCARD` (prefix filtering on rare
    words, so a query looks at few candidates)."""

    def __init__(self, texts: list[str]):
        sets = [words(t) for t in texts]
        freq = collections.Counter(w for s in sets for w in s)
        self.rank = {w: (c, w) for w, c in freq.items()}
        self.letters: set[str] = set()
        self.exact: set[frozenset[str]] = set()
        self.sets: list[frozenset[str]] = []
        self.postings: dict[str, list[int]] = collections.defaultdict(list)
        for t, s in zip(texts, sets, strict=True):
            self._add(t, s)

    def add(self, text: str) -> None:
        """One more string (the word order of the prefixes stays the one built from the first)."""
        self._add(text, words(text))

    def _add(self, text: str, s: frozenset[str]) -> None:
        self.letters |= {letters(text)} - {""}
        self.exact.add(s)
        self.sets.append(s)
        for w in self._prefix(s):
            self.postings[w].append(len(self.sets) - 1)

    def _prefix(self, s: frozenset[str]) -> list[str]:
        ordered = sorted(s, key=lambda w: self.rank.get(w, (0, w)))
        return ordered[: len(ordered) - math.ceil(NEAR_JACCARD * len(ordered)) + 1]

    def near(self, text: str) -> bool:
        q = words(text)
        if q in self.exact or letters(text) in self.letters:
            return True
        for w in self._prefix(q):
            for i in self.postings.get(w, ()):
                s = self.sets[i]
                if len(q & s) >= NEAR_JACCARD * len(q | s):
                    return True
        return False


def _hash(text: str, seed: int) -> float:
    h = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _shuffled(items: list, seed: int, salt: str) -> list:
    return sorted(items, key=lambda x: _hash(f"{salt}\0{x}", seed))


@dataclasses.dataclass
class Material:
    """What one language pair's pools are drawn from, in the seeded order they are taken."""

    lang: str
    gold: list[tuple[str, str]]  # (xx, en)
    xx: list[str]
    en: list[str]


def material(
    s: bdata.BuccSet,
    tatoeba: bdata.TatoebaSet | None,
    fillers: Fillers,
    seed: int = 0,
    size: int | None = None,
    gold_pairs: int | None = None,
) -> Material:
    """Gold pairs and checked fillers for one pair (see the module docstring).

    With ``size`` (the pools' sentences per side) the xx side takes the translations of no more
    English strings than it needs (``size`` distinct translations and a tenth more for the ones
    dropped), so that every other English string can fill the English side. With
    ``gold_pairs`` (what the largest pool needs: its share of ``size``) the catalogs' own pairs
    make up what the pack's gold lacks (:func:`_catalog_gold`); the pack's come first."""
    xx = s.lang
    by_id_src = dict(zip(s.src_ids, s.src, strict=True))
    by_id_en = dict(zip(s.en_ids, s.en, strict=True))
    gold = [(by_id_src[a], by_id_en[b]) for a, b in sorted(s.gold)]
    if tatoeba is not None:
        gold += list(zip(tatoeba.src, tatoeba.en, strict=True))
    gold = list({(a.casefold(), b.casefold()): (a, b) for a, b in gold}.values())

    # English strings: translated into xx or not
    translated: dict[str, str] = {}
    english_of: dict[str, list[str]] = collections.defaultdict(list)  # xx text -> its English
    for en, tr in fillers.pairs.get(xx, []):
        translated.setdefault(en, tr)
        english_of[tr].append(en)
    extra = _catalog_gold(gold, translated, english_of, (gold_pairs or 0) - len(gold), seed)
    pack_gold, gold = gold, gold + extra
    gold_xx = {a.casefold() for a, _ in gold}
    partners = {b for _, b in s.gold}
    gold_en_index = NearIndex([b for _, b in gold])

    free = [e for e in fillers.english if e not in translated]
    wanted = math.inf if size is None else size + size // 10
    taken: dict[str, None] = {}  # English strings whose translation goes to the xx side
    distinct: set[str] = set()
    for e in sorted(translated, key=lambda e: _hash(e, seed)):
        if len(taken) >= len(fillers.english) / 2 or len(distinct) >= wanted:
            break
        if translated[e].casefold() not in gold_xx:
            taken[e] = None
            distinct.add(translated[e])
    xx_side = [(e, translated[e]) for e in taken]
    en_side = free + [e for e in translated if e not in taken]  # the gold's English drops below

    page_xx, page_en, page_xx_english = _page_halves(fillers.pages, xx, seed)
    xx_fill = [t for _, t in xx_side if not any(map(gold_en_index.near, english_of[t]))]
    xx_fill = [t for t in dict.fromkeys(xx_fill + page_xx) if t.casefold() not in gold_xx]
    # English fillers: far from the English of everything on the xx side and from its texts
    # (a page's English original stands for its xx sentences: documentation repeats paragraphs
    # across pages, so an English filler of another page may translate one of them)
    side = [a for a, _ in gold] + xx_fill
    side_english = [e for t in [a for a, _ in gold] + xx_fill for e in english_of.get(t, ())]
    xx_english = NearIndex([b for _, b in gold] + side_english + page_xx_english + side)
    loners = [t for i, t in zip(s.en_ids, s.en, strict=True) if i not in partners]
    en_fill = [t for t in dict.fromkeys(en_side + page_en + loners) if not xx_english.near(t)]
    LOG.info(
        "%s: %d gold pairs (%d of the catalogs), %d xx fillers, %d English fillers",
        xx,
        len(gold),
        len(extra),
        len(xx_fill),
        len(en_fill),
    )
    return Material(
        xx,
        _shuffled(pack_gold, seed, "gold") + _shuffled(extra, seed, "catalog gold"),
        _shuffled(xx_fill, seed, "xx"),
        _shuffled(en_fill, seed, "en"),
    )


def _catalog_gold(
    gold: list[tuple[str, str]],
    translated: dict[str, str],
    english_of: dict[str, list[str]],
    wanted: int,
    seed: int,
) -> list[tuple[str, str]]:
    """Up to ``wanted`` more gold pairs ``(xx, English)`` from the filler catalogs (human
    translations of the same domain): one-to-one pairs (the xx text translates this English
    string alone), far from the gold's English and from each other, taken from the end of the
    seeded order whose start fills the xx side."""
    if wanted <= 0:
        return []
    near = NearIndex([b for _, b in gold])  # grows with each pair chosen
    gold_xx = {a.casefold() for a, _ in gold}
    chosen: list[tuple[str, str]] = []
    for e in sorted(translated, key=lambda e: -_hash(e, seed)):
        t = translated[e]
        if english_of[t] != [e] or t.casefold() in gold_xx or not letters(e) or near.near(e):
            continue
        chosen.append((t, e))
        near.add(e)
        gold_xx.add(t.casefold())
        if len(chosen) == wanted:
            break
    return chosen


def _page_halves(pages: dict, xx: str, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(xx sentences of one half of the pages, English ones of the other half, the English
    sentences of the first half), halves by page name."""
    side_xx = [t for p, ss in pages.get(xx, {}).items() if _hash(p, seed) < 0.5 for t in ss]
    english = pages.get("en", {})
    side_en = [t for p, ss in english.items() if _hash(p, seed) >= 0.5 for t in ss]
    originals = [t for p, ss in english.items() if _hash(p, seed) < 0.5 for t in ss]
    return side_xx, side_en, originals


MIN_GOLD = 20  # fewer gold pairs than this at a share: the pair's fillers are too few for a pool


def pool_size_at(m: Material, share: float, size: int) -> int:
    """The xx sentences of :func:`pool` at ``share`` (0 when ``share`` is not in (0, 1])."""
    if not 0 < share <= 1:
        return 0
    fill = math.floor(len(m.xx) / (1 - share)) if share < 1 else size
    return min(size, fill, math.floor(len(m.gold) / share))


def pool(m: Material, share: float, size: int) -> bdata.BuccSet:
    """A BUCC set of at most ``size`` sentences per side in which ``share`` of the xx sentences
    have their translation on the other side (``n_gold = round(share * n_xx)``); the gold pairs
    and the xx fillers bound it."""
    if not 0 < share <= 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"share must be in (0, 1], got {share}", "shares"
        )
    n_xx = pool_size_at(m, share, size)
    n_gold = max(round(share * n_xx), 1)
    n_en = min(size, len(m.en) + n_gold)
    gold = m.gold[:n_gold]
    src = [a for a, _ in gold] + m.xx[: n_xx - n_gold]
    en = [b for _, b in gold] + m.en[: n_en - n_gold]
    src_ids = [f"{m.lang}-{i:09d}" for i in range(len(src))]
    en_ids = [f"en-{i:09d}" for i in range(len(en))]
    # the set's own order is seeded too (a k-NN tie must not favour the gold rows)
    src_order = _shuffled(list(range(len(src))), 0, "src")
    en_order = _shuffled(list(range(len(en))), 0, "en")
    return bdata.BuccSet(
        m.lang,
        f"pool{share:g}",
        [src_ids[i] for i in src_order],
        [src[i] for i in src_order],
        [en_ids[i] for i in en_order],
        [en[i] for i in en_order],
        {(src_ids[i], en_ids[i]) for i in range(n_gold)},
        [],
    )
