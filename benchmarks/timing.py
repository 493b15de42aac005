"""Timing helpers: medians of repeats, systems interleaved so machine noise hits all of them."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    systems: dict[str, Callable[[], object]], repeats: int = 3
) -> dict[str, dict]:
    """Run each system once per round, ``repeats`` rounds; return per system the median seconds.

    Interleaving (a, b, c, a, b, c, ...) rather than (a, a, a, b, b, b) spreads the machine's noise
    over all systems, so the ratios between them are what the report trusts.
    """
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {
        name: {"median_seconds": statistics.median(ts), "seconds": ts} for name, ts in times.items()
    }


def round_ratio(slow: dict, fast: dict) -> float:
    """Median over rounds of ``slow`` seconds / ``fast`` seconds (> 1: ``fast`` is faster).

    Both dicts come from one :func:`interleaved_medians` call, so round i of each ran back to
    back; the per-round ratio cancels slow drifts of the machine better than a ratio of medians.
    """
    ratios = [a / b for a, b in zip(slow["seconds"], fast["seconds"], strict=True) if b > 0]
    return statistics.median(ratios) if ratios else float("nan")


def percentiles(latencies: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., ...}`` of a list of latencies (nearest-rank on the sorted values).

    The project's one percentile definition: every reported p50 / p95 / p99 is a latency that
    was observed (no interpolation between two of them).
    """
    if not latencies:
        return {f"p{q:g}": float("nan") for q in qs}
    xs = sorted(latencies)
    out = {}
    for q in qs:
        rank = max(1, math.ceil(q / 100 * len(xs)))
        out[f"p{q:g}"] = xs[rank - 1]
    return out


def latency_ms(latencies: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 (:func:`percentiles`), mean and max of latencies in seconds, as ms
    (``{}`` when there are none)."""
    if not latencies:
        return {}
    out = {k: v * 1000 for k, v in percentiles(latencies).items()}
    out["mean"] = statistics.fmean(latencies) * 1000
    out["max"] = max(latencies) * 1000
    return out
