"""The data chain of every task, as in jiant: example -> tokenized feature -> batch.

Examples are what a reader yields from an official file; features are token ids (numpy, no torch);
batches are padded tensors ready for a head (built in :mod:`stilts.training.batches`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

IGNORE_INDEX = -100


# ---- examples (what the readers return) ----


@dataclasses.dataclass
class PairExample:
    """Sentence-pair classification (NLI, paraphrase).

    Attributes:
        guid: ``file:line`` of the example, for error messages and predictions.
        text_a: premise / first question.
        text_b: hypothesis / second question.
        label: the label string (one of the task's labels).
    """

    guid: str
    text_a: str
    text_b: str
    label: str


@dataclasses.dataclass
class SpanExample:
    """Extractive QA (SQuAD): find the answer span in ``context``.

    Attributes:
        guid: the question id of the official file.
        question: the question.
        context: the paragraph.
        answers: gold answers as (text, character start) pairs; empty when unanswerable (v2).
    """

    guid: str
    question: str
    context: str
    answers: list[tuple[str, int]]

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclasses.dataclass
class ChoiceExample:
    """Multiple choice: pick the right ``choices[label]`` to follow ``context``.

    Attributes:
        guid: ``file:line`` or the official id.
        context: the first segment (context, question or both).
        choices: the candidate continuations / answers (second segments).
        label: index of the right choice.
    """

    guid: str
    context: str
    choices: list[str]
    label: int


@dataclasses.dataclass
class TaggingExample:
    """Token tagging (CCG supertagging): one tag per word.

    Attributes:
        guid: ``file:line`` of the sentence's first word.
        words: the words of the sentence.
        tags: one tag per word.
    """

    guid: str
    words: list[str]
    tags: list[str]


@dataclasses.dataclass
class BitextExample:
    """A translation pair (the ``bitext`` task).

    Attributes:
        guid: ``file:entry`` of the pair.
        source: source text (English for gettext catalogs).
        target: its translation.
        lang: the target's language code ('' when the file does not say).
    """

    guid: str
    source: str
    target: str
    lang: str = ""


# ---- tokenized features ----


@dataclasses.dataclass
class ClassificationFeature:
    """``<s> a </s></s> b </s>`` (the tokenizer's pair template) and the label index."""

    input_ids: np.ndarray
    label: int


@dataclasses.dataclass
class SpanFeature:
    """One window of a question + context (long contexts give several windows).

    Attributes:
        example_index: index of the :class:`SpanExample` it comes from.
        input_ids: token ids of the window.
        offsets: (len, 2) character offsets into the context for context tokens, -1 elsewhere.
        start: token index of the answer start, 0 (the first token) when the answer is not in
            this window or the question has none.
        end: token index of the answer end (inclusive), 0 likewise.
    """

    example_index: int
    input_ids: np.ndarray
    offsets: np.ndarray
    start: int
    end: int


@dataclasses.dataclass
class ChoiceFeature:
    """One token sequence per choice: ``<s> context </s></s> choice </s>``."""

    input_ids: list[np.ndarray]
    label: int


@dataclasses.dataclass
class TaggingFeature:
    """Sub-word ids with the tag index on each word's first piece, ``IGNORE_INDEX`` elsewhere.

    Attributes:
        input_ids: token ids.
        labels: per token: tag index on a word's first piece, ``IGNORE_INDEX`` on the rest; an
            unknown tag (seen only in dev data) is ``IGNORE_INDEX`` too and scored from
            ``word_positions``.
        word_positions: per word, the token index of its first piece (-1 when truncated away).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    word_positions: np.ndarray


@dataclasses.dataclass
class BitextFeature:
    """A translation pair as two single-sequence token id arrays (each with the bitext prefix).

    Attributes:
        source_ids / target_ids: token ids of each side.
        source_key / target_key: ids of the normalised texts, for keeping two pairs that share a
            side out of one batch.
        lang: the target's language code ('' when unknown), for sampling languages.
    """

    source_ids: np.ndarray
    target_ids: np.ndarray
    source_key: int
    target_key: int
    lang: str = ""
