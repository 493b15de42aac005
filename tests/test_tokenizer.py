"""The compact Unigram tokenizer gives Hugging Face ``tokenizers``' ids, in a fraction of its memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stilts.encoding.tokenizer import HFTokenizer, UnigramTokenizer, load_tokenizer

# texts where a tokenizer's corners show: special tokens inside text, runs of unknown characters
# (fused into one <unk>), ties between segmentations of equal score, characters the normaliser
# rewrites or drops, whitespace of every kind, astral characters, and texts cut at max_len
CORNERS = [
    "",
    " ",
    "\n\n",
    "<s>",
    "a<s>b",
    "x </s> y",
    "<mask>",
    " <mask> ",
    "<unk><unk>",
    "....",
    ".....",
    "!!!!!!!",
    "\u200b\u200b",
    "trailing mark\u200f",
    "\U0001f600\U0001f601x",
    "a\U00010000\U00010001b",
    "\x00\x01",
    "ﬁ ① ｶ",
    "  a  b  ",
    "\tTab\tand\u3000ideographic space",
    "ǅ a\u0301",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ᐊᓕᒍᖅ ᓂᕆᐊᖅ",
    "x" * 3000,
    "<s>" * 600,
    "word " * 700,
]


def _texts(*packs: Path) -> list[str]:
    texts: list[str] = []
    for pack in packs:
        for f in sorted((pack / "tatoeba").glob("*.tsv")):
            for line in f.open(encoding="utf-8"):
                texts.extend(line.rstrip("\n").split("\t"))
    texts = list(dict.fromkeys(texts))
    variants = [
        v
        for t in texts[:: max(1, len(texts) // 5000)]
        for v in (f" {t} ", t.replace(" ", "  "), t + "\u200f", "\t" + t, t.upper())
    ]
    return texts + variants + CORNERS


@pytest.fixture(scope="module")
def tokenizer_file(default_model_dir) -> Path:
    return default_model_dir / "tokenizer.json"


def test_same_ids_as_tokenizers_on_both_dev_packs(tokenizer_file, dev_pack, docs_pack):
    compact = load_tokenizer(tokenizer_file, 512)
    assert isinstance(compact, UnigramTokenizer)
    hf = HFTokenizer(tokenizer_file, 512)
    texts = _texts(dev_pack, docs_pack)
    assert len(texts) > 100_000
    got, want = compact.encode_batch(texts), hf.encode_batch(texts)
    differ = [t for t, a, b in zip(texts, got, want, strict=True) if a != b]
    assert not differ, f"{len(differ)} texts differ, first {differ[:3]!r}"
    cut = [t for t, (_, truncated) in zip(texts, want, strict=True) if truncated]
    assert len(cut) >= 3  # the corners' long texts: cut to 512 the same way
    assert compact.special_ids == hf.special_ids == {0, 1, 2, 3, 250001}
    for token in ("<pad>", "<mask>", "▁the", "no such piece"):
        assert compact.token_id(token) == hf.token_id(token)


def test_short_max_len_cuts_like_tokenizers(tokenizer_file):
    compact, hf = load_tokenizer(tokenizer_file, 8), HFTokenizer(tokenizer_file, 8)
    texts = ["one two three four five six seven eight", "short", "<s> <s> <s> <s> <s> <s> <s>"]
    assert compact.encode_batch(texts) == hf.encode_batch(texts)
    assert [truncated for _, truncated in compact.encode_batch(texts)] == [True, False, True]


def test_toy_unigram_of_another_vocabulary(tmp_path):
    """A small Unigram trained here (the toy models' tokenizer): another vocabulary, where most
    characters of other scripts are unknown."""
    from stilts.benchmarks.toy_xlmr import unigram_tokenizer

    tok = unigram_tokenizer(["the cat sat on the mat", "a dog ran", "cats and dogs"] * 20, 60)
    tok.save(str(tmp_path / "tokenizer.json"))
    compact = load_tokenizer(tmp_path / "tokenizer.json", 16)
    assert isinstance(compact, UnigramTokenizer)
    texts = ["the cat", "Дом и кот", "猫が座った the mat", "xyz xyz", *CORNERS]
    assert compact.encode_batch(texts) == HFTokenizer(tmp_path / "tokenizer.json", 16).encode_batch(
        texts
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["model"].update(byte_fallback=True),
        lambda s: s["added_tokens"][-1].update(lstrip=True),
        lambda s: s.update(
            post_processor={
                "type": "ByteLevel",
                "add_prefix_space": True,
                "trim_offsets": True,
                "use_regex": True,
            }
        ),
    ],
    ids=["byte-fallback", "stripped-added-token", "other-post-processor"],
)
def test_other_shapes_go_to_tokenizers(tokenizer_file, tmp_path, change):
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    change(spec)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    assert isinstance(load_tokenizer(path, 64), HFTokenizer)


def test_wordpiece_goes_to_tokenizers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1, "##s": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    t = load_tokenizer(tmp_path / "tokenizer.json", 8)
    assert isinstance(t, HFTokenizer)
    assert t.encode_batch(["hellos x"]) == [([1, 2, 0], False)]


RESIDENT = """
import sys
from pathlib import Path
from stilts.encoding.tokenizer import HFTokenizer, load_tokenizer
def hwm():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = hwm()
cls = HFTokenizer if sys.argv[2] == "hf" else load_tokenizer
t = cls(Path(sys.argv[1]), 512)
print((hwm() - before) // 1024, type(t).__name__)
"""


def test_compact_peak_memory_is_a_fraction(tokenizer_file):
    """Loading the default's tokenizer: the peak resident memory each reader adds, in fresh
    processes (the Hugging Face reader's byte trie of 250k pieces is about 290 MB)."""
    peak = {}
    for kind in ("compact", "hf"):
        out = subprocess.run(
            [sys.executable, "-c", RESIDENT, str(tokenizer_file), kind],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        peak[kind] = int(out[0])
        assert out[1] == ("UnigramTokenizer" if kind == "compact" else "HFTokenizer")
    assert peak["compact"] < 100 and peak["hf"] > 2 * peak["compact"], peak


OPENVINO_PROCESS = """
import sys
from stilts import Encoder
enc = Encoder(sys.argv[1], precision="ov-bf16", threads=2)
assert enc.encode(["ein Satz", "a sentence"]).shape == (2, enc.dim)
print(type(enc.tokenizer).__name__, *(m in sys.modules for m in ("onnxruntime", "torch")))
"""


def test_an_openvino_process_imports_no_onnxruntime(default_model_dir):
    """An encoder on an OpenVINO route needs neither onnxruntime (asked for a CUDA provider only
    where a GPU build is installed) nor tokenizers' trie."""
    pytest.importorskip("openvino")
    out = subprocess.run(
        [sys.executable, "-c", OPENVINO_PROCESS, str(default_model_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["UnigramTokenizer", "False", "False"]
