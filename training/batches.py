"""Features -> padded tensor batches (the last link of the example -> feature -> batch chain).

Each batch is padded to its own longest sequence. :meth:`to_dict` gives the keyword arguments of
:meth:`stilts.training.model.MultiTaskModel.forward` (the form ``transformers.Trainer`` passes on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stilts.training.examples import (
    IGNORE_INDEX,
    BitextFeature,
    ChoiceFeature,
    ClassificationFeature,
    SpanFeature,
    TaggingFeature,
)
from stilts.training.tasks import BITEXT, CLASSIFICATION, MULTIPLE_CHOICE, SPAN, TAGGING


def pad(seqs: Sequence[np.ndarray], value: int, length: int | None = None) -> torch.Tensor:
    """Right-pad 1-D integer arrays into an int64 (n, length) tensor."""
    length = length or max(len(s) for s in seqs)
    out = np.full((len(seqs), length), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def _mask(seqs: Sequence[np.ndarray], length: int | None = None) -> torch.Tensor:
    return pad([np.ones(len(s), dtype=np.int64) for s in seqs], 0, length)


@dataclasses.dataclass
class Batch:
    """Common part: the task name, token ids and attention mask."""

    task: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclasses.dataclass
class ClassificationBatch(Batch):
    labels: torch.Tensor


@dataclasses.dataclass
class SpanBatch(Batch):
    start_positions: torch.Tensor
    end_positions: torch.Tensor


@dataclasses.dataclass
class ChoiceBatch(Batch):
    """``input_ids`` and ``attention_mask`` are (batch, choices, length)."""

    labels: torch.Tensor


@dataclasses.dataclass
class TaggingBatch(Batch):
    labels: torch.Tensor


@dataclasses.dataclass
class BitextBatch(Batch):
    """``input_ids`` and ``attention_mask`` are (batch, 2, length): source, then target."""


def collate_bitext(task: str, feats: Sequence[BitextFeature], pad_id: int):
    flat = [s for f in feats for s in (f.source_ids, f.target_ids)]
    length = max(len(s) for s in flat)
    shape = (len(feats), 2, length)
    return BitextBatch(task, pad(flat, pad_id, length).view(shape), _mask(flat, length).view(shape))


def collate_classification(task: str, feats: Sequence[ClassificationFeature], pad_id: int):
    ids = [f.input_ids for f in feats]
    return ClassificationBatch(
        task, pad(ids, pad_id), _mask(ids), torch.tensor([f.label for f in feats])
    )


def collate_spans(task: str, feats: Sequence[SpanFeature], pad_id: int):
    ids = [f.input_ids for f in feats]
    return SpanBatch(
        task,
        pad(ids, pad_id),
        _mask(ids),
        torch.tensor([f.start for f in feats]),
        torch.tensor([f.end for f in feats]),
    )


def collate_choices(task: str, feats: Sequence[ChoiceFeature], pad_id: int):
    n_choices = {len(f.input_ids) for f in feats}
    if len(n_choices) != 1:
        raise ValueError(f"{task}: examples with different numbers of choices in one batch")
    flat = [s for f in feats for s in f.input_ids]
    length = max(len(s) for s in flat)
    shape = (len(feats), n_choices.pop(), length)
    return ChoiceBatch(
        task,
        pad(flat, pad_id, length).view(shape),
        _mask(flat, length).view(shape),
        torch.tensor([f.label for f in feats]),
    )


def collate_tags(task: str, feats: Sequence[TaggingFeature], pad_id: int):
    ids = [f.input_ids for f in feats]
    return TaggingBatch(
        task, pad(ids, pad_id), _mask(ids), pad([f.labels for f in feats], IGNORE_INDEX)
    )


COLLATE = {
    CLASSIFICATION: collate_classification,
    SPAN: collate_spans,
    MULTIPLE_CHOICE: collate_choices,
    TAGGING: collate_tags,
    BITEXT: collate_bitext,
}


class MultiTaskCollator:
    """Collate a list of ``(task name, feature)`` items that all belong to one task.

    Args:
        kinds: task name -> task kind.
        pad_id: the tokenizer's padding id.
    """

    def __init__(self, kinds: dict[str, str], pad_id: int):
        self.kinds = kinds
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        tasks = {t for t, _ in items}
        if len(tasks) != 1:
            raise ValueError(f"a batch must hold one task, got {sorted(tasks)}")
        task = tasks.pop()
        batch = COLLATE[self.kinds[task]](task, [f for _, f in items], self.pad_id)
        return batch.to_dict()
