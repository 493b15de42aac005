"""Sentence samples for parity checks and timings, read from a Tatoeba-layout directory."""

from __future__ import annotations

from pathlib import Path

from stilts.errors import ErrorCode, StiltsError


def dev_sentences(tatoeba_dir: str | Path, n: int) -> list[str]:
    """``n`` sentences taken round-robin over the languages of a Tatoeba-layout directory.

    Raises:
        StiltsError: NOT_FOUND when the directory holds no ``<xx>-en.tsv`` file.
    """
    files = sorted(Path(tatoeba_dir).glob("*-en.tsv"))
    if not files:
        raise StiltsError(ErrorCode.NOT_FOUND, f"{tatoeba_dir}: no <xx>-en.tsv files")
    columns = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            columns.append([line.split("\t", 1)[0] for line in fh if "\t" in line])
    out: list[str] = []
    row = 0
    while len(out) < n and any(row < len(c) for c in columns):
        out.extend(c[row] for c in columns if row < len(c))
        row += 1
    return out[:n]
