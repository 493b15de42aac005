"""Issue 17's goal check and issue 28's depth rule on bench-accuracy-shaped results (two models,
per-language figures)."""

from __future__ import annotations

import json

import pytest

from stilts.benchmarks.goals import main, pack_deltas, verdict


def _results(base: dict[str, float], tuned: dict[str, float], f1: tuple[float, float]) -> dict:
    def model(tatoeba, f):
        return {
            "tatoeba": {
                "per_language": {
                    x: {"cosine": {"xx2en": v, "en2xx": v}, "margin": {"xx2en": v, "en2xx": v}}
                    for x, v in tatoeba.items()
                }
            },
            "bucc": {"per_language": {"de": {"f1_oracle": f}}},
        }

    return {
        "comparison": {"reference": "default"},
        "models": {"default": model(base, f1[0]), "run/model": model(tuned, f1[1])},
    }


def test_goals_need_gains_on_interface_strings_and_no_loss_on_prose(tmp_path, capsys):
    interface = _results({"de": 0.90, "kab": 0.40}, {"de": 0.92, "kab": 0.48}, (0.80, 0.83))
    prose = _results({"de": 0.95, "fr": 0.94}, {"de": 0.95, "fr": 0.946}, (0.90, 0.90))
    d = pack_deltas(interface)
    assert d["tuned"] == "run/model" and d["tatoeba_gain"] == pytest.approx(5.0)
    assert d["worst_language"][0] == "de" and d["bucc_gain"] == pytest.approx(3.0)
    v = verdict(d, pack_deltas(prose))
    assert v["serves_default"] and v["no_regression"] and not v["moonshot_prose_tatoeba"]

    # one language losing 2 points fails the per-language goal, not the no-regression floor
    interface = _results({"de": 0.90, "kab": 0.40}, {"de": 0.88, "kab": 0.52}, (0.80, 0.83))
    v = verdict(pack_deltas(interface), pack_deltas(prose))
    assert not v["checks"]["interface_worst_language"] and not v["serves_default"]
    assert v["no_regression"]
    # prose BUCC falling is a regression
    fallen = _results({"de": 0.95}, {"de": 0.95}, (0.90, 0.89))
    assert not verdict(pack_deltas(interface), pack_deltas(fallen))["no_regression"]

    for name, r in (("a", interface), ("b", prose)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    assert (
        main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "v")])
        == 0
    )
    assert json.loads((tmp_path / "v").read_text()) == json.loads(capsys.readouterr().out)
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "| Tatoeba xx->en, cosine | 65.0 | 70.0 | +5.0 | 94.5 | 94.8 | +0.3 |" in table
    assert "interface strings: 1 of 2 languages lost: de -2.0." in table


def test_a_shallower_encoder_replaces_the_default_only_within_half_a_point(tmp_path, capsys):
    from stilts.benchmarks.goals import depth_verdict

    close = _results({"de": 0.90, "fr": 0.92}, {"de": 0.897, "fr": 0.916}, (0.80, 0.796))
    prose = _results({"de": 0.95}, {"de": 0.949}, (0.90, 0.899))
    v = depth_verdict(pack_deltas(close), pack_deltas(prose))
    assert v["serves_default"] and all(v["checks"].values())
    # the interface BUCC mean 0.6 points down: it ships as default-fast, not as default
    far = _results({"de": 0.90, "fr": 0.92}, {"de": 0.90, "fr": 0.92}, (0.80, 0.794))
    v = depth_verdict(pack_deltas(far), pack_deltas(prose))
    assert not v["serves_default"] and v["checks"] == {
        "interface_tatoeba_gain": True,
        "interface_bucc_gain": False,
        "prose_tatoeba_gain": True,
        "prose_bucc_gain": True,
    }
    for name, r in (("a", far), ("b", prose)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--depth"]) == 0
    assert json.loads(capsys.readouterr().out)["serves_default"] is False
