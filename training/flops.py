"""The arithmetic floor of a training step: its FLOPs over the machine's measured GEMM rate.

A step's FLOPs are counted from the encoder's shape and the tokens its batches are padded to
(Kaplan et al. 2020, appendix: 2 FLOPs per multiply-accumulate; the backward pass costs the
forward once for the activations' gradients and once more for the weights' gradients, which a
frozen base with LoRA skips). The GEMM rate is timed with ``torch.matmul`` on square matrices
of the step's dtype. ``seconds per step / floor`` says how much of a step is overhead (small
matrices, attention softmax, layer norms, the optimizer, Python) rather than arithmetic.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable
from typing import Any

LOG = logging.getLogger(__name__)


def flops_per_token(config: Any, layers: int | None = None, seq_len: int = 32) -> float:
    """Forward FLOPs per token of a BERT/XLM-R encoder up to ``layers`` (default: all): the
    Q/K/V/output projections, the feed-forward pair, and attention scores and context over a
    sequence of ``seq_len`` tokens."""
    d = config.hidden_size
    ffn = config.intermediate_size
    n = config.num_hidden_layers if layers is None else layers
    matmul_params = 4 * d * d + 2 * d * ffn
    attention = 2 * seq_len * d  # QK^T and AV: seq_len * d multiply-adds each
    return float(n * (2 * matmul_params + 2 * attention))


def step_flops(
    config: Any, padded: Iterable[tuple[int, int]], layers: int | None = None, full: bool = False
) -> float:
    """FLOPs of one step whose forward passes are ``(sequences, padded length)`` blocks.

    Args:
        config: the encoder's transformers config.
        padded: per forward block, its number of sequences and the length they are padded to.
        layers: encoder layers run (default: all).
        full: every weight gets a gradient (3x the forward); else a frozen base with LoRA
            (2x: activations' gradients only; the adapters' own FLOPs are < 1% at rank 8).
    """
    forward = sum(n * t * flops_per_token(config, layers, t) for n, t in padded)
    return forward * (3.0 if full else 2.0)


def gemm_rate(bf16: bool, size: int = 1024, repeats: int = 7) -> float:
    """Measured FLOP/s of ``torch.matmul`` on ``size`` x ``size`` matrices (the median of
    ``repeats`` timings of 8 products each), in bf16 or fp32, with torch's current threads."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: oneDNN picks its kernel on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(8):
            torch.matmul(a, b)
        times.append((time.perf_counter() - start) / 8)
    return 2.0 * size**3 / statistics.median(times)


def bitext_padded_blocks(
    batches: Iterable[list[int]], lengths: Any, passes: int = 1
) -> list[list[tuple[int, int]]]:
    """Per bitext batch (indices into ``lengths``, the longer side of each pair), its forward
    blocks: one block of 2 x batch sequences padded to the longest side (``passes`` 1: both
    sides in one pass), or two blocks of batch sequences (``passes`` 2)."""
    out = []
    for batch in batches:
        longest = int(max(lengths[i] for i in batch))
        if passes == 1:
            out.append([(2 * len(batch), longest)])
        else:
            out.append([(len(batch), longest), (len(batch), longest)])
    return out


def floor_report(
    config: Any,
    blocks: list[list[tuple[int, int]]],
    seconds_per_step: float,
    bf16: bool,
    layers: int | None = None,
    full: bool = False,
) -> dict[str, float]:
    """Mean FLOPs per step over ``blocks`` (from :func:`bitext_padded_blocks`), the GEMM rate
    measured now, the floor they give and how far ``seconds_per_step`` is above it."""
    flops = statistics.fmean(step_flops(config, b, layers, full) for b in blocks)
    rate = gemm_rate(bf16)
    floor = flops / rate
    report = {
        "gflops_per_step": round(flops / 1e9, 4),
        "gemm_gflops": round(rate / 1e9, 1),
        "floor_seconds_per_step": round(floor, 6),
        "seconds_per_step": round(seconds_per_step, 4),
        "times_floor": round(seconds_per_step / floor, 2),
    }
    LOG.info("step floor: %s", report)
    return report
