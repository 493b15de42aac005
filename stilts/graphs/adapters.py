"""LoRA adapters (peft): merge one into its base checkpoint, so the exported contract is unchanged.

An adapter directory holds what peft saves (``adapter_config.json``, ``adapter_model.safetensors``)
plus ``stilts-adapter.json``: the name and training record the merged model is exported with.
``stilts train --adapter lora`` writes one; ``stilts export --checkpoint BASE --adapter DIR`` and
``stilts models install default-bitext`` rebuild a model from base + adapter with
:func:`merge_loaded` (the one merge implementation; :func:`stilts.graphs.export.export_checkpoint` merges
in memory, :func:`merge_adapter` writes the merged checkpoint a training run keeps). Part of the export path: imports torch and
peft inside functions only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.graphs.checkpoint import drop_layers_above, load_checkpoint
from stilts.manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest, sha256_file

LOG = logging.getLogger(__name__)

ADAPTER_RECORD = "stilts-adapter.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def check_adapter_dir(adapter: str | os.PathLike) -> Path:
    """The adapter directory, checked to hold a peft adapter.

    Raises:
        StiltsError: NOT_FOUND naming the missing file.
    """
    path = Path(adapter)
    if not (path / PEFT_CONFIG).is_file():
        raise StiltsError(
            ErrorCode.NOT_FOUND, f"{path}: not an adapter directory (no {PEFT_CONFIG})", "adapter"
        )
    return path


def read_record(adapter: str | os.PathLike) -> dict[str, Any]:
    """The adapter's ``stilts-adapter.json`` ({} when it has none)."""
    path = Path(adapter) / ADAPTER_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_record(adapter: str | os.PathLike, record: dict[str, Any]) -> None:
    (Path(adapter) / ADAPTER_RECORD).write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def merged_manifest(checkpoint: str | os.PathLike, adapter: str | os.PathLike) -> Manifest | None:
    """How the merged model is used: the adapter record's ``manifest`` (saved by the training run:
    pooling, layer, prefixes, name, training record), else the base checkpoint's own with the
    record's name and training; None when neither has one (export then uses its defaults)."""
    record = read_record(adapter)
    if record.get("manifest"):
        manifest = Manifest.from_dict(record["manifest"])
    elif (Path(checkpoint) / MANIFEST_NAME).is_file():
        manifest = Manifest.load(checkpoint)
        manifest.name = record.get("name") or manifest.name
        manifest.training = record.get("training", manifest.training)
    else:
        return None
    manifest.files, manifest.parity = {}, {}
    weights = Path(adapter) / PEFT_WEIGHTS
    manifest.source = {
        **manifest.source,
        "adapter": {
            **record.get("adapter", {}),
            "sha256": sha256_file(weights) if weights.is_file() else None,
        },
    }
    return manifest


def merge_loaded(base, checkpoint: str | os.PathLike, adapter: str | os.PathLike):
    """Merge LoRA ``adapter`` into ``base`` (the model loaded from ``checkpoint``) in memory.

    Returns:
        (the merged model, :func:`merged_manifest` of checkpoint + adapter or None).

    Raises:
        StiltsError: NOT_FOUND for a missing adapter, FAILED_PRECONDITION when it does not fit.
    """
    from peft import PeftModel

    adapter = check_adapter_dir(adapter)
    manifest = merged_manifest(checkpoint, adapter)
    if manifest is not None and manifest.layer is not None:
        # an adapter trained on the layers up to the pooled one (``stilts train --layer L``)
        # has no weights above it: those layers are dropped before the merge, not after
        drop_layers_above(base, manifest.layer)
    try:
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"adapter {adapter} does not fit checkpoint {checkpoint}: {e}",
            "adapter",
        ) from e
    LOG.info("merged adapter %s into %s", adapter, checkpoint)
    return merged.eval(), manifest


def merge_adapter(
    checkpoint: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike
) -> Path:
    """Write ``checkpoint`` + LoRA ``adapter`` merged into plain weights at ``out_dir``.

    The merged checkpoint keeps the base's tokenizer and ``stilts.json`` (pooling, layer,
    prefixes), with the name and training record of the adapter's ``stilts-adapter.json``.

    Raises:
        StiltsError: NOT_FOUND for a missing checkpoint or adapter, FAILED_PRECONDITION when the
            adapter does not fit the checkpoint.
    """
    adapter = check_adapter_dir(adapter)
    base, tok_file = load_checkpoint(checkpoint)
    merged, manifest = merge_loaded(base, checkpoint, adapter)
    out = Path(out_dir)
    with atomic_directory(out) as work:
        merged.save_pretrained(str(work))
        shutil.copyfile(tok_file, work / TOKENIZER_NAME)
        if manifest is not None:
            manifest.save(work)
    LOG.info("wrote the merged checkpoint %s", out)
    return out
