"""Multi-task batch sampling: every batch comes from one task, tasks drawn by a fixed law.

Strategies (jiant's multi-task samplers), on task sizes capped at ``cap`` examples:

- ``proportional``: p(task) ~ min(n, cap)
- ``uniform``: p(task) = 1 / tasks
- ``temperature:T``: p(task) ~ min(n, cap) ** (1 / T) (T = 1 is proportional, T -> inf uniform)

Within a bitext task, languages can be drawn by the same law (``language_sampling``): one pass
over a task of N pairs draws about ``N * p(language)`` pairs of each language, a language's pairs
repeated when it has fewer (temperature upsampling of small languages, as XLM-R's pre-training
and LASER do) and a random subset when it has more.

One epoch is ``sum(ceil(min(n, cap) / batch_size))`` batches. The order is a pure function of
``(seed, epoch)``, so ``transformers.Trainer`` can skip the batches already seen when it resumes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stilts.errors import ErrorCode, StiltsError

STRATEGIES = ("proportional", "uniform", "temperature:T")


def parse_sampling(spec: str) -> tuple[str, float]:
    """``proportional`` | ``uniform`` | ``temperature:T`` -> (name, temperature)."""
    name, _, value = spec.partition(":")
    if name == "proportional" and not value:
        return name, 1.0
    if name == "uniform" and not value:
        return name, math.inf
    if name == "temperature":
        try:
            t = float(value)
        except ValueError:
            t = -1.0
        if t > 0:
            return name, t
    raise StiltsError(
        ErrorCode.INVALID_ARGUMENT,
        f"sampling must be proportional, uniform or temperature:T with T > 0, got {spec!r}",
        field="sampling",
    )


def task_probabilities(
    sizes: Mapping[str, int], strategy: str = "proportional", cap: int | None = None
) -> dict[str, float]:
    """Probability of drawing each task's batch (see the module docstring); also each language's
    share of a bitext task (``sizes``: pairs per language)."""
    if cap is not None and cap < 1:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "sampling cap must be >= 1", "sampling_cap")
    _, temperature = parse_sampling(strategy)
    empty = [t for t, n in sizes.items() if n < 1]
    if empty:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"no training examples for {', '.join(empty)}",
            field="tasks",
        )
    capped = {t: float(min(n, cap) if cap else n) for t, n in sizes.items()}
    if math.isinf(temperature):
        weights = {t: 1.0 for t in capped}
    else:
        weights = {t: n ** (1.0 / temperature) for t, n in capped.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def language_pass(
    rng: np.random.Generator, groups: Mapping[str, np.ndarray], draws: Mapping[str, int]
) -> np.ndarray:
    """One pass: ``draws[lang]`` indices of each language (whole shuffled copies of its
    ``groups[lang]``, then a random subset), in random order."""
    parts = []
    for lang, idx in groups.items():
        whole, rest = divmod(draws[lang], len(idx))
        parts.extend(rng.permutation(idx) for _ in range(whole))
        parts.append(rng.choice(idx, size=rest, replace=False))
    return rng.permutation(np.concatenate(parts))


def language_draws(
    langs: Sequence[str], strategy: str
) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
    """Per language, its examples' indices and how many to draw in one pass of ``len(langs)``;
    None when ``strategy`` is proportional (a plain permutation does that)."""
    if parse_sampling(strategy)[0] == "proportional":
        return None
    codes, inverse = np.unique(np.asarray(langs, dtype=object).astype(str), return_inverse=True)
    groups = {str(c): np.flatnonzero(inverse == i) for i, c in enumerate(codes)}
    probs = task_probabilities({c: len(i) for c, i in groups.items()}, strategy)
    draws = {c: max(1, round(p * len(langs))) for c, p in probs.items()}
    return groups, draws


def epoch_batches(sizes: Mapping[str, int], batch_size: int, cap: int | None = None) -> int:
    """Batches in one epoch: every task's (capped) examples once."""
    return sum(math.ceil((min(n, cap) if cap else n) / batch_size) for n in sizes.values())


class MultiTaskDataset(torch.utils.data.Dataset):
    """All tasks' features behind one index: item ``i`` is ``(task name, feature)``.

    Args:
        features: task name -> its features (insertion order fixes the global index).
    """

    def __init__(self, features: Mapping[str, Sequence[Any]]):
        self.names = list(features)
        self.features = [features[n] for n in self.names]
        self.offsets = np.cumsum([0] + [len(f) for f in self.features]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> tuple[str, Any]:
        t = bisect.bisect_right(self.offsets, i) - 1
        return self.names[t], self.features[t][i - self.offsets[t]]

    @property
    def sizes(self) -> dict[str, int]:
        return {n: len(f) for n, f in zip(self.names, self.features, strict=True)}


class MultiTaskBatchSampler(torch.utils.data.Sampler):
    """Yields lists of global indices into a :class:`MultiTaskDataset`, one task per batch.

    Within a task, examples are visited in a fresh random order per pass; every batch is full
    (a task smaller than a batch repeats examples), which keeps batches equal-sized across
    processes under ``torchrun``.

    Args:
        sizes: task name -> number of features, in the dataset's order.
        batch_size: examples per batch.
        probabilities: task name -> probability of a batch of that task.
        num_batches: batches per epoch.
        seed: random seed; the order depends only on ``(seed, epoch)``.
        keys: task name -> per feature, the keys of its texts (bitext: source and target); a
            batch of such a task never holds one key twice: a clashing example waits for a later
            batch.
        lengths: task name -> per feature, its length in tokens; with ``group`` > 1, such a
            task's examples are taken in pools of ``group`` batches, each pool sorted by length,
            cut into batches and the batches shuffled, so a batch holds similar lengths and is
            padded little (bucketing, as fairseq / tensor2tensor do).
        group: batches per length pool (0 or 1: no grouping).
        languages: task name -> per feature, its language; with ``language_sampling`` other
            than proportional, each pass over such a task draws languages by that law
            (:func:`language_pass`).
        language_sampling: ``proportional``, ``uniform`` or ``temperature:T``.
    """

    drop_last = False

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int,
        probabilities: Mapping[str, float],
        num_batches: int,
        seed: int = 0,
        keys: Mapping[str, Sequence[tuple[int, ...]]] | None = None,
        lengths: Mapping[str, Sequence[int]] | None = None,
        group: int = 0,
        languages: Mapping[str, Sequence[str]] | None = None,
        language_sampling: str = "proportional",
    ):
        if batch_size < 1:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "batch size must be >= 1", "batch_size")
        self.keys = {name: list(k) for name, k in (keys or {}).items()}
        self.lengths = {n: np.asarray(v, dtype=np.int64) for n, v in (lengths or {}).items()}
        self.group = int(group)
        self.language_draws = {
            name: draws
            for name, langs in (languages or {}).items()
            if (draws := language_draws(langs, language_sampling)) is not None
        }
        self.names = list(sizes)
        self.sizes = [int(sizes[n]) for n in self.names]
        self.offsets = np.cumsum([0] + self.sizes)[:-1].tolist()
        self.p = np.array([probabilities[n] for n in self.names], dtype=np.float64)
        self.p /= self.p.sum()
        self.batch_size = batch_size
        self.num_batches = int(num_batches)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def task_sequence(self) -> np.ndarray:
        """Task index of each batch of the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        return rng.choice(len(self.names), size=self.num_batches, p=self.p)

    def _stream(self, t: int) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, t + 1])
        lengths = self.lengths.get(self.names[t])
        by_language = self.language_draws.get(self.names[t])
        bs = self.batch_size
        while True:
            if by_language is None:
                order = rng.permutation(self.sizes[t])
            else:
                order = language_pass(rng, *by_language)
            if lengths is None or self.group <= 1:
                yield from order.tolist()
                continue
            pool = self.group * bs
            for start in range(0, len(order), pool):
                chunk = order[start : start + pool]
                chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
                for j in rng.permutation(math.ceil(len(chunk) / bs)).tolist():
                    yield from chunk[j * bs : (j + 1) * bs].tolist()

    def _distinct_batch(self, stream: Iterator[int], waiting: list[int], keys) -> list[int]:
        """``batch_size`` examples sharing no key: first those that waited, then the stream."""
        batch: list[int] = []
        seen: set[int] = set()
        kept: list[int] = []
        # bounded: a task whose texts cannot fill a batch without a repeat is an error
        budget = 2 * (len(keys) + self.batch_size)
        candidates = iter(waiting)
        while len(batch) < self.batch_size:
            i = next(candidates, None)
            if i is None:
                if budget <= 0:
                    raise StiltsError(
                        ErrorCode.FAILED_PRECONDITION,
                        f"cannot fill a batch of {self.batch_size} pairs without repeating a "
                        "text; use a smaller --batch-size or more pairs",
                        field="batch_size",
                    )
                budget -= 1
                i = next(stream)
            k = keys[i]
            if seen.isdisjoint(k):
                batch.append(i)
                seen.update(k)
            else:
                kept.append(i)
        kept.extend(candidates)
        waiting[:] = kept
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        streams = [self._stream(t) for t in range(len(self.names))]
        waiting: list[list[int]] = [[] for _ in self.names]
        for t in self.task_sequence():
            off = self.offsets[t]
            s = streams[t]
            keys = self.keys.get(self.names[t])
            if keys is None:
                yield [off + next(s) for _ in range(self.batch_size)]
            else:
                yield [off + i for i in self._distinct_batch(s, waiting[t], keys)]
