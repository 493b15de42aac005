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


def precision_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    help: str = "which route runs the model: q4, int8, fp32 (onnxruntime), ov-f32, ov-bf16 "
    "(OpenVINO); auto: the fastest route passing the parity gate, measured on this CPU and "
    "recorded in $STILTS_HOME/cpu-routes (fp32 on a GPU)",
    *,
    default: str = "auto",
    extra_choices: tuple[str, ...] = (),
) -> argparse.Action:
    """Add the one ``--precision`` flag (``STILTS_PRECISION``) that every encoding command takes."""
    from stilts.encoding.encoder import PRECISION_CHOICES

    return env_flag(
        parser,
        "--precision",
        env="STILTS_PRECISION",
        default=default,
        choices=[*extra_choices, *PRECISION_CHOICES],
        help=help,
    )


def setup_logging(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("stilts").setLevel(level if verbose >= 0 else logging.WARNING)


def leave_for_exit(obj: Any) -> None:
    """Let the operating system reclaim ``obj`` when the process ends, instead of Python freeing
    it piece by piece at shutdown.

    For the ``stilts`` process only (never a library caller): freeing a loaded encoder at exit
    costs about 0.7 s, most of it the tokenizer's 250,000-piece trie, node by node. ``obj`` is put
    in a reference cycle that nothing else reaches and the collector is frozen, so neither the
    clearing of modules nor the final collection frees it; the OS takes the whole address space
    back at once. Output is flushed and exit handlers run as usual.
    """
    import gc

    cycle: list[Any] = [obj]
    cycle.append(cycle)
    del cycle
    gc.freeze()
