"""The CPU recipe's automatic choices: bf16 autocast, threads, embeddings and sequence length.

- ``--bf16 auto``: bf16 autocast where the hardware computes in bf16 natively (a GPU that supports
  it; a CPU with AMX or AVX-512 BF16, flags ``amx_bf16`` / ``avx512_bf16``), fp32 elsewhere (emulated
  bf16 is slower than fp32);
- threads: the cores this process may run on (``os.sched_getaffinity``), not the machine's;
- ``--freeze-embeddings auto``: on CPU no gradient for the word-embedding table (250k rows, ~96M of
  the base's parameters: its gradient and AdamW update dominate a CPU step); on GPU it trains;
- ``--max-seq-len auto``: from the data, the 99th percentile of the token lengths (rounded up to a
  multiple of 8, capped) for bitext-only runs; the paper's 256 otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

BF16_CHOICES = ("auto", "on", "off")
FREEZE_CHOICES = ("auto", "word", "all", "none")
AUTO = "auto"
# --max-seq-len auto: the length quantile kept whole, the cap, and the length of other tasks.
AUTO_LEN_QUANTILE = 0.99
AUTO_LEN_CAP = 128
AUTO_LEN_DEFAULT = 256


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 natively (AMX or AVX-512 BF16): the flags as the serving
    routes read them (:func:`stilts.encoding.autoroute.cpu_flags`, :func:`stilts.encoding.autoroute.native_bf16`)."""
    from stilts.encoding.autoroute import cpu_flags, native_bf16

    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return native_bf16(cpu_flags(text))


def resolve_bf16(setting: str | bool, fp16: bool = False, cuda: bool | None = None) -> bool:
    """``on`` / ``off`` as given; ``auto``: native bf16 on the device that trains (never with fp16).

    Args:
        setting: ``auto``, ``on``, ``off`` (or a bool, the old ``--bf16`` flag).
        fp16: fp16 mixed precision was asked for.
        cuda: whether training runs on a GPU (default: whether torch sees one).
    """
    if isinstance(setting, bool):
        return setting
    if setting != AUTO:
        return setting == "on"
    if fp16:
        return False
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def available_cores() -> int:
    """The cores this process may run on (its affinity mask; the machine's count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_freeze(setting: str | bool, cuda: bool | None = None) -> str:
    """``word`` (the word-embedding table), ``all`` (the embedding layer) or ``none``;
    ``auto``: ``word`` on CPU, ``none`` on GPU (a bool is the old flag: all / none)."""
    if isinstance(setting, bool):
        return "all" if setting else "none"
    if setting != AUTO:
        return setting
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "none" if cuda else "word"


def auto_max_len(
    lengths: Iterable[int], cap: int = AUTO_LEN_CAP, quantile: float = AUTO_LEN_QUANTILE
) -> int:
    """The ``quantile`` of ``lengths`` rounded up to a multiple of 8, within [16, cap]."""
    arr = np.fromiter(lengths, dtype=np.int64)
    if arr.size == 0:
        return min(cap, AUTO_LEN_DEFAULT)
    q = int(math.ceil(float(np.quantile(arr, quantile))))
    return int(min(cap, max(16, 8 * math.ceil(q / 8))))


def cut_ids(ids: np.ndarray, max_len: int) -> np.ndarray:
    """A single sequence cut as the tokenizer cuts it: the first ``max_len - 1`` tokens and the
    closing special token."""
    if len(ids) <= max_len:
        return ids
    return np.concatenate([ids[: max_len - 1], ids[-1:]])


def cut_bitext(features: Sequence, max_len: int) -> list:
    """Bitext features with both sides cut to ``max_len`` tokens."""
    return [
        dataclasses.replace(
            f, source_ids=cut_ids(f.source_ids, max_len), target_ids=cut_ids(f.target_ids, max_len)
        )
        if max(len(f.source_ids), len(f.target_ids)) > max_len
        else f
        for f in features
    ]


def bitext_lengths(features: Sequence) -> np.ndarray:
    """The longer side of each bitext pair, in tokens (what its batch is padded to)."""
    return np.fromiter(
        (max(len(f.source_ids), len(f.target_ids)) for f in features),
        dtype=np.int64,
        count=len(features),
    )
