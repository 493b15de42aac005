"""Tokenisation for training: the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``).

The same file is copied into the exported model, so training and serving see identical ids. Pairs use
the tokenizer's own template (``<s> a </s></s> b </s>`` for XLM-R); token type ids are all zero, as
in the exported graph.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import TOKENIZER_NAME

PAD_TOKENS = ("<pad>", "[PAD]")
CHUNK = 2048


def tokenizer_file(model: str | os.PathLike) -> Path:
    """``tokenizer.json`` of a checkpoint directory; for a hub id (or a directory with only the slow
    tokenizer files) it is converted once through ``transformers.AutoTokenizer``."""
    path = Path(model) / TOKENIZER_NAME
    if path.is_file():
        return path
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise StiltsError(
            ErrorCode.NOT_FOUND, f"cannot load a tokenizer for {model!r}: {e}", field="model"
        ) from e
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"{model}: needs a fast tokenizer (tokenizer.json)",
            field="model",
        )
    out = Path(tempfile.mkdtemp(prefix="stilts-tok-")) / TOKENIZER_NAME
    backend.save(str(out))
    return out


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the settings training needs.

    Args:
        path: the ``tokenizer.json`` file.
        pad_id: padding id; default: the id of ``<pad>`` / ``[PAD]`` in the vocabulary.
    """

    def __init__(self, path: str | os.PathLike, pad_id: int | None = None):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.tok = Tokenizer.from_file(str(self.path))
        self.tok.no_padding()
        self.tok.no_truncation()
        if pad_id is None:
            pad_id = next(
                (i for i in (self.tok.token_to_id(t) for t in PAD_TOKENS) if i is not None), None
            )
        if pad_id is None:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{self.path}: no <pad> or [PAD] token; cannot pad batches",
                field="model",
            )
        self.pad_id = int(pad_id)
        self.specials_single = self.tok.num_special_tokens_to_add(False)
        self.specials_pair = self.tok.num_special_tokens_to_add(True)

    def _truncate(self, max_len: int, strategy: str = "longest_first", stride: int = 0) -> None:
        self.tok.enable_truncation(max_len, stride=stride, strategy=strategy)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], max_len: int) -> list:
        """Encode (a, b) pairs with the tokenizer's pair template, cutting the longer side first."""
        self._truncate(max_len, "longest_first")
        out = []
        for chunk in chunks(pairs):
            out.extend(self.tok.encode_batch(list(chunk)))
        return out

    def encode_texts(self, texts: Sequence[str], max_len: int) -> list:
        """Encode single sequences with the tokenizer's template, cut to ``max_len`` tokens."""
        self._truncate(max_len, "longest_first")
        out = []
        for chunk in chunks(texts):
            out.extend(self.tok.encode_batch(list(chunk)))
        return out

    def cut(self, text: str, max_tokens: int) -> str:
        """``text`` shortened to its first ``max_tokens`` tokens (at a token boundary)."""
        self.tok.no_truncation()
        enc = self.tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens:
            return text
        return text[: enc.offsets[max_tokens - 1][1]]

    def encode_windows(self, question: str, context: str, max_len: int, stride: int) -> list:
        """Question + context windows: the context is cut into overlapping windows of
        ``max_len`` tokens in all, consecutive windows sharing ``stride`` context tokens."""
        self._truncate(max_len, "only_second", stride)
        first = self.tok.encode(question, context)
        return [first, *first.overflowing]

    def encode_words(self, sentences: Sequence[Sequence[str]], max_len: int) -> list:
        """Encode pre-split words (``word_ids`` map each token back to its word)."""
        self._truncate(max_len, "longest_first")
        out = []
        for chunk in chunks(sentences):
            out.extend(self.tok.encode_batch([list(s) for s in chunk], is_pretokenized=True))
        return out
