"""`stilts bench routes`: candidate CPU graphs built from the default model and measured."""

from __future__ import annotations

import json

import pytest

from stilts.cli import main


@pytest.mark.slow
def test_routes_build_measure_and_rank_against_fp32(dev_pack, default_model_dir, tmp_path):
    out, report = tmp_path / "routes.json", tmp_path / "routes.md"
    args = ["bench", "routes", "--model", str(default_model_dir), "--work-dir", str(tmp_path / "w")]
    args += ["--routes", "fp32-q4table,int8-reduce-range", "--tatoeba", str(dev_pack / "tatoeba")]
    args += ["--languages", "de,fi", "--max-pairs", "12", "--bucc", "", "--speed-n", "32"]
    args += ["--batch-sizes", "1,8", "--repeats", "1", "--quiet"]
    assert main([*args, "--output", str(out), "--report", str(report)]) == 0
    res = json.loads(out.read_text())
    routes = res["routes"]
    assert list(routes) == ["fp32", "fp32-q4table", "int8-reduce-range"]  # the reference first
    # built once into the work dir, the model's own graph used as it is
    assert (tmp_path / "w" / "fp32-q4table" / "route.onnx").is_file()
    assert routes["fp32"]["graph"] == str(default_model_dir / "model.onnx")
    # the word table in 4-bit blocks holds the default model's Q4_0 table exactly: fp32's vectors,
    # a third of the file; fusions and blocks change nothing a text's batch could move
    q4t, ref = routes["fp32-q4table"], routes["fp32"]
    assert q4t["cosine_vs_fp32_min"] > 0.99999
    assert q4t["batch_vs_alone_max_abs"] < 1e-5
    assert q4t["megabytes"] < ref["megabytes"] / 2
    assert q4t["tatoeba_cosine_xx2en"] == ref["tatoeba_cosine_xx2en"]
    # dynamic int8 scales activations per batch: a text's vector depends on its companions
    int8 = routes["int8-reduce-range"]
    assert int8["batch_vs_alone_max_abs"] > 1e-4
    assert 0.95 < int8["cosine_vs_fp32_min"] < 0.9999
    for r in routes.values():
        assert r["tatoeba_languages"] == 2
        assert set(r["speed"]) == {"1", "8"} and r["speed"]["8"]["sentences_per_second"] > 0
        assert r["load_seconds"] > 0
    assert "bucc_f1_oracle" not in ref
    assert set(routes["fp32-q4table"]["speed"]["1"]["vs"]) == {"fp32"}  # no int8 route asked
    table = report.read_text()
    assert "| `fp32-q4table` |" in table and "| `int8-reduce-range` |" in table


def test_unknown_route_is_a_clear_error(tmp_path, capsys):
    rc = main(["bench", "routes", "--routes", "q3", "--output", str(tmp_path / "r.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "routes" in err and "q3" in err and "int8-static" in err
    assert not (tmp_path / "r.json").exists()
