"""Examples -> tokenized features, one function per task kind (numpy only, no torch)."""

from __future__ import annotations

import collections
import sys
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from stilts.training.examples import (
    IGNORE_INDEX,
    BitextExample,
    BitextFeature,
    ChoiceExample,
    ChoiceFeature,
    ClassificationFeature,
    PairExample,
    SpanExample,
    SpanFeature,
    TaggingExample,
    TaggingFeature,
)
from stilts.training.tasks import (
    BITEXT,
    CLASSIFICATION,
    MULTIPLE_CHOICE,
    SPAN,
    TAGGING,
    TaskSpec,
)
from stilts.training.text import TextTokenizer, chunks

# bitext pairs tokenized at a time (bounds the memory of millions of pairs)
BITEXT_CHUNK = 50_000

MAX_QUERY_TOKENS = 64
DOC_STRIDE = 128


def _ids(enc) -> np.ndarray:
    # int32 halves the memory of big tasks; batches are built as int64.
    return np.asarray(enc.ids, dtype=np.int32)


def tag_vocabulary(examples: Sequence[TaggingExample]) -> list[str]:
    """Tags of the training data, most frequent first (ties by name): a deterministic order."""
    counts = collections.Counter(t for ex in examples for t in ex.tags)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def featurize_pairs(
    examples: Sequence[PairExample], tok: TextTokenizer, labels: Sequence[str], max_len: int
) -> list[ClassificationFeature]:
    index = {label: i for i, label in enumerate(labels)}
    encs = tok.encode_pairs([(e.text_a, e.text_b) for e in examples], max_len)
    return [
        ClassificationFeature(_ids(enc), index[ex.label])
        for ex, enc in zip(examples, encs, strict=True)
    ]


def span_window_stride(tok: TextTokenizer, max_len: int, doc_stride: int = DOC_STRIDE) -> int:
    """Context tokens shared by consecutive windows: ``doc_stride`` at most, and at most half of
    the context room left once the longest question is in."""
    room = max_len - min(MAX_QUERY_TOKENS, max_len // 4) - tok.specials_pair
    return max(0, min(doc_stride, room // 2))


def featurize_spans(
    examples: Sequence[SpanExample],
    tok: TextTokenizer,
    max_len: int,
    doc_stride: int = DOC_STRIDE,
    progress: bool = True,
) -> list[SpanFeature]:
    """Question + context windows, labelled with the first gold answer's token span.

    A window that does not hold the whole answer (and every window of an unanswerable question)
    points at token 0, the ``<s>`` token, as in the SQuAD v2 convention.
    """
    max_query = min(MAX_QUERY_TOKENS, max_len // 4)
    stride = span_window_stride(tok, max_len, doc_stride)
    out: list[SpanFeature] = []
    for ex_i, ex in enumerate(
        tqdm(examples, desc="windows", unit="q", disable=not progress or len(examples) < 5000)
    ):
        question = tok.cut(ex.question, max_query)
        for enc in tok.encode_windows(question, ex.context, max_len, stride):
            offsets = np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2)
            in_context = np.fromiter((s == 1 for s in enc.sequence_ids), bool, len(offsets))
            offsets[~in_context] = -1
            start = end = 0
            ctx = np.flatnonzero(offsets[:, 0] >= 0)
            if ex.answers and len(ctx):
                text, s_char = ex.answers[0]
                e_char = s_char + len(text)
                if offsets[ctx[0], 0] <= s_char and offsets[ctx[-1], 1] >= e_char:
                    start = int(ctx[offsets[ctx, 0] <= s_char][-1])
                    end = int(ctx[offsets[ctx, 1] >= e_char][0])
                    end = max(end, start)
            out.append(SpanFeature(ex_i, _ids(enc), offsets, start, end))
    return out


def featurize_choices(
    examples: Sequence[ChoiceExample], tok: TextTokenizer, max_len: int
) -> list[ChoiceFeature]:
    pairs = [(ex.context, c) for ex in examples for c in ex.choices]
    encs = iter(tok.encode_pairs(pairs, max_len))
    return [ChoiceFeature([_ids(next(encs)) for _ in ex.choices], ex.label) for ex in examples]


def featurize_tags(
    examples: Sequence[TaggingExample], tok: TextTokenizer, labels: Sequence[str], max_len: int
) -> list[TaggingFeature]:
    """Label each word's first piece; tags unknown to ``labels`` are left unlabelled (and scored
    as errors at evaluation)."""
    index = {t: i for i, t in enumerate(labels)}
    encs = tok.encode_words([ex.words for ex in examples], max_len)
    out = []
    for ex, enc in zip(examples, encs, strict=True):
        ids = _ids(enc)
        lab = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
        pos = np.full(len(ex.words), -1, dtype=np.int32)
        for t, w in enumerate(enc.word_ids):
            if w is not None and pos[w] < 0:
                pos[w] = t
                lab[t] = index.get(ex.tags[w], IGNORE_INDEX)
        out.append(TaggingFeature(ids, lab, pos))
    return out


def text_key(text: str) -> str:
    """The form under which two texts count as the same (case and spacing folded)."""
    return " ".join(text.casefold().split())


def featurize_bitext(
    examples: Sequence[BitextExample], tok: TextTokenizer, max_len: int, prefix: str = ""
) -> list[BitextFeature]:
    """Each side as its own sequence, with the manifest's bitext ``prefix`` (as exported models
    encode it); each distinct text (:func:`text_key`) gets one key shared by both sides."""
    keys: dict[str, int] = {}
    out: list[BitextFeature] = []
    # chunk by chunk: a tokenizer Encoding weighs ~1 KB, the int32 arrays kept a few dozen bytes
    for part in chunks(examples, BITEXT_CHUNK):
        srcs = tok.encode_texts([prefix + ex.source for ex in part], max_len)
        tgts = tok.encode_texts([prefix + ex.target for ex in part], max_len)
        out.extend(
            BitextFeature(
                _ids(s),
                _ids(t),
                keys.setdefault(text_key(ex.source), len(keys)),
                keys.setdefault(text_key(ex.target), len(keys)),
                sys.intern(ex.lang),
            )
            for ex, s, t in zip(part, srcs, tgts, strict=True)
        )
    return out


def featurize(
    task: TaskSpec,
    examples: Sequence,
    tok: TextTokenizer,
    labels: Sequence[str],
    max_len: int,
    doc_stride: int = DOC_STRIDE,
    prefix: str = "",
) -> list:
    """Dispatch on the task kind (``prefix``: the bitext task's text prefix)."""
    if task.kind == CLASSIFICATION:
        return featurize_pairs(examples, tok, labels, max_len)
    if task.kind == SPAN:
        return featurize_spans(examples, tok, max_len, doc_stride)
    if task.kind == MULTIPLE_CHOICE:
        return featurize_choices(examples, tok, max_len)
    if task.kind == TAGGING:
        return featurize_tags(examples, tok, labels, max_len)
    if task.kind == BITEXT:
        return featurize_bitext(examples, tok, max_len, prefix)
    raise ValueError(f"unknown task kind {task.kind!r}")
