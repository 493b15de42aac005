"""The bitext task: ranking loss (hand-checked), batches without repeated texts, the pair readers on
real TMX/XLIFF/PO/MO files, ``stilts data bitext`` on a directory, a .deb and a wheel, and a tiny
LoRA train -> export -> encode run that must retrieve its own dev pairs better than the base."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_toy_xlmr

from stilts.errors import StiltsError
from stilts.training.bitext_files import read_pairs

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


# ---- the loss ----


def test_ranking_loss_matches_hand_computation():
    from stilts.training.heads import bitext_ranking_loss

    # sources e1, e2; targets (0.6, 0.8), e1: cosines S = [[0.6, 1.0], [0.8, 0.0]]
    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tgt = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    loss, sim = bitext_ranking_loss(src, tgt, scale=2.0, margin=0.1)
    assert torch.allclose(sim, torch.tensor([[0.6, 1.0], [0.8, 0.0]]))
    # logits 2 * (S - 0.1 I) = [[1.0, 2.0], [1.6, -0.2]]
    rows = (math.log(1 + math.exp(2.0 - 1.0)) + math.log(1 + math.exp(1.6 + 0.2))) / 2
    cols = (math.log(1 + math.exp(1.6 - 1.0)) + math.log(1 + math.exp(2.0 + 0.2))) / 2
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-5)

    # perfect pairs, no margin: each row and column is log(1 + e^-scale)
    eye = torch.eye(2)
    loss, _ = bitext_ranking_loss(eye, eye, scale=1.0, margin=0.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)
    # the margin makes the same pairs cost more
    assert bitext_ranking_loss(eye, eye, 1.0, 0.3)[0].item() > loss.item()


def test_ranking_loss_gradient_pulls_translations_together():
    from stilts.training.heads import bitext_ranking_loss

    torch.manual_seed(0)
    src = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    tgt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    before = (src * tgt).sum(-1).detach()
    loss, _ = bitext_ranking_loss(src, tgt, 20.0, 0.2)
    loss.backward()
    with torch.no_grad():
        moved = torch.nn.functional.normalize(src - 0.01 * src.grad, dim=-1)
    assert ((moved * tgt).sum(-1) > before).all()


def test_queued_vectors_are_negatives_unless_they_are_the_pairs_own_text():
    from stilts.training.heads import bitext_ranking_loss

    src = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tgt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # a queued target (0.6, 0.8): one more negative for each row; a queued source (0.8, 0.6)
    # one more for each column. Logits S - 0 I = I; the extra column: [0.6, 0.8] and [0.8, 0.6]
    q_t, q_s = torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])
    loss, _ = bitext_ranking_loss(src, tgt, 1.0, 0.0, q_s, q_t)
    rows = (
        math.log(1 + math.exp(-1) + math.exp(0.6 - 1))
        + math.log(1 + math.exp(-1) + math.exp(0.8 - 1))
    ) / 2
    cols = (
        math.log(1 + math.exp(-1) + math.exp(0.8 - 1))
        + math.log(1 + math.exp(-1) + math.exp(0.6 - 1))
    ) / 2
    assert loss.item() == pytest.approx((rows + cols) / 2, abs=1e-5)
    plain = bitext_ranking_loss(src, tgt, 1.0, 0.0)[0]
    assert loss.item() > plain.item()
    # the same text queued again (pair 0's own target and source) is no negative for pair 0,
    # but is one for pair 1 (cosine 0 there)
    loss, _ = bitext_ranking_loss(src, tgt, 1.0, 0.0, src[:1], tgt[:1])
    one = math.log(1 + math.exp(-1))
    other = math.log(1 + math.exp(-1) + math.exp(0 - 1))
    assert loss.item() == pytest.approx((one + other) / 2, abs=1e-5)


def test_the_bitext_queue_keeps_the_newest_vectors_while_training_only():
    from stilts.training.heads import BitextHead

    head = BitextHead(scale=20.0, margin=0.2, queue=5)
    torch.manual_seed(0)
    batches = [torch.nn.functional.normalize(torch.randn(3, 8), dim=-1) for _ in range(3)]
    head.eval()
    head(batches[0], batches[0])
    assert head.queued_source is None  # evaluation neither reads nor fills the queue
    head.train()
    first = head(batches[0], batches[0])[0]
    assert first.item() == pytest.approx(BitextHead(20.0, 0.2)(batches[0], batches[0])[0].item())
    head(batches[1], batches[1])
    head(batches[2], batches[2])
    assert head.queued_target.shape == (5, 8) and not head.queued_target.requires_grad
    assert torch.equal(head.queued_target[:3], batches[2])  # newest first
    assert torch.equal(head.queued_target[3:], batches[1][:2])


def test_retrieval_score_counts_any_translation_of_the_query():
    from stilts.training.evaluation import score_retrieval

    # pairs: (hello, hallo), (hello, bonjour), (bye, tschuess); keys: texts
    src, tgt = [0, 0, 1], [10, 11, 12]
    sim = np.array(
        [
            [0.9, 0.1, 0.6],  # hello -> hallo: right
            [0.8, 0.2, 0.0],  # hello -> hallo: right too (a translation of hello)
            [0.0, 0.7, 0.5],  # bye -> bonjour: wrong
        ]
    )
    # columns: hallo -> hello (right), bonjour -> bye (wrong), tschuess -> hello (wrong)
    got = score_retrieval(sim, src, tgt)
    assert got["source_to_target"] == pytest.approx(2 / 3)
    assert got["target_to_source"] == pytest.approx(1 / 3)
    assert got["accuracy"] == pytest.approx(1 / 2)
    assert score_retrieval(np.eye(3), src, tgt)["accuracy"] == 1.0


# ---- batches ----


def test_sampler_never_puts_a_text_twice_in_a_batch():
    from stilts.training.sampling import MultiTaskBatchSampler

    rng = random.Random(0)
    # 200 pairs over 60 source texts and 150 target texts: many shared sides
    keys = [(rng.randrange(60), 1000 + rng.randrange(150)) for _ in range(200)]
    sampler = MultiTaskBatchSampler(
        {"mnli": 50, "bitext": 200},
        batch_size=16,
        probabilities={"mnli": 0.3, "bitext": 0.7},
        num_batches=40,
        seed=1,
        keys={"bitext": keys},
    )
    batches = list(sampler)
    assert batches == list(sampler)  # a pure function of (seed, epoch): resumable
    n_bitext = 0
    for b in batches:
        assert len(b) == 16
        if b[0] >= 50:
            n_bitext += 1
            texts = [k for i in b for k in keys[i - 50]]
            assert len(texts) == len(set(texts)), b
    assert n_bitext > 10
    # two texts in all cannot fill a batch of 4 without a repeat: a clear error, not a hang
    tiny = MultiTaskBatchSampler(
        {"bitext": 3}, 4, {"bitext": 1.0}, 1, keys={"bitext": [(0, 1), (0, 1), (0, 1)]}
    )
    with pytest.raises(StiltsError, match="without repeating a text"):
        list(tiny)


# ---- readers ----

TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4">
  <header creationtool="test" creationtoolversion="1" segtype="sentence" o-tmf="none"
          adminlang="en" srclang="en" datatype="plaintext"/>
  <body>
    <tu><tuv xml:lang="en"><seg>Open the file</seg></tuv>
        <tuv xml:lang="de"><seg>Datei öffnen</seg></tuv></tu>
    <tu><tuv xml:lang="en"><seg>Save &amp; close</seg></tuv>
        <tuv xml:lang="de"><seg>Speichern &amp; schließen</seg></tuv></tu>
    <tu><tuv xml:lang="en"><seg>Untranslated</seg></tuv></tu>
  </body>
</tmx>
"""

XLIFF = """<?xml version="1.0" encoding="UTF-8"?>
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">
  <file original="app" source-language="en" target-language="fr" datatype="plaintext">
    <body>
      <trans-unit id="1"><source>Print the page</source><target>Imprimer la page</target></trans-unit>
      <trans-unit id="2"><source>Quit</source><target></target></trans-unit>
      <trans-unit id="3"><source>Show hidden files</source>
        <target>Afficher les fichiers cachés</target></trans-unit>
    </body>
  </file>
</xliff>
"""

PO = """msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"
"Language: es\\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\\n"

msgid "_Open a folder"
msgstr "_Abrir una carpeta"

#, fuzzy
msgid "Delete everything"
msgstr "Borrar algo"

msgid "Untranslated entry"
msgstr ""

msgid "%d file copied"
msgid_plural "%d files copied"
msgstr[0] "%d archivo copiado"
msgstr[1] "%d archivos copiados"
"""


def _po(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _mo(po: Path, mo: Path) -> Path:
    mo.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("msgfmt"):
        subprocess.run(["msgfmt", "-o", str(mo), str(po)], check=True)
    else:
        import polib

        polib.pofile(str(po)).save_as_mofile(str(mo))
    return mo


def test_readers_on_real_tmx_xliff_po_mo_and_tsv(tmp_path):
    tmx = _po(tmp_path / "memory.tmx", TMX)
    got = [(e.source, e.target, e.lang) for e in read_pairs(tmx)]
    assert got == [
        ("Open the file", "Datei öffnen", "de"),
        ("Save & close", "Speichern & schließen", "de"),
    ]

    xlf = _po(tmp_path / "app.xlf", XLIFF)
    got = [(e.source, e.target, e.lang) for e in read_pairs(xlf)]
    assert got == [
        ("Print the page", "Imprimer la page", "fr"),
        ("Show hidden files", "Afficher les fichiers cachés", "fr"),
    ]

    po = _po(tmp_path / "po" / "app.po", PO)
    expected = [
        ("_Open a folder", "_Abrir una carpeta", "es"),
        ("%d file copied", "%d archivo copiado", "es"),
    ]
    assert [(e.source, e.target, e.lang) for e in read_pairs(po)] == expected
    # MO keeps no fuzzy or untranslated entries either; its language comes from the header
    mo = _mo(po, tmp_path / "locale" / "es" / "LC_MESSAGES" / "app.mo")
    assert sorted((e.source, e.target, e.lang) for e in read_pairs(mo)) == sorted(expected)

    tsv = _po(tmp_path / "pairs.tsv", "Hello world\tHallo Welt\tde\n\nGood night\tGute Nacht\n")
    got = [(e.source, e.target, e.lang) for e in read_pairs(tsv)]
    assert got == [("Hello world", "Hallo Welt", "de"), ("Good night", "Gute Nacht", "")]

    bad = _po(tmp_path / "bad.tsv", "only one field\n")
    with pytest.raises(StiltsError, match=r"bad.tsv:1: expected source<TAB>target"):
        list(read_pairs(bad))
    with pytest.raises(StiltsError, match="not a readable TMX"):
        list(read_pairs(_po(tmp_path / "broken.tmx", "<tmx><body><tu>")))
    with pytest.raises(StiltsError, match="unknown pair file type"):
        read_pairs(tmp_path / "x.csv")


# ---- harvesting ----


def test_language_codes_and_cleaning():
    from stilts.training.harvest import clean_text, normalize_language, placeholders_only

    cases = {
        "de_DE": "de",
        "zh_CN": "zh",
        "zh_TW": "zh_Hant",
        "zh_HK": "zh_Hant",
        "sr@latin": "sr_Latn",
        "sr_RS@latin": "sr_Latn",
        "be@latin": "be_Latn",
        "uz@cyrillic": "uz_Cyrl",
        "pt_BR": "pt",
        "ca@valencia": "ca",
        "no": "nb",
        "C": "",
        "en_GB": "en",
    }
    assert {k: normalize_language(k) for k in cases} == cases
    assert clean_text("_Open a  file") == "Open a file"
    assert clean_text("打开文件(_O)") == "打开文件"
    assert clean_text("Save ~As...") == "Save As..." and clean_text("in ~/docs") == "in ~/docs"
    assert clean_text("file_name\nis set") == "file_name is set"
    assert placeholders_only("%s: %d") and placeholders_only("<b>%1$s</b> {name}")
    assert not placeholders_only("Copy %s to %s")


def _deb(root: Path, package: str, files: dict[str, Path]) -> Path:
    tree = root / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test catalogs\n"
    )
    for rel, src in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tree / rel)
    out = root / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(tree), str(out)], check=True, capture_output=True)
    return out


def _wheel(root: Path, files: dict[str, Path]) -> Path:
    out = root / "tinyapp-1.0-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("tinyapp/__init__.py", "")
        for rel, src in files.items():
            z.write(src, rel)
        z.writestr("tinyapp-1.0.dist-info/METADATA", "Name: tinyapp\nVersion: 1.0\n")
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
def test_data_bitext_harvests_dirs_debs_and_wheels(tmp_path, capsys):
    from stilts.cli import main

    def catalog(name: str, lang: str, entries: list[tuple[str, str]]) -> Path:
        body = f'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n"Language: {lang}\\n"\n'
        for a, b in entries:
            body += f'\nmsgid "{a}"\nmsgstr "{b}"\n'
        po = _po(tmp_path / "src" / f"{name}.po", body)
        return _mo(po, tmp_path / "src" / f"{name}.mo")

    de = catalog(
        "de",
        "de_DE",
        [
            ("Open the _file", "_Datei öffnen"),
            ("Close the window", "Fenster schließen"),
            ("Settings", "Settings"),  # identical
            ("%s: %d", "%d : %s"),  # placeholders only
            ("Go to it", "Gehe zu einer sehr langen Übersetzung, die nicht passt"),  # length ratio
            ("A sentence of the dev pack", "Ein Satz des Dev-Packs"),  # excluded
        ],
    )
    fr = catalog("fr", "fr", [("Open the file", "Ouvrir le fichier"), ("Quit now", "Quitter")])
    ja = catalog("ja", "ja", [("Open the file", "ファイルを開く")])
    reserved = catalog("django", "de", [("Log in to the admin", "Beim Admin anmelden")])
    deb = _deb(
        tmp_path,
        "tinyapp-l10n",
        {
            "usr/share/locale/de/LC_MESSAGES/tinyapp.mo": de,
            "usr/share/locale/fr/LC_MESSAGES/tinyapp.mo": fr,
            "usr/share/locale/de/LC_MESSAGES/django.mo": reserved,
        },
    )
    whl = _wheel(tmp_path, {"tinyapp/locale/ja/LC_MESSAGES/tinyapp.mo": ja})
    loose = tmp_path / "loose" / "locale" / "fr" / "LC_MESSAGES"
    loose.mkdir(parents=True)
    shutil.copyfile(fr, loose / "other.mo")  # the same pairs again: duplicates
    _po(tmp_path / "devpack" / "tatoeba" / "de-en.tsv", "x\tA sentence of the dev pack\n")

    out = tmp_path / "data" / "bitext"
    rc = main(
        [
            "data",
            "bitext",
            str(deb),
            str(whl),
            str(tmp_path / "loose"),
            "--out",
            str(out),
            "--exclude",
            str(tmp_path / "devpack"),
            "--dev-fraction",
            "0",
            "--quiet",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    rows = [line.split("\t") for line in (out / "pairs.tsv").read_text().splitlines()]
    assert sorted(rows) == sorted(
        [
            ["Open the file", "Datei öffnen", "de", "deb:tinyapp-l10n"],
            ["Close the window", "Fenster schließen", "de", "deb:tinyapp-l10n"],
            ["Open the file", "Ouvrir le fichier", "fr", "deb:tinyapp-l10n"],
            ["Quit now", "Quitter", "fr", "deb:tinyapp-l10n"],
            ["Open the file", "ファイルを開く", "ja", "wheel:tinyapp"],
        ]
    )
    assert (out / "dev.tsv").read_text() == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == {"train": 5, "dev": 0} == printed["pairs"]
    assert summary["dropped"] == {
        "duplicate": 2,
        "excluded": 1,
        "identical": 1,
        "length_ratio": 1,
        "placeholders_only": 1,
    }
    assert summary["languages"] == {
        "de": {"train": 2, "dev": 0},
        "fr": {"train": 2, "dev": 0},
        "ja": {"train": 1, "dev": 0},
    }
    assert summary["sources"]["deb:tinyapp-l10n"] == {"train": 4, "dev": 0}
    assert summary["reserved_catalogs_skipped"] == [
        "deb:tinyapp-l10n/usr/share/locale/de/LC_MESSAGES/django.mo"
    ]

    # the dev split goes by source text: a source is in train or dev for all its languages
    rc = main(
        [
            "data",
            "bitext",
            str(deb),
            str(whl),
            "--out",
            str(out),
            "--dev-fraction",
            "0.5",
            "--seed",
            "3",
            "--quiet",
        ]
    )
    assert rc == 0
    train = {r.split("\t")[0] for r in (out / "pairs.tsv").read_text().splitlines()}
    dev = {r.split("\t")[0] for r in (out / "dev.tsv").read_text().splitlines()}
    assert train and dev and not train & dev

    assert main(["data", "bitext", str(tmp_path / "missing.deb"), "--out", str(out)]) == 2
    assert "missing.deb: no such input" in capsys.readouterr().err


# ---- tiny model: train -> export -> encode ----

WORDS = (
    "red blue green small large old new fast slow happy cat dog bird fish house tree car boat "
    "book lamp runs sleeps eats sees jumps"
).split()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
def test_data_bitext_refuses_manpages_packages(tmp_path, capsys):
    """Translated man pages are reserved for independent evaluation: a manpages-* package is
    refused before any input is read, and nothing is written."""
    from stilts.cli import main
    from stilts.training.harvest import harvest

    body = 'msgid ""\nmsgstr ""\n"Language: de\\n"\n\nmsgid "Close the window"\nmsgstr "Fenster schließen"\n'
    mo = _mo(_po(tmp_path / "src" / "de.po", body), tmp_path / "src" / "de.mo")
    ok = _deb(tmp_path, "tinyapp", {"usr/share/locale/de/LC_MESSAGES/tinyapp.mo": mo})
    man = _deb(tmp_path, "manpages-de", {"usr/share/locale/de/LC_MESSAGES/man.mo": mo})
    with pytest.raises(StiltsError) as e:
        harvest([ok, man], tmp_path / "out", progress=False)
    assert e.value.field == "input" and "manpages-de_1.0_all.deb" in str(e.value)
    assert "reserved" in str(e.value)
    assert main(["data", "bitext", str(man), "--out", str(tmp_path / "out"), "--quiet"]) != 0
    assert "manpages" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    summary = harvest([ok], tmp_path / "out", progress=False)  # the other package alone is fine
    assert sum(summary["pairs"].values()) == 1


def _cipher(word: str) -> str:
    """A made-up 'language': each word spelt with another alphabet order, plus a suffix."""
    table = str.maketrans("abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")
    return word.translate(table) + "o"


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        words = rng.sample(WORDS, rng.randint(3, 5))
        src = " ".join(words)
        if src not in seen:
            seen.add(src)
            out.append((src, " ".join(_cipher(w) for w in words)))
    return out


@pytest.fixture(scope="module")
def bitext_toy(tmp_path_factory):
    """A random 2-layer XLM-R whose tokenizer knows both 'languages', and bitext data."""
    root = tmp_path_factory.mktemp("bitext-toy")
    train, dev = _pairs(400, 0), _pairs(460, 1)[400:]
    dev = [p for p in dev if p[0] not in {s for s, _ in train}][:48]
    texts = [t for p in train + dev for t in p]
    (root / "model").mkdir()
    model = make_toy_xlmr(root / "model", texts, vocab_size=300)
    data = root / "data" / "bitext"
    data.mkdir(parents=True)
    (data / "pairs.tsv").write_text("".join(f"{s}\t{t}\txx\n" for s, t in train))
    (data / "dev.tsv").write_text("".join(f"{s}\t{t}\txx\n" for s, t in dev))
    return model, root / "data", dev


def _retrieval(model_dir: Path, pairs) -> float:
    from stilts.encoding.encoder import Encoder

    enc = Encoder(model_dir, precision="fp32")
    a = enc.encode([s for s, _ in pairs], kind="bitext")
    b = enc.encode([t for _, t in pairs], kind="bitext")
    sim = a @ b.T
    n = len(pairs)
    return float(
        (np.mean(sim.argmax(1) == np.arange(n)) + np.mean(sim.argmax(0) == np.arange(n))) / 2
    )


@pytest.mark.slow
def test_tiny_lora_bitext_run_improves_retrieval_and_rebuilds_from_adapter(
    bitext_toy, tmp_path, capsys
):
    from stilts.cli import main
    from stilts.graphs.export import export_checkpoint
    from stilts.training.trainer import TrainConfig, train

    toy, data, dev = bitext_toy
    torch.set_num_threads(1)
    base = tmp_path / "base-model"
    export_checkpoint(toy, base, layer=2)
    before = _retrieval(base, dev)

    cfg = TrainConfig(
        tasks=["bitext"],
        output=tmp_path / "run",
        model=str(toy),
        data_dir=data,
        batch_size=16,
        max_seq_len=32,
        learning_rate=1e-2,
        max_steps=120,
        bf16="off",
        threads=1,
        warmup=0.0,
        eval_every=60,
        save_every=60,
        log_every=20,
        layer=2,
        adapter="lora",
        lora_rank=8,
        lora_alpha=16,
        progress=False,
    )
    summary = train(cfg)
    run = tmp_path / "run"
    after = _retrieval(run / "model", dev)
    assert after >= before + 0.3, (before, after)
    # the run's own dev metric (top-1 retrieval on the held-back pairs) saw the same gain
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [60, 120]
    assert evals[-1]["tasks"]["bitext"]["accuracy"] == pytest.approx(after, abs=0.05)
    assert summary["last_eval"]["tasks"]["bitext"]["n"] == len(dev)

    # the adapter is small, and base + adapter rebuilds the same model
    adapter = run / "adapter"
    size = sum(f.stat().st_size for f in adapter.iterdir())
    assert size < 200_000
    record = json.loads((adapter / "stilts-adapter.json").read_text())
    assert record["adapter"] == {
        "method": "lora",
        "rank": 8,
        "alpha": 16,
        "dropout": 0.05,
        "targets": ["query", "key", "value", "dense"],
    }
    assert record["manifest"]["training"]["tasks"] == ["bitext"]

    # a run that starts from this adapter (--init-adapter) starts where it ended, not at the base
    more = dataclasses.replace(
        cfg, output=tmp_path / "more", init_adapter=str(adapter), learning_rate=1e-9,
        max_steps=1, eval_every=1, save_every=1, export=False,
    )  # fmt: skip
    went_on = train(more)["last_eval"]["tasks"]["bitext"]["accuracy"]
    assert went_on == pytest.approx(evals[-1]["tasks"]["bitext"]["accuracy"], abs=0.02)
    assert went_on >= before + 0.25
    more_record = json.loads((tmp_path / "more" / "checkpoint" / "stilts.json").read_text())
    assert more_record["training"]["adapter"]["init"] == str(adapter)
    for wrong, field in ((dict(lora_rank=4), "lora_rank"), (dict(adapter=None), "init_adapter")):
        with pytest.raises(StiltsError) as err:
            train(dataclasses.replace(more, output=tmp_path / field, **wrong))
        assert err.value.field == field

    rebuilt = tmp_path / "rebuilt"
    assert (
        main(["export", "--checkpoint", str(toy), "--adapter", str(adapter), "--out", str(rebuilt)])
        == 0
    )
    capsys.readouterr()
    from stilts.encoding.encoder import Encoder

    texts = [s for s, _ in dev[:8]]
    a = Encoder(run / "model", precision="fp32").encode(texts, kind="bitext")
    b = Encoder(rebuilt, precision="fp32").encode(texts, kind="bitext")
    assert np.abs(a - b).max() < 1e-5
    m = json.loads((rebuilt / "stilts.json").read_text())
    assert m["layer"] == 2 and m["training"]["adapter"]["method"] == "lora"
    # q4 keeps the base's weights (their rounding unchanged) and the adapter's delta at rank 8
    # in fp32 beside them: as close to fp32 as the base's own q4 is to its fp32
    assert m["parity"]["q4_low_rank_matmuls"] > 0 and m["parity"]["q4_low_rank_max"] <= 8
    # int8 the same way: the q/k/v/dense deltas stay fp32 beside the int8 base
    assert m["parity"]["int8_low_rank_matmuls"] >= m["parity"]["q4_low_rank_matmuls"]
    base_m = json.loads((base / "stilts.json").read_text())
    assert m["parity"]["q4_weight_max_abs_error"] == base_m["parity"]["q4_weight_max_abs_error"]
    assert len(m["source"]["adapter"]["sha256"]) == 64

    # `stilts models install default-bitext --adapter DIR` rebuilds from a base + that adapter
    from stilts.sources import tuned_model

    home = tmp_path / "home"
    old = os.environ.get("STILTS_HOME")
    os.environ["STILTS_HOME"] = str(home)
    try:
        base_ckpt = tmp_path / "base-ckpt"
        shutil.copytree(toy, base_ckpt)
        installed = tuned_model.install(adapter=adapter, base_checkpoint=base_ckpt)
        assert installed == home / "models" / "default-bitext"
        c = Encoder(installed, precision="fp32").encode(texts, kind="bitext")
        assert np.abs(a - c).max() < 1e-5
        parity = json.loads((installed / "stilts.json").read_text())["parity"]
        assert parity and parity["fp32_vs_torch_max_abs_diff"] < 1e-4
        _check_default_switch(home, toy, base_ckpt, adapter, tmp_path)
    finally:
        if old is None:
            os.environ.pop("STILTS_HOME", None)
        else:
            os.environ["STILTS_HOME"] = old


def _check_default_switch(home, toy, base_ckpt, adapter, tmp_path):
    """A tuned model installed as ``default`` over the base: the base moves to its own name,
    an index the base built names it, and recorded parity vectors gate the install."""
    from stilts.errors import ErrorCode, StiltsError
    from stilts.graphs.adapters import read_record, write_record
    from stilts.graphs.export import export_checkpoint
    from stilts.index import VectorIndex
    from stilts.manifest import Manifest
    from stilts.sources import tuned_model

    base = export_checkpoint(toy, home / "models" / "default", layer=2, name="toy-base")
    index = VectorIndex.create(None, base.dim, kind="flat", manifest=base.to_dict())
    tuned_dir = tuned_model.install(adapter=adapter, base_checkpoint=base_ckpt, name="default")
    assert tuned_dir == home / "models" / "default"
    tuned = Manifest.load(tuned_dir)
    assert tuned.name != "toy-base" and tuned.fingerprint != base.fingerprint
    assert Manifest.load(home / "models" / "toy-base").fingerprint == base.fingerprint
    with pytest.raises(StiltsError) as e:
        index.check_manifest(tuned)
    assert e.value.code == ErrorCode.FAILED_PRECONDITION
    assert "installed as toy-base: use --model toy-base" in str(e.value)

    # an adapter whose record carries parity vectors: its install must reproduce them
    shipped = tmp_path / "shipped"
    shutil.copytree(adapter, shipped)
    record = read_record(shipped)
    vectors = tuned_model.parity_vectors(tuned_dir)
    write_record(shipped, {**record, "parity_vectors": vectors})
    again = tuned_model.install(adapter=shipped, base_checkpoint=base_ckpt, force=True, name="x")
    assert tuned_model.check_parity_vectors(again, vectors) < 1e-4
    vectors[0][0] += 1e-3
    write_record(shipped, {**record, "parity_vectors": vectors})
    with pytest.raises(StiltsError) as e:
        tuned_model.install(adapter=shipped, base_checkpoint=base_ckpt, force=True, name="y")
    assert e.value.code == ErrorCode.INTERNAL and "not the model that was benchmarked" in str(
        e.value
    )
    assert not (home / "models" / "y").exists()


def _one_layer_run(toy, data, output, steps: int, teacher):
    """A bitext run of the toy's first layer with distillation from ``teacher``."""
    from stilts.training.trainer import TrainConfig

    return TrainConfig(
        tasks=["bitext"],
        output=output,
        model=str(toy),
        data_dir=data,
        batch_size=16,
        max_seq_len=32,
        learning_rate=1e-3,
        max_steps=steps,
        bf16="off",
        threads=1,
        warmup=0.0,
        save_every=steps,
        layer=1,
        progress=False,
        distill=str(teacher),
    )


def test_a_shallower_student_distilled_from_its_teacher_exports_as_fewer_layers(
    bitext_toy, tmp_path
):
    """--layer 1 of a 2-layer encoder trains and exports a 1-layer encoder; --distill pulls its
    vectors towards the teacher's (another 2-layer encoder on the same tokenizer), and base +
    adapter rebuilds it."""
    import onnx

    from stilts.benchmarks.toy_xlmr import save_random_xlmr
    from stilts.encoding.encoder import Encoder
    from stilts.graphs.export import export_checkpoint
    from stilts.sources import tuned_model
    from stilts.training.trainer import train

    toy, data, dev = bitext_toy
    torch.set_num_threads(1)
    # the teacher: another random 2-layer encoder on the same tokenizer
    teacher_ckpt = tmp_path / "teacher-ckpt"
    teacher_ckpt.mkdir()
    shutil.copyfile(toy / "tokenizer.json", teacher_ckpt / "tokenizer.json")
    vocab = json.loads((toy / "config.json").read_text())["vocab_size"]
    shape = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "positions": 130}
    save_random_xlmr(teacher_ckpt, vocab=vocab, seed=7, **shape)
    teacher = tmp_path / "teacher"
    export_checkpoint(teacher_ckpt, teacher, layer=2)
    cut = tmp_path / "cut"
    export_checkpoint(toy, cut, layer=1)
    texts = [t for p in dev for t in p]

    def agreement(model_dir):
        a = Encoder(model_dir, precision="fp32").encode(texts, kind="bitext")
        b = Encoder(teacher, precision="fp32").encode(texts, kind="bitext")
        return float((a * b).sum(1).mean())

    cfg = _one_layer_run(toy, data, tmp_path / "run", 60, teacher_ckpt)
    cfg.learning_rate, cfg.adapter, cfg.distill_weight = 1e-2, "lora", 50.0
    train(cfg)
    run = tmp_path / "run"
    before, after = agreement(cut), agreement(run / "model")
    assert after > before + 0.05 and after > 0.9, (before, after)
    manifest = json.loads((run / "model" / "stilts.json").read_text())
    assert manifest["layer"] == 1
    assert json.loads((run / "checkpoint" / "stilts.json").read_text())["layer"] == 1
    graph = onnx.load(str(run / "model" / "model.onnx"), load_external_data=False)
    layers = {n.name.split("/")[3] for n in graph.graph.node if "/encoder/layer." in n.name}
    assert layers == {"layer.0"}, layers
    # the adapter, installed on the whole 2-layer base, rebuilds the 1-layer model
    installed = tuned_model.install(
        adapter=run / "adapter", base_checkpoint=toy, name="fast", parity_texts=texts[:8]
    )
    a = Encoder(installed, precision="fp32").encode(texts, kind="bitext")
    b = Encoder(run / "model", precision="fp32").encode(texts, kind="bitext")
    assert np.abs(a - b).max() < 1e-5


def test_a_shallow_model_ships_as_fp16_weights_and_installs_back(bitext_toy, tmp_path):
    """A fully trained 1-layer student (word table frozen) ships as fp16 tensors without the word
    table; the install rebuilds it from the base and must reproduce the recorded vectors."""
    from stilts.encoding.encoder import Encoder
    from stilts.errors import ErrorCode
    from stilts.sources import fast_model
    from stilts.training.trainer import train

    toy, data, dev = bitext_toy
    torch.set_num_threads(1)
    cfg = _one_layer_run(toy, data, tmp_path / "run", 20, toy)
    cfg.freeze_embeddings, cfg.export = "word", False
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoint"
    weights = tmp_path / "weights"
    built = fast_model.ship(ckpt, tmp_path / "built", base_checkpoint=toy, weights_dir=weights)
    assert built == weights
    from safetensors import safe_open

    with safe_open(str(weights / fast_model.WEIGHTS), "pt") as f:
        keys = set(f.keys())
        assert fast_model.WORD_TABLE not in keys and all(
            f.get_tensor(k).dtype == torch.float16 for k in keys
        )
    assert not any(".layer.1." in k for k in keys) and any(".layer.0." in k for k in keys)
    record = fast_model.read_record(weights)
    assert record["manifest"]["layer"] == 1 and record["name"].endswith("-l1")
    texts = [t for p in dev for t in p]
    # the trained fp32 checkpoint and the model rebuilt from fp16 weights: the same to fp16
    from stilts.graphs.export import export_checkpoint

    export_checkpoint(ckpt, tmp_path / "fp32")
    ref = Encoder(tmp_path / "fp32", precision="fp32").encode(texts, kind="bitext")
    got = Encoder(tmp_path / "built", precision="fp32").encode(texts, kind="bitext")
    assert np.abs(ref - got).max() < 5e-3

    home = tmp_path / "home"
    old = os.environ.get("STILTS_HOME")
    os.environ["STILTS_HOME"] = str(home)
    try:
        installed = fast_model.install(weights_dir=weights, base_checkpoint=toy, name="fast")
        again = Encoder(installed, precision="fp32").encode(texts, kind="bitext")
        assert np.abs(again - got).max() < 1e-5
        # recorded vectors that the rebuild misses: nothing is installed
        record["parity_vectors"][0][0] += 1e-3
        (weights / fast_model.RECORD).write_text(json.dumps(record))
        with pytest.raises(StiltsError) as e:
            fast_model.install(weights_dir=weights, base_checkpoint=toy, name="bad")
        assert e.value.code == ErrorCode.INTERNAL
        assert not (home / "models" / "bad").exists()
    finally:
        if old is None:
            os.environ.pop("STILTS_HOME", None)
        else:
            os.environ["STILTS_HOME"] = old
    # a student whose word table moved cannot ship without it
    cfg.output, cfg.freeze_embeddings, cfg.learning_rate = tmp_path / "run2", "none", 1e-1
    train(cfg)
    with pytest.raises(StiltsError) as e:
        fast_model.ship(tmp_path / "run2" / "checkpoint", tmp_path / "b2", base_checkpoint=toy)
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and "word-embedding" in str(e.value)


def test_a_teacher_must_share_the_students_tokenizer(bitext_toy):
    from stilts.errors import ErrorCode
    from stilts.training.distill import load_teacher

    toy, _, _ = bitext_toy
    with pytest.raises(StiltsError) as e:
        load_teacher(str(toy), vocab_size=12345)
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and e.value.field == "distill"


def test_bitext_mixes_with_the_nine_tasks(bitext_toy, tmp_path):
    """One multi-task run: MNLI batches and bitext batches on the shared encoder, both evaluated."""
    from stilts.training import samples
    from stilts.training.trainer import TrainConfig, train

    toy, data, dev = bitext_toy
    mixed = tmp_path / "data"
    shutil.copytree(data, mixed)
    samples.write_samples(mixed)
    torch.set_num_threads(1)
    summary = train(
        TrainConfig(
            tasks=["mnli", "bitext"],
            output=tmp_path / "run",
            model=str(toy),
            data_dir=mixed,
            batch_size=4,
            max_seq_len=32,
            max_steps=6,
            eval_every=6,
            save_every=6,
            layer=2,
            sampling="uniform",
            max_eval_examples=16,
            export=False,
            progress=False,
            bf16="off",
            threads=1,
        )
    )
    assert summary["task_probabilities"] == {"mnli": 0.5, "bitext": 0.5}
    last = summary["last_eval"]
    assert set(last["tasks"]) == {"mnli", "bitext"}
    assert set(last["train_batches"]) == {"mnli", "bitext"}
    assert last["tasks"]["bitext"]["n"] == 16
    assert 0 <= last["tasks"]["bitext"]["accuracy"] <= 1
    manifest = json.loads((tmp_path / "run" / "checkpoint" / "stilts.json").read_text())
    assert manifest["training"]["tasks"] == ["mnli", "bitext"]
    assert manifest["training"]["bitext"] == {"scale": 20.0, "margin": 0.2}


def test_a_bitext_queue_run_records_it_and_resumes_only_with_the_same_queue(
    bitext_toy, tmp_path, capsys
):
    """`stilts train --bitext-queue N`: the run trains with earlier batches' vectors as
    negatives, the manifest and run.json say so, and a resume with another queue is refused."""
    from stilts.cli import main

    toy, data, _ = bitext_toy
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["train", "--model", str(toy), "--tasks", "bitext", "--data-dir", str(data)]
    args += ["--output", str(out), "--batch-size", "8", "--max-seq-len", "32", "--layer", "2"]
    args += ["--eval-every", "3", "--save-every", "3", "--max-eval-examples", "16", "--bf16", "off"]
    args += ["--no-export", "--quiet", "--threads", "1"]
    assert main([*args, "--max-steps", "3", "--bitext-queue", "16"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(summary["train_loss"])
    manifest = json.loads((out / "checkpoint" / "stilts.json").read_text())
    assert manifest["training"]["bitext"] == {"scale": 20.0, "margin": 0.2, "queue": 16}
    assert json.loads((out / "run.json").read_text())["config"]["bitext_queue"] == 16
    assert main([*args, "--max-steps", "6", "--resume"]) != 0
    assert "bitext_queue" in capsys.readouterr().err
    assert main([*args, "--max-steps", "3", "--bitext-queue", "-1"]) == 2
    assert "bitext_queue" in capsys.readouterr().err


def test_bitext_max_seq_len_auto_comes_from_the_data(bitext_toy, tmp_path):
    """--max-seq-len auto on a bitext run: the 99th percentile of the pairs' token lengths
    (rounded up to 8), recorded in run.json and the manifest; one pass, length groups."""
    from stilts.training.cpu import auto_max_len
    from stilts.training.text import TextTokenizer, tokenizer_file
    from stilts.training.trainer import TrainConfig, train

    toy, data, _ = bitext_toy
    tok = TextTokenizer(tokenizer_file(str(toy)))
    pairs = list(read_pairs(data / "bitext" / "pairs.tsv"))
    enc = [
        tok.encode_texts([p.source for p in pairs], 128),
        tok.encode_texts([p.target for p in pairs], 128),
    ]
    want = auto_max_len(max(len(a.ids), len(b.ids)) for a, b in zip(*enc, strict=True))
    torch.set_num_threads(1)
    summary = train(
        TrainConfig(
            tasks=["bitext"],
            output=tmp_path / "run",
            model=str(toy),
            data_dir=data,
            batch_size=8,
            max_seq_len="auto",
            max_steps=2,
            eval_every=2,
            save_every=2,
            layer=2,
            max_eval_examples=16,
            progress=False,
            export=False,
            bf16="off",
            threads=1,
            measure_floor=True,
        )
    )
    assert summary["recipe"]["max_seq_len"] == want and 16 <= want < 128
    # the steps' arithmetic floor: FLOPs of the batches trained over the measured GEMM rate
    floor = summary["step_floor"]
    assert floor["gflops_per_step"] > 0 and floor["gemm_gflops"] > 0
    assert floor["floor_seconds_per_step"] == pytest.approx(
        floor["gflops_per_step"] / floor["gemm_gflops"], rel=0.05
    )
    assert floor["times_floor"] > 1  # a real step never beats pure GEMM arithmetic
    assert summary["recipe"]["bitext_passes"] == 1 and summary["recipe"]["group_by_length"] == 50
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"]["max_seq_len"] == want and run["config"]["max_seq_len"] == "auto"
    manifest = json.loads((tmp_path / "run" / "checkpoint" / "stilts.json").read_text())
    assert manifest["training"]["max_seq_len"] == want


def test_step_flops_count_the_encoder_shape():
    from types import SimpleNamespace

    from stilts.training.flops import bitext_padded_blocks, flops_per_token, step_flops

    e5_small = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=12)
    # 21.2M matmul weights: 2 FLOPs each per token, plus attention over 32 tokens
    assert flops_per_token(e5_small, seq_len=32) == 12 * (2 * 1_769_472 + 4 * 32 * 384)
    blocks = bitext_padded_blocks([[0, 1], [2, 3]], [5, 9, 7, 7])
    assert blocks == [[(4, 9)], [(4, 7)]]
    lora = step_flops(e5_small, blocks[0])
    assert lora == 2 * 4 * 9 * flops_per_token(e5_small, seq_len=9)
    assert step_flops(e5_small, blocks[0], full=True) == 1.5 * lora
    two_passes = bitext_padded_blocks([[0, 1]], [5, 9], passes=2)
    assert step_flops(e5_small, two_passes[0]) == lora


def test_install_default_bitext_needs_an_adapter(tmp_path, monkeypatch, capsys):
    from stilts.cli import main
    from stilts.sources import tuned_model

    monkeypatch.setenv("STILTS_HOME", str(tmp_path))
    rc = main(["models", "install", "default-bitext", "--adapter", str(tmp_path / "nothing")])
    assert rc == 2
    assert "not an adapter directory" in capsys.readouterr().err
    if not (tuned_model.SHIPPED_ADAPTER / "adapter_config.json").is_file():
        assert main(["models", "install", "default-bitext"]) == 2
        assert "ships no default-bitext adapter" in capsys.readouterr().err
    assert main(["models", "install", "other", "--adapter", str(tmp_path)]) == 2
