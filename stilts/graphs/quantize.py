"""Graph rewrites for fast CPU inference: transformer fusions and 4-bit block quantisation.

``q4`` is weight-only 4-bit quantisation in blocks of 32 along each weight's input axis, one scale
per block and zero point 8 (the Q4_0 layout): every MatMul weight (attention output and the
feed-forward layers; the fused attention's QKV weight stays fp32) becomes a ``MatMulNBits`` node and
the word-embedding table a ``GatherBlockQuantized`` node. A weight that already lies on such a grid
(the default model's weights are dequantised Q4_0) is represented exactly, so the q4 graph computes
with the fp32 graph's weights; any other weight is rounded to the nearest grid point (RTN) and the
export's parity check decides whether the result may ship.

A model tuned with LoRA has merged weights ``W = W0 + B A`` that leave its base's grid. Given the
base's weights (``base_weights``), :func:`split_low_rank` turns each such MatMul into ``x W0`` plus
a rank-r fp32 branch ``(x U) V`` holding ``W - W0`` (its SVD, exact at the adapter's rank), and
only ``W0`` is quantised (q4 here, int8 in :func:`stilts.graphs.export.quantize_int8`): the base part
stays exact on its grid, and the branch costs ``2 r (k + n)`` FLOPs per token against ``2 k n``.

``MatMulNBits`` with ``accuracy_level`` 4 quantises its input to int8 per block of 32 values of each
row, so a row's result does not depend on the other rows of the batch (unlike dynamic int8, which
scales a whole batch's activations by one number).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from stilts.graphs import onnxfile
from stilts.runtimes.ortload import load_onnxruntime

LOG = logging.getLogger(__name__)

BLOCK = 32
ZERO_POINT = 8  # MatMulNBits' and GatherBlockQuantized's default for 4 bits
MS_DOMAIN = "com.microsoft"
# quantize_q4_blocks works through a matrix this many rows at a time (16 MB of a 1024-wide one).
ROWS_AT_ONCE = 4096


@dataclasses.dataclass
class Q4Weight:
    """A [rows, cols] matrix in 4-bit blocks of 32 along ``cols``.

    Attributes:
        packed: uint8 [rows, cols / 2]; element 2i in the low nibble of byte i, 2i+1 in the high.
        scales: float32 [rows, cols / 32].
        max_abs_error: largest |dequantised - original| (0.0 when the matrix was on the grid).
    """

    packed: np.ndarray
    scales: np.ndarray
    max_abs_error: float


def quantize_q4_blocks(w: np.ndarray) -> Q4Weight:
    """Quantise each block of 32 values of each row of ``w`` the Q4_0 way.

    The scale is ``v / -8`` where v is the block's value of largest magnitude (so v maps to code 0)
    and codes are ``round(x / scale) + 8`` clipped to 0..15. On a block that already holds
    ``scale * (code - 8)`` values with an fp16 scale (Q4_0), this returns that scale and those codes.

    Rows are done :data:`ROWS_AT_ONCE` at a time (each row's blocks stand alone, so the result is
    the same): the temporaries of a 250k-row word table would otherwise be several times its size.
    """
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = w.shape
    if cols % BLOCK:
        raise ValueError(f"cannot block-quantise {cols} columns in blocks of {BLOCK}")
    if rows > ROWS_AT_ONCE:
        parts = [quantize_q4_blocks(w[i : i + ROWS_AT_ONCE]) for i in range(0, rows, ROWS_AT_ONCE)]
        return Q4Weight(
            packed=np.concatenate([q.packed for q in parts]),
            scales=np.concatenate([q.scales for q in parts]),
            max_abs_error=max(q.max_abs_error for q in parts),
        )
    blocks = w.reshape(rows, cols // BLOCK, BLOCK)
    pick = np.abs(blocks).argmax(axis=2)[..., None]
    scales = (np.take_along_axis(blocks, pick, axis=2)[..., 0] / -8.0).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[..., None]
    codes = np.clip(np.rint(blocks / safe) + ZERO_POINT, 0, 15).astype(np.uint8)
    deq = (codes.astype(np.float32) - ZERO_POINT) * scales[..., None]
    err = float(np.abs(deq - blocks).max()) if w.size else 0.0
    flat = codes.reshape(rows, cols)
    packed = (flat[:, 0::2] | (flat[:, 1::2] << 4)).astype(np.uint8)
    return Q4Weight(packed=packed, scales=scales, max_abs_error=err)


def dequantize_q4(q: Q4Weight) -> np.ndarray:
    """The float32 matrix a :class:`Q4Weight` stands for."""
    rows = q.packed.shape[0]
    codes = np.empty((rows, q.packed.shape[1] * 2), dtype=np.float32)
    codes[:, 0::2] = q.packed & 0x0F
    codes[:, 1::2] = q.packed >> 4
    blocks = codes.reshape(rows, -1, BLOCK) - ZERO_POINT
    return (blocks * q.scales[..., None]).reshape(rows, -1)


def fuse_transformer(
    model, num_heads: int, hidden: int, separate_qkv: bool = False, shape_inference: bool = True
):
    """onnxruntime's BERT fusions (attention, SkipLayerNorm, BiasGelu) on an fp32 ModelProto.

    The embedding Gather stays a plain Gather (no EmbedLayerNormalization), so its table can be
    quantised on its own. By default attention becomes one ``Attention`` node, whose packed QKV
    weight stays fp32 (an input of the fused node); ``separate_qkv`` makes it
    ``MultiHeadAttention`` fed by three plain MatMuls that q4 quantises too (a smaller file, but
    measured slower at batch 1 and 32 on AVX2; see the issue-9 notes).

    ``shape_inference`` False: the fusions run without symbolic shape inference, which holds a
    whole copy of the model (weights included) while it runs: what a model over 2 GiB cannot
    afford (the export's parity gate checks the fused graph either way).
    """
    load_onnxruntime()  # telemetry off before onnxruntime's first import
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    opts = FusionOptions("bert")
    opts.enable_embed_layer_norm = False
    opts.use_multi_head_attention = separate_qkv
    opts.enable_shape_inference = shape_inference
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        opt = optimize_model(
            model,
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden,
            optimization_options=opts,
            opt_level=0,
        )
    finally:
        quiet.setLevel(level)
    LOG.info("fused: %s", opt.get_fused_operator_statistics())
    return opt.model


def _initializers(model) -> dict:
    return {t.name: t for t in model.graph.initializer}


MAX_RESIDUAL_RANK = 64


def scope_of(module_path: str) -> str:
    """A torch module path as the ONNX exporter scopes its nodes: ``encoder.layer.0.output.dense``
    -> ``encoder/layer.0/output/dense`` (a ModuleList index stays with its list's name)."""
    parts: list[str] = []
    for part in module_path.split("."):
        if part.isdigit() and parts:
            parts[-1] += f".{part}"
        else:
            parts.append(part)
    return "/".join(parts)


def linear_weights(model) -> dict[str, np.ndarray]:
    """Every ``nn.Linear`` weight of a torch model as the ONNX MatMul holds it (in x out), keyed
    by :func:`scope_of` its module path (what a LoRA merge will change)."""
    import torch

    return {
        scope_of(name): m.weight.detach().float().T.numpy().copy()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def _base_for(node_name: str, base_weights: dict[str, np.ndarray]) -> np.ndarray | None:
    scope = node_name.rsplit("/MatMul", 1)[0]
    for key, w in base_weights.items():
        if scope.endswith("/" + key):
            return w
    return None


def low_rank(delta: np.ndarray, max_rank: int = MAX_RESIDUAL_RANK):
    """``delta`` (k x n) as ``U @ V`` (k x r, r x n) when its numerical rank is at most
    ``max_rank`` (singular values above 1e-4 of the largest); None otherwise."""
    u, sv, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    if sv[0] == 0:
        return None
    r = int((sv > sv[0] * 1e-4).sum())
    if r > max_rank:
        return None
    return (u[:, :r] * sv[:r]).astype(np.float32), vt[:r].astype(np.float32)


def to_q4(
    model,
    accuracy_level: int = 4,
    embeddings: str = "q4",
    matmuls: bool = True,
    keep_fp32: tuple[str, ...] = (),
    base_weights: dict[str, np.ndarray] | None = None,
    base_dir: str | Path | None = None,
) -> tuple[object, dict]:
    """Rewrite a (fused) fp32 ModelProto to q4: MatMulNBits weights and a quantised word table.

    Args:
        model: an ONNX ModelProto (changed in place and returned).
        accuracy_level: MatMulNBits' compute precision for activations (4 = int8, 1 = fp32).
        embeddings: ``q4`` (GatherBlockQuantized), ``fp16`` or ``fp32`` for the word table.
        matmuls: rewrite the MatMul weights (False: only the word table changes).
        keep_fp32: node-name prefixes whose MatMuls stay fp32 (the export's head: Dense layers).
        base_weights: the weights before a LoRA merge (:func:`linear_weights`): a MatMul whose
            weight differs from its base by a low-rank delta keeps the base on the grid plus an
            fp32 branch for the delta.
        base_dir: the folder of the weights file of a model loaded with
            :func:`stilts.graphs.onnxfile.load_for_fusion` (weights still there are read one at a
            time).

    Returns:
        the model and a report: MatMuls converted, those with a low-rank branch (and the largest
        rank), the largest weight error and the accuracy level.
    """
    from onnx import helper, numpy_helper

    inits = _initializers(model)
    nodes = []
    drop: set[str] = set()
    branch: dict = {}
    if base_weights:
        model, branch = split_low_rank(model, base_weights, base_dir)
        inits = _initializers(model)
    converted = 0
    max_err = 0.0
    for node in model.graph.node:
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        kept = any(node.name.startswith(p) for p in keep_fp32) or node.name in branch
        if matmuls and node.op_type == "MatMul" and w is not None and len(w.dims) == 2 and not kept:
            k, n = w.dims
            if k % BLOCK == 0:
                q = quantize_q4_blocks(onnxfile.tensor_array(w, base_dir).T)
                max_err = max(max_err, q.max_abs_error)
                base = node.name or node.output[0]
                b = numpy_helper.from_array(
                    q.packed.reshape(n, k // BLOCK, BLOCK // 2), f"{base}_q4"
                )
                s = numpy_helper.from_array(q.scales.reshape(-1), f"{base}_q4_scales")
                model.graph.initializer.extend([b, s])
                drop.add(w.name)
                nodes.append(
                    helper.make_node(
                        "MatMulNBits",
                        [node.input[0], b.name, s.name],
                        list(node.output),
                        name=f"{base}_Q4",
                        domain=MS_DOMAIN,
                        K=k,
                        N=n,
                        bits=4,
                        block_size=BLOCK,
                        accuracy_level=accuracy_level,
                    )
                )
                converted += 1
                continue
        if node.op_type == "Gather" and node.input[0] in inits and embeddings != "fp32":
            table = inits[node.input[0]]
            if len(table.dims) == 2 and table.dims[1] % BLOCK == 0 and table.dims[0] > 1024:
                arr = onnxfile.tensor_array(table, base_dir)
                base = node.name or node.output[0]
                drop.add(table.name)
                if embeddings == "fp16":
                    t16 = numpy_helper.from_array(arr.astype(np.float16), f"{base}_fp16")
                    cast_out = f"{base}_fp16_out"
                    model.graph.initializer.append(t16)
                    nodes.append(
                        helper.make_node(
                            "Gather", [t16.name, node.input[1]], [cast_out], name=base, axis=0
                        )
                    )
                    nodes.append(
                        helper.make_node(
                            "Cast", [cast_out], list(node.output), name=f"{base}_cast", to=1
                        )
                    )
                    continue
                q = quantize_q4_blocks(arr)
                max_err = max(max_err, q.max_abs_error)
                d = numpy_helper.from_array(q.packed, f"{base}_q4")
                s = numpy_helper.from_array(q.scales, f"{base}_q4_scales")
                model.graph.initializer.extend([d, s])
                nodes.append(
                    helper.make_node(
                        "GatherBlockQuantized",
                        [d.name, node.input[1], s.name],
                        list(node.output),
                        name=f"{base}_Q4",
                        domain=MS_DOMAIN,
                        bits=4,
                        block_size=BLOCK,
                        gather_axis=0,
                        quantize_axis=1,
                    )
                )
                continue
        nodes.append(node)
    still_used = {i for n in nodes for i in n.input}
    keep = [t for t in model.graph.initializer if t.name not in drop or t.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    report = {
        "matmuls": converted,
        "weight_max_abs_error": max_err,
        "accuracy_level": accuracy_level,
    }
    if branch:
        report.update(low_rank_matmuls=len(branch) // 2, low_rank_max=max(branch.values()))
    return model, report


def split_low_rank(
    model, base_weights: dict[str, np.ndarray], base_dir: str | Path | None = None
) -> tuple[object, dict[str, int]]:
    """Rewrite each MatMul whose constant weight is its base's (``base_weights``, keyed by
    :func:`scope_of`) plus a low-rank delta into ``x @ W0 + (x @ U) @ V``, in place.

    Returns:
        the model and the branch MatMuls' names -> their rank (what a quantiser must leave fp32).
    """
    from onnx import helper, numpy_helper

    inits = _initializers(model)
    nodes, branch = [], {}
    for node in model.graph.node:
        nodes.append(node)
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        base = _base_for(node.name, base_weights) if w is not None else None
        if base is None or tuple(w.dims) != base.shape:
            continue
        delta = onnxfile.tensor_array(w, base_dir) - base
        uv = low_rank(delta) if np.any(delta) else None
        if uv is None:
            continue
        name, out = node.name, node.output[0]
        w.CopyFrom(numpy_helper.from_array(base.astype(np.float32), w.name))  # now inline
        u = numpy_helper.from_array(uv[0], f"{name}_lora_u")
        v = numpy_helper.from_array(uv[1], f"{name}_lora_v")
        model.graph.initializer.extend([u, v])
        node.output[0] = f"{name}_base_out"
        nodes += [
            helper.make_node("MatMul", [node.input[0], u.name], [f"{name}_xu"], name=f"{name}_U"),
            helper.make_node("MatMul", [f"{name}_xu", v.name], [f"{name}_xuv"], name=f"{name}_V"),
            helper.make_node("Add", [f"{name}_base_out", f"{name}_xuv"], [out], name=f"{name}_Add"),
        ]
        branch[f"{name}_U"] = branch[f"{name}_V"] = uv[0].shape[1]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, branch


def build_q4(
    fp32_path: Path,
    q4_path: Path,
    num_heads: int,
    hidden: int,
    accuracy_level: int = 4,
    keep_fp32: tuple[str, ...] = (),
    base_weights: dict[str, np.ndarray] | None = None,
    external: bool = False,
) -> dict:
    """Write the q4 graph of an exported fp32 graph: fusions, then 4-bit weights and word table
    (MatMuls of nodes named with a ``keep_fp32`` prefix stay fp32; ``base_weights``: see
    :func:`to_q4`). ``external``: write it with external data (:func:`stilts.graphs.onnxfile.save`).

    Returns:
        :func:`to_q4`'s report (``weight_max_abs_error`` is 0.0 when the weights were on the grid).
    """
    import onnx

    if external:  # most weights stay in the fp32 weights file until to_q4 reads them
        model, base_dir = onnxfile.load_for_fusion(fp32_path), fp32_path.parent
    else:
        model, base_dir = onnx.load(str(fp32_path)), None
    model = fuse_transformer(model, num_heads, hidden)
    model, report = to_q4(
        model,
        accuracy_level=accuracy_level,
        keep_fp32=keep_fp32,
        base_weights=base_weights,
        base_dir=base_dir,
    )
    if base_dir is not None:
        onnxfile.load_remaining(model, base_dir)
    save(model, q4_path, external)
    LOG.info(
        "q4: %d MatMuls, weight max abs error %.2e",
        report["matmuls"],
        report["weight_max_abs_error"],
    )
    return report


def save(model, path: Path, external: bool = False) -> None:
    """Write a ModelProto as one file, or with ``external`` its tensors in one weights file
    beside it (:func:`stilts.graphs.onnxfile.save`)."""
    onnxfile.save(model, path, external)
