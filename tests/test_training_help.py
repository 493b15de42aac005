"""``stilts data help``: LibreOffice help (built .html and .xhp sources) aligned by paragraph id,
Mallard pages aligned per section, markup stripped, sentences split, filters, dev-pack exclusion,
and whole documents held out as a help-dev pack in the layouts ``stilts bench accuracy`` reads; on
synthetic help trees (and packages built with ``dpkg-deb -b``)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from stilts.benchmarks.data import read_bucc, read_tatoeba
from stilts.errors import StiltsError
from stilts.training import helpdocs
from stilts.training.harvest import fold, pack_sources

NEEDS_DPKG = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

LO_EN = """<!DOCTYPE html><html><head><title>Fonts</title><script>var x = "no";</script></head>
<body><div id="DisplayArea">
<a id="bm_id3150278"></a><span class="bookmark">fonts; changing</span>
<h1 id="hd_id3150278">Changing the Font</h1>
<p id="par_id3154927" class="paragraph">Choose <span class="menuitem">Format - Character</span> to
change the font of the selected text. The dialog shows a preview of the font.</p>
<p id="par_id3145669" class="paragraph">Press <span id="swlnidm1" class="switchinline"><span
hidden="true" id="MACidm2">Command</span><span hidden="true" id="defaultidm3">Ctrl</span><script
type="text/javascript">setSystemSpan("swlnidm1");</script></span>+B to make the text bold.</p>
<p id="par_id1000001" class="paragraph">This paragraph exists only in English.</p>
<p id="par_id1000002" class="paragraph">Select the text that you want to underline.</p>
</div></body></html>
"""

LO_DE = """<!DOCTYPE html><html><head><title>Schriftarten</title></head>
<body><div id="DisplayArea">
<a id="bm_id3150278"></a><span class="bookmark">Schriftarten; ändern</span>
<h1 id="hd_id3150278">Ändern der Schriftart</h1>
<p id="par_id1000002" class="paragraph">Wählen Sie den Text aus, den Sie unterstreichen möchten.</p>
<p id="par_id3154927" class="paragraph">Wählen Sie <span class="menuitem">Format - Zeichen</span>,
um die Schriftart des markierten Textes zu ändern. Der Dialog zeigt eine Vorschau der Schrift.</p>
<p id="par_id3145669" class="paragraph">Drücken Sie <span id="swlnidm1" class="switchinline"><span
hidden="true" id="MACidm2">Befehl</span><span hidden="true" id="defaultidm3">Strg</span><script
type="text/javascript">setSystemSpan("swlnidm1");</script></span>+B, um den Text fett zu machen.</p>
</div></body></html>
"""

XHP_EN = """<?xml version="1.0" encoding="UTF-8"?>
<helpdocument version="1.0"><meta><topic id="textswriter"><title id="tit" xml-lang="en-US">Tables</title>
<filename>/text/swriter/guide/table.xhp</filename></topic></meta><body>
<bookmark xml-lang="en-US" id="bm_id1"><bookmark_value>tables; inserting</bookmark_value></bookmark>
<paragraph role="heading" id="hd_id2" xml-lang="en-US" level="1">Inserting Tables</paragraph>
<paragraph role="paragraph" id="par_id3" xml-lang="en-US">Click <emph>Insert Table</emph> on the
toolbar to add a table at the cursor.<comment>UFI: fixed</comment></paragraph>
</body></helpdocument>
"""

XHP_DE = """<?xml version="1.0" encoding="UTF-8"?>
<helpdocument version="1.0"><meta><topic id="textswriter"><title id="tit" xml-lang="de">Tabellen</title>
<filename>/text/swriter/guide/table.xhp</filename></topic></meta><body>
<bookmark xml-lang="de" id="bm_id1"><bookmark_value>Tabellen; einfügen</bookmark_value></bookmark>
<paragraph role="heading" id="hd_id2" xml-lang="de" level="1">Tabellen einfügen</paragraph>
<paragraph role="paragraph" id="par_id3" xml-lang="de">Klicken Sie in der Symbolleiste auf
<emph>Tabelle einfügen</emph>, um an der Cursorposition eine Tabelle einzufügen.</paragraph>
</body></helpdocument>
"""

MALLARD = """<page xmlns="http://projectmallard.org/1.0/" type="topic" id="{page}">
  <info><credit type="author"><name>Jane Doe</name></credit><desc>{credit}</desc></info>
  <title>{title}</title>
  <p>{p1}</p>
  <section id="keys">
    <title>{keys_title}</title>
    <steps><item><p>{step} <keyseq><key>Ctrl</key><key>C</key></keyseq>.</p></item>
      <item><p>{menu} <guiseq><gui>Edit</gui><gui>{paste}</gui></guiseq>.</p></item></steps>
    <p>{seealso} <link xref="other"/>.</p>
  </section>
  <section id="extra">
    {extra}
  </section>
  <code>ls -l /tmp</code>
</page>
"""

EN_PAGE = {
    "page": "copy",
    "credit": "Written by the docs team.",
    "title": "Copy files and folders",
    "p1": "You can copy a file to another folder. The copy keeps the name of the original.",
    "keys_title": "Copy with the keyboard",
    "step": "Select the files and press",
    "menu": "Then choose",
    "paste": "Paste",
    "seealso": "For more, see",
    "extra": "<p>The first extra paragraph is here.</p><p>A second extra paragraph is here.</p>",
}
DE_PAGE = {
    "page": "copy",
    "credit": "Geschrieben vom Doku-Team.",
    "title": "Dateien und Ordner kopieren",
    "p1": "Sie können eine Datei in einen anderen Ordner kopieren. Die Kopie behält den Namen.",
    "keys_title": "Kopieren mit der Tastatur",
    "step": "Wählen Sie die Dateien aus und drücken Sie",
    "menu": "Wählen Sie dann",
    "paste": "Einfügen",
    "seealso": "Weiteres finden Sie unter",
    # one paragraph only: the section's blocks differ from the English, so it is not aligned
    "extra": "<p>Der einzige zusätzliche Absatz steht hier.</p>",
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_lo_html_and_xhp_units_align_by_id(tmp_path):
    en = helpdocs.lo_html_units(_write(tmp_path / "en.html", LO_EN))
    de = helpdocs.lo_html_units(_write(tmp_path / "de.html", LO_DE))
    assert [u.text for u in en] == [
        "Changing the Font",
        "Choose Format - Character to change the font of the selected text. The dialog shows a "
        "preview of the font.",
        "Press Ctrl+B to make the text bold.",  # the Mac variant of the switch dropped
        "This paragraph exists only in English.",
        "Select the text that you want to underline.",
    ]
    pairs = [(a.text, b.text) for a, b in helpdocs.align(en, de)]
    assert pairs == [  # English order, matched by id; the English-only paragraph dropped
        ("Changing the Font", "Ändern der Schriftart"),
        (en[1].text, de[2].text),
        ("Press Ctrl+B to make the text bold.", "Drücken Sie Strg+B, um den Text fett zu machen."),
        (
            "Select the text that you want to underline.",
            "Wählen Sie den Text aus, den Sie unterstreichen möchten.",
        ),
    ]
    en = helpdocs.xhp_units(_write(tmp_path / "en.xhp", XHP_EN))
    de = helpdocs.xhp_units(_write(tmp_path / "de.xhp", XHP_DE))
    assert [(a.text, b.text) for a, b in helpdocs.align(en, de)] == [
        ("Inserting Tables", "Tabellen einfügen"),  # the title's id 'tit' is no paragraph id
        (
            "Click Insert Table on the toolbar to add a table at the cursor.",  # comment dropped
            "Klicken Sie in der Symbolleiste auf Tabelle einfügen, um an der Cursorposition "
            "eine Tabelle einzufügen.",
        ),
    ]


def test_mallard_units_align_per_section(tmp_path):
    en = helpdocs.mallard_units(_write(tmp_path / "C.page", MALLARD.format(**EN_PAGE)))
    de = helpdocs.mallard_units(_write(tmp_path / "de.page", MALLARD.format(**DE_PAGE)))
    assert [(u.section, u.path) for u in en] == [
        ("copy", "title"),
        ("copy", "p"),
        ("keys", "title"),
        ("keys", "steps/item/p"),
        ("keys", "steps/item/p"),
        ("keys", "p"),
        ("extra", "p"),
        ("extra", "p"),
    ]
    assert en[3].text == "Select the files and press Ctrl+C."
    assert en[4].text == "Then choose Edit ▸ Paste."
    assert not en[5].ok  # an empty link: the viewer fills in the other page's title
    pairs = [(a.text, b.text) for a, b in helpdocs.align(en, de)]
    assert pairs == [
        ("Copy files and folders", "Dateien und Ordner kopieren"),
        (EN_PAGE["p1"], DE_PAGE["p1"]),
        ("Copy with the keyboard", "Kopieren mit der Tastatur"),
        (
            "Select the files and press Ctrl+C.",
            "Wählen Sie die Dateien aus und drücken Sie Ctrl+C.",
        ),
        ("Then choose Edit ▸ Paste.", "Wählen Sie dann Edit ▸ Einfügen."),
    ]  # no info/credits, no code, no link-completed text, no 'extra' (blocks differ)


DOCBOOK = """<?xml version="1.0" encoding="utf-8"?>
<chapter xmlns="http://docbook.org/ns/docbook" version="5.0" xml:id="basics">
  <info><title>{title}</title><copyright><year>2020</year><holder>MATE</holder></copyright></info>
  <section xml:id="keys"><info><title>{keys}</title></info>
    <para>{press} <keycombo><keycap>Ctrl</keycap><keycap>Q</keycap></keycombo>.</para>
    <para>{choose} <menuchoice><guimenu>{file}</guimenu><guimenuitem>{quit}</guimenuitem></menuchoice>.</para>
    <para>{see} <xref linkend="basics"/>.</para>
    <screen>mate-session --logout</screen>
  </section>
</chapter>
"""
DB_EN = {
    "title": "Basic Skills",
    "keys": "Keyboard Skills",
    "press": "To quit, press",
    "choose": "Or choose",
    "file": "File",
    "quit": "Quit",
    "see": "See also",
}
DB_PT = {
    "title": "Competências básicas",
    "keys": "Competências de teclado",
    "press": "Para sair, prima",
    "choose": "Ou escolha",
    "file": "Ficheiro",
    "quit": "Sair",
    "see": "Veja também",
}
DB_BR = {
    **DB_PT,
    "title": "Habilidades básicas",
    "keys": "Habilidades de teclado",
    "press": "Para sair, pressione",
    "file": "Arquivo",
}


def test_docbook_units_align_per_section(tmp_path):
    en = helpdocs.docbook_units(_write(tmp_path / "C.xml", DOCBOOK.format(**DB_EN)))
    pt = helpdocs.docbook_units(_write(tmp_path / "pt.xml", DOCBOOK.format(**DB_PT)))
    assert [(u.section, u.path, u.ok) for u in en] == [
        ("basics", "info/title", True),
        ("keys", "info/title", True),
        ("keys", "para", True),
        ("keys", "para", True),
        ("keys", "para", False),  # an empty cross-reference
    ]
    assert [(a.text, b.text) for a, b in helpdocs.align(en, pt)] == [
        ("Basic Skills", "Competências básicas"),
        ("Keyboard Skills", "Competências de teclado"),
        ("To quit, press Ctrl+Q.", "Para sair, prima Ctrl+Q."),
        ("Or choose File ▸ Quit.", "Ou escolha Ficheiro ▸ Sair."),
    ]  # no copyright, no screen
    assert helpdocs.classify(("usr", "share", "help", "pt_BR", "mate-user-guide", "a.xml")) == (
        "docbook:mate-user-guide",
        "a.xml",
        "pt_BR",
    )
    assert helpdocs.classify(("usr", "share", "help", "C", "mate-user-guide", "legal.xml")) is None


def test_sentences_and_filters():
    split = helpdocs.split_sentences
    assert split("Open the file. Then close it! Done?") == [
        "Open the file.",
        "Then close it!",
        "Done?",
    ]
    assert split("See e.g. the manual. Version 7. is old.") == [
        "See e.g. the manual.",
        "Version 7. is old.",
    ]
    assert split("ファイルを開きます。閉じます。") == ["ファイルを開きます。", "閉じます。"]
    f = helpdocs.HelpFilters()
    assert f.reason("Open the file in the editor.", "Öffnen Sie die Datei im Editor.", "de") is None
    assert (
        f.reason("Open the file in the editor.", "Open the file in the editor.", "de")
        == "identical"
    )
    assert f.reason("Open the file in the editor.", "Otkroyte fayl v redaktore.", "ru") == "script"
    assert f.reason("Open the file in the editor.", "Откройте файл в редакторе.", "ru") is None
    assert f.reason("Open the file in the editor.", "ファイルを開きます。", "ja") is None
    assert (
        f.reason("Open the file with the editor.", "Öffnen the file with the Editor.", "de")
        == "english_left"
    )
    assert f.reason("Open the file in the editor now.", "Öffnen.", "de") == "length_ratio"
    # sentence pairs where both sides split alike, else the whole paragraph
    en = [helpdocs.Unit("s", "p", "Open the file now. Then close the window.")]
    de = [helpdocs.Unit("s", "p", "Öffnen Sie jetzt die Datei. Schließen Sie dann das Fenster.")]
    assert [p[:2] for p in helpdocs.pairs_of(en, de, "de", f)] == [
        ("Open the file now.", "Öffnen Sie jetzt die Datei."),
        ("Then close the window.", "Schließen Sie dann das Fenster."),
    ]
    de = [helpdocs.Unit("s", "p", "Öffnen Sie jetzt die Datei und schließen Sie dann das Fenster.")]
    assert [p[:2] for p in helpdocs.pairs_of(en, de, "de", f)] == [(en[0].text, de[0].text)]


# ---- the whole harvest: packages, exclusion, help-dev ----

VOCAB = (
    "folder window button printer document table chart style margin column border image "
    "picture cursor toolbar menu dialog field record query report slide layout page header "
    "footer font colour shape frame formula cell sheet macro filter index label border2 zoom"
).split()


def _cipher(text: str) -> str:
    """A made-up Latin-script language: each word respelt and suffixed."""
    table = str.maketrans("abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")
    return " ".join(w.translate(table) + "ek" for w in text.split())


def _sentences(n: int, seed: int) -> list[str]:
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        words = rng.sample(VOCAB, 6)
        if frozenset(words) not in seen:
            seen.add(frozenset(words))
            out.append(" ".join(words).capitalize() + ".")
    return out


def _lo_page(sentences: list[str]) -> str:
    body = "".join(
        f'<p id="par_id{i}" class="paragraph">{s}</p>\n' for i, s in enumerate(sentences)
    )
    return f"<html><body>{body}</body></html>"


def _deb(root: Path, package: str, tree: Path) -> Path:
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test help\n"
    )
    doc = tree / "usr" / "share" / "doc" / package
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: the authors\nLicense: MPL-2.0\n"
    )
    out = root / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(tree), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    """40 LibreOffice pages (English and 'xx' in two packages) and a Mallard document, harvested
    once through the CLI with a pack excluded; 30% of the documents held out."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    from stilts.cli import main

    tmp = tmp_path_factory.mktemp("help")
    docs: dict[str, list[str]] = {}
    for d in range(40):
        sents = _sentences(5, d)
        docs[f"libreoffice/text/shared/page{d:02d}"] = sents
        rel = Path("usr/share/libreoffice/help")
        _write(tmp / "en-tree" / rel / "en-US" / f"text/shared/page{d:02d}.html", _lo_page(sents))
        xx = [_cipher(s) for s in sents]
        _write(tmp / "xx-tree" / rel / "eo" / f"text/shared/page{d:02d}.html", _lo_page(xx))
    # a Mallard document in a directory input (C and de), and the same page in en_GB (skipped)
    help_dir = tmp / "mallard" / "usr" / "share" / "help"
    _write(help_dir / "C" / "tinyapp" / "copy.page", MALLARD.format(**EN_PAGE))
    _write(help_dir / "de" / "tinyapp" / "copy.page", MALLARD.format(**DE_PAGE))
    _write(help_dir / "en_GB" / "tinyapp" / "copy.page", MALLARD.format(**EN_PAGE))
    # DocBook in European (one paragraph left in English) and Brazilian Portuguese: both read,
    # both "pt"; an English text gets one translation per language (the first folder's)
    pt_partial = {**DB_PT, "choose": "Or choose", "file": "File", "quit": "Quit"}
    for lang, d in (("C", DB_EN), ("pt", pt_partial), ("pt_BR", DB_BR)):
        _write(help_dir / lang / "tinyguide" / "basics.xml", DOCBOOK.format(**d))
    # an evaluation pack holding one harvested sentence exactly and another as a reordering
    pack = tmp / "pack"
    s_exact, s_close = docs["libreoffice/text/shared/page00"][:2]
    close = " ".join(reversed(s_close.rstrip(".").split())) + "!"
    _write(pack / "tatoeba" / "xx-en.tsv", f"foo\t{s_exact}\nbar\t{close}\n")
    _write(pack / "sources.tsv", "package\tversion\ndebian-faq-de\t11.1\n")
    debs = [
        _deb(tmp, "libreoffice-help-en-us", tmp / "en-tree"),
        _deb(tmp, "libreoffice-help-eo", tmp / "xx-tree"),
    ]
    out, dev_pack = tmp / "data" / "help", tmp / "help-dev"
    argv = [
        "data",
        "help",
        *map(str, debs),
        str(tmp / "mallard"),
        "--out",
        str(out),
        "--dev-pack",
        str(dev_pack),
        "--exclude",
        str(pack),
        "--holdout-fraction",
        "0.3",
        "--dev-fraction",
        "0.1",
        "--dev-min-pairs",
        "8",
        "--dev-max-pairs",
        "10",
        "--bucc-languages",
        "eo",
        "--bucc-gold",
        "8",
        "--quiet",
    ]
    assert main(argv) == 0
    return {
        "tmp": tmp,
        "out": out,
        "dev_pack": dev_pack,
        "docs": docs,
        "debs": debs,
        "excluded": (s_exact, s_close),
        "pack": pack,
    }


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_harvest_writes_pairs_and_summary(harvested):
    out = harvested["out"]
    train, dev = _rows(out / "pairs.tsv"), _rows(out / "dev.tsv")
    summary = json.loads((out / "summary.json").read_text())
    assert {r[3] for r in train} <= {
        "help:libreoffice",
        "help:gnome:tinyapp",
        "help:docbook:tinyguide",
    }
    assert all(r[1] == _cipher(r[0]) for r in train + dev if r[2] == "eo")
    assert summary["pairs"]["train"] == len(train) and summary["pairs"]["dev"] == len(dev)
    assert summary["packages"]["libreoffice-help-eo"] == {
        "version": "1.0",
        "licence": "MPL-2.0",
        "collections": ["libreoffice"],
    }
    assert summary["help_languages"]["gnome:tinyapp"] == ["de", "en"]  # en_GB is no translation
    pt = {r[1] for r in train + dev if r[2] == "pt"}
    assert {"Para sair, prima Ctrl+Q.", "Ou escolha Arquivo ▸ Sair."} <= pt
    assert "Para sair, pressione Ctrl+Q." not in pt
    assert {r[3] for r in train + dev if r[2] == "pt"} == {"help:docbook:tinyguide"}
    # the excluded pack's sentence, exact and reordered, is nowhere
    texts = {fold(r[0]) for r in train + dev}
    for s in harvested["excluded"]:
        assert fold(s) not in texts
    assert summary["dropped"]["excluded"] == 2
    # every pair of a document is in one split: train, dev or the held-out pack
    where: dict[str, set[str]] = {}
    split_of = {fold(r[0]): "train" for r in train} | {fold(r[0]): "dev" for r in dev}
    for doc, sents in harvested["docs"].items():
        where[doc] = {split_of.get(fold(s), "none") for s in sents}
    assert all(len(v - {"none"}) <= 1 for v in where.values())


def test_help_dev_holds_whole_documents_never_trained_on(harvested):
    out, pack = harvested["out"], harvested["dev_pack"]
    trained = {fold(r[0]) for r in _rows(out / "pairs.tsv") + _rows(out / "dev.tsv")}
    tat = read_tatoeba(pack / "tatoeba")
    assert list(tat) == ["eo"] and len(tat["eo"]) == 10
    assert all(x == _cipher(e) for x, e in zip(tat["eo"].src, tat["eo"].en, strict=True))
    bucc = read_bucc(pack / "bucc")["eo"]["training"]
    assert len(bucc.gold) == 8 and len(bucc.src) > 8 and len(bucc.en) > 8
    src, en = (
        dict(zip(bucc.src_ids, bucc.src, strict=True)),
        dict(zip(bucc.en_ids, bucc.en, strict=True)),
    )
    assert all(src[s] == _cipher(en[e]) for s, e in bucc.gold)
    assert bucc.src_ids[0].startswith("eo-0000") and bucc.en_ids[0].startswith("en-0000")
    held_en = set(tat["eo"].en) | set(bucc.en)
    held_docs = {d for d, s in harvested["docs"].items() if held_en & set(s)}
    assert held_docs
    for d in held_docs:  # a held-out document: none of its sentences is trained on
        assert not {fold(s) for s in harvested["docs"][d]} & trained
    assert not {fold(s) for s in held_en} & trained
    # unpaired sentences are no translations of the other side
    gold_src, gold_en = {s for s, _ in bucc.gold}, {e for _, e in bucc.gold}
    lone_src = {src[i] for i in bucc.src_ids if i not in gold_src}
    assert not lone_src & {_cipher(en[i]) for i in bucc.en_ids}
    assert len(bucc.en_ids) > len(gold_en)
    counts = _rows(pack / "counts.tsv")
    assert counts[0][0] == "lang" and counts[1][:4] == ["eo", counts[1][1], "10", "8"]
    assert "libreoffice-help-eo\t1.0\tMPL-2.0\tlibreoffice" in (pack / "sources.tsv").read_text()
    # only the help pages are held out: the pack, excluded, refuses no package (its catalogs)
    assert pack_sources([pack]) == {}


def test_refuses_reserved_and_pack_sources(harvested, tmp_path):
    tree = tmp_path / "t"
    _write(tree / "usr/share/help/C/x/a.page", MALLARD.format(**EN_PAGE))
    for name in ("manpages-de", "debian-faq-de"):
        deb = _deb(tmp_path, name, tree)
        with pytest.raises(StiltsError) as e:
            helpdocs.harvest_help(
                [deb], tmp_path / "o", tmp_path / "p", exclude=[harvested["pack"]], progress=False
            )
        assert e.value.field == "input" and name in str(e.value)
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()
    with pytest.raises(StiltsError) as e:
        helpdocs.harvest_help([tree], tmp_path / "o", tmp_path / "p", holdout_fraction=1.0)
    assert e.value.field == "holdout_fraction"


def test_languages_report(harvested, tmp_path, capsys):
    from stilts.cli import main

    bitext = _write(
        tmp_path / "bitext" / "summary.json",
        json.dumps(
            {
                "pairs": {"train": 500, "dev": 0},
                "languages": {"de": {"train": 400, "dev": 0}, "br": {"train": 100, "dev": 0}},
            }
        ),
    )
    assert main(["data", "languages", str(bitext), str(harvested["out"])]) == 0
    rows = {r["lang"]: r for r in json.loads(capsys.readouterr().out)}
    help_de = json.loads((harvested["out"] / "summary.json").read_text())["languages"]["de"]
    assert rows["de"]["interface"] == 400 and rows["de"]["help"] == help_de["train"]
    assert rows["br"] == {**rows["br"], "interface": 100, "help": 0}
    # temperature 2 draws the small language more often than its share of the pairs
    assert rows["br"]["draw_share"] > rows["br"]["pair_share"]
    assert sum(r["draw_share"] for r in rows.values()) == pytest.approx(1.0)
    assert main(["data", "languages", str(tmp_path / "nope.json")]) != 0
