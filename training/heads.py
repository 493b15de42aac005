"""Task heads on top of the shared encoder's last hidden layer (as jiant does for RoBERTa/XLM-R).

Every head maps ``(hidden states, attention mask, labels...)`` to ``(loss, logits)``; the loss is
None when no labels are given.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from stilts.training.examples import IGNORE_INDEX
from stilts.training.tasks import BITEXT, CLASSIFICATION, MULTIPLE_CHOICE, SPAN, TAGGING


class _Pooler(nn.Module):
    """First-token pooling with dense + tanh (RoBERTa's classification head)."""

    def __init__(self, hidden: int, dropout: float, out: int):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, out)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = torch.tanh(self.dense(x))
        return self.out(self.dropout(x))


class ClassificationHead(nn.Module):
    """Sentence(-pair) classification: logits (batch, labels), cross-entropy loss."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.pool = _Pooler(hidden, dropout, num_labels)

    def forward(self, hidden_states, attention_mask, labels=None):
        logits = self.pool(hidden_states)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return loss, logits


class SpanHead(nn.Module):
    """Extractive QA: start and end logits per token, logits (batch, length, 2).

    Padding positions get a large negative logit; the loss is the mean of the start and end
    cross-entropies.
    """

    def __init__(self, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.qa = nn.Linear(hidden, 2)

    def forward(self, hidden_states, attention_mask, start_positions=None, end_positions=None):
        logits = self.qa(self.dropout(hidden_states))
        logits = logits.masked_fill(attention_mask.unsqueeze(-1) == 0, -1e4)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (
                F.cross_entropy(logits[..., 0], start_positions)
                + F.cross_entropy(logits[..., 1], end_positions)
            ) / 2
        return loss, logits


class MultipleChoiceHead(nn.Module):
    """Multiple choice: one score per (context, choice) sequence; logits (batch, choices)."""

    def __init__(self, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.pool = _Pooler(hidden, dropout, 1)

    def forward(self, hidden_states, attention_mask, labels=None, num_choices: int = 1):
        logits = self.pool(hidden_states).view(-1, num_choices)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return loss, logits


class TaggingHead(nn.Module):
    """Token tagging: logits (batch, length, tags), loss on labelled tokens only."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, hidden_states, attention_mask, labels=None):
        logits = self.out(self.dropout(hidden_states))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return loss, logits


BITEXT_SCALE = 20.0
BITEXT_MARGIN = 0.2


# a queued vector this close to the pair's own (cosine) is the same text: not a negative
QUEUE_SAME_TEXT = 0.98


def bitext_ranking_loss(
    source: torch.Tensor,
    target: torch.Tensor,
    scale: float,
    margin: float,
    queued_source: torch.Tensor | None = None,
    queued_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation ranking with in-batch negatives and an additive margin (LaBSE-style).

    Pair ``i`` is ``(source[i], target[i])``; every other target (source) of the batch is a
    negative for ``source[i]`` (``target[i]``). With cosines ``S = source @ target.T`` the logits
    are ``scale * (S - margin * I)`` and the loss is the mean of the softmax cross-entropies of
    the rows (source -> target) and the columns (target -> source). Queued vectors of earlier
    batches (no gradient) add negatives to the rows (``queued_target``) and the columns
    (``queued_source``), except those within :data:`QUEUE_SAME_TEXT` of the pair's own vector
    on that side (the same text drawn again, e.g. one English string in another language's
    pair).

    Args:
        source / target: (batch, dim) L2-normalised sentence vectors.
        scale: multiplies the cosines (inverse temperature).
        margin: subtracted from the positive pair's cosine.
        queued_source / queued_target: (queued, dim) earlier batches' vectors, or None.

    Returns:
        (loss, cosines ``S``).
    """
    sim = source @ target.T
    n = sim.shape[0]
    logits = scale * (sim - margin * torch.eye(n, dtype=sim.dtype, device=sim.device))
    labels = torch.arange(n, device=sim.device)
    rows, cols = logits, logits.T
    if queued_target is not None and len(queued_target):
        rows = torch.cat([rows, scale * _queued(source, target, queued_target)], dim=1)
    if queued_source is not None and len(queued_source):
        cols = torch.cat([cols, scale * _queued(target, source, queued_source)], dim=1)
    loss = (F.cross_entropy(rows, labels) + F.cross_entropy(cols, labels)) / 2
    return loss, sim


def _queued(query: torch.Tensor, own: torch.Tensor, queued: torch.Tensor) -> torch.Tensor:
    """Cosines of ``query`` to the queued vectors, -inf where a queued vector is ``own``'s text."""
    queued = queued.to(query.dtype)
    same = own.detach() @ queued.T >= QUEUE_SAME_TEXT
    return (query @ queued.T).masked_fill(same, float("-inf"))


class BitextHead(nn.Module):
    """Translation ranking on the pooled, L2-normalised sentence vectors (no parameters of its
    own: it trains the representation that is exported). Logits: the (batch, batch) cosines.

    With ``queue`` > 0, training steps also rank against the last ``queue`` sources and targets
    of earlier batches (a larger effective batch at the cost of a matrix product; kept in
    memory only: a resumed run starts with an empty queue)."""

    def __init__(self, scale: float = BITEXT_SCALE, margin: float = BITEXT_MARGIN, queue: int = 0):
        super().__init__()
        self.scale = float(scale)
        self.margin = float(margin)
        self.queue = int(queue)
        self.queued_source: torch.Tensor | None = None
        self.queued_target: torch.Tensor | None = None

    def forward(self, source, target):
        if not (self.training and self.queue):
            return bitext_ranking_loss(source, target, self.scale, self.margin)
        out = bitext_ranking_loss(
            source, target, self.scale, self.margin, self.queued_source, self.queued_target
        )
        self.queued_source = self._push(self.queued_source, source)
        self.queued_target = self._push(self.queued_target, target)
        return out

    def _push(self, queued: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        new = new.detach()
        both = new if queued is None else torch.cat([new, queued])
        return both[: self.queue]


def build_head(
    kind: str,
    hidden: int,
    num_labels: int,
    dropout: float = 0.1,
    scale: float = BITEXT_SCALE,
    margin: float = BITEXT_MARGIN,
    queue: int = 0,
) -> nn.Module:
    """The head for a task kind (``scale``, ``margin`` and ``queue``: the bitext head's)."""
    if kind == CLASSIFICATION:
        return ClassificationHead(hidden, num_labels, dropout)
    if kind == SPAN:
        return SpanHead(hidden, dropout)
    if kind == MULTIPLE_CHOICE:
        return MultipleChoiceHead(hidden, dropout)
    if kind == TAGGING:
        return TaggingHead(hidden, num_labels, dropout)
    if kind == BITEXT:
        return BitextHead(scale, margin, queue)
    raise ValueError(f"unknown task kind {kind!r}")
