"""Export of a tiny randomly initialised XLM-R into the contract, with parity; the E5S1 reader."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from stilts import Encoder, StiltsError
from stilts.sources.e5bin import dequantize_q4_0

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = (
    "the a file could not be opened save your changes before closing window network "
    "connection was lost der die das datei le la fichier el archivo"
).split()


def make_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *WORDS, "<mask>"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.save(str(path))
    return len(vocab)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 2-layer, hidden-32 XLM-R with random weights and a word-level tokenizer."""
    d = tmp_path_factory.mktemp("tiny-xlmr")
    n_vocab = make_tokenizer(d / "tokenizer.json")
    torch.manual_seed(0)
    config = transformers.XLMRobertaConfig(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
    )
    transformers.XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(d)
    return d


def torch_pooled(checkpoint, texts, layer, pooling="mean"):
    """The reference: hidden_states[layer] of the PyTorch model, pooled and normalised."""
    from tokenizers import Tokenizer

    model = transformers.AutoModel.from_pretrained(checkpoint).eval()
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    out = []
    for t in texts:
        ids = torch.tensor([tok.encode(t).ids])
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
        v = h.mean(0) if pooling == "mean" else h[0]
        out.append((v / v.norm()).numpy())
    return np.stack(out)


@pytest.mark.parametrize("layer,pooling", [(1, "mean"), (2, "cls")])
def test_export_parity_with_pytorch(tiny_checkpoint, tmp_path, layer, pooling):
    from stilts.graphs.export import export_checkpoint

    out = tmp_path / "model"
    m = export_checkpoint(
        tiny_checkpoint, out, layer=layer, pooling=pooling, prefixes={"query": "the "}
    )
    assert m.layer == layer and m.num_layers == 2 and m.dim == 32 and m.pooling == pooling
    assert m.max_len == 64  # RoBERTa positions start at pad_token_id + 1
    assert m.parity["fp32_vs_torch_max_abs_diff"] < 1e-4
    assert set(m.files) == {
        "model.onnx",
        "model.onnx.data",
        "model.q4.onnx",
        "model.int8.onnx",
        "tokenizer.json",
    }
    assert m.cpu_precision == "q4" and m.parity["q4_vs_fp32_cosine_mean"] >= 0.999
    texts = ["the file could not be opened", "save your changes", "der datei", ""]
    enc = Encoder(out, precision="fp32")
    ref = torch_pooled(tiny_checkpoint, texts, layer, pooling)
    np.testing.assert_allclose(enc.encode(texts, kind="bitext"), ref, atol=1e-4)
    # The query prefix is applied by the encoder, from the manifest.
    np.testing.assert_allclose(
        enc.encode(["file"], kind="query"),
        torch_pooled(tiny_checkpoint, ["the file"], layer, pooling),
        atol=1e-4,
    )
    int8 = Encoder(out, precision="int8").encode(texts, kind="bitext")
    assert np.sum(int8 * ref, axis=1).mean() > 0.95
    # Random weights are off the 4-bit grid: q4 rounds them (RTN) and still passes parity.
    assert m.parity["q4_weight_max_abs_error"] > 0
    q4 = Encoder(out).encode(texts, kind="bitext")
    cos = np.sum(q4 * ref, axis=1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99


def test_export_refuses_a_q4_graph_that_misses_parity(tiny_checkpoint, tmp_path):
    from stilts.graphs.checkpoint import load_checkpoint
    from stilts.graphs.export import export

    model, tok = load_checkpoint(tiny_checkpoint)
    with pytest.raises(StiltsError, match="q4 vs fp32 cosine mean"):
        export(model, tok, tmp_path / "m", name="tiny", layer=1, min_q4_cosine=1.01)
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]


def test_a_tuned_export_leaves_out_a_q4_graph_that_misses_parity(tiny_checkpoint, tmp_path):
    """Training's and the adapter install's export: the graph that misses its gate is left out
    and recorded; the model still loads and serves another graph."""
    from stilts.graphs.export import export_checkpoint

    m = export_checkpoint(
        tiny_checkpoint, tmp_path / "m", layer=1, min_q4_cosine=1.01, optional_quantized=True
    )
    assert "q4" in m.parity["refused"] and "q4 vs fp32 cosine mean" in m.parity["refused"]["q4"]
    assert not (tmp_path / "m" / "model.q4.onnx").exists()
    assert m.cpu_precision != "q4"
    assert Encoder(tmp_path / "m").encode(["ein Satz"], kind="bitext").shape[0] == 1


def test_int8_that_misses_its_gate_retries_with_the_ffn_outputs_in_fp32(tiny_checkpoint, tmp_path):
    """An int8 graph under the gate is quantised once more with each layer's feed-forward output
    MatMul left fp32 (recorded); a gate no graph can meet still leaves it out."""
    from stilts.graphs.export import _ffn_outputs, export_checkpoint

    m = export_checkpoint(
        tiny_checkpoint, tmp_path / "m", layer=1, min_int8_cosine=1.01, optional_quantized=True
    )
    ffn = _ffn_outputs(tmp_path / "m" / "model.onnx")
    assert m.parity["int8_fp32_matmuls"] == len(ffn) == m.layer  # the graph stops at its layer
    assert "int8" in m.parity["refused"] and not (tmp_path / "m" / "model.int8.onnx").exists()
    ok = export_checkpoint(tiny_checkpoint, tmp_path / "ok", layer=1)
    assert "int8_fp32_matmuls" not in ok.parity  # passed at once: every MatMul int8


def test_export_rejects_bad_layer_and_leaves_nothing(tiny_checkpoint, tmp_path):
    from stilts.graphs.export import export_checkpoint

    with pytest.raises(StiltsError, match="layer must be in 0..2"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m", layer=7)
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]


def test_export_cli_default_layer_is_the_papers_middle(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli-model"
    pack = tmp_path / "tatoeba"
    pack.mkdir()
    (pack / "de-en.tsv").write_text("die datei\tthe file\nder window\tthe window\n")
    (pack / "fr-en.tsv").write_text("le fichier\tthe file\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stilts.cli",
            "export",
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--parity-data",
            str(pack),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "stilts.json").read_text())
    assert manifest["layer"] == 1  # round(2 * 14 / 24)
    assert manifest["parity"]["q4_parity_sentences"] == 3  # every sentence of the pack
    assert json.loads(proc.stdout.strip().splitlines()[-1])["dim"] == 32


def test_dequantize_q4_0_by_hand():
    # One row of 32 weights: scale 0.5, nibbles j (low) and 15 - j (high) for j in 0..15.
    qs = bytes((j & 0xF) | ((15 - j) << 4) for j in range(16))
    block = np.frombuffer(struct.pack("<e", 0.5) + qs, dtype=np.uint8)
    w = dequantize_q4_0(block, 1, 32)[0]
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    np.testing.assert_array_equal(w, np.array(expected, dtype=np.float32))


def test_e5bin_rejects_other_files(tmp_path):
    from stilts.sources import e5bin

    bad = tmp_path / "x.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(StiltsError, match="not an E5S1 file"):
        e5bin.read(bad)


def test_vocabulary_check_names_the_mismatch(tmp_path):
    from stilts.sources.default_model import check_vocabulary

    tok = tmp_path / "tokenizer.json"
    tok.write_text(json.dumps({"model": {"vocab": [["<s>", 0.0], ["a", -1.0], ["b", -2.0]]}}))
    check_vocabulary(tok, ["<s>", "a", "b"], np.array([0.0, -1.0, -2.0]))
    with pytest.raises(StiltsError, match="piece 2"):
        check_vocabulary(tok, ["<s>", "a", "c"], np.array([0.0, -1.0, -2.0]))
    with pytest.raises(StiltsError, match="3 pieces"):
        check_vocabulary(tok, ["<s>", "a"], np.array([0.0, -1.0]))
