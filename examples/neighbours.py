"""Encode the multilingual sample and print each sentence's nearest neighbours in other languages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stilts import Encoder

HERE = Path(__file__).parent


def main(path: Path = HERE / "sentences.tsv", k: int = 3) -> None:
    rows = [
        line.rstrip("\n").split("\t", 1) for line in path.open(encoding="utf-8") if line.strip()
    ]
    langs = [r[0] for r in rows]
    texts = [r[1] for r in rows]
    enc = Encoder("default")
    print(f"{enc!r}: loaded in {enc.load_seconds:.2f}s", file=sys.stderr)
    vecs = enc.encode(texts, kind="bitext")
    sims = vecs @ vecs.T
    for i, (lang, text) in enumerate(zip(langs, texts, strict=True)):
        others = [j for j in np.argsort(-sims[i]) if langs[j] != lang][:k]
        print(f"[{lang}] {text}")
        for j in others:
            print(f"    {sims[i, j]:.3f}  [{langs[j]}] {texts[j]}")


if __name__ == "__main__":
    main()
