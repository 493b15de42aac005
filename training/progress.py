"""Progress of a run: steps per second, the time left, the last dev metric.

The rate counts only the steps this process ran (a resumed run does not count the steps of the
interrupted one as instant), so the ETA holds from the first logged step on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

# Dev metrics shown as the run's headline, in order of preference.
_HEADLINE = ("accuracy", "f1", "exact_match")


def format_eta(seconds: float | None) -> str:
    """``H:MM:SS``, or ``?`` while unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def headline(tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """One dev metric per task (accuracy, else F1, else exact match) from an evaluation's
    ``tasks`` record: ``{"bitext accuracy": 0.81}``."""
    out = {}
    for task, res in tasks.items():
        for key in _HEADLINE:
            if key in res:
                out[f"{task} {key}"] = round(float(res[key]), 4)
                break
    return out


def progress_fields(
    step: int, max_steps: int, steps_done: int, seconds: float, dev: Mapping[str, float] | None
) -> dict[str, Any]:
    """``steps_per_second``, ``eta`` (H:MM:SS) and ``dev`` (the last headline metrics) after
    ``steps_done`` steps in ``seconds`` of this process, at ``step`` of ``max_steps``."""
    rate = steps_done / seconds if steps_done > 0 and seconds > 0 else None
    left = max(max_steps - step, 0)
    return {
        "step": step,
        "max_steps": max_steps,
        "steps_per_second": round(rate, 4) if rate else None,
        "eta": format_eta(left / rate if rate else (0.0 if left == 0 else None)),
        "dev": dict(dev) if dev else None,
    }


def describe(fields: Mapping[str, Any]) -> str:
    """A short line: ``0.42 steps/s, ETA 1:02:03, dev bitext accuracy=0.81``."""
    rate = fields["steps_per_second"]
    parts = [f"{rate:.3g} steps/s" if rate else "? steps/s", f"ETA {fields['eta']}"]
    dev = fields.get("dev")
    parts.append(
        "dev " + " ".join(f"{k.replace(' ', ':')}={v:.4g}" for k, v in dev.items())
        if dev
        else "dev -"
    )
    return ", ".join(parts)


class Tracker:
    """Counts this process's steps and time; remembers the last dev headline.

    Args:
        clock: seconds (monotonic).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.t0: float | None = None
        self.step0 = 0
        self.dev: dict[str, float] | None = None

    def start(self, step: int) -> None:
        self.t0 = self.clock()
        self.step0 = step

    def fields(self, step: int, max_steps: int) -> dict[str, Any]:
        seconds = self.clock() - self.t0 if self.t0 is not None else 0.0
        return progress_fields(step, max_steps, step - self.step0, seconds, self.dev)
