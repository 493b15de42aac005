"""Sentence samples for parity checks and timings, read from a Tatoeba-layout directory."""

from __future__ import annotations

from pathlib import Path

from stilts.errors import ErrorCode, StiltsError

SIDES = ("xx", "en")


def dev_sentences(tatoeba_dir: str | Path, n: int, side: str = "xx") -> list[str]:
    """``n`` sentences taken round-robin over the languages of a Tatoeba-layout directory:
    the ``xx`` side of each ``<xx>-en.tsv`` (first column), or its English side (second column;
    each sentence once, for English-only models).

    Raises:
        StiltsError: NOT_FOUND when the directory holds no ``<xx>-en.tsv`` file.
    """
    files = sorted(Path(tatoeba_dir).glob("*-en.tsv"))
    if not files:
        raise StiltsError(ErrorCode.NOT_FOUND, f"{tatoeba_dir}: no <xx>-en.tsv files")
    col = SIDES.index(side)
    columns = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            columns.append([line.rstrip("\n").split("\t")[col] for line in fh if "\t" in line])
    out: list[str] = []
    seen: set[str] = set()
    row = 0
    while len(out) < n and any(row < len(c) for c in columns):
        for c in columns:
            if row < len(c) and not (side == "en" and c[row] in seen):
                out.append(c[row])
                seen.add(c[row])
        row += 1
    return out[:n]
