"""Benchmark metrics on small cases checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stilts.benchmarks import metrics
from stilts.errors import StiltsError


def test_top1_accuracy_counts_rows_ranking_their_own_pair_first():
    # rows 0 and 2 retrieve themselves, row 1 retrieves 0, row 3 retrieves 2: 2/4
    assert metrics.top1_accuracy(np.array([0, 0, 2, 2])) == 0.5
    assert metrics.top1_accuracy(np.array([[0], [1], [2]])) == 1.0
    with pytest.raises(StiltsError):
        metrics.top1_accuracy(np.array([], dtype=int))


def test_prf_on_sets():
    gold = {("a", "1"), ("b", "2"), ("c", "3")}
    p, r, f = metrics.prf([("a", "1"), ("b", "9"), ("a", "1")], gold)  # duplicates count once
    assert (p, r) == (0.5, 1 / 3)
    assert f == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert metrics.prf([], gold) == (0.0, 0.0, 0.0)


def test_at_threshold_is_inclusive():
    scores = [0.9, 0.8, 0.7, 0.6]
    correct = [True, False, True, False]
    s = metrics.at_threshold(scores, correct, n_gold=3, threshold=0.7)
    # predicted 0.9, 0.8, 0.7 -> 2 correct of 3 predicted, 2 of 3 gold
    assert (s.n_predicted, s.n_correct) == (3, 2)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    none = metrics.at_threshold(scores, correct, 3, threshold=1.0)
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)


def test_oracle_threshold_picks_the_f1_optimal_cut():
    scores = [0.6, 0.9, 0.7, 0.8]  # unsorted on purpose
    correct = [False, True, True, False]
    # cuts: top1 F1 .5, top2 .4, top3 2/3, top4 4/7 -> keep 0.9, 0.8, 0.7; half-way to 0.6
    o = metrics.oracle_threshold(scores, correct, n_gold=3)
    assert o.f1 == pytest.approx(2 / 3)
    assert o.threshold == pytest.approx(0.65)
    assert (o.n_predicted, o.n_correct) == (3, 2)
    # the oracle threshold applied to the same data gives the same figures
    again = metrics.at_threshold(scores, correct, 3, o.threshold)
    assert again.f1 == pytest.approx(o.f1)


def test_oracle_never_splits_ties():
    # two candidates tied at 0.8, one right one wrong: a cut can keep both or neither
    scores = [0.9, 0.8, 0.8, 0.1]
    correct = [True, True, False, False]
    thr, p, r, f = metrics.f1_sweep(scores, correct, n_gold=2)
    assert len(thr) == 3
    assert list(p) == pytest.approx([1.0, 2 / 3, 0.5])
    o = metrics.oracle_threshold(scores, correct, 2)
    assert o.f1 == pytest.approx(0.8)  # P 2/3, R 1
    assert o.n_predicted == 3
    assert 0.1 < o.threshold < 0.8


def test_oracle_with_no_candidates_and_bad_input():
    o = metrics.oracle_threshold([], [], n_gold=5)
    assert math.isinf(o.threshold) and o.f1 == 0.0
    with pytest.raises(StiltsError, match="n_gold|gold"):
        metrics.oracle_threshold([0.5, 0.4], [True, True], n_gold=1)
    with pytest.raises(StiltsError):
        metrics.at_threshold([0.5], [True, False], 2, 0.1)


def test_mean_skips_missing():
    assert metrics.mean([0.5, None, 1.0]) == 0.75
    assert metrics.mean([None]) is None


def test_calibration_source_order():
    """sample split first, then --calibrate-on (same pair, else pooled), else leave-one-out."""
    from stilts.benchmarks.accuracy import Candidates, _calibration_source

    def cands(scores, correct, n_gold):
        return Candidates(np.array(scores, float), np.array(correct, bool), n_gold)

    evals = {
        "de": cands([1.2, 1.1, 1.0], [True, True, False], 2),
        "fr": cands([1.3, 1.05], [True, False], 1),
        "ja": cands([1.15, 0.9], [True, False], 2),
    }
    sample = {"de": cands([1.0, 0.9], [True, False], 1)}
    c, src = _calibration_source("de", sample, None, None, evals)
    assert src == "sample split" and c is sample["de"]
    calib = {"fr": cands([1.1], [True], 1), "es": cands([1.2], [True], 1)}
    c, src = _calibration_source("fr", sample, calib, "/c", evals)
    assert c is calib["fr"] and "fr-en" in src
    c, src = _calibration_source("ja", sample, calib, "/c", evals)
    assert "pooled: es, fr" in src and c.n_gold == 2 and len(c.scores) == 2
    c, src = _calibration_source("ja", sample, None, None, evals)
    assert src == "leave-one-out (pooled: de, fr)"
    assert c.n_gold == 3 and list(c.scores) == [1.2, 1.1, 1.0, 1.3, 1.05]
    # pooled oracle: keep 1.3, 1.2, 1.1 (3 correct of 3 gold): threshold half-way to 1.05
    assert c.oracle().f1 == 1.0 and c.oracle().threshold == pytest.approx(1.075)
    c, src = _calibration_source("de", {}, None, None, {"de": evals["de"]})
    assert c is None and src.startswith("none")
