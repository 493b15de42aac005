"""How a graph is written to disk: one protobuf file, or ONNX's external-data format.

A protobuf message is limited to 2 GiB, so a model with more fp32 weights than that
(multilingual-e5-large, bge-m3: XLM-R Large, 560M parameters, 2.2 GB) cannot be one ``.onnx`` file.
Such a model's graphs are written in ONNX's external-data format: the graph file (``model.onnx``,
nodes and small tensors, a few MB) plus one weights file beside it named after it
(``model.onnx.data``: :func:`stilts.manifest.data_name`), every tensor of at least
:data:`MIN_EXTERNAL_BYTES` bytes stored raw at an aligned offset, so the runtimes can map it
instead of reading it into memory. All the graphs of such a model (fp32, int8, q4) are written
that way.

A smaller model's fp32 graph is exported as one file, then moved into the same layout
(:func:`externalize_in_place`): ONNX Runtime holds a one-file graph twice (the file's bytes and
the session's tensors: 874 MB at the peak for the default's 470 MB graph), a mapped weights file
once. Its quantized graphs stay one file each.

The line is :func:`external_threshold`: :data:`EXTERNAL_DATA_BYTES` (2 GiB less 64 MiB, room for
the graph itself), or ``STILTS_EXTERNAL_DATA_BYTES`` in the environment (tests lower it to push a
tiny model through this path).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import data_name

LOG = logging.getLogger(__name__)

# fp32 weight bytes from which a model's graphs are written with external data.
EXTERNAL_DATA_BYTES = 2**31 - 2**26
THRESHOLD_ENV = "STILTS_EXTERNAL_DATA_BYTES"
# Smaller tensors stay inside the graph file (onnx's own default).
MIN_EXTERNAL_BYTES = 1024
# Tensors of at least ALIGN_FROM bytes start at a multiple of ALIGN (the allocation granularity
# onnx uses), so a runtime can map each one.
ALIGN = 65536
ALIGN_FROM = 1 << 20
COPY_CHUNK = 16 << 20


def external_threshold() -> int:
    """Weight bytes from which graphs are written with external data: ``STILTS_EXTERNAL_DATA_BYTES``
    when set, else :data:`EXTERNAL_DATA_BYTES`.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the variable when it is not a positive integer.
    """
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return EXTERNAL_DATA_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{THRESHOLD_ENV}={raw!r}: expected a positive number of bytes",
            THRESHOLD_ENV,
        )
    return value


def needs_external_data(weight_bytes: int) -> bool:
    """Whether a model with ``weight_bytes`` of fp32 weights is written with external data."""
    return weight_bytes >= external_threshold()


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere): between the export's steps on a large model, what one step freed would otherwise
    stay in the process's RSS under the next step's peak."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def has_external_data(path: str | os.PathLike) -> bool:
    """Whether the graph file ``path`` keeps tensors in external data (its weights file beside it)."""
    return (Path(path).parent / data_name(Path(path).name)).is_file()


def remove_graph(path: str | os.PathLike) -> None:
    """Delete a graph file and its weights file (either may be absent)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    (path.parent / data_name(path.name)).unlink(missing_ok=True)


def match_mode(path: str | os.PathLike) -> None:
    """Give a graph's weights file the graph file's permissions (onnx creates it 0600)."""
    path = Path(path)
    data = path.parent / data_name(path.name)
    if data.is_file() and path.is_file():
        os.chmod(data, stat.S_IMODE(path.stat().st_mode))


def save(model, path: str | os.PathLike, external: bool) -> None:
    """Write a ModelProto as ``path``; with ``external`` its tensors go into ``path``'s weights
    file (replaced, never appended to), one file beside the graph."""
    import onnx

    path = Path(path)
    remove_graph(path)
    if not external:
        onnx.save_model(model, str(path))
        return
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name(path.name),
        size_threshold=MIN_EXTERNAL_BYTES,
        convert_attribute=False,
    )
    match_mode(path)


def _external_entries(tensor) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def externalize(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Rewrite the graph ``src`` (one file, or with its tensors in external files, e.g. one file per
    tensor as torch's exporter writes a model over 2 GiB) as ``dst`` plus ``dst``'s weights file.

    Tensor data is copied in chunks straight from file to file, so memory holds the graph's
    nodes, never its weights. ``src``'s external files are left in place (the caller removes
    their directory).

    Returns:
        bytes written to the weights file.
    """
    import onnx
    from onnx import numpy_helper

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    remove_graph(dst)
    data_path = dst.parent / data_name(dst.name)
    offset = 0
    with open(data_path, "wb") as out:
        for tensor in model.graph.initializer:
            external = tensor.data_location == onnx.TensorProto.EXTERNAL
            if external:
                entry = _external_entries(tensor)
                length = int(entry.get("length", -1))
                start = int(entry.get("offset", 0))
                source = src.parent / entry["location"]
                if length < 0:
                    length = source.stat().st_size - start
            else:
                if not tensor.HasField("raw_data"):
                    if _tensor_bytes(tensor) < MIN_EXTERNAL_BYTES:
                        continue
                    values = numpy_helper.to_array(tensor)
                    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
                length = len(tensor.raw_data)
                if length < MIN_EXTERNAL_BYTES:
                    continue
            if length >= ALIGN_FROM and offset % ALIGN:
                pad = ALIGN - offset % ALIGN
                out.write(b"\0" * pad)
                offset += pad
            if external:
                with open(source, "rb") as f:
                    f.seek(start)
                    left = length
                    while left:
                        block = f.read(min(COPY_CHUNK, left))
                        if not block:
                            raise StiltsError(
                                ErrorCode.FAILED_PRECONDITION,
                                f"{source}: ends before tensor {tensor.name!r} does",
                            )
                        out.write(block)
                        left -= len(block)
            else:
                out.write(tensor.raw_data)
                tensor.ClearField("raw_data")
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (
                ("location", data_name(dst.name)),
                ("offset", str(offset)),
                ("length", str(length)),
            ):
                e = tensor.external_data.add()
                e.key, e.value = key, value
            offset += length
    onnx.save_model(model, str(dst))
    match_mode(dst)
    LOG.info("%s: graph %d bytes, weights %d bytes beside it", dst, dst.stat().st_size, offset)
    return offset


def externalize_in_place(path: str | os.PathLike) -> str:
    """Move the one-file graph ``path`` into the external-data layout (``path`` plus its weights
    file), tensor for tensor.

    Returns:
        the sha256 of the one file it was (what a fingerprint of the graph hashes).
    """
    from stilts.manifest import sha256_file

    path = Path(path)
    one_file = sha256_file(path)
    staged = path.with_name(path.name + ".one-file")
    os.replace(path, staged)
    try:
        externalize(staged, path)
    except BaseException:
        remove_graph(path)
        os.replace(staged, path)
        raise
    staged.unlink()
    return one_file


def _tensor_bytes(tensor) -> int:
    import onnx

    n = 1
    for d in tensor.dims:
        n *= d
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return n * itemsize


def _is_external(tensor) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def tensor_array(tensor, base_dir: str | os.PathLike | None = None):
    """A tensor's values as a numpy array; a tensor whose data is still in the weights file is read
    from ``base_dir`` (the graph's folder) without being loaded into the ModelProto."""
    import numpy as np
    from onnx import helper, numpy_helper

    if base_dir is None or not _is_external(tensor):
        return numpy_helper.to_array(tensor)
    info = _external_entries(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    count = 1
    for d in tensor.dims:
        count *= d
    values = np.fromfile(
        Path(base_dir) / Path(info["location"]).name,
        dtype=dtype,
        count=count,
        offset=int(info.get("offset", 0)),
    )
    if values.size != count:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"{Path(base_dir) / info['location']}: ends before tensor {tensor.name!r} does",
        )
    return values.reshape(tuple(tensor.dims))


# The exporter's scope of the attention's query, key and value projections: the fusions read
# (and concatenate) these weights, so they are loaded before fusing.
ATTENTION_SCOPE = "/attention/self/"


def load_for_fusion(path: str | os.PathLike):
    """A graph with external data, loaded for the q4 rewrite without most of its weights: the
    tensors only a ``Gather`` (embedding tables) or a ``MatMul`` outside the attention's
    query/key/value projections read stay in the weights file (the rewrite reads them one at a
    time with :func:`tensor_array`); every other tensor is loaded. A one-file graph loads whole.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for tensor in model.graph.initializer:
        if not _is_external(tensor):
            continue
        users = readers.get(tensor.name, [])
        if users and all(
            n.op_type == "Gather" or (n.op_type == "MatMul" and ATTENTION_SCOPE not in n.name)
            for n in users
        ):
            continue
        load_external_data_for_tensor(tensor, str(path.parent))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return model


def load_remaining(model, base_dir: str | os.PathLike) -> None:
    """Load into ``model`` the tensors still in the weights file under ``base_dir`` (before the
    model is saved elsewhere)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in model.graph.initializer:
        if _is_external(tensor):
            load_external_data_for_tensor(tensor, str(base_dir))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
