"""The order-statistics nulls' two forms (:mod:`stilts.index.ordernull`): the normal tail against
the exact normal law, and the cap on one-sided pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stilts.index import ordernull
from stilts.index.ordernull import CandidateNulls


def _q(u: float) -> float:
    return 0.5 * math.erfc(u / math.sqrt(2))


@pytest.mark.parametrize("n", [100, 20_000, 400_000])
def test_the_normal_tail_starts_where_the_best_of_a_row_sits(n):
    z = ordernull.gauss_start(n, n)
    assert _q(z) == pytest.approx(2 / n, rel=1e-9)


def test_the_normal_survival_holds_on_both_sides_of_the_mean():
    u = np.linspace(-6, 6, 241)
    exact = np.array([_q(x) for x in u])
    assert np.allclose(ordernull.normal_sf(u), exact, rtol=0.004, atol=1e-4)
    assert ordernull.normal_sf(np.array([0.0]))[0] == pytest.approx(0.5, abs=0.002)


@pytest.mark.parametrize("z", [2.0, 3.0, 3.8, 4.5])
def test_the_normal_tail_is_the_normal_law_scaled_to_the_mean_excess(z):
    beta = np.array([0.02])
    excess = np.linspace(0, 0.4, 4001)
    got = ordernull._gauss_survival(excess[None, :], np.zeros(1), beta, z)[0]
    phi = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    sigma = 0.02 / (phi / _q(z) - z)
    exact = np.array([_q(z + x / sigma) / _q(z) for x in excess])
    assert got[0] == 1.0
    assert np.allclose(got, exact, rtol=0.01, atol=1e-12)
    # its mean excess (the integral of the survival) is beta, as the row's spacings say
    assert np.trapezoid(got, excess) == pytest.approx(0.02, rel=0.01)
    # lighter than the exponential tail of the same mean, far out
    assert got[-1] < math.exp(-0.4 / 0.02)


def _nulls(from_src, from_tgt, cap_src, cap_tgt):
    n = len(from_src)
    ones = np.ones(n)
    return CandidateNulls(
        0.8 * ones, 0.02 * ones, 0.8 * ones, 0.02 * ones, ones, np.array(from_src),
        np.array(from_tgt), "absolute", cap_src=np.array(cap_src), cap_tgt=np.array(cap_tgt),
        gauss_z=3.0,
    )  # fmt: skip


def test_a_one_sided_pair_stays_below_the_other_rows_best():
    """A pair found from the source side only scores below the target row's best margin: its
    capped null is the chance of landing between the threshold and that cap, none above."""
    one_sided = _nulls([True], [False], cap_src=[0.95], cap_tgt=[0.86])
    mutual = _nulls([True], [True], cap_src=[0.95], cap_tgt=[0.86])
    t = np.array([0.80, 0.83, 0.85, 0.86, 0.90])
    plain = mutual.false_counts(t, form="capped")  # a mutual pair is not capped
    capped = one_sided.false_counts(t, form="capped")
    at_cap = mutual.false_counts(np.array([0.86]), form="capped")[0]
    assert np.allclose(capped[:3], plain[:3] - at_cap)
    assert capped[3] == capped[4] == 0.0
    assert (plain > 0).all() and plain[0] == pytest.approx(1.0)
    # the exponential tail of the same mean is heavier from 2.5 mean excesses up
    heavy = mutual.false_counts(t, form="capped", tail="exponential")
    assert (heavy[2:] > plain[2:]).all() and heavy[1] < plain[1]
    # the plain form ignores caps (the one-sided pair takes its own row's whole tail)
    assert np.allclose(one_sided.false_counts(t), mutual.false_counts(t))


def test_the_capped_form_needs_the_rows_best_margins():
    n = _nulls([True], [False], cap_src=[0.9], cap_tgt=[0.9])
    n.cap_src = None
    with pytest.raises(ValueError, match="best margin"):
        n.false_counts(np.array([0.85]), form="capped")
    with pytest.raises(ValueError, match="tail one of"):
        n.false_counts(np.array([0.85]), tail="gamma")
