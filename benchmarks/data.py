"""Readers for the evaluation sets: Tatoeba (pack and XTREME layouts) and BUCC 2017.

Layouts read (any directory in them, so users point the CLI at the real files):

- Tatoeba, pack layout: ``<xx>-en.tsv``, one ``xx TAB en`` pair per line.
- Tatoeba, XTREME layout: ``tatoeba.<xx>-eng.<xx>`` and ``tatoeba.<xx>-eng.eng``, line i of one
  translating line i of the other.
- BUCC 2017: ``<xx>-en.<split>.<xx>``, ``<xx>-en.<split>.en`` (``id TAB sentence``) and
  ``<xx>-en.<split>.gold`` (``xx_id TAB en_id``), in the directory itself or in ``<xx>-en/``
  subdirectories; splits without a gold file (the official ``test`` split) are skipped.

Every malformed line raises :class:`~stilts.errors.StiltsError` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError

LOG = logging.getLogger(__name__)

PACK_RE = re.compile(r"^(?P<xx>[^.\s]+)-en\.tsv$")
XTREME_RE = re.compile(r"^tatoeba\.(?P<xx>[^.\s]+)-eng\.(?P<side>[^.\s]+)$")
BUCC_RE = re.compile(r"^(?P<xx>[^.\s]+)-en\.(?P<split>[^.\s]+)\.(?P<side>[^.\s]+)$")
BUCC_SPLITS = ("sample", "training", "test")


@dataclasses.dataclass
class TatoebaSet:
    """One language's aligned pairs: ``src[i]`` (xx) translates ``en[i]``."""

    lang: str
    src: list[str]
    en: list[str]
    files: list[Path]
    layout: str

    def __len__(self) -> int:
        return len(self.src)

    def head(self, n: int | None) -> TatoebaSet:
        """The first ``n`` pairs (all when ``n`` is None)."""
        if n is None:
            return self
        return dataclasses.replace(self, src=self.src[:n], en=self.en[:n])


@dataclasses.dataclass
class BuccSet:
    """One BUCC split of one language pair: sentences by id on each side and the gold pairs."""

    lang: str
    split: str
    src_ids: list[str]
    src: list[str]
    en_ids: list[str]
    en: list[str]
    gold: set[tuple[str, str]]
    files: list[Path]

    def subsample(self, n: int | None) -> BuccSet:
        """At most ``n`` xx sentences, keeping the shares of gold and distractors.

        Keeps the first ``n`` xx sentences, the English partners of the kept gold ones, and the
        same fraction of the English sentences that have no partner, so a small run sees a set
        shaped like the full one. Deterministic (file order).
        """
        if n is None or n >= len(self.src_ids):
            return self
        keep_src = set(self.src_ids[:n])
        frac = n / max(len(self.src_ids), 1)
        gold = {(s, e) for s, e in self.gold if s in keep_src}
        partners = {e for _, e in gold}
        all_partners = {e for _, e in self.gold}
        loners = [e for e in self.en_ids if e not in all_partners]
        keep_en = partners | set(loners[: round(frac * len(loners))])
        en_rows = [i for i, e in enumerate(self.en_ids) if e in keep_en]
        return dataclasses.replace(
            self,
            src_ids=self.src_ids[:n],
            src=self.src[:n],
            en_ids=[self.en_ids[i] for i in en_rows],
            en=[self.en[i] for i in en_rows],
            gold=gold,
        )


def _error(path: Path, line: int | None, message: str) -> StiltsError:
    where = f"{path}:{line}" if line is not None else str(path)
    return StiltsError(ErrorCode.INVALID_ARGUMENT, f"{where}: {message}", "path")


def _lines(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            lines = [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError as e:
        raise _error(path, None, f"not UTF-8 ({e.reason} at byte {e.start})") from e
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _split_fields(path: Path, lines: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for no, line in enumerate(lines, 1):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0]:
            raise _error(path, no, f"expected {what} (2 tab-separated fields), got {len(parts)}")
        out.append((parts[0], parts[1]))
    return out


def _need_dir(path: str | Path, field: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{field}: {p} is not a directory", field)
    return p


def read_tatoeba_pack(path: Path, lang: str) -> TatoebaSet:
    """Read one ``<xx>-en.tsv`` file."""
    pairs = _split_fields(path, _lines(path), "xx TAB en")
    return TatoebaSet(lang, [a for a, _ in pairs], [b for _, b in pairs], [path], "pack")


def read_tatoeba_xtreme(src_path: Path, en_path: Path, lang: str) -> TatoebaSet:
    """Read one ``tatoeba.<xx>-eng.<xx>`` / ``tatoeba.<xx>-eng.eng`` pair of files."""
    src, en = _lines(src_path), _lines(en_path)
    if len(src) != len(en):
        raise _error(
            src_path, None, f"{len(src)} lines but {en_path.name} has {len(en)}: not aligned"
        )
    return TatoebaSet(lang, src, en, [src_path, en_path], "xtreme")


def tatoeba_languages(directory: str | Path) -> dict[str, tuple[str, list[Path]]]:
    """Languages found in a Tatoeba directory: ``{xx: (layout, files)}``, sorted by code."""
    d = _need_dir(directory, "tatoeba")
    found: dict[str, tuple[str, list[Path]]] = {}
    for p in sorted(d.iterdir()):
        m = PACK_RE.match(p.name)
        if m and p.is_file():
            found[m["xx"]] = ("pack", [p])
            continue
        m = XTREME_RE.match(p.name)
        if m and p.is_file() and m["side"] == m["xx"]:
            en = d / f"tatoeba.{m['xx']}-eng.eng"
            if not en.is_file():
                raise _error(p, None, f"its English side {en.name} is missing")
            if m["xx"] in found:
                raise _error(p, None, f"language {m['xx']!r} is there in both layouts")
            found[m["xx"]] = ("xtreme", [p, en])
    if not found:
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"tatoeba: no <xx>-en.tsv or tatoeba.<xx>-eng.<xx> files in {d}",
            "tatoeba",
        )
    return dict(sorted(found.items()))


def read_tatoeba(
    directory: str | Path, languages: list[str] | None = None, max_pairs: int | None = None
) -> dict[str, TatoebaSet]:
    """Read every language of a Tatoeba directory (either layout, or both mixed).

    Args:
        directory: the directory.
        languages: only these codes (an unknown one is an error); None = all.
        max_pairs: keep the first ``max_pairs`` pairs of each language.

    Returns:
        ``{xx: TatoebaSet}`` sorted by code.
    """
    found = tatoeba_languages(directory)
    wanted = _select(found, languages, "languages", "tatoeba")
    out = {}
    for xx in wanted:
        layout, files = found[xx]
        s = read_tatoeba_pack(files[0], xx) if layout == "pack" else read_tatoeba_xtreme(*files, xx)
        if not len(s):
            raise _error(files[0], None, "no pairs")
        out[xx] = s.head(max_pairs)
    return out


def _select(found: dict, languages: list[str] | None, field: str, where: str) -> list[str]:
    if languages is None:
        return list(found)
    missing = [x for x in languages if x not in found]
    if missing:
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"{field}: {', '.join(missing)} not in the {where} data (have: {', '.join(found)})",
            field,
        )
    return [x for x in found if x in languages]


def _bucc_files(d: Path) -> dict[tuple[str, str], dict[str, Path]]:
    files: dict[tuple[str, str], dict[str, Path]] = {}
    candidates = [p for p in d.iterdir() if p.is_file()]
    for sub in d.iterdir():
        if sub.is_dir():
            candidates.extend(p for p in sub.iterdir() if p.is_file())
    for p in sorted(candidates):
        m = BUCC_RE.match(p.name)
        if m and m["side"] in (m["xx"], "en", "gold"):
            files.setdefault((m["xx"], m["split"]), {})[m["side"]] = p
    return files


def bucc_pairs(directory: str | Path) -> dict[str, dict[str, dict[str, Path]]]:
    """Language pairs and their gold-bearing splits: ``{xx: {split: {xx|en|gold: path}}}``."""
    d = _need_dir(directory, "bucc")
    out: dict[str, dict[str, dict[str, Path]]] = {}
    for (xx, split), sides in sorted(_bucc_files(d).items()):
        if "gold" not in sides:
            LOG.info("bucc: %s-en.%s has no gold file, skipped", xx, split)
            continue
        for side in (xx, "en"):
            if side not in sides:
                raise _error(sides["gold"], None, f"{xx}-en.{split}.{side} is missing beside it")
        out.setdefault(xx, {})[split] = {"xx": sides[xx], "en": sides["en"], "gold": sides["gold"]}
    if not out:
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"bucc: no <xx>-en.<split>.{{<xx>,en,gold}} files in {d} or its subdirectories",
            "bucc",
        )
    return out


def read_bucc_split(files: dict[str, Path], lang: str, split: str) -> BuccSet:
    """Read one split (``files`` as returned by :func:`bucc_pairs`)."""
    src = _split_fields(files["xx"], _lines(files["xx"]), "id TAB sentence")
    en = _split_fields(files["en"], _lines(files["en"]), "id TAB sentence")
    gold_rows = _split_fields(files["gold"], _lines(files["gold"]), "xx_id TAB en_id")
    for path, rows in ((files["xx"], src), (files["en"], en)):
        ids = [i for i, _ in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise _error(path, None, f"id {dup!r} occurs more than once")
    src_ids, en_ids = {i for i, _ in src}, {i for i, _ in en}
    for no, (s, e) in enumerate(gold_rows, 1):
        if s not in src_ids or e not in en_ids:
            raise _error(files["gold"], no, f"gold pair ({s}, {e}) names an unknown id")
    return BuccSet(
        lang,
        split,
        [i for i, _ in src],
        [t for _, t in src],
        [i for i, _ in en],
        [t for _, t in en],
        set(gold_rows),
        [files["xx"], files["en"], files["gold"]],
    )


def read_bucc(
    directory: str | Path, languages: list[str] | None = None
) -> dict[str, dict[str, BuccSet]]:
    """Read every language pair and gold-bearing split of a BUCC 2017 directory.

    Returns:
        ``{xx: {split: BuccSet}}``.
    """
    pairs = bucc_pairs(directory)
    wanted = _select(pairs, languages, "languages", "bucc")
    return {
        xx: {split: read_bucc_split(files, xx, split) for split, files in pairs[xx].items()}
        for xx in wanted
    }


def eval_split(splits: dict[str, BuccSet]) -> str:
    """The split to score: ``test`` when it has gold, else ``training``, else the only one."""
    for name in ("test", "training"):
        if name in splits:
            return name
    others = [s for s in splits if s != "sample"]
    return others[0] if others else next(iter(splits))
