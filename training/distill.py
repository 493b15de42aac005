"""Distillation for the bitext task: the student's sentence vectors pulled towards a teacher's.

A shallower encoder (issue 28: the first L layers of the default, pooled at L) starts far from the
12-layer default's vectors; ``stilts train --distill default`` adds, to the translation-ranking loss,
the squared distance between each student vector and the teacher's vector of the same sentence
(both L2-normalised, so it is 2 - 2 cos). The teacher runs without gradients in the same batch, on
the same token ids: it must share the student's tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError

LOG = logging.getLogger(__name__)

DEFAULT_TEACHER = "default"


def teacher_source(spec: str) -> tuple[str, Path | None]:
    """(checkpoint, adapter or None) of a teacher: ``default`` is the tuned default (the default
    encoder's checkpoint with the shipped adapter merged, when that adapter serves ``default``),
    anything else a checkpoint directory as ``--model`` takes it."""
    from stilts.training.model import resolve_model

    if spec == DEFAULT_TEACHER:
        from stilts.sources.tuned_model import SHIPPED_ADAPTER, serves_default

        return resolve_model("default"), SHIPPED_ADAPTER if serves_default() else None
    return resolve_model(spec), None


def load_teacher(spec: str, vocab_size: int):
    """The teacher as a frozen :class:`~stilts.training.model.MultiTaskModel` without heads,
    pooling as its manifest says, its layers above the pooled one dropped.

    Raises:
        StiltsError: NOT_FOUND for a missing checkpoint, FAILED_PRECONDITION when its vocabulary
            differs from the student's (the two read the same token ids).
    """
    from stilts.graphs.adapters import merge_loaded
    from stilts.graphs.checkpoint import drop_layers_above
    from stilts.manifest import MANIFEST_NAME, Manifest
    from stilts.training.model import MultiTaskModel, load_encoder

    checkpoint, adapter = teacher_source(spec)
    encoder = load_encoder(checkpoint)
    manifest = Manifest.load(checkpoint) if (Path(checkpoint) / MANIFEST_NAME).is_file() else None
    if adapter is not None:
        encoder, merged = merge_loaded(encoder, checkpoint, adapter)
        manifest = merged or manifest
    if encoder.config.vocab_size != vocab_size:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"the teacher {spec!r} has {encoder.config.vocab_size} token ids, the student "
            f"{vocab_size}: a teacher must share the student's tokenizer",
            field="distill",
        )
    teacher = MultiTaskModel(
        encoder,
        {},
        layer=manifest.layer if manifest else None,
        pooling=manifest.pooling if manifest else "mean",
    )
    drop_layers_above(encoder, teacher.layer)
    for p in teacher.parameters():
        p.requires_grad_(False)
    LOG.info(
        "distilling from %s%s: layer %d, %s pooling",
        checkpoint,
        f" + {adapter}" if adapter else "",
        teacher.layer,
        teacher.pooling,
    )
    return teacher.eval()
