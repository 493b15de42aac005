"""Dynamic int8 quantisation of a graph with external data, one weight at a time.

ONNX Runtime's ``quantize_dynamic`` loads the whole fp32 model into Python, makes a shape-inferred
copy of it and builds the quantised model beside both: about 4x the fp32 weights at its peak, 9.6 GB
for a 560M-parameter model. :func:`quantize_streaming` writes the same graph reading the graph file
without its weights (``onnx.load(..., load_external_data=False)``) and each weight from the weights
file as it comes, a block of rows at a time; each quantised weight is appended to the int8 graph's
weights file at once. Memory holds the graph's nodes and one block of one weight.

The graph is ONNX Runtime's dynamic int8 graph with the settings :func:`stilts.graphs.export.
quantize_int8` calls it with (``QuantizationMode.IntegerOps``, ``MatMulConstBOnly``):

- a ``MatMul`` whose second input is a float initializer: its weight quantised per channel (the
  last axis) to int8, symmetric (zero points 0; ``unsigned_weights``: uint8, asymmetric), its
  activation quantised per batch by ``DynamicQuantizeLinear`` (one per activation, shared by the
  MatMuls reading it), then ``MatMulInteger -> Cast -> Mul`` by the product of the two scales;
- a ``Gather`` from a float initializer (the embedding tables): the table quantised per tensor to
  uint8, asymmetric, and the gathered rows dequantised by ``DequantizeLinear``;
- a ``Gemm`` (a Dense layer on the pooled vector) first becomes ``MatMul`` + ``Add``, as ONNX
  Runtime does, so its weight is quantised like the others.

Scales, zero points and codes come from ONNX Runtime's own functions
(``compute_data_quant_params``, ``quantize_nparray``), with each channel's minimum and maximum
taken over the blocks first, so the values are ONNX Runtime's bit for bit; the tests compare both
graphs' tensors and vectors. Node names follow ONNX Runtime's too. What differs: the node order
(ONNX Runtime sorts the graph; here each quantised node takes its original's place), the graph's
metadata, and the weights file's layout (aligned offsets, as :mod:`stilts.graphs.onnxfile` writes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stilts.graphs import onnxfile
from stilts.manifest import data_name
from stilts.runtimes.ortload import load_onnxruntime

LOG = logging.getLogger(__name__)

# A weight is read this many bytes (about) at a time.
BLOCK_BYTES = 16 << 20
QUANTIZED = "_quantized"


class _Reader:
    """A tensor's values, whole or a block of rows at a time: from the weights file at its
    recorded offset (external data) or from the graph (inline)."""

    def __init__(self, tensor, base_dir: Path):
        import onnx
        from onnx import helper

        self.tensor = tensor
        self.dims = tuple(int(d) for d in tensor.dims)
        self.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        self.external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if self.external:
            info = {e.key: e.value for e in tensor.external_data}
            self.path = base_dir / Path(info["location"]).name
            self.offset = int(info.get("offset", 0))
        self.nbytes = int(np.prod(self.dims, dtype=np.int64)) * self.dtype.itemsize

    def matrix_shape(self) -> tuple[int, int]:
        """The tensor as a matrix of its last axis (a scalar or vector is one row)."""
        if not self.dims:
            return 1, 1
        cols = self.dims[-1]
        rows = int(np.prod(self.dims[:-1], dtype=np.int64)) if len(self.dims) > 1 else 1
        return rows, cols

    def blocks(self) -> Iterator[np.ndarray]:
        """The tensor as a matrix (:meth:`matrix_shape`), a block of rows at a time."""
        from onnx import numpy_helper

        rows, cols = self.matrix_shape()
        if not self.external:
            yield numpy_helper.to_array(self.tensor).reshape(rows, cols)
            return
        step = max(1, BLOCK_BYTES // max(1, cols * self.dtype.itemsize))
        for start in range(0, rows, step):
            n = min(step, rows - start)
            values = np.fromfile(
                self.path,
                dtype=self.dtype,
                count=n * cols,
                offset=self.offset + start * cols * self.dtype.itemsize,
            )
            if values.size != n * cols:
                raise ValueError(f"{self.path}: ends before tensor {self.tensor.name!r} does")
            yield values.reshape(n, cols)

    def raw_blocks(self) -> Iterator[bytes]:
        """The tensor's bytes as stored, in blocks."""
        if not self.external:
            from onnx import numpy_helper

            yield numpy_helper.to_array(self.tensor).tobytes()
            return
        length = self.nbytes
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while length:
                block = f.read(min(BLOCK_BYTES, length))
                if not block:
                    raise ValueError(f"{self.path}: ends before tensor {self.tensor.name!r} does")
                yield block
                length -= len(block)


class _Writer:
    """The int8 graph's weights file: tensors appended at aligned offsets
    (:data:`stilts.graphs.onnxfile.ALIGN`), the graph's tensors pointed at them."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.offset = 0

    def add(self, tensor, blocks, nbytes: int) -> None:
        """Write ``blocks`` (bytes-like, ``nbytes`` in all) as ``tensor``'s external data."""
        import onnx

        if nbytes >= onnxfile.ALIGN_FROM and self.offset % onnxfile.ALIGN:
            pad = onnxfile.ALIGN - self.offset % onnxfile.ALIGN
            self.file.write(b"\0" * pad)
            self.offset += pad
        written = 0
        for block in blocks:
            self.file.write(block)
            written += len(block)
        if written != nbytes:
            raise ValueError(f"tensor {tensor.name!r}: wrote {written} bytes, expected {nbytes}")
        tensor.ClearField("raw_data")
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (
            ("location", self.path.name),
            ("offset", str(self.offset)),
            ("length", str(nbytes)),
        ):
            e = tensor.external_data.add()
            e.key, e.value = key, value
        self.offset += nbytes

    def close(self) -> None:
        self.file.close()


class _Quantizer:
    """The rewrite of one graph (see the module's docstring)."""

    def __init__(self, model, base_dir: Path, writer: _Writer, weight_type: int, reduce_range):
        import onnx

        load_onnxruntime()
        from onnxruntime.quantization import quant_utils

        self.qu = quant_utils
        self.model = model
        self.base_dir = base_dir
        self.writer = writer
        self.weight_type = weight_type
        self.activation_type = onnx.TensorProto.UINT8  # dynamic activations are uint8
        self.reduce_range = reduce_range
        self.inits = {t.name: t for t in model.graph.initializer}
        self.new_inits: list = []
        # original name -> (quantized name, scale name, zero point name): weights and the
        # quantized outputs of Gathers, as ONNX Runtime's quantized_value_map
        self.quantized: dict[str, tuple[str, str, str]] = {}
        self.dynamic: dict[str, object] = {}  # activation -> its DynamicQuantizeLinear
        self.scale_muls: set[str] = set()

    def is_float_init(self, name: str) -> bool:
        import onnx

        t = self.inits.get(name)
        return t is not None and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)

    def _params(self, rmin, rmax, dtype, qtype: int, symmetric: bool, reduce_range: bool):
        """ONNX Runtime's zero point and scale for values in [rmin, rmax]."""
        data = np.array([rmin, rmax], dtype=dtype)
        return self.qu.compute_data_quant_params(
            data,
            qtype,
            symmetric,
            reduce_range=reduce_range,
            rmin_override=data[0],
            rmax_override=data[1],
        )

    def quantize_weight(self, name: str, qtype: int, per_channel: bool, reduce_range: bool):
        """Quantize the initializer ``name`` (per channel of its last axis, or per tensor) into
        the weights file; its quantized, scale and zero point names."""
        import onnx
        from onnx import helper

        if name in self.quantized:
            return self.quantized[name]
        tensor = self.inits[name]
        reader = _Reader(tensor, self.base_dir)
        rows, cols = reader.matrix_shape()
        lo = hi = None
        for block in reader.blocks():
            bmin = block.min(axis=0) if per_channel else block.min()
            bmax = block.max(axis=0) if per_channel else block.max()
            lo = bmin if lo is None else np.minimum(lo, bmin)
            hi = bmax if hi is None else np.maximum(hi, bmax)
        # ONNX Runtime: weights of a signed type are symmetric, activations (the tables) are not
        symmetric = qtype == self.weight_type and qtype == onnx.TensorProto.INT8
        if per_channel:
            params = [
                self._params(lo[j], hi[j], reader.dtype, qtype, symmetric, reduce_range)
                for j in range(cols)
            ]
            zero_point = np.hstack([p[0] for p in params])
            scale = np.hstack([p[1] for p in params])
            shape = [cols]
        else:
            zero_point, scale = self._params(lo, hi, reader.dtype, qtype, symmetric, reduce_range)
            shape = []
        q_name, zp_name, scale_name = name + QUANTIZED, name + "_zero_point", name + "_scale"
        self.new_inits.append(
            helper.make_tensor(scale_name, tensor.data_type, shape, scale.reshape(-1).tolist())
        )
        self.new_inits.append(
            helper.make_tensor(zp_name, qtype, shape, zero_point.reshape(-1).tolist())
        )
        out_dtype = helper.tensor_dtype_to_np_dtype(qtype)
        q = onnx.TensorProto(name=q_name, data_type=qtype, dims=list(reader.dims))

        def codes():
            for block in reader.blocks():
                yield np.asarray(
                    self.qu.quantize_nparray(qtype, block, scale, zero_point), dtype=out_dtype
                ).tobytes()

        nbytes = rows * cols * np.dtype(out_dtype).itemsize
        if nbytes >= onnxfile.MIN_EXTERNAL_BYTES:
            self.writer.add(q, codes(), nbytes)
        else:
            q.raw_data = b"".join(codes())
        self.new_inits.append(q)
        self.quantized[name] = (q_name, scale_name, zp_name)
        return self.quantized[name]

    def activation(self, name: str, nodes: list):
        """The quantized activation ``name``: a Gather's quantized output, or a
        ``DynamicQuantizeLinear`` of it (made once, before the first MatMul that reads it)."""
        from onnx import helper

        if name in self.quantized:
            return self.quantized[name]
        if name not in self.dynamic:
            self.dynamic[name] = helper.make_node(
                "DynamicQuantizeLinear",
                [name],
                [name + QUANTIZED, name + "_scale", name + "_zero_point"],
                name + "_QuantizeLinear",
            )
            nodes.append(self.dynamic[name])
        return name + QUANTIZED, name + "_scale", name + "_zero_point"

    def matmul(self, node, nodes: list, per_channel: bool) -> None:
        from onnx import helper

        a_q, a_scale, a_zp = self.activation(node.input[0], nodes)
        w_q, w_scale, w_zp = self.quantize_weight(
            node.input[1], self.weight_type, per_channel, self.reduce_range
        )
        name = node.name + "_quant" if node.name else ""
        out = node.output[0] + "_output_quantized"
        nodes.append(helper.make_node("MatMulInteger", [a_q, w_q, a_zp, w_zp], [out], name))
        cast_out = out + "_cast_output"
        float_type = self.inits[node.input[1]].data_type
        nodes.append(helper.make_node("Cast", [out], [cast_out], out + "_cast", to=float_type))
        mul = name + "_scales_mul" if name else f"{a_scale}_{w_scale}_mul"
        if mul not in self.scale_muls:
            self.scale_muls.add(mul)
            nodes.append(helper.make_node("Mul", [a_scale, w_scale], [mul + ":0"], mul))
        nodes.append(
            helper.make_node(
                "Mul",
                [cast_out, mul + ":0"],
                [node.output[0]],
                name + "_output_scale_mul" if name else "",
            )
        )

    def gather(self, node, nodes: list, dequantize: bool) -> None:
        from onnx import helper

        q_name, scale, zp = self.quantize_weight(
            node.input[0], self.activation_type, per_channel=False, reduce_range=False
        )
        out = node.output[0]
        node.input[0] = q_name
        node.output[0] = out + QUANTIZED
        nodes.append(node)
        self.quantized[out] = (out + QUANTIZED, scale, zp)
        if dequantize:
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [out + QUANTIZED, scale, zp],
                    [out],
                    out + "_DequantizeLinear",
                )
            )


def _gemm_to_matmul(model, base_dir: Path) -> None:
    """ONNX Runtime's first step of dynamic quantisation: each ``Gemm`` (alpha and beta 1, A not
    transposed; e.g. a Dense layer on the pooled vector) becomes ``MatMul`` (+ ``Add`` of its C),
    a transposed constant B is stored transposed (read whole: a head's weight)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list = []
    for node in graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA"):
            nodes.append(node)
            continue
        b_name = node.input[1]
        if attrs.get("transB"):
            if b_name in inits:
                reader = _Reader(inits[b_name], base_dir)
                values = np.concatenate(list(reader.blocks())).reshape(reader.dims)
                flipped = numpy_helper.from_array(values.T, b_name)
                graph.initializer.remove(inits[b_name])
                graph.initializer.append(flipped)
                inits[b_name] = graph.initializer[-1]
                for i in graph.input:
                    if i.name == b_name:
                        graph.input.remove(i)
                        break
            else:
                b_name += "_Transposed"
                nodes.append(
                    helper.make_node(
                        "Transpose",
                        [node.input[1]],
                        [b_name],
                        node.name + "_Transpose" if node.name else "",
                    )
                )
        with_c = len(node.input) > 2
        nodes.append(
            helper.make_node(
                "MatMul",
                [node.input[0], b_name],
                [node.output[0] + ("_MatMul" if with_c else "")],
                node.name + "_MatMul" if node.name else "",
            )
        )
        if with_c:
            nodes.append(
                helper.make_node(
                    "Add",
                    [node.output[0] + "_MatMul", node.input[2]],
                    list(node.output),
                    node.name + "_Add" if node.name else "",
                )
            )
    graph.ClearField("node")
    graph.node.extend(nodes)


def quantize_streaming(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    op_types: tuple[str, ...] = ("MatMul", "Gather"),
    per_channel: bool = True,
    reduce_range: bool = False,
    unsigned_weights: bool = False,
    exclude: list[str] | tuple[str, ...] | set[str] = (),
    model=None,
) -> dict[str, int]:
    """Write the dynamic int8 graph of the fp32 graph ``fp32_path`` (external data: its weights
    file beside it) as ``int8_path`` plus its weights file, reading one weight at a time.

    Args:
        fp32_path: the fp32 graph.
        int8_path: the int8 graph to write (its weights file, ``<name>.data``, beside it).
        op_types: the node types to quantize (``MatMul``, ``Gather``).
        per_channel: MatMul weights per output channel (else per tensor).
        reduce_range: 7-bit weights (ONNX Runtime's ``reduce_range``).
        unsigned_weights: uint8 MatMul weights (asymmetric) instead of int8 (symmetric).
        exclude: names of nodes left in fp32.
        model: the fp32 graph already loaded without its weights (e.g. rewritten by
            :func:`stilts.graphs.quantize.split_low_rank`); its external tensors are read from
            ``fp32_path``'s folder.

    Returns:
        how many MatMuls and Gathers were quantized (``matmuls``, ``gathers``).
    """
    import onnx

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if model is None:
        model = onnx.load(str(fp32_path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ValueError(f"{fp32_path}: opset {opset}; dynamic int8 needs opset 11 or later")
    _gemm_to_matmul(model, fp32_path.parent)
    # the shapes ONNX Runtime's quantiser records (from the graph alone: no weight is read); the
    # runtime's graph optimisations use them, so the vectors match its graph's exactly
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        raise ValueError(f"{fp32_path}: subgraphs are not quantized here")
    onnxfile.remove_graph(int8_path)
    writer = _Writer(int8_path.parent / data_name(int8_path.name))
    qtype = onnx.TensorProto.UINT8 if unsigned_weights else onnx.TensorProto.INT8
    qz = _Quantizer(model, fp32_path.parent, writer, qtype, reduce_range)
    exclude = set(exclude)
    outputs = {o.name for o in graph.output}

    def is_matmul(node) -> bool:
        return (
            node.op_type == "MatMul"
            and "MatMul" in op_types
            and node.name not in exclude
            and qz.is_float_init(node.input[1])
            and node.input[0] not in qz.inits
        )

    def is_gather(node) -> bool:
        return (
            node.op_type == "Gather"
            and "Gather" in op_types
            and node.name not in exclude
            and qz.is_float_init(node.input[0])
        )

    # a Gather's output needs dequantizing unless only quantized MatMuls read it (as activation)
    fp32_readers: set[str] = set(outputs)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if not (is_matmul(node) and i == 0):
                fp32_readers.add(name)
    counts = {"matmuls": 0, "gathers": 0}
    try:
        nodes: list = []
        for node in graph.node:
            if is_matmul(node):
                qz.matmul(node, nodes, per_channel)
                counts["matmuls"] += 1
            elif is_gather(node):
                qz.gather(node, nodes, dequantize=node.output[0] in fp32_readers)
                counts["gathers"] += 1
            else:
                nodes.append(node)
        graph.ClearField("node")
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input} | outputs
        kept = [t for t in graph.initializer if t.name in used]
        graph.ClearField("initializer")
        for tensor in kept:
            reader = _Reader(tensor, fp32_path.parent)
            if reader.external:  # an fp32 tensor left as it is: copied into the int8 weights
                writer.add(tensor, reader.raw_blocks(), reader.nbytes)
            graph.initializer.append(tensor)
        graph.initializer.extend(qz.new_inits)
    finally:
        writer.close()
    onnx.save_model(model, str(int8_path))
    onnxfile.match_mode(int8_path)
    LOG.info(
        "int8 (streamed): %d MatMuls, %d Gathers; weights %d bytes",
        counts["matmuls"],
        counts["gathers"],
        writer.offset,
    )
    return counts
