"""Small helpers shared by the subcommand parsers: flags that also read ``STILTS_*`` variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any


def env_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *flags: str,
    env: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    help: str = "",
    **kwargs: Any,
) -> argparse.Action:
    """Add a flag whose default comes from the environment variable ``env`` when set.

    The help text names the variable and the default, so ``--help`` explains every option.
    """
    raw = os.environ.get(env)
    value = default
    if raw is not None:
        if kwargs.get("action") in ("store_true", "store_false"):
            value = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            value = type(raw)
    extra = f" [env: {env}; default: {default!r}]"
    if kwargs.get("action") in ("store_true", "store_false"):
        return parser.add_argument(*flags, default=value, help=help + extra, **kwargs)
    return parser.add_argument(*flags, default=value, type=type, help=help + extra, **kwargs)


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("stilts").setLevel(level if verbose >= 0 else logging.WARNING)
