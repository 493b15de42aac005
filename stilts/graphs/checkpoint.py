"""A transformers checkpoint loaded for export (torch and transformers inside functions only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import TOKENIZER_NAME


def require_torch() -> None:
    """Raise FAILED_PRECONDITION naming the train extra when torch or transformers is missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            "export needs the train extra: pip install 'stilts[train]' (torch, transformers, onnx)",
        ) from e


def load_checkpoint(checkpoint: str | os.PathLike):
    """Load a transformers encoder (no task head) and the path of its ``tokenizer.json``.

    A hub id works where a hub is reachable; on this machine only local directories do.
    """
    require_torch()
    from transformers import AutoModel, AutoTokenizer

    ckpt = str(checkpoint)
    try:
        model = AutoModel.from_pretrained(
            ckpt, attn_implementation="eager", add_pooling_layer=False
        )
    except TypeError:
        model = AutoModel.from_pretrained(ckpt, attn_implementation="eager")
    except OSError as e:
        raise StiltsError(ErrorCode.NOT_FOUND, f"cannot load checkpoint {ckpt!r}: {e}") from e
    tok_file = Path(ckpt) / TOKENIZER_NAME
    if not tok_file.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="stilts-tok-"))
        tok = AutoTokenizer.from_pretrained(ckpt)
        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
        if backend is None:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION, f"{ckpt}: needs a fast tokenizer (tokenizer.json)"
            )
        backend.save(str(tmp / TOKENIZER_NAME))
        tok_file = tmp / TOKENIZER_NAME
    return model.eval(), tok_file


def drop_layers_above(model, layer: int) -> bool:
    """Drop ``model``'s transformer layers above ``layer`` (counted from the embeddings) in place:
    they cannot change that layer's output. An encoder pooled at layer L is then an L-layer
    encoder, in the exported graph and in training (``layer`` < 0 counts from the top, -1 the last
    layer). Returns whether anything was dropped."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None:
        return False
    if layer < 0:  # counted from the top, as manifests do: -1 is the last layer
        layer = len(layers) + 1 + layer
    if layer >= len(layers):
        return False
    model.encoder.layer = model.encoder.layer[:layer]
    model.config.num_hidden_layers = layer
    return True
