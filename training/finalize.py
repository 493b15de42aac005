"""After training: the encoder alone as a transformers checkpoint, then exported into the contract.

``OUTPUT/checkpoint`` holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and a
``stilts.json`` carrying the starting model's pooling, layer and prefixes (for a raw MLM checkpoint
such as XLM-R: mean pooling of the paper's middle layer, 14 of 24 scaled), so ``stilts export
--checkpoint OUTPUT/checkpoint`` (:func:`stilts.graphs.export.export_checkpoint`, which the trainer calls)
reproduces ``OUTPUT/model`` exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from stilts.fsutil import atomic_directory
from stilts.manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest

LOG = logging.getLogger(__name__)


def base_manifest(model: str | os.PathLike, num_layers: int, hidden: int) -> Manifest:
    """How the starting model is used as a sentence encoder.

    Its own ``stilts.json`` when it has one (the default encoder: mean pooling of its last layer,
    its prefixes); otherwise the paper's choice for a raw MLM checkpoint: mean pooling of the middle
    layer (:func:`stilts.graphs.export.default_layer`), no prefixes.
    """
    from stilts.graphs.export import default_layer

    path = Path(model)
    if (path / MANIFEST_NAME).is_file():
        m = Manifest.load(path)
        m.files, m.parity, m.training = {}, {}, None
        return m
    return Manifest(
        name=path.name or str(model),
        dim=hidden,
        max_len=512,
        pooling="mean",
        layer=default_layer(num_layers),
        num_layers=num_layers,
        prefixes={"query": "", "passage": "", "bitext": ""},
        source={"model": str(model)},
    )


def save_checkpoint(
    model, tokenizer_json: str | os.PathLike, out_dir: str | os.PathLike, manifest: Manifest
) -> Path:
    """Write the encoder (no heads), its tokenizer and ``stilts.json`` to ``out_dir`` atomically.

    Args:
        model: the :class:`~stilts.training.model.MultiTaskModel` (its ``encoder`` is saved).
        tokenizer_json: the tokenizer used in training.
        out_dir: checkpoint directory (replaced).
        manifest: pooling / layer / prefixes / training record for the export.
    """
    out = Path(out_dir)
    with atomic_directory(out) as work:
        model.save_encoder(work)
        shutil.copyfile(tokenizer_json, work / TOKENIZER_NAME)
        manifest.save(work)
    LOG.info("saved the encoder checkpoint to %s", out)
    return out
