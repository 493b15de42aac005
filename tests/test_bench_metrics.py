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
