"""The word table of an OpenVINO model in 4 bits, where that is exact.

The default model's word table (250,037 x 384, 96M parameters: 384 MB in fp32) is frozen in
training and lies on its base's Q4_0 grid: every block of 32 values of a row is ``(code - 8) *
scale`` with a 4-bit code and one scale. :func:`compact_word_table` finds the embedding ``Gather``
on a large constant table, recovers codes and scales the Q4_0 way, and, only when dequantising them
gives back every value exactly (max abs error 0.0), replaces the constant by a u4 constant with its
decompression (``Convert -> Subtract 8 -> Multiply scale -> Reshape``), which OpenVINO's CPU plugin
runs as a compressed gather: the table takes 48 MB of codes and 12 MB of scales instead of 384 MB,
in memory and in the compiled-model cache, and the vectors are bit-for-bit those of the fp32 table
(``tests/test_ov_cache.py``). A table off the grid is left as it is. ``STILTS_OV_COMPACT=0``
keeps every table in fp32 (for comparisons; the compiled-model cache keys on it).
"""

from __future__ import annotations

import logging
import os

import numpy as np

LOG = logging.getLogger(__name__)

BLOCK = 32
ZERO_POINT = 8
# smaller constant tables (position embeddings: 512 rows) are not worth it
MIN_ROWS = 4096
PROBE_ROWS = 256  # the first chunk: a table off the grid is refused after these rows
CHUNK_ROWS = 16384
ENV = "STILTS_OV_COMPACT"


def compact_enabled() -> bool:
    """Whether word tables are compacted (``STILTS_OV_COMPACT`` unset, or anything but 0/off/no)."""
    return os.environ.get(ENV, "").strip().lower() not in ("0", "off", "no", "false")


def q4_blocks(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes (uint8, 0..15, shape [rows, cols/32, 32]) and scales (float32, [rows, cols/32, 1])
    with ``(codes - 8) * scales == w`` exactly, or None when ``w`` is not on such a grid.

    Works through the rows in chunks (the first one small), so a table off the grid is refused
    early and an exact one costs its codes and scales plus one chunk's temporaries, not several
    full-size float copies."""
    rows, cols = w.shape
    if cols % BLOCK:
        return None
    codes = np.empty((rows, cols // BLOCK, BLOCK), dtype=np.uint8)
    scales = np.empty((rows, cols // BLOCK, 1), dtype=np.float32)
    start, step = 0, PROBE_ROWS
    while start < rows:
        stop = min(rows, start + step)
        got = _q4_exact(w[start:stop])
        if got is None:
            return None
        codes[start:stop], scales[start:stop] = got
        start, step = stop, CHUNK_ROWS
    return codes, scales


def _q4_exact(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // BLOCK, BLOCK)
    pick = np.abs(blocks).argmax(axis=2)[..., None]
    scales = (np.take_along_axis(blocks, pick, axis=2) / np.float32(-8.0)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)
    codes = np.rint(blocks / safe) + ZERO_POINT
    if codes.min() < 0 or codes.max() > 15:
        return None
    codes = codes.astype(np.uint8)
    exact = np.array_equal((codes.astype(np.float32) - ZERO_POINT) * scales, blocks)
    return (codes, scales) if exact else None


def compact_word_table(model, ov) -> int:
    """Replace each large embedding table of ``model`` (an ``openvino.Model``) that lies exactly on
    a Q4_0 grid by its u4 form (see module doc); returns how many were replaced."""
    import openvino.opset13 as ops

    done = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Gather":
            continue
        src = op.input_value(0).get_node()
        if src.get_type_name() != "Constant" or src.get_element_type() != ov.Type.f32:
            continue
        shape = list(src.get_output_shape(0))
        if len(shape) != 2 or shape[0] < MIN_ROWS:
            continue
        q = q4_blocks(src.get_data())
        if q is None:
            LOG.info("%s: word table is not on a 4-bit grid; kept in fp32", src.get_friendly_name())
            continue
        codes, scales = q
        rows, cols = shape
        flat = codes.reshape(-1)
        packed = ov.Tensor(ov.Type.u4, ov.Shape([rows, cols // BLOCK, BLOCK]))
        packed.data[:] = flat[0::2] | (flat[1::2] << 4)  # element 2i in the low nibble
        x = ops.convert(ov.op.Constant(packed, shared_memory=False), "f32")
        x = ops.subtract(x, ops.convert(ops.constant(np.uint8(ZERO_POINT)), "f32"))
        x = ops.multiply(x, ops.constant(scales))
        x = ops.reshape(x, ops.constant(np.array([rows, cols], dtype=np.int64)), False)
        op.input(0).replace_source_output(x.output(0))
        done += 1
    return done
