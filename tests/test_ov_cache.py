"""OpenVINO's compiled-model cache and the 4-bit word table: a warm start gives the cold start's
vectors bit for bit, a damaged entry is rebuilt (never a crash), and nothing is written outside
``$STILTS_HOME/ov-cache``; the compact table is used only where it is exact, and then changes no
output."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from stilts.runtimes import ovcache
from stilts.runtimes.ovcompact import BLOCK, compact_word_table, q4_blocks

ov = pytest.importorskip("openvino")


def _q4_table(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A table on a Q4_0 grid: per block of 32 values, (code - 8) * an fp16 scale."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, size=(rows, cols // BLOCK, BLOCK)).astype(np.float32)
    codes[..., 0] = 0  # each block holds its extreme, as Q4_0 quantisation makes it
    scales = rng.uniform(0.001, 0.05, size=(rows, cols // BLOCK, 1)).astype(np.float16)
    return ((codes - 8) * scales.astype(np.float32)).reshape(rows, cols)


def test_q4_blocks_are_exact_or_refused():
    w = _q4_table(64, 96)
    codes, scales = q4_blocks(w)
    assert np.array_equal((codes.astype(np.float32) - 8) * scales, w.reshape(64, 3, BLOCK))
    off = w.copy()
    off[3, 7] += 1e-4  # one value off the grid: the table must stay as it is
    assert q4_blocks(off) is None
    assert q4_blocks(np.ones((4, 40), np.float32)) is None  # not whole blocks


@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_compact_table_gives_the_same_outputs(hint):
    """An encoder's embedding block on a Q4_0 table (gather, plus position embeddings, layer
    norm): compiled with the table in fp32 and in its u4 form, the outputs are identical (nibble
    order, zero point, scales; on bf16 too). The whole model: the test below."""
    import openvino.opset13 as ops

    table = _q4_table(5000, 64, seed=1)
    rng = np.random.default_rng(2)
    position = rng.standard_normal((16, 64)).astype(np.float32)

    def build():
        ids = ops.parameter([-1, 11], np.int64, name="input_ids")
        x = ops.gather(ops.constant(table), ids, ops.constant(np.int64(0)))
        x = ops.add(x, ops.constant(position[:11]))
        x = ops.mvn(x, ops.constant(np.array([-1], np.int64)), True, 1e-12, "inside_sqrt")
        return ov.Model([x], [ids])

    core = ov.Core()
    compact = build()
    assert compact_word_table(compact, ov) == 1
    feeds = {"input_ids": rng.integers(0, 5000, size=(3, 11)).astype(np.int64)}
    out = [
        core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint})(feeds)[0]
        for m in (build(), compact)
    ]
    assert np.array_equal(out[0], out[1])


def test_warm_equals_cold_and_a_damaged_entry_is_refused(
    default_model_dir, dev_pack, tmp_path, monkeypatch, caplog
):
    from conftest import read_tatoeba

    from stilts import Encoder

    home = tmp_path / "home"
    monkeypatch.setenv("STILTS_HOME", str(home))
    monkeypatch.delenv(ovcache.ENV, raising=False)
    monkeypatch.delenv("STILTS_OV_COMPACT", raising=False)
    texts = read_tatoeba(dev_pack, "de", 6)[0] + read_tatoeba(dev_pack, "ja", 6)[0]

    def load():
        enc = Encoder(default_model_dir, precision="ov-bf16", threads=2)
        return enc.runner.cached, enc.encode(texts, kind="bitext", batch_size=4)

    # the reference: the fp32 graph as it is, compiled, nothing cached
    monkeypatch.setenv(ovcache.ENV, "0")
    monkeypatch.setenv("STILTS_OV_COMPACT", "0")
    cached, plain = load()
    assert cached == "off" and not home.exists()
    monkeypatch.delenv(ovcache.ENV)
    monkeypatch.delenv("STILTS_OV_COMPACT")

    cached, cold = load()
    assert cached == "miss"
    # the 4-bit word table changes nothing measurable (bit for bit on the dev CPUs)
    assert np.abs(cold - plain).max() < 1e-6
    # everything written lies under $STILTS_HOME/ov-cache: one blob and its record
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert len(written) == 2 and all(w.startswith("ov-cache/") for w in written), written
    blob = next(home.glob("ov-cache/*.blob"))
    meta = json.loads(blob.with_suffix(".json").read_text())
    assert meta["key"]["route"] == "ov-bf16" and meta["key"]["cpu"]["flags"] is not None
    assert blob.stat().st_size < 250e6  # the word table in 4 bits (fp32: 470 MB)

    cached, warm = load()
    assert cached == "hit"
    assert np.array_equal(warm, cold)  # bit for bit

    # damaged: a flipped byte in the middle of the blob is caught by its checksum
    with open(blob, "r+b") as f:
        f.seek(blob.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    entry = ovcache.CacheEntry(blob, meta["key"])
    with caplog.at_level(logging.WARNING, logger="stilts.runtimes.ovcache"):
        assert entry.load() is None
    assert "sha256 does not match" in caplog.text
    blob.with_suffix(".json").write_text("{")  # a torn record: refused too
    assert entry.load() is None

    # (a refused entry is compiled again and replaced as on the first load above, and as
    # test_an_entry_that_will_not_import_is_rebuilt shows on a small model)


def test_an_entry_that_will_not_import_is_rebuilt(tmp_path, monkeypatch, caplog):
    """A blob whose record checks out but that OpenVINO refuses to import (written by hand here):
    logged, removed, compiled again and stored; never a crash."""
    import openvino.opset13 as ops

    from stilts.runtimes.routes import OvRunner, ov_config

    monkeypatch.setenv("STILTS_HOME", str(tmp_path / "home"))
    ids = ops.parameter([-1, -1], np.int64, name="input_ids")
    x = ops.gather(ops.constant(_q4_table(5000, 64)), ids, ops.constant(np.int64(0)))
    graph = tmp_path / "toy.xml"
    ov.save_model(ov.Model([ops.reduce_mean(x, [1], False)], [ids]), graph)
    entry = ovcache.cache_entry("toy", "fp", "sha", "ov-f32", ov_config(1, "f32"), "v")
    entry.save(b"not a compiled model" * 100)
    with caplog.at_level(logging.WARNING, logger="stilts.runtimes.routes"):
        runner = OvRunner(graph, 1, "f32", entry, entry.load())
    assert runner.cached == "miss" and "did not import" in caplog.text
    feeds = {"input_ids": np.array([[1, 2, 3]], np.int64)}
    again = OvRunner(graph, 1, "f32", entry, entry.load())
    assert again.cached == "hit"
    assert np.array_equal(again.run(feeds), runner.run(feeds))


def _rss_file_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("RssFile")).split()[1]) / 1024


def test_page_out_hands_back_a_mapped_blobs_pages_and_keeps_its_bytes(tmp_path):
    """A warm start imports the blob from a private map, then hands its resident pages back
    (the plugin keeps its own copies of the layer weights): here a 64 MiB map, read once."""
    path = tmp_path / "blob"
    data = np.random.default_rng(0).integers(0, 256, size=64 << 20, dtype=np.uint8)
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="c")
    before = _rss_file_mb()
    total = int(mapped.sum(dtype=np.uint64))  # every page read: resident
    assert _rss_file_mb() - before > 48
    assert ovcache.page_out(mapped)
    assert _rss_file_mb() - before < 16
    assert int(mapped.sum(dtype=np.uint64)) == total == int(data.sum(dtype=np.uint64))
    assert not ovcache.page_out(mapped[:0])  # nothing to hand back
