"""Shared fixtures: the dev pack beside the project, the installed default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEV_PACK = Path(os.environ.get("STILTS_DEV_PACK", ROOT.parent / "shared" / "data" / "bitext-dev"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(message + " (CI=true: it must be there)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def dev_pack() -> Path:
    """``../shared/data/bitext-dev``: skipped where absent, a failure in CI."""
    return _need(DEV_PACK, "the dev pack (../shared/data/bitext-dev)")


def read_tatoeba(dev_pack: Path, lang: str, n: int | None = None) -> tuple[list[str], list[str]]:
    rows = [
        line.rstrip("\n").split("\t")
        for line in (dev_pack / "tatoeba" / f"{lang}-en.tsv").open(encoding="utf-8")
    ][:n]
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The installed default model (``make test`` installs it first)."""
    from stilts.models import models_dir

    return _need(
        models_dir() / "default", "the default model (run `stilts models install default`)"
    )


@pytest.fixture(scope="session")
def encoder(default_model_dir):
    from stilts import Encoder

    return Encoder(default_model_dir, precision="int8")


@pytest.fixture(scope="session")
def encoder_fp32(default_model_dir):
    from stilts import Encoder

    return Encoder(default_model_dir, precision="fp32")


def best_threshold(scored: list[tuple[float, tuple]], gold: set):
    """The F1-optimal threshold over ``(score, pair)`` candidates (stilts.benchmarks.metrics)."""
    from stilts.benchmarks.metrics import oracle_threshold

    return oracle_threshold([s for s, _ in scored], [p in gold for _, p in scored], len(gold))


def f1_of(predicted, gold: set) -> float:
    from stilts.benchmarks.metrics import prf

    return prf(predicted, gold)[2]
