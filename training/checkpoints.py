"""Trainer checkpoints that are complete or ignored, and checkpoints by wall-clock time.

``transformers.Trainer`` writes ``checkpoint-N`` in place, file by file: a run killed during a save
leaves a directory that looks like a checkpoint but lacks the optimizer or the trainer state. Here a
checkpoint counts only once a marker file (:data:`COMPLETE`) has been written into it, after every
other file; ``--resume`` picks the newest complete checkpoint, incomplete ones are removed, and
rotation (``--save-total-limit``) deletes old checkpoints only after the new one is complete.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from stilts.fsutil import atomic_write_text

LOG = logging.getLogger(__name__)

COMPLETE = "stilts-complete"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-N`` directory, else None."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m and Path(path).is_dir() else None


def is_complete(path: Path) -> bool:
    """Whether every file of the checkpoint was written (its marker exists)."""
    return (Path(path) / COMPLETE).is_file()


def mark_complete(path: Path) -> None:
    """Write the marker: the last file of a save."""
    atomic_write_text(Path(path) / COMPLETE, "complete\n")


def checkpoints(trainer_dir: Path) -> list[tuple[int, Path, bool]]:
    """``(step, path, complete)`` of every ``checkpoint-N`` directory, by step."""
    if not Path(trainer_dir).is_dir():
        return []
    found = []
    for p in Path(trainer_dir).iterdir():
        step = checkpoint_step(p)
        if step is not None:
            found.append((step, p, is_complete(p)))
    return sorted(found)


def last_complete(trainer_dir: Path) -> Path | None:
    """The newest complete checkpoint (incomplete ones are skipped), or None."""
    done = [p for _, p, ok in checkpoints(trainer_dir) if ok]
    return done[-1] if done else None


def remove(path: Path) -> None:
    """Delete a checkpoint, its marker first (a delete cut short leaves an incomplete one)."""
    (Path(path) / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(trainer_dir: Path, keep: Path | None = None) -> list[Path]:
    """Delete the incomplete checkpoints (left by a run killed during a save) but ``keep``."""
    gone = []
    for _, p, ok in checkpoints(trainer_dir):
        if not ok and (keep is None or p.resolve() != Path(keep).resolve()):
            LOG.warning("removing %s: incomplete (the run stopped while saving it)", p)
            remove(p)
            gone.append(p)
    return gone


def rotate(trainer_dir: Path, limit: int | None, current: Path) -> list[Path]:
    """Keep the newest ``limit`` complete checkpoints (always ``current``); delete the others and
    every incomplete one. ``limit`` None keeps all complete ones."""
    gone = remove_incomplete(trainer_dir, keep=current)
    if not limit:
        return gone
    done = [p for _, p, ok in checkpoints(trainer_dir) if ok]
    current = Path(current).resolve()
    keep = {p.resolve() for p in done[-limit:]} | {current}
    for p in done:
        if p.resolve() not in keep:
            remove(p)
            gone.append(p)
    return gone


def save_timer_callback(minutes: float, clock: Callable[[], float] = time.monotonic):
    """A ``TrainerCallback`` that asks for a checkpoint once ``minutes`` of wall-clock time have
    passed since the run (re)started or since the last save (of any kind)."""
    from transformers import TrainerCallback

    class SaveEveryMinutes(TrainerCallback):
        def __init__(self):
            self.seconds = minutes * 60.0
            self.last = clock()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = clock()

        def on_step_end(self, args, state, control, **kwargs):
            if clock() - self.last >= self.seconds:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = clock()

    return SaveEveryMinutes()
