"""Timing helpers: medians of repeats, systems interleaved so machine noise hits all of them."""

from __future__ import annotations

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
