"""The tokenizer of a model directory: its ``tokenizer.json`` turned into ids, cut to ``max_len``.

Hugging Face ``tokenizers`` reads every kind of ``tokenizer.json``. For a Unigram (sentencepiece)
vocabulary it holds a byte trie of all pieces: about 290 MB for XLM-R's 250k pieces, more than the
6-layer encoder itself. :class:`UnigramTokenizer` gives the same ids from a dict of the pieces
(about 52 MB): it runs the file's own normalizer and pre-tokenizer through ``tokenizers`` and only
the Viterbi search over the pieces in Python, as ``tokenizers``' Unigram model does (the same
float64 sums, the same tie order, unknown characters scored ``min - 10`` and fused).

:func:`load_tokenizer` picks it where the file is of the shape it reproduces, else ``tokenizers``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from array import array
from itertools import islice
from pathlib import Path
from typing import Protocol

LOG = logging.getLogger(__name__)

# tokenizers' Unigram model: an unknown character scores the vocabulary's lowest score minus this
UNK_PENALTY = 10.0
# words whose ids are kept (cleared when full); tokenizers keeps 10,000
WORD_CACHE = 50_000
# one ``["piece", score]`` entry of a Unigram vocabulary, then the separator after it
_ENTRY = re.compile(
    rb'\s*\[\s*"((?:[^"\\]|\\.)*)"\s*,\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\]\s*([,\]])'
)
_VOCAB_KEY = re.compile(rb'"vocab"\s*:\s*\[')


class Tokenizer(Protocol):
    """What a route session needs of a tokenizer."""

    special_ids: frozenset[int]

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (a piece or an added token), None when there is none."""

    def encode_batch(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        """Each text's ids with the special tokens around them, and whether it was cut."""


class HFTokenizer:
    """Any ``tokenizer.json``, read by Hugging Face ``tokenizers``."""

    def __init__(self, path: Path, max_len: int):
        from tokenizers import Tokenizer as HF

        self.hf = HF.from_file(str(path))
        self.hf.no_padding()
        self.hf.enable_truncation(max_len)
        self.special_ids = frozenset(
            i for i, t in self.hf.get_added_tokens_decoder().items() if t.special
        )

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def encode_batch(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        return [
            (e.ids, bool(e.overflowing))
            for e in self.hf.encode_batch(texts, add_special_tokens=True)
        ]


class UnigramTokenizer:
    """A Unigram ``tokenizer.json`` with the ids ``tokenizers`` gives, in a fraction of its memory.

    Built by :func:`read_unigram`, which checks the file is of the shape reproduced here: added
    tokens matched on the raw text, split before normalisation; a single-sequence template of
    special tokens around the text; no byte fallback.
    """

    def __init__(
        self,
        pieces: dict[str, int],
        scores: array,
        unk_id: int,
        front,
        added: dict[str, int],
        template: tuple[list[int], list[int]],
        max_len: int,
        special_ids: frozenset[int],
    ):
        self.pieces = pieces
        self.scores = scores
        self.unk_id = unk_id
        self.unk_score = min(scores) - UNK_PENALTY
        # the longest piece starting with each two characters: the search from a position tries
        # the character alone, then no longer substring than that
        self.longest: dict[str, int] = {}
        for piece in pieces:
            if len(piece) > self.longest.get(piece[:2], 1):
                self.longest[piece[:2]] = len(piece)
        self.normalizer = front.normalizer
        self.pre_tokenizer = front.pre_tokenizer
        self.added = added
        self.added_split = (
            re.compile("(" + "|".join(map(re.escape, sorted(added, key=len, reverse=True))) + ")")
            if added
            else None
        )
        self.head, self.tail = template
        self.room = max_len - len(self.head) - len(self.tail)
        self.special_ids = special_ids
        self.words: dict[str, list[int]] = {}

    def token_id(self, token: str) -> int | None:
        return self.added.get(token, self.pieces.get(token))

    def word_ids(self, word: str) -> list[int]:
        """The best segmentation of one pre-tokenized word (tokenizers' ``encode_optimized``)."""
        hit = self.words.get(word)
        if hit is not None:
            return hit
        pieces, scores, longest, n = self.pieces, self.scores, self.longest, len(word)
        best = [0.0] + [-math.inf] * n
        start = [0] * (n + 1)
        ids = [0] * (n + 1)
        for s in range(n):
            here = best[s]
            # the character alone, else an unknown (as tokenizers, which adds the unknown after
            # the longer pieces from s: they end elsewhere, so the order changes nothing)
            i = pieces.get(word[s])
            score = (self.unk_score if i is None else scores[i]) + here
            if score > best[s + 1]:
                best[s + 1], start[s + 1], ids[s + 1] = score, s, self.unk_id if i is None else i
            for e in range(s + 2, min(n, s + longest.get(word[s : s + 2], 0)) + 1):
                i = pieces.get(word[s:e])
                if i is not None and scores[i] + here > best[e]:
                    best[e], start[e], ids[e] = scores[i] + here, s, i
        out: list[int] = []
        e = n
        while e > 0:
            if ids[e] != self.unk_id or not out or out[-1] != self.unk_id:  # unknowns fuse
                out.append(ids[e])
            e = start[e]
        out.reverse()
        if len(self.words) >= WORD_CACHE:
            self.words.clear()
        self.words[word] = out
        return out

    def text_ids(self, text: str) -> list[int]:
        """A text's ids without the template's special tokens and without a cut."""
        out: list[int] = []
        for part in self.added_split.split(text) if self.added_split else [text]:
            if not part:
                continue
            if part in self.added:
                out.append(self.added[part])
                continue
            normal = self.normalizer.normalize_str(part) if self.normalizer else part
            words = (
                self.pre_tokenizer.pre_tokenize_str(normal)
                if self.pre_tokenizer
                else [(normal, None)]
            )
            for word, _ in words:
                out.extend(self.word_ids(word))
        return out

    def encode_batch(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        out = []
        for text in texts:
            ids = self.text_ids(text)
            out.append((self.head + ids[: self.room] + self.tail, len(ids) > self.room))
        return out


def load_tokenizer(path: Path, max_len: int) -> Tokenizer:
    """The tokenizer of ``path`` (a ``tokenizer.json``) cutting texts to ``max_len`` tokens: the
    compact Unigram reader where the file is of its shape, else Hugging Face ``tokenizers``."""
    data = Path(path).read_bytes()
    try:
        return read_unigram(data, max_len)
    except _NotCompact as e:
        LOG.debug("%s: tokenizers reads it (%s)", path, e)
    return HFTokenizer(Path(path), max_len)


class _NotCompact(Exception):
    """The file is not of the shape :class:`UnigramTokenizer` reproduces."""


def _read_vocab(data: bytes) -> tuple[int, int, dict[str, int], array]:
    """The byte span of the model's ``vocab`` array, each piece's id and each id's score, read
    without building the JSON tree (its 250k two-item lists alone peak at about 140 MB)."""
    key = _VOCAB_KEY.search(data)
    if key is None:
        raise _NotCompact("no vocab array")
    pieces: dict[str, int] = {}
    scores = array("d")
    pos = key.end()
    while True:
        m = _ENTRY.match(data, pos)
        if m is None:
            raise _NotCompact("vocab entries are not [piece, score] pairs")
        raw = m.group(1)
        piece = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode("utf-8")
        if pieces.setdefault(piece, len(scores)) != len(scores):
            raise _NotCompact(f"piece {piece!r} twice in the vocabulary")
        scores.append(float(m.group(2)))
        pos = m.end()
        if m.group(3) == b"]":
            return key.end() - 1, pos, pieces, scores


def read_unigram(data: bytes, max_len: int) -> UnigramTokenizer:
    """A :class:`UnigramTokenizer` from a ``tokenizer.json``'s bytes.

    Raises:
        _NotCompact: the file is not a Unigram vocabulary of the shape reproduced here.
    """
    from tokenizers import Tokenizer as HF

    begin, end, pieces, scores = _read_vocab(data)
    spec = json.loads(data[:begin] + b"[]" + data[end:])
    model = spec.get("model") or {}
    if model.get("type") != "Unigram" or model.get("byte_fallback") or model.get("unk_id") is None:
        raise _NotCompact(f"model {model.get('type')}, byte_fallback {model.get('byte_fallback')}")
    added_tokens = spec.get("added_tokens") or []
    if any(t["normalized"] or t["lstrip"] or t["rstrip"] or t["single_word"] for t in added_tokens):
        raise _NotCompact("added tokens matched after normalisation or with stripping")
    head, tail = _template(spec.get("post_processor"))

    unk_id = model["unk_id"]
    # the file's own normalizer and pre-tokenizer, on a vocabulary of the first pieces only
    model["vocab"] = [[p, scores[i]] for p, i in islice(pieces.items(), unk_id + 1)]
    front = HF.from_str(json.dumps(spec))
    added = {t["content"]: t["id"] for t in added_tokens}
    special = frozenset(t["id"] for t in added_tokens if t["special"])
    return UnigramTokenizer(pieces, scores, unk_id, front, added, (head, tail), max_len, special)


def _template(post) -> tuple[list[int], list[int]]:
    """The ids a single-sequence template puts before and after the text."""
    if post is None:
        return [], []
    if post.get("type") in ("RobertaProcessing", "BertProcessing"):  # cls text sep
        return [post["cls"][1]], [post["sep"][1]]
    if post.get("type") != "TemplateProcessing":
        raise _NotCompact(f"post-processor {post.get('type')}")
    head: list[int] = []
    tail: list[int] = []
    seen = False
    for item in post["single"]:
        if "Sequence" in item:
            seen = True
        else:
            (tail if seen else head).extend(
                post["special_tokens"][item["SpecialToken"]["id"]]["ids"]
            )
    if not seen:
        raise _NotCompact("template without the text")
    return head, tail
