"""The benchmark's text -> vector cache: each distinct text encoded once, persisted across runs
for the same model route, a torn tail dropped."""

from __future__ import annotations

import numpy as np

from stilts.benchmarks.vector_cache import TEXTS, VECTORS, VectorCache


def test_each_text_once_and_across_runs(tmp_path):
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), ord(t[0]), 1.0] for t in texts], dtype=np.float32)

    c = VectorCache(3, tmp_path / "c")
    out = c.encode(["ab", "c", "ab", "déf"], encode)
    assert calls == [["ab", "c", "déf"]]
    assert out.tolist() == [[2, 97, 1], [1, 99, 1], [2, 97, 1], [3, 100, 1]]
    assert c.encode(["c"], encode).tolist() == [[1, 99, 1]] and len(calls) == 1

    again = VectorCache(3, tmp_path / "c")  # another run: nothing to encode
    np.testing.assert_array_equal(again.encode(["déf", "ab"], encode), out[[3, 0]])
    assert len(calls) == 1 and len(again) == 3

    # a run killed mid-append: a text without its vector is dropped, the rest kept
    with (tmp_path / "c" / TEXTS).open("a", encoding="utf-8") as f:
        f.write('"orphan"\n"half')
    torn = VectorCache(3, tmp_path / "c")
    assert len(torn) == 3 and "orphan" not in torn.rows
    assert (tmp_path / "c" / VECTORS).stat().st_size == 3 * 3 * 4
    torn.encode(["orphan"], encode)
    assert calls[-1] == ["orphan"] and len(VectorCache(3, tmp_path / "c")) == 4


def test_stilts_system_reuses_vectors_of_the_same_route(default_model_dir, tmp_path):
    from stilts.benchmarks.systems import StiltsSystem

    texts = ["Open file", "Datei öffnen", "Open file", "ファイルを開く"]
    a = StiltsSystem(default_model_dir, precision="fp32", vector_cache=tmp_path)
    first = a.encode(texts, "de")
    direct = a.encoder.encode(texts, kind="bitext")
    np.testing.assert_allclose(first, direct, atol=1e-6)
    b = StiltsSystem(default_model_dir, precision="fp32", vector_cache=tmp_path)
    assert len(b.cache) == 3
    np.testing.assert_array_equal(b.encode(texts, "de"), first)
    # another precision is another route: its own vectors
    c = StiltsSystem(default_model_dir, precision="int8", vector_cache=tmp_path)
    assert len(c.cache) == 0
