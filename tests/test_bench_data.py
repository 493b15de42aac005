"""The Tatoeba (pack and XTREME) and BUCC 2017 readers on small files written here."""

from __future__ import annotations

import pytest

from stilts.benchmarks import data
from stilts.errors import StiltsError


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_tatoeba_both_layouts(tmp_path):
    _write(tmp_path / "de-en.tsv", ["Guten Morgen\tGood morning", "Danke schön\tThank you"])
    _write(tmp_path / "tatoeba.jpn-eng.jpn", ["おはよう", "ありがとう", "さようなら"])
    _write(tmp_path / "tatoeba.jpn-eng.eng", ["Good morning", "Thanks", "Goodbye"])
    _write(tmp_path / "notes.txt", ["not a data file"])
    sets = data.read_tatoeba(tmp_path)
    assert list(sets) == ["de", "jpn"]
    de, jpn = sets["de"], sets["jpn"]
    assert de.layout == "pack" and jpn.layout == "xtreme"
    assert de.src == ["Guten Morgen", "Danke schön"]
    assert de.en == ["Good morning", "Thank you"]
    assert jpn.src[2] == "さようなら" and jpn.en[2] == "Goodbye"
    assert len(jpn) == 3
    assert [len(s) for s in data.read_tatoeba(tmp_path, max_pairs=1).values()] == [1, 1]
    assert list(data.read_tatoeba(tmp_path, languages=["jpn"])) == ["jpn"]
    with pytest.raises(StiltsError, match="fr"):
        data.read_tatoeba(tmp_path, languages=["fr"])


def test_tatoeba_errors_name_the_file(tmp_path):
    _write(tmp_path / "fr-en.tsv", ["Bonjour\tHello", "no tab here"])
    with pytest.raises(StiltsError, match=r"fr-en\.tsv:2"):
        data.read_tatoeba(tmp_path)
    bad = tmp_path / "x"
    _write(bad / "tatoeba.deu-eng.deu", ["a", "b"])
    _write(bad / "tatoeba.deu-eng.eng", ["a"])
    with pytest.raises(StiltsError, match="not aligned"):
        data.read_tatoeba(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StiltsError, match="no <xx>-en.tsv"):
        data.read_tatoeba(tmp_path / "empty")
    # a missing directory is NOT_FOUND naming the option
    with pytest.raises(StiltsError, match="tatoeba"):
        data.read_tatoeba(tmp_path / "absent")


def _bucc(root, xx, split, src, en, gold):
    _write(root / f"{xx}-en.{split}.{xx}", [f"{i}\t{t}" for i, t in src])
    _write(root / f"{xx}-en.{split}.en", [f"{i}\t{t}" for i, t in en])
    _write(root / f"{xx}-en.{split}.gold", [f"{a}\t{b}" for a, b in gold])


def test_bucc_layout_with_subdirectories_and_splits(tmp_path):
    src = [("de-000000001", "Hallo Welt"), ("de-000000002", "Datei öffnen")]
    en = [("en-000000001", "Open file"), ("en-000000002", "Hello world"), ("en-000000003", "x")]
    gold = [("de-000000001", "en-000000002"), ("de-000000002", "en-000000001")]
    _bucc(tmp_path / "de-en", "de", "training", src, en, gold)
    _bucc(tmp_path / "de-en", "de", "sample", src[:1], en[1:2], gold[:1])
    # official test split: no gold, skipped
    _write(tmp_path / "de-en" / "de-en.test.de", ["de-000000009\tTest"])
    _write(tmp_path / "de-en" / "de-en.test.en", ["en-000000009\tTest"])
    _bucc(
        tmp_path, "fr", "training", [("fr-1", "Bonjour")], [("en-1", "Hello")], [("fr-1", "en-1")]
    )
    sets = data.read_bucc(tmp_path)
    assert sorted(sets) == ["de", "fr"]
    assert sorted(sets["de"]) == ["sample", "training"]
    tr = sets["de"]["training"]
    assert tr.src_ids == ["de-000000001", "de-000000002"]
    assert tr.src[1] == "Datei öffnen"
    assert tr.en_ids[1] == "en-000000002" and tr.en[0] == "Open file"
    assert tr.gold == set(gold)
    assert data.eval_split(sets["de"]) == "training"
    assert len(sets["de"]["sample"].gold) == 1


def test_bucc_errors(tmp_path):
    _bucc(tmp_path, "es", "training", [("es-1", "Hola")], [("en-1", "Hi")], [("es-1", "en-7")])
    with pytest.raises(StiltsError, match=r"gold.*:1.*unknown id"):
        data.read_bucc(tmp_path)
    other = tmp_path / "o"
    _write(other / "ru-en.training.ru", ["ru-1\tПривет"])
    _write(other / "ru-en.training.gold", ["ru-1\ten-1"])
    with pytest.raises(StiltsError, match="ru-en.training.en is missing"):
        data.read_bucc(other)
    with pytest.raises(StiltsError, match="bucc"):
        data.read_bucc(tmp_path / "empty-does-not-exist")


def test_bucc_subsample_keeps_gold_share(tmp_path):
    src = [(f"de-{i}", f"s{i}") for i in range(100)]
    # gold for even xx ids; English: 50 partners + 100 loners
    gold = [(f"de-{i}", f"en-p{i}") for i in range(0, 100, 2)]
    en = [(f"en-p{i}", f"p{i}") for i in range(0, 100, 2)] + [
        (f"en-l{i}", f"l{i}") for i in range(100)
    ]
    _bucc(tmp_path, "de", "training", src, en, gold)
    full = data.read_bucc(tmp_path)["de"]["training"]
    sub = full.subsample(20)
    assert sub.src_ids == [f"de-{i}" for i in range(20)]
    assert len(sub.gold) == 10
    assert {e for _, e in sub.gold} <= set(sub.en_ids)
    assert len(sub.en_ids) == 10 + 20  # partners + 20% of the 100 loners
    assert full.subsample(None) is full


def test_model_labels_tell_run_directories_apart(tmp_path):
    from stilts.benchmarks.systems import model_labels

    a, b = tmp_path / "run-a" / "model", tmp_path / "run-b" / "model"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert model_labels(["default", str(a), str(b)]) == ["default", "run-a/model", "run-b/model"]
    assert model_labels(["default", str(tmp_path / "run-a")]) == ["default", "run-a"]
