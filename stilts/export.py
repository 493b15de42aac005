"""Export a transformers encoder into the stilts contract (ONNX fp32 + int8, tokenizer, manifest).

This is the only core module that needs torch (the ``train`` extra); it is imported lazily by
``stilts export``, ``stilts models install`` and ``stilts.training``.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.manifest import FP32_NAME, INT8_NAME, TOKENIZER_NAME, Manifest
from stilts.ortload import load_onnxruntime

LOG = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_DIFF = 1e-4
MIN_INT8_COSINE = 0.99

# A fixed multilingual sample for the parity checks: several scripts, lengths and an empty string.
PARITY_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "Nopea ruskea kettu hyppää laiskan koiran yli.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "Could not open file: permission denied",
    "",
]


def _require_torch():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            "export needs the train extra: pip install 'stilts[train]' (torch, transformers, onnx)",
        ) from e


def default_layer(num_layers: int) -> int:
    """The paper's choice for a raw MLM checkpoint: layer 14 of 24, scaled to other depths."""
    return max(1, round(num_layers * 14 / 24))


def pool_hidden(hidden, attention_mask, pooling: str, normalize: bool):
    """(batch, length, dim) hidden states -> (batch, dim) sentence vectors: ``mean`` over the
    attended tokens or the first (``cls``) token, L2-normalised when ``normalize``. The one
    definition of the contract's pooling (export and training both use it)."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if normalize:
        pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return pooled


class PooledEncoder:
    """Factory for a torch module: (input_ids, attention_mask) -> pooled, normalised embedding."""

    @staticmethod
    def build(model, layer: int, pooling: str, normalize: bool):
        import torch

        num_layers = model.config.num_hidden_layers
        if layer < 0:
            layer = num_layers + 1 + layer
        if not 0 <= layer <= num_layers:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"layer must be in 0..{num_layers} (0 = embedding output), got {layer}",
                "layer",
            )
        if pooling not in ("mean", "cls"):
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "pooling must be mean or cls", "pooling")

        class _Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model
                self.layer = layer

            def forward(self, input_ids, attention_mask):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=torch.zeros_like(input_ids),
                    output_hidden_states=True,
                )
                return pool_hidden(
                    out.hidden_states[self.layer], attention_mask, pooling, normalize
                )

        # Layers above the pooled one cannot change its output: drop them from the graph
        # (on a copy, so the caller's model stays whole).
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if layers is not None and layer < len(layers):
            model = copy.deepcopy(model)
            model.encoder.layer = model.encoder.layer[:layer]
            model.config.num_hidden_layers = layer
        return _Pooled().eval(), layer


def load_checkpoint(checkpoint: str | os.PathLike):
    """Load a transformers encoder (no task head) and the path of its ``tokenizer.json``.

    A hub id works where a hub is reachable; on this machine only local directories do.
    """
    _require_torch()
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


def _batch(tokenizer_file: Path, texts: list[str], max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_len)
    encs = tok.encode_batch(texts)
    pad = tok.token_to_id("<pad>") or 0
    longest = max(len(e.ids) for e in encs)
    ids = np.full((len(encs), longest), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def _session(path: Path):
    ort = load_onnxruntime()

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantisation, per-channel weights (MatMul and the embedding Gather)."""
    load_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantiser logs every node on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
        )
    finally:
        root.setLevel(level)


def export(
    model,
    tokenizer_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str,
    layer: int = -1,
    pooling: str = "mean",
    normalize: bool = True,
    prefixes: dict[str, str] | None = None,
    max_len: int = 512,
    source: dict[str, Any] | None = None,
    license: str = "unknown",
    training: dict[str, Any] | None = None,
    min_int8_cosine: float = MIN_INT8_COSINE,
) -> Manifest:
    """Export a loaded transformers encoder into a model directory, with parity checks.

    The directory is assembled in a temporary sibling and renamed into place, so a failed export
    never leaves a half-written model.

    Raises:
        StiltsError: FAILED_PRECONDITION when fp32 ONNX differs from PyTorch by more than 1e-4
            or int8 falls below ``min_int8_cosine`` mean cosine to fp32.
    """
    _require_torch()
    import torch

    out_dir = Path(out_dir)
    num_layers = model.config.num_hidden_layers
    max_len = min(max_len, getattr(model.config, "max_position_embeddings", max_len))
    if getattr(model.config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        # RoBERTa-style positions start at padding_idx + 1.
        max_len = min(max_len, model.config.max_position_embeddings - model.config.pad_token_id - 1)
    pooled, layer = PooledEncoder.build(model, layer, pooling, normalize)
    dim = model.config.hidden_size

    with atomic_directory(out_dir) as work:
        shutil.copyfile(tokenizer_file, work / TOKENIZER_NAME)
        ids, mask = _batch(work / TOKENIZER_NAME, PARITY_SAMPLE, max_len)
        with torch.no_grad():
            ref = pooled(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            LOG.info(
                "exporting %s (layer %d of %d, %s pooling) to ONNX",
                name,
                layer,
                num_layers,
                pooling,
            )
            torch.onnx.export(
                pooled,
                (torch.from_numpy(ids), torch.from_numpy(mask)),
                str(work / FP32_NAME),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        feeds = {"input_ids": ids, "attention_mask": mask}
        fp32 = _session(work / FP32_NAME).run(["embedding"], feeds)[0]
        max_diff = float(np.abs(fp32 - ref).max())
        if not max_diff < MAX_ABS_DIFF:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"parity check failed: fp32 ONNX differs from PyTorch by {max_diff:.2e} "
                f"(limit {MAX_ABS_DIFF:.0e})",
            )
        LOG.info("quantizing to int8")
        quantize_int8(work / FP32_NAME, work / INT8_NAME)
        int8 = _session(work / INT8_NAME).run(["embedding"], feeds)[0]
        cos = np.sum(int8 * fp32, 1) / (
            np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1) + 1e-12
        )
        if not float(cos.mean()) >= min_int8_cosine:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"parity check failed: int8 vs fp32 mean cosine {cos.mean():.4f} "
                f"< {min_int8_cosine} on the parity sample",
            )
        manifest = Manifest(
            name=name,
            dim=dim,
            max_len=int(max_len),
            pooling=pooling,
            layer=layer,
            num_layers=num_layers,
            normalize=normalize,
            prefixes={"query": "", "passage": "", "bitext": "", **(prefixes or {})},
            source=source or {},
            license=license,
            parity={
                "fp32_vs_torch_max_abs_diff": max_diff,
                "int8_vs_fp32_cosine_mean": float(cos.mean()),
                "int8_vs_fp32_cosine_min": float(cos.min()),
                "sample_size": len(PARITY_SAMPLE),
            },
            training=training,
        )
        manifest.record_files(work)
        manifest.save(work)
    LOG.info(
        "exported %s: fp32 max diff %.1e, int8 cosine mean %.4f min %.4f",
        out_dir,
        max_diff,
        cos.mean(),
        cos.min(),
    )
    return manifest


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layer: int | None = None,
    pooling: str | None = None,
    prefixes: dict[str, str] | None = None,
    max_len: int | None = None,
    name: str | None = None,
    license: str | None = None,
    training: dict[str, Any] | None = None,
    min_int8_cosine: float = MIN_INT8_COSINE,
) -> Manifest:
    """``stilts export``: a checkpoint directory (or hub id) into the contract.

    Pooling, layer, prefixes and max_len default to the checkpoint's own ``stilts.json`` when it has
    one (a checkpoint saved by ``stilts train`` or the default-model install); otherwise to the
    paper's choice: mean pooling of the middle layer (14 of 24, scaled).
    """
    model, tok_file = load_checkpoint(checkpoint)
    base: dict[str, Any] = {}
    ckpt_manifest = Path(checkpoint) / "stilts.json"
    if ckpt_manifest.is_file():
        base = Manifest.load(checkpoint).to_dict()
    n = model.config.num_hidden_layers
    return export(
        model,
        tok_file,
        out_dir,
        name=name or base.get("name") or Path(str(checkpoint)).name,
        layer=layer if layer is not None else base.get("layer", default_layer(n)),
        pooling=pooling or base.get("pooling", "mean"),
        prefixes={**base.get("prefixes", {}), **(prefixes or {})},
        max_len=max_len or base.get("max_len", 512),
        source={**base.get("source", {}), "checkpoint": str(checkpoint)},
        license=license or base.get("license", "unknown"),
        training=training if training is not None else base.get("training"),
        min_int8_cosine=min_int8_cosine,
    )
