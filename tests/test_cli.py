"""CLI round trips through a real subprocess: encode, models, bench encode."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stilts.encoding.encoder import available_routes


def stilts(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "stilts.cli", "-q", *args], capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_explains_every_option():
    out = stilts("--help").stdout
    for cmd in ("encode", "models", "export"):
        assert cmd in out
    enc_help = stilts("encode", "--help").stdout
    for flag in ("--model", "--input", "--output", "--kind", "--precision", "--batch-size"):
        assert flag in enc_help
    assert "STILTS_MODEL" in enc_help


def test_encode_round_trip_plain_and_with_ids(tmp_path, encoder, default_model_dir):
    plain = tmp_path / "plain.txt"
    plain.write_text("Guten Morgen\nGood morning\n\nどうもありがとう\n", encoding="utf-8")
    out = tmp_path / "plain.npy"
    res = stilts(
        "encode",
        "--model",
        str(default_model_dir),
        "--input",
        str(plain),
        "--output",
        str(out),
        "--kind",
        "bitext",
        "--quiet",
    )
    summary = json.loads(res.stdout)
    from stilts.encoding.autoroute import recorded

    default = recorded(default_model_dir)["chosen"]["batch"]  # auto: measured on this CPU
    assert summary == {**summary, "n": 4, "dim": 384, "truncated": 0, "precision": default}
    vecs = np.load(out)
    assert vecs.shape == (4, 384)
    ref = encoder.encode(["Guten Morgen", "Good morning", "", "どうもありがとう"], kind="bitext")
    assert np.sum(vecs * ref, axis=1).min() > 0.99
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[3]

    tsv = tmp_path / "ids.tsv"
    tsv.write_text("de-1\tGuten Morgen\nde-2\tGute Nacht\n", encoding="utf-8")
    stilts(
        "encode",
        "--input",
        str(tsv),
        "--output",
        str(tmp_path / "ids.npy"),
        "--quiet",
        "--model",
        str(default_model_dir),
        "--precision",
        "fp32",
    )
    assert np.load(tmp_path / "ids.npy").shape == (2, 384)
    assert (tmp_path / "ids.npy.ids").read_text().split() == ["de-1", "de-2"]


def test_encode_errors_are_clear(tmp_path):
    res = stilts("encode", "--model", "nope-model", "--input", "x", "--output", "y", check=False)
    assert res.returncode == 2 and "nope-model" in res.stderr
    res = stilts("encode", "--precision", "int4", "--input", "x", "--output", "y", check=False)
    assert res.returncode == 2 and "int4" in res.stderr


def test_models_list_info_install_idempotent(default_model_dir):
    assert "multilingual-e5-small" in stilts("models", "list").stdout
    info = json.loads(stilts("models", "info", "default").stdout)
    assert info["dim"] == 384 and info["sizes"]["model.int8.onnx"] > 50_000_000
    mtime = (default_model_dir / "model.onnx").stat().st_mtime
    assert stilts("models", "install", "default").stdout.strip() == str(default_model_dir)
    assert (default_model_dir / "model.onnx").stat().st_mtime == mtime  # nothing rebuilt


@pytest.mark.slow
def test_bench_encode_reports_ratios(tmp_path, dev_pack, default_model_dir):
    out = tmp_path / "bench.json"
    res = stilts(
        "bench",
        "encode",
        "--n",
        "96",
        "--repeats",
        "1",
        "--tatoeba",
        str(dev_pack / "tatoeba"),
        "--output",
        str(out),
    )
    report = json.loads(out.read_text())
    systems = report["systems"]
    precisions = available_routes(default_model_dir)  # every route that runs here
    assert set(systems) == {f"stilts-{p}" for p in precisions} | {"sentence-transformers"}
    assert all(systems[f"stilts-{p}"]["graph_bytes"] > 0 for p in precisions)
    assert systems["sentence-transformers"]["speedup_vs_baseline"] == 1.0
    assert all(s["sentences_per_second"] > 0 for s in systems.values())
    assert "vs baseline" in res.stdout and report["n"] == 96
