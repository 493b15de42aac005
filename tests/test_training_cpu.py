"""The CPU recipe's levers on real parts: cpuinfo files, the toy model's tokenizer and encoder,
peft's LoRA wrapping, the batch sampler; and the progress arithmetic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_toy_xlmr

from stilts.training import samples
from stilts.training.cpu import (
    auto_max_len,
    available_cores,
    cpu_has_native_bf16,
    cut_bitext,
    cut_ids,
    resolve_bf16,
    resolve_freeze,
)
from stilts.training.progress import describe, format_eta, headline, progress_fields

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_xlmr(tmp_path_factory.mktemp("toy-xlmr"), samples.all_text())


def _cpuinfo(path: Path, flags: str) -> Path:
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_bf16_auto_follows_the_cpu_flags(tmp_path):
    assert cpu_has_native_bf16(_cpuinfo(tmp_path / "amx", "avx512f amx_bf16 amx_tile"))
    assert cpu_has_native_bf16(_cpuinfo(tmp_path / "avx", "avx512f avx512_bf16"))
    assert not cpu_has_native_bf16(_cpuinfo(tmp_path / "old", "avx2 avx512f avx512_vnni"))
    assert not cpu_has_native_bf16(tmp_path / "missing")
    # this machine: auto on CPU is exactly "has the flags"
    assert resolve_bf16("auto", cuda=False) is cpu_has_native_bf16()
    assert resolve_bf16("auto", fp16=True, cuda=False) is False
    assert resolve_bf16("on") is True and resolve_bf16("off") is False
    assert resolve_bf16(True) is True and resolve_bf16(False) is False


def test_threads_and_embedding_defaults():
    assert available_cores() == len(os.sched_getaffinity(0))
    assert resolve_freeze("auto", cuda=False) == "word"
    assert resolve_freeze("auto", cuda=True) == "none"
    assert resolve_freeze(True) == "all" and resolve_freeze(False) == "none"
    assert resolve_freeze("all") == "all"


def test_auto_max_len_and_cutting_match_the_tokenizer(toy):
    from stilts.training.examples import BitextFeature
    from stilts.training.text import TextTokenizer, tokenizer_file

    assert auto_max_len([10] * 99 + [200]) == 16  # p99 of mostly 10: at least 16
    assert auto_max_len(list(range(1, 101))) == 104  # p99 = 99.01 -> 100 -> multiple of 8
    assert auto_max_len([500] * 10, cap=128) == 128
    tok = TextTokenizer(tokenizer_file(str(toy)))
    text = " ".join(" ".join(samples.all_text()).split()[:80])
    full = np.asarray(tok.encode_texts([text], 128)[0].ids)
    assert len(full) > 24
    for n in (16, 24):
        want = np.asarray(tok.encode_texts([text], n)[0].ids)
        np.testing.assert_array_equal(cut_ids(full, n), want)
    short = np.asarray(tok.encode_texts(["A man."], 128)[0].ids)
    feats = cut_bitext([BitextFeature(full, short, 0, 1)], 16)
    assert len(feats[0].source_ids) == 16 and feats[0].target_ids is short


def test_word_embeddings_get_no_gradient_and_lora_freezes_them_too(toy):
    from stilts.training.model import MultiTaskModel, load_encoder
    from stilts.training.trainer import TrainConfig, _add_adapter

    model = MultiTaskModel(load_encoder(toy), {"bitext": ("bitext", 0)}, "word")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.embeddings.word_embeddings.weight"}
    cfg = TrainConfig(tasks=["bitext"], output=Path("unused"), model=str(toy), adapter="lora")
    lora = MultiTaskModel(_add_adapter(cfg, load_encoder(toy)), {"bitext": ("bitext", 0)})
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("heads.") for n in trainable)
    assert not lora.encoder.get_input_embeddings().weight.requires_grad


def test_one_pass_bitext_equals_two_passes(toy):
    from stilts.training.batches import collate_bitext
    from stilts.training.examples import BitextFeature
    from stilts.training.model import MultiTaskModel, load_encoder
    from stilts.training.text import TextTokenizer, tokenizer_file

    tok = TextTokenizer(tokenizer_file(str(toy)))
    words = " ".join(samples.all_text()).split()
    texts = [" ".join(words[i : i + 3 + i % 7]) for i in range(0, 80, 5)]
    ids = [np.asarray(e.ids) for e in tok.encode_texts(texts, 64)]
    feats = [BitextFeature(ids[i], ids[i + 1], i, i + 1) for i in range(0, len(ids) - 1, 2)]
    batch = collate_bitext("bitext", feats, tok.pad_id).to_dict()
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(toy), {"bitext": ("bitext", 0)}, layer=2).eval()
    with torch.no_grad():
        one = model(**batch)
        model.bitext_passes = 2
        two = model(**batch)
    np.testing.assert_allclose(one["loss"].item(), two["loss"].item(), atol=1e-5)
    np.testing.assert_allclose(one["logits"].numpy(), two["logits"].numpy(), atol=1e-5)


def _bitext_sampler(n, bs, seed, lengths, group, langs=None, law="proportional"):
    """One bitext task of ``n`` pairs with distinct texts (keys i and n + i), n // bs batches."""
    from stilts.training.sampling import MultiTaskBatchSampler

    return MultiTaskBatchSampler(
        {"bitext": n},
        bs,
        {"bitext": 1.0},
        n // bs,
        seed,
        {"bitext": [(i, n + i) for i in range(n)]},
        {"bitext": lengths},
        group,
        {"bitext": langs} if langs is not None else None,
        law,
    )


def test_length_groups_pad_less_and_keep_every_example_and_rule():
    rng = np.random.default_rng(3)
    n, bs = 640, 16
    lengths = rng.integers(4, 120, size=n)

    def run(group):
        return list(_bitext_sampler(n, bs, 7, lengths, group))

    plain, grouped = run(0), run(20)
    assert grouped == run(20)  # the order depends only on seed and epoch (exact --resume)
    assert sorted(i for b in grouped for i in b) == list(range(n))  # one pass, every example
    padded = {
        name: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
        for name, batches in (("plain", plain), ("grouped", grouped))
    }
    assert padded["grouped"] < 0.2 * padded["plain"], padded
    # batches of a pool are shuffled: not sorted by length across the epoch
    maxima = [int(lengths[b].max()) for b in grouped]
    assert maxima != sorted(maxima)


def test_language_temperature_upsamples_small_languages_and_keeps_batches_distinct():
    from stilts.training.sampling import task_probabilities

    # 1000 German pairs, 100 Icelandic, 10 Kabyle: one pass of 1110 draws
    langs = ["de"] * 1000 + ["is"] * 100 + ["kab"] * 10
    n, bs = len(langs), 10

    def batches(law, epoch=0):
        s = _bitext_sampler(n, bs, 5, np.arange(n) % 30, 10, langs, law)
        s.set_epoch(epoch)
        return list(s)

    proportional = batches("proportional")
    assert sorted(i for b in proportional for i in b) == list(range(n))  # unchanged: a permutation
    tempered = batches("temperature:3")
    assert tempered == batches("temperature:3")  # a pure function of seed and epoch (--resume)
    assert tempered != batches("temperature:3", epoch=1)
    drawn = [langs[i] for b in tempered for i in b]
    want = task_probabilities({"de": 1000, "is": 100, "kab": 10}, "temperature:3")
    for lang, p in want.items():
        assert abs(drawn.count(lang) / len(drawn) - p) < 0.02, (lang, drawn.count(lang), p)
    assert drawn.count("kab") > 5 * 10  # every Kabyle pair seen several times in one pass
    assert drawn.count("de") < 1000  # a random subset of German
    for b in tempered:  # a repeated pair never meets itself in a batch
        assert len(set(b)) == len(b)
    uniform = [langs[i] for b in batches("uniform") for i in b]
    assert abs(uniform.count("kab") - uniform.count("de")) < 0.05 * len(uniform)


def test_progress_fields_rate_eta_and_headline():
    f = progress_fields(step=150, max_steps=1150, steps_done=50, seconds=100.0, dev=None)
    assert f["steps_per_second"] == 0.5 and f["eta"] == "0:33:20"
    assert describe(f) == "0.5 steps/s, ETA 0:33:20, dev -"
    assert progress_fields(0, 10, 0, 0.0, None)["eta"] == "?"
    assert format_eta(3 * 3600 + 61) == "3:01:01"
    dev = headline(
        {
            "bitext": {"accuracy": 0.81234, "source_to_target": 0.8, "loss": 1.2, "n": 50},
            "squad_v2": {"exact_match": 0.5, "f1": 0.61, "loss": 2.0, "n": 3},
        }
    )
    assert dev == {"bitext accuracy": 0.8123, "squad_v2 f1": 0.61}
    line = describe(progress_fields(10, 10, 10, 5.0, dev))
    assert line == "2 steps/s, ETA 0:00:00, dev bitext:accuracy=0.8123 squad_v2:f1=0.61"
