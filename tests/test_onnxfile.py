"""The fp32 graph's layout: its weights in a file beside it, which ONNX Runtime maps (one copy of
the weights per process), with the fingerprint of the one file it was."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stilts.graphs import onnxfile
from stilts.manifest import FP32_NAME, Manifest, data_name, sha256_file

ROWS, WIDTH = 32_768, 512  # a 64 MiB fp32 word table


def _table_graph(path, rows: int = ROWS) -> np.ndarray:
    """A graph gathering rows of a big table (the encoder's word table) and scaling them."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, WIDTH), dtype=np.float32)
    scale = np.full(WIDTH, 0.5, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"]),
            helper.make_node("Mul", ["rows", "scale"], ["out"]),
        ],
        "table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", WIDTH])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(scale, "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return table


def test_externalize_in_place_keeps_every_tensor_and_returns_the_one_files_hash(tmp_path):
    import onnxruntime as ort

    path = tmp_path / FP32_NAME
    table = _table_graph(path)
    one_file = sha256_file(path)
    ids = np.array([0, 7, ROWS - 1], dtype=np.int64)
    before = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]

    assert onnxfile.externalize_in_place(path) == one_file
    data = tmp_path / data_name(FP32_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FP32_NAME, data.name]
    assert path.stat().st_size < 4096 and data.stat().st_size >= table.nbytes
    proto = onnx.load(str(path), load_external_data=False)
    big = next(t for t in proto.graph.initializer if t.name == "table")
    entry = {e.key: e.value for e in big.external_data}
    assert entry["location"] == data.name and int(entry["offset"]) % onnxfile.ALIGN == 0
    # every tensor of MIN_EXTERNAL_BYTES or more goes beside the graph (the 2 KiB scale too)
    small = next(t for t in proto.graph.initializer if t.name == "scale")
    assert small.data_location == TensorProto.EXTERNAL
    np.testing.assert_array_equal(onnxfile.tensor_array(big, tmp_path), table)
    after = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(after, before)

    # a manifest pinning the one file's hash keeps its fingerprint whatever the layout
    m = Manifest(name="t", dim=WIDTH, max_len=8, weights_sha256=one_file)
    m.record_files(tmp_path)
    was = Manifest(name="t", dim=WIDTH, max_len=8, files={FP32_NAME: one_file})
    assert set(m.files) == {FP32_NAME, data.name}
    assert m.fingerprint == was.fingerprint
    # the files themselves stay checked
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(Exception, match=r"model\.onnx\.data: sha256"):
        m.verify_files(tmp_path)


def test_a_failed_move_leaves_the_one_file(tmp_path, monkeypatch):
    path = tmp_path / FP32_NAME
    _table_graph(path, rows=1024)
    one_file = sha256_file(path)

    def full_disk(src, dst):
        (dst.parent / data_name(dst.name)).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnxfile, "externalize", full_disk)
    with pytest.raises(OSError, match="No space"):
        onnxfile.externalize_in_place(path)
    assert [p.name for p in tmp_path.iterdir()] == [FP32_NAME]
    assert sha256_file(path) == one_file


RESIDENT = """
import sys
import numpy as np
import onnxruntime as ort
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = hwm()
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
s.run(None, {"ids": np.arange(64, dtype=np.int64)})
print((hwm() - before) // 1024)
"""


def test_onnx_runtime_holds_the_weights_once_when_they_sit_beside_the_graph(tmp_path):
    """Peak resident memory a fresh process adds for a session over a 64 MiB table: about two
    copies from one file (the file's bytes, then the session's tensor), well under one copy
    from the mapped weights file (only the pages the run touches)."""
    one, ext = tmp_path / "one", tmp_path / "ext"
    one.mkdir()
    ext.mkdir()
    _table_graph(one / FP32_NAME)
    _table_graph(ext / FP32_NAME)
    onnxfile.externalize_in_place(ext / FP32_NAME)
    peak = {}
    for d in (one, ext):
        out = subprocess.run(
            [sys.executable, "-c", RESIDENT, str(d / FP32_NAME)],
            capture_output=True,
            text=True,
            check=True,
        )
        peak[d.name] = int(out.stdout.split()[0])
    mib = ROWS * WIDTH * 4 // 2**20
    assert peak["one"] > 1.6 * mib and peak["ext"] < 0.6 * mib, peak
