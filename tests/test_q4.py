"""The q4 precision: exact 4-bit blocks, parity with fp32 and batch invariance on real dev
sentences with the real default model, and old model directories (no q4 graph) still loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import _need

from stilts import Encoder, StiltsError
from stilts.graphs.quantize import dequantize_q4, quantize_q4_blocks
from stilts.manifest import FP32_NAME, INT8_NAME, Q4_NAME, TOKENIZER_NAME, Manifest
from stilts.sample import dev_sentences


@pytest.fixture(scope="module")
def q4_model_dir(default_model_dir):
    return _need(default_model_dir / Q4_NAME, "the default model's q4 graph").parent


@pytest.fixture(scope="module")
def encoder_q4(q4_model_dir):
    return Encoder(q4_model_dir, precision="q4")


@pytest.fixture(scope="module")
def dev_texts(dev_pack):
    """One sentence per dev-pack language (88 languages, many scripts)."""
    return dev_sentences(dev_pack / "tatoeba", 88)


def test_q4_blocks_hold_a_q4_0_grid_exactly():
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.001, 0.1, (6, 4)).astype(np.float16).astype(np.float32)
    codes = rng.integers(0, 16, (6, 4, 32))
    codes[:, :, 5] = 0  # Q4_0 maps each block's largest magnitude to code 0
    w = ((codes - 8) * scales[..., None]).astype(np.float32).reshape(6, 128)
    q = quantize_q4_blocks(w)
    assert q.max_abs_error == 0.0 and q.packed.shape == (6, 64) and q.packed.dtype == np.uint8
    np.testing.assert_array_equal(dequantize_q4(q), w)
    np.testing.assert_array_equal(q.scales, scales)
    # Off the grid it rounds to the nearest of codes -8..7 steps: within half a step, or one step
    # where the code was clipped at +7 (values near the block's extreme of the other sign).
    r = rng.normal(size=(4, 64)).astype(np.float32)
    qr = quantize_q4_blocks(r)
    step = np.repeat(np.abs(qr.scales), 32, axis=1)
    err = np.abs(dequantize_q4(qr) - r)
    assert np.all(err <= step + 1e-6) and np.mean(err <= step / 2 + 1e-6) > 0.9
    assert qr.max_abs_error == float(err.max()) > 0
    with pytest.raises(ValueError, match="blocks of 32"):
        quantize_q4_blocks(np.zeros((2, 40), np.float32))


def test_default_precision_is_q4_with_its_parity_in_the_manifest(q4_model_dir, monkeypatch):
    m = Manifest.load(q4_model_dir)
    assert m.cpu_precision == "q4" and Q4_NAME in m.files
    m.verify_files(q4_model_dir, [Q4_NAME])
    p = m.parity
    assert p["q4_weight_max_abs_error"] == 0.0  # the Q4_0 weights are held exactly
    assert p["q4_vs_fp32_cosine_mean"] >= 0.999 and p["q4_vs_fp32_cosine_min"] >= 0.99
    assert p["q4_batch_vs_alone_max_abs_diff"] < 1e-5
    assert p["q4_parity_sentences"] >= 12
    monkeypatch.setenv("STILTS_AUTO_ROUTE", "manifest")  # auto as recorded at export, unmeasured
    assert Encoder(q4_model_dir, precision="auto").precision == "q4"


def test_q4_matches_fp32_on_dev_sentences(encoder_q4, encoder_fp32, dev_texts):
    q4 = encoder_q4.encode(dev_texts, kind="bitext")
    fp32 = encoder_fp32.encode(dev_texts, kind="bitext")
    cos = np.sum(q4 * fp32, axis=1)
    assert cos.min() >= 0.995 and cos.mean() >= 0.9995, (cos.min(), cos.mean())
    # The neighbours do not move: each q4 vector's nearest fp32 vector is its own.
    assert np.all(np.argmax(q4 @ fp32.T, axis=1) == np.arange(len(dev_texts)))


def test_q4_is_batch_invariant(encoder_q4, dev_texts):
    texts = dev_texts[::2][:32]  # mixed scripts and lengths, padded together in one batch
    together = encoder_q4.encode(texts, kind="bitext", batch_size=32)
    alone = np.stack([encoder_q4.encode([t], kind="bitext")[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5
    shuffled = [texts[i] for i in np.random.default_rng(1).permutation(len(texts))]
    moved = encoder_q4.encode(shuffled, kind="bitext", batch_size=7)
    other = dict(zip(shuffled, moved, strict=True))
    assert max(np.abs(other[t] - v).max() for t, v in zip(texts, together, strict=True)) < 1e-5


def test_old_model_directory_without_q4_still_loads(default_model_dir, tmp_path, monkeypatch):
    """A directory written before q4 (fp32 + int8 only, no cpu_precision) loads int8 by default
    (the manifest's default; ``auto`` measured on the CPU never picks dynamic int8)."""
    monkeypatch.setenv("STILTS_AUTO_ROUTE", "manifest")
    for name in (FP32_NAME, INT8_NAME, TOKENIZER_NAME):
        (tmp_path / name).symlink_to(default_model_dir / name)
    data = json.loads((default_model_dir / "stilts.json").read_text())
    data.pop("cpu_precision", None)
    data["files"] = {k: v for k, v in data["files"].items() if k != Q4_NAME}
    (tmp_path / "stilts.json").write_text(json.dumps(data))
    enc = Encoder(tmp_path)
    assert enc.precision == "int8"
    assert enc.encode(["Guten Morgen"]).shape == (1, 384)
    with pytest.raises(StiltsError, match="model.q4.onnx: missing"):
        Encoder(tmp_path, precision="q4")
