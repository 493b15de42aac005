"""Export a transformers encoder into the stilts contract (ONNX fp32, q4, int8, tokenizer, manifest).

With :mod:`stilts.graphs.checkpoint` and :mod:`stilts.graphs.adapters` the part of the core that
needs torch (the ``train`` extra), imported inside functions only; ``stilts export``, the model
sources and ``stilts.training`` call it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.graphs import onnxfile
from stilts.graphs.adapters import merge_loaded
from stilts.graphs.checkpoint import drop_layers_above, load_checkpoint, require_torch
from stilts.graphs.int8 import quantize_streaming
from stilts.graphs.parity import GATE_MEAN_COSINE, PARITY_SAMPLE
from stilts.graphs.quantize import build_q4, linear_weights, split_low_rank
from stilts.manifest import (
    EXPORT_REVISION,
    FP32_NAME,
    GRAPHS,
    INT8_NAME,
    PROMPT_LENGTH,
    Q4_NAME,
    TOKENIZER_NAME,
    Manifest,
)
from stilts.runtimes.batching import length_batches
from stilts.runtimes.ortload import load_onnxruntime

LOG = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_DIFF = 1e-4
MIN_INT8_COSINE = 0.99
# q4 must match fp32 (the default model's q4 weights are fp32's exactly; what is left is the int8
# rounding of activations) and give a text the same vector alone as inside a batch.
MIN_Q4_COSINE = 0.999  # mean over the parity sentences
MIN_Q4_COSINE_EACH = 0.99  # every sentence
MAX_Q4_BATCH_DIFF = 1e-5


def default_layer(num_layers: int) -> int:
    """The paper's choice for a raw MLM checkpoint: layer 14 of 24, scaled to other depths."""
    return max(1, round(num_layers * 14 / 24))


# Node-name prefix of the graph's Dense layers (the ``dense`` ModuleList of PooledEncoder): q4
# keeps their weights fp32 (a few hundred thousand weights after the last layer norm, where 4-bit
# rounding goes straight into the output).
HEAD_NODES = "/dense."
# sentence-transformers' pooling modes, in the order its legacy ``pooling_mode_*`` flags concatenate.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# What ``nn.Identity`` is called in a Dense config (no activation).
IDENTITY = "torch.nn.modules.linear.Identity"


@dataclasses.dataclass
class DenseLayer:
    """A sentence-transformers ``Dense`` module: ``activation(x @ weight.T + bias)``.

    Attributes:
        weight: float32 (out_features, in_features).
        bias: float32 (out_features,), or None for a layer without bias.
        activation: the ``torch.nn`` module class, by its dotted name (no constructor arguments).
        residual: add the input back after the activation (``use_residual``).
        residual_weight: float32 (out, in) projection of the residual when the sizes differ.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = IDENTITY
    residual: bool = False
    residual_weight: np.ndarray | None = None


@dataclasses.dataclass
class Head:
    """What the graph does after the transformer: pooling, Dense layers, normalisation.

    Attributes:
        pooling: pooling modes, concatenated in this order (see :func:`pool_tokens`).
        include_prompt: False: the prompt's tokens (graph input ``prompt_length``) are left out of
            the pooling (they still take part in attention).
        dense: Dense layers applied in order to the pooled vector.
        normalize: L2-normalise the result.
    """

    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    dense: list[DenseLayer] = dataclasses.field(default_factory=list)
    normalize: bool = True

    @property
    def pooling_name(self) -> str:
        """The manifest's ``pooling``: the modes joined by ``+`` (``mean``, ``cls+max``)."""
        return "+".join(self.pooling)


def pool_tokens(hidden, attention_mask, modes, prompt_length=None):
    """(batch, length, dim) token vectors -> (batch, len(modes) * dim): each pooling mode of
    sentence-transformers' ``Pooling`` (right-padded batches), concatenated in ``modes`` order.

    ``cls``: the first attended token; ``max``: elementwise max over attended tokens; ``mean``:
    their mean; ``mean_sqrt_len_tokens``: their sum over sqrt(count); ``weightedmean``: mean with
    weights 1, 2, ... by position; ``lasttoken``: the last attended token. ``prompt_length``
    (batch,) drops each row's first tokens from the pooling (``include_prompt=False``).
    """
    import torch

    for mode in modes:
        if mode not in POOLING_MODES:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"pooling mode must be one of {', '.join(POOLING_MODES)}, got {mode!r}",
                "pooling",
            )
    dtype = hidden.dtype
    seq_len = hidden.shape[1]
    original = attention_mask
    mask = attention_mask
    if prompt_length is not None:
        positions = torch.arange(seq_len, device=hidden.device).unsqueeze(0)
        mask = mask * (positions >= prompt_length.unsqueeze(1)).to(mask.dtype)
    m = mask.unsqueeze(-1).to(dtype)
    out = []
    for mode in modes:
        if mode == "cls":
            first = mask.to(dtype).argmax(dim=1)
            index = first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            out.append(torch.gather(hidden, 1, index).squeeze(1))
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * m).sum(dim=1)
            count = m.sum(dim=1).clamp(min=1e-9)
            out.append(total / (count if mode == "mean" else torch.sqrt(count)))
        elif mode == "weightedmean":
            weights = torch.arange(1, seq_len + 1, device=hidden.device, dtype=dtype).view(1, -1, 1)
            weights = weights - original.to(dtype).argmax(dim=1).to(dtype).view(-1, 1, 1)
            wm = m * weights
            out.append((hidden * wm).sum(dim=1) / wm.sum(dim=1).clamp(min=1e-9))
        else:  # lasttoken
            values, indices = mask.to(dtype).flip(1).max(dim=1)
            indices = torch.where(values == 0, seq_len - 1, indices)
            index = (seq_len - indices - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            out.append(torch.gather(hidden * m, 1, index).squeeze(1))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def l2_normalize(x):
    """``x / max(||x||, 1e-12)`` over the last axis (torch's ``F.normalize``)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def pool_hidden(hidden, attention_mask, pooling: str, normalize: bool):
    """(batch, length, dim) hidden states -> (batch, dim) sentence vectors: ``mean`` over the
    attended tokens or the first (``cls``) token, L2-normalised when ``normalize``. The one
    definition of the contract's pooling (export and training both use it)."""
    pooled = pool_tokens(hidden, attention_mask, (pooling,))
    return l2_normalize(pooled) if normalize else pooled


def activation_module(name: str):
    """The ``torch.nn`` activation module a Dense config names (e.g.
    ``torch.nn.modules.activation.Tanh``), constructed without arguments.

    Raises:
        StiltsError: INVALID_ARGUMENT when the name is not a ``torch.nn.Module`` class.
    """
    import importlib

    import torch

    module, _, cls = name.rpartition(".")
    target = None
    if name.startswith("torch.") and module:
        try:
            target = getattr(importlib.import_module(module), cls, None)
        except ImportError:
            target = None
    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"activation_function {name!r} is not a torch.nn module class",
            "activation_function",
        )
    return target()


def dense_module(layer: DenseLayer):
    """A torch module for one :class:`DenseLayer` (fp32 weights)."""
    import torch

    out_f, in_f = layer.weight.shape

    class _Dense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(in_f, out_f, bias=layer.bias is not None)
            self.linear.weight.data = torch.from_numpy(np.asarray(layer.weight, np.float32))
            if layer.bias is not None:
                self.linear.bias.data = torch.from_numpy(np.asarray(layer.bias, np.float32))
            self.activation = activation_module(layer.activation)
            self.projection = None
            if layer.residual and layer.residual_weight is not None:
                self.projection = torch.nn.Linear(in_f, out_f, bias=False)
                w = np.asarray(layer.residual_weight, np.float32)
                self.projection.weight.data = torch.from_numpy(w)

        def forward(self, x):
            y = self.activation(self.linear(x))
            if layer.residual:
                y = y + (x if self.projection is None else self.projection(x))
            return y

    return _Dense()


class PooledEncoder:
    """Factory for a torch module: (input_ids, attention_mask[, prompt_length]) -> the sentence
    vector (pooling, Dense layers and normalisation of a :class:`Head`)."""

    @staticmethod
    def build(model, layer: int, head: Head, in_place: bool = False):
        """The module and the pooled layer (counted from the embeddings). Layers above it are
        dropped from a copy of ``model`` (``in_place``: from ``model`` itself, no copy)."""
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
        for mode in head.pooling:
            if mode not in POOLING_MODES:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"pooling must be one of {', '.join(POOLING_MODES)}, got {mode!r}",
                    "pooling",
                )
        dense = torch.nn.ModuleList([dense_module(d) for d in head.dense])

        class _Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model
                self.layer = layer
                self.dense = dense

            def forward(self, input_ids, attention_mask, prompt_length=None):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=torch.zeros_like(input_ids),
                    output_hidden_states=True,
                )
                x = pool_tokens(
                    out.hidden_states[self.layer], attention_mask, head.pooling, prompt_length
                )
                for d in self.dense:
                    x = d(x)
                return l2_normalize(x) if head.normalize else x

        # Layers above the pooled one cannot change its output: drop them from the graph
        # (on a copy, so the caller's model stays whole, unless it is given up).
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if layers is not None and layer < len(layers):
            if not in_place:
                model = copy.deepcopy(model)
            drop_layers_above(model, layer)
        return _Pooled().eval(), layer


def release_weights(module) -> None:
    """Free a torch module's parameters and buffers (it cannot run after): an export whose caller
    gives the model up drops the second copy of the weights once the ONNX graph holds them."""
    import gc

    import torch

    for t in (*module.parameters(), *module.buffers()):
        t.data = torch.empty(0, dtype=t.dtype)
    gc.collect()


def _token_ids(tokenizer_file: Path, texts: list[str], max_len: int) -> tuple[list, int]:
    """Token ids of each text (truncated to ``max_len``) and the pad id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return [e.ids for e in tok.encode_batch(texts)], tok.token_to_id("<pad>") or 0


def pad_ids(rows: list, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id rows padded to the longest: (input_ids, attention_mask), int64."""
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _batch(tokenizer_file: Path, texts: list[str], max_len: int):
    return pad_ids(*_token_ids(tokenizer_file, texts, max_len))


def _session(path: Path):
    ort = load_onnxruntime()

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def graph_feeds(session, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs of one padded batch; a graph that pools without its prompt
    (``prompt_length`` input) gets zeros: texts fed here carry no prompt."""
    feeds = {"input_ids": ids, "attention_mask": mask}
    if any(i.name == PROMPT_LENGTH for i in session.get_inputs()):
        feeds[PROMPT_LENGTH] = np.zeros(len(ids), dtype=np.int64)
    return feeds


def _embed(session, rows: list, pad: int, batch: int) -> np.ndarray:
    """Vectors of tokenised texts run in padded batches of ``batch``, in length order like
    ``Encoder``."""
    out = None
    for idx in length_batches([len(r) for r in rows], batch):
        ids, mask = pad_ids([rows[i] for i in idx], pad)
        (emb,) = session.run(["embedding"], graph_feeds(session, ids, mask))
        if out is None:
            out = np.zeros((len(rows), emb.shape[1]), dtype=np.float32)
        out[idx] = emb
    return out


def q4_parity(
    fp32_path: Path, q4_path: Path, tokenizer_file: Path, texts: list[str], max_len: int
) -> dict[str, float]:
    """q4 against fp32 on ``texts`` (batches of 32), and q4 alone against q4 in a batch."""
    rows, pad = _token_ids(tokenizer_file, texts, max_len)
    fp32 = _embed(_session(fp32_path), rows, pad, 32)
    q4_session = _session(q4_path)
    q4 = _embed(q4_session, rows, pad, 32)
    alone = _embed(q4_session, rows, pad, 1)
    cos = _cosines(q4, fp32)
    return {
        "q4_vs_fp32_cosine_mean": float(cos.mean()),
        "q4_vs_fp32_cosine_min": float(cos.min()),
        "q4_vs_fp32_max_abs_diff": float(np.abs(q4 - fp32).max()),
        "q4_batch_vs_alone_max_abs_diff": float(np.abs(q4 - alone).max()),
    }


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    op_types: tuple[str, ...] = ("MatMul", "Gather"),
    reduce_range: bool = False,
    unsigned_weights: bool = False,
    base_weights: dict[str, Any] | None = None,
    exclude: list[str] | tuple[str, ...] = (),
) -> dict[str, int]:
    """Dynamic int8 quantisation with per-channel weights (by default MatMul and the embedding
    Gather, signed weights: the shipped ``model.int8.onnx``). ``base_weights`` (a LoRA-tuned
    model's weights before the merge): only the base weights are quantised, the adapter's delta
    stays an fp32 low-rank branch (:func:`stilts.graphs.quantize.split_low_rank`). ``exclude``: nodes
    left fp32 (by name).

    A graph with external data (its weights file beside it, a model over the protobuf limit)
    gives an int8 graph with external data too, written by :func:`stilts.graphs.int8.
    quantize_streaming` (the same graph, one weight in memory at a time); a one-file graph goes
    through ONNX Runtime's ``quantize_dynamic``, so its file stays what it always was.

    Returns:
        the low-rank branch MatMuls left in fp32 -> their rank ({} without ``base_weights``).
    """
    load_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, branch = str(fp32_path), {}
    external = onnxfile.has_external_data(fp32_path)
    if external:
        import onnx

        model = onnx.load(str(fp32_path), load_external_data=False)
        if base_weights:
            model, branch = split_low_rank(model, base_weights, Path(fp32_path).parent)
        quantize_streaming(
            fp32_path,
            int8_path,
            op_types=op_types,
            reduce_range=reduce_range,
            unsigned_weights=unsigned_weights,
            exclude=[*branch, *exclude],
            model=model,
        )
        return branch
    if base_weights:
        import onnx

        model, branch = split_low_rank(onnx.load(source), base_weights)
        source = str(Path(int8_path).with_suffix(".split.onnx"))
        onnxfile.save(model, Path(source), False)
        del model
    # the quantiser appends to an existing weights file: start from none
    onnxfile.remove_graph(int8_path)
    root = logging.getLogger()  # the quantiser logs every node on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source,
            str(int8_path),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
            op_types_to_quantize=list(op_types),
            nodes_to_exclude=[*branch, *exclude],
        )
        onnxfile.match_mode(int8_path)
    finally:
        root.setLevel(level)
        if source != str(fp32_path):
            onnxfile.remove_graph(source)
    return branch


def _ffn_outputs(fp32_path: Path) -> list[str]:
    """The feed-forward output MatMuls of a BERT/XLM-R graph (``.../layer.N/output/dense``)."""
    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and "/output/dense/" in n.name and "/attention/" not in n.name
    ]


def export(
    model,
    tokenizer_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str,
    layer: int = -1,
    pooling: str = "mean",
    normalize: bool = True,
    head: Head | None = None,
    prefixes: dict[str, str] | None = None,
    max_len: int = 512,
    source: dict[str, Any] | None = None,
    license: str = "unknown",
    training: dict[str, Any] | None = None,
    min_int8_cosine: float = MIN_INT8_COSINE,
    parity_texts: list[str] | None = None,
    min_q4_cosine: float = MIN_Q4_COSINE,
    manifest_fields: dict[str, Any] | None = None,
    check: Callable[[Path], dict[str, Any]] | None = None,
    optional_quantized: bool = False,
    base_weights: dict[str, Any] | None = None,
    release_model: bool = False,
) -> Manifest:
    """Export a loaded transformers encoder into a model directory, with parity checks.

    The directory is assembled in a temporary sibling and renamed into place, so a failed export
    never leaves a half-written model.

    The q4 graph (the CPU default) is checked on ``parity_texts`` (default: a built-in
    multilingual sample; ``stilts export --parity-data`` passes dev sentences) and its figures are
    recorded in the manifest's ``parity``.

    ``head`` (default: ``pooling`` and ``normalize``) is what the graph does after the
    transformer. ``manifest_fields`` are further manifest attributes (e.g. ``lowercase``).
    ``optional_quantized``: a q4 or int8 graph that misses its gate is left out (the manifest's
    ``parity.refused`` says why, ``cpu_precision`` is the best graph kept) instead of failing the
    export. ``check`` runs last on the finished directory (graphs, tokenizer and manifest in place); the
    figures it returns join ``parity``, and an error it raises fails the export. ``base_weights``
    (the Linear weights before a LoRA merge, :func:`stilts.graphs.quantize.linear_weights`) let the q4
    graph keep the base on its 4-bit grid and the adapter's delta as a low-rank fp32 branch.

    A model whose fp32 weights reach :func:`stilts.graphs.onnxfile.external_threshold` (2 GiB less
    64 MiB) has every graph written with external data (the graph plus one weights file beside
    it). ``release_model``: the caller gives ``model`` up: its layers above ``layer`` are dropped
    without a copy and its weights are freed once the fp32 graph is written (the parity checks
    and quantisers then run without a second copy of the weights in memory).

    Raises:
        StiltsError: FAILED_PRECONDITION when fp32 ONNX differs from PyTorch by more than 1e-4,
            int8 falls below ``min_int8_cosine`` mean cosine to fp32 (on the parity sentences),
            q4 falls below
            ``min_q4_cosine`` mean cosine to fp32 (or any sentence below 0.99), or q4 vectors change with the batch by
            ``MAX_Q4_BATCH_DIFF`` or more.
    """
    require_torch()
    import torch

    out_dir = Path(out_dir)
    num_layers = model.config.num_hidden_layers
    head = head or Head(pooling=(pooling,), normalize=normalize)
    max_len = min(max_len, getattr(model.config, "max_position_embeddings", max_len))
    if getattr(model.config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        # RoBERTa-style positions start at padding_idx + 1.
        max_len = min(max_len, model.config.max_position_embeddings - model.config.pad_token_id - 1)
    pooled, layer = PooledEncoder.build(model, layer, head, in_place=release_model)
    weight_bytes = 4 * sum(p.numel() for p in pooled.parameters())
    external = onnxfile.needs_external_data(weight_bytes)
    hidden = model.config.hidden_size
    num_heads = model.config.num_attention_heads
    inputs = ["input_ids", "attention_mask"] + ([] if head.include_prompt else [PROMPT_LENGTH])

    with atomic_directory(out_dir) as work:
        shutil.copyfile(tokenizer_file, work / TOKENIZER_NAME)
        ids, mask = _batch(work / TOKENIZER_NAME, PARITY_SAMPLE, max_len)
        # A prompt of 1 token on odd rows, so the graph keeps the prompt_length path.
        args = [torch.from_numpy(ids), torch.from_numpy(mask)]
        if not head.include_prompt:
            args.append(torch.arange(len(ids)) % 2)
        with torch.no_grad():
            ref = pooled(*args).numpy()
            dim = int(ref.shape[1])
            LOG.info(
                "exporting %s (layer %d of %d, %s pooling, %.2f GiB of fp32 weights%s) to ONNX",
                name,
                layer,
                num_layers,
                head.pooling_name,
                weight_bytes / 2**30,
                ", external data" if external else "",
            )
            # over the protobuf limit torch writes one file per tensor: into a folder of its own,
            # then gathered into one weights file beside the graph
            staging = work / ".torch-export"
            staging.mkdir()
            torch.onnx.export(
                pooled,
                tuple(args),
                str((staging if external else work) / FP32_NAME),
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    PROMPT_LENGTH: {0: "batch"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        if release_model:
            release_weights(pooled)
            del pooled, model
        if external:
            onnxfile.externalize(staging / FP32_NAME, work / FP32_NAME)
        shutil.rmtree(staging)
        step_done = onnxfile.release_memory if external else (lambda: None)
        step_done()
        feeds = dict(zip(inputs, (a.numpy() for a in args), strict=True))
        fp32 = _session(work / FP32_NAME).run(["embedding"], feeds)[0]
        max_diff = float(np.abs(fp32 - ref).max())
        if not max_diff < MAX_ABS_DIFF:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"parity check failed: fp32 ONNX differs from PyTorch by {max_diff:.2e} "
                f"(limit {MAX_ABS_DIFF:.0e})",
            )
        texts = list(parity_texts or PARITY_SAMPLE)
        refused: dict[str, str] = {}

        def gate(precision: str, passed: bool, message: str) -> None:
            """A graph that misses its gate fails the export, or, with ``optional_quantized``,
            is left out (the reason goes into ``parity.refused``)."""
            if passed:
                return
            message = f"parity check failed: {message}"
            if not optional_quantized:
                raise StiltsError(ErrorCode.FAILED_PRECONDITION, message)
            LOG.warning("leaving out the %s graph: %s", precision, message)
            refused[precision] = message
            onnxfile.remove_graph(work / GRAPHS[precision])

        LOG.info("quantizing to int8; parity on %d sentences", len(texts))
        rows, pad = _token_ids(work / TOKENIZER_NAME, texts, max_len)
        reference = _embed(_session(work / FP32_NAME), rows, pad, 32)
        int8_branch = quantize_int8(work / FP32_NAME, work / INT8_NAME, base_weights=base_weights)
        step_done()
        cos = _cosines(_embed(_session(work / INT8_NAME), rows, pad, 32), reference)
        int8_fp32 = _ffn_outputs(work / FP32_NAME) if cos.mean() < min_int8_cosine else []
        if int8_fp32:
            # the feed-forward outputs read GELU activations, whose outliers one int8 scale per
            # batch serves worst (a tuned model's more than its base's): keep them fp32, once more
            LOG.info(
                "int8 mean cosine %.4f: again with %d FFN output MatMuls in fp32",
                cos.mean(),
                len(int8_fp32),
            )
            int8_branch = quantize_int8(
                work / FP32_NAME, work / INT8_NAME, base_weights=base_weights, exclude=int8_fp32
            )
            step_done()
            cos = _cosines(_embed(_session(work / INT8_NAME), rows, pad, 32), reference)
        gate(
            "int8",
            float(cos.mean()) >= min_int8_cosine,
            f"int8 vs fp32 mean cosine {cos.mean():.4f} < {min_int8_cosine} on {len(texts)} "
            "sentences",
        )
        LOG.info("building the q4 graph; parity on %d sentences", len(texts))
        # MatMulNBits rounds its activations to int8 (accuracy_level 4); a tuned model's lose more
        # there than its base's (0.99986 vs 0.99997 mean on the dev sentences), below the mean
        # auto routing asks of a route: then fp32 activations (accuracy_level 1), once more
        for accuracy_level in (4, 1):
            q4_report = build_q4(
                work / FP32_NAME,
                work / Q4_NAME,
                num_heads,
                hidden,
                accuracy_level=accuracy_level,
                keep_fp32=(HEAD_NODES,),
                base_weights=base_weights,
                external=external,
            )
            step_done()
            q4 = q4_parity(work / FP32_NAME, work / Q4_NAME, work / TOKENIZER_NAME, texts, max_len)
            step_done()
            if accuracy_level == 1 or q4["q4_vs_fp32_cosine_mean"] >= GATE_MEAN_COSINE:
                break
            LOG.info(
                "q4 mean cosine %.5f: again with fp32 activations", q4["q4_vs_fp32_cosine_mean"]
            )
        gate(
            "q4",
            q4["q4_vs_fp32_cosine_mean"] >= min_q4_cosine
            and q4["q4_vs_fp32_cosine_min"] >= MIN_Q4_COSINE_EACH,
            f"q4 vs fp32 cosine mean {q4['q4_vs_fp32_cosine_mean']:.5f}"
            f" (limit {min_q4_cosine}), min {q4['q4_vs_fp32_cosine_min']:.5f} (limit "
            f"{MIN_Q4_COSINE_EACH}) on {len(texts)} sentences",
        )
        if "q4" not in refused:
            gate(
                "q4",
                q4["q4_batch_vs_alone_max_abs_diff"] < MAX_Q4_BATCH_DIFF,
                f"q4 vectors change with their batch by "
                f"{q4['q4_batch_vs_alone_max_abs_diff']:.2e} (limit {MAX_Q4_BATCH_DIFF:.0e})",
            )
        one_file = None
        if not external:  # the runtimes map the weights then: one copy of them per process
            one_file = onnxfile.externalize_in_place(work / FP32_NAME)
        manifest = Manifest(
            name=name,
            dim=dim,
            max_len=int(max_len),
            pooling=head.pooling_name,
            layer=layer,
            num_layers=num_layers,
            normalize=head.normalize,
            prefixes={"query": "", "passage": "", "bitext": "", **(prefixes or {})},
            source=source or {},
            license=license,
            parity={
                "fp32_vs_torch_max_abs_diff": max_diff,
                "int8_vs_fp32_cosine_mean": float(cos.mean()),
                "int8_vs_fp32_cosine_min": float(cos.min()),
                "int8_parity_sentences": len(texts),
                **({"int8_low_rank_matmuls": len(int8_branch) // 2} if int8_branch else {}),
                **({"int8_fp32_matmuls": len(int8_fp32)} if int8_fp32 else {}),
                "sample_size": len(PARITY_SAMPLE),
                **q4,
                "q4_weight_max_abs_error": q4_report["weight_max_abs_error"],
                "q4_accuracy_level": q4_report["accuracy_level"],
                "export_revision": EXPORT_REVISION,
                **{f"q4_{k}": v for k, v in q4_report.items() if k.startswith("low_rank")},
                "q4_parity_sentences": len(texts),
                **({"refused": refused} if refused else {}),
            },
            training=training,
            cpu_precision=next(p for p in ("q4", "int8", "fp32") if p not in refused),
            weights_sha256=one_file,
            **(manifest_fields or {}),
        )
        manifest.record_files(work)
        manifest.save(work)
        step_done()
        if check is not None:
            manifest.parity.update(check(work))
            manifest.save(work)
    LOG.info(
        "exported %s: fp32 max diff %.1e, int8 cosine mean %.4f min %.4f, q4 cosine min %.5f",
        out_dir,
        max_diff,
        cos.mean(),
        cos.min(),
        q4["q4_vs_fp32_cosine_min"],
    )
    return manifest


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    layer: int | None = None,
    pooling: str | None = None,
    prefixes: dict[str, str] | None = None,
    max_len: int | None = None,
    name: str | None = None,
    license: str | None = None,
    training: dict[str, Any] | None = None,
    min_int8_cosine: float = MIN_INT8_COSINE,
    min_q4_cosine: float = MIN_Q4_COSINE,
    parity_texts: list[str] | None = None,
    optional_quantized: bool = False,
) -> Manifest:
    """``stilts export``: a checkpoint directory (or hub id) into the contract.

    Pooling, layer, prefixes and max_len default to the checkpoint's own ``stilts.json`` when it has
    one (a checkpoint saved by ``stilts train`` or the default-model install); otherwise to the
    paper's choice: mean pooling of the middle layer (14 of 24, scaled). With ``adapter`` (a LoRA
    adapter directory) the adapter is merged into the loaded checkpoint in memory and its record
    (:func:`stilts.graphs.adapters.merged_manifest`) gives those defaults. ``optional_quantized``: as
    :func:`export` (a tuned model's weights leave the base's 4-bit grid, so its q4 graph may miss
    the gate: it is then left out and recorded, and the model serves its other routes).
    """
    model, tok_file = load_checkpoint(checkpoint)
    base: dict[str, Any] = {}
    base_weights = None
    if adapter is not None:
        base_weights = linear_weights(model)  # q4 keeps these on the grid, the delta aside
        model, merged = merge_loaded(model, checkpoint, adapter)
        base = merged.to_dict() if merged is not None else {}
    elif (Path(checkpoint) / "stilts.json").is_file():
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
        min_q4_cosine=min_q4_cosine,
        parity_texts=parity_texts,
        optional_quantized=optional_quantized,
        base_weights=base_weights,
        release_model=True,
    )
