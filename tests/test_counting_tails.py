"""Exact counting tails as z (sidecar/counting.py): calibrated where the normal approximation is not."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, poisson

from shoppulse.sidecar.counting import binomial_z, flow_ratio_z, overdispersed_poisson_z, poisson_z
from shoppulse.sidecar.detectors import Point

NORMAL = NormalDist()


def test_a_few_failures_among_a_few_payments_are_less_rare_than_the_normal_approximation_says() -> None:
    """2 failures in 8 payments against a usual 3 %: 3.6 standard deviations out by sqrt(p(1-p)/n), but
    P(X >= 2) is 2.2 % — the z of a normal deviate as rare is 2.0."""
    assert round((2 / 8 - 0.03) / math.sqrt(0.03 * 0.97 / 8), 1) == 3.6
    assert binomial_z(2, 8, 0.03) == pytest.approx(NORMAL.inv_cdf(1 - binom.sf(1, 8, 0.03)), rel=1e-9)
    assert round(binomial_z(2, 8, 0.03), 2) == 2.01


def test_far_tails_keep_their_digits_and_dense_counts_agree_with_the_normal_approximation() -> None:
    assert 9.0 < poisson_z(324, 180) < 10.7  # 1.8 times the usual; a Poisson right tail is heavier
    assert -11.5 < poisson_z(54, 180) < -9.4  # 0.3 times; its left tail lighter
    assert binomial_z(5200, 10_000, 0.5) == pytest.approx(NORMAL.inv_cdf(1 - binom.sf(5199, 10_000, 0.5)), rel=1e-9)
    assert abs(binomial_z(5200, 10_000, 0.5) - 4.0) < 0.05
    assert poisson_z(180, 180) == 0.0 and binomial_z(4, 8, 0.5) == 0.0


@settings(max_examples=300)
@given(st.integers(1, 400), st.floats(0.001, 0.999), st.floats(0.5, 5.0))
def test_under_the_usual_share_a_z_of_t_comes_no_more_often_than_a_normal_deviate_s(trials: int, p: float,
                                                                                  t: float) -> None:
    """Calibration, both ways: the probability, under Binomial(trials, p), of every count whose z is at
    least t (or at most -t) never exceeds the normal tail at t — whatever the trials and the share."""
    high = sum(binom.pmf(k, trials, p) for k in range(trials + 1) if binomial_z(k, trials, p) >= t)
    low = sum(binom.pmf(k, trials, p) for k in range(trials + 1) if binomial_z(k, trials, p) <= -t)
    tail = 1 - NORMAL.cdf(t)
    assert high <= tail * (1 + 1e-6) + 1e-12 and low <= tail * (1 + 1e-6) + 1e-12


@settings(max_examples=200)
@given(st.floats(0.05, 300.0), st.floats(0.5, 5.0))
def test_poisson_counts_are_calibrated_alike(mean: float, t: float) -> None:
    top = int(mean + 20 * math.sqrt(mean) + 20)
    high = sum(poisson.pmf(k, mean) for k in range(top) if poisson_z(k, mean) >= t)
    low = sum(poisson.pmf(k, mean) for k in range(top) if poisson_z(k, mean) <= -t)
    tail = 1 - NORMAL.cdf(t)
    assert high <= tail * (1 + 1e-6) + 1e-12 and low <= tail * (1 + 1e-6) + 1e-12


def test_overdispersed_counts_are_judged_by_their_skewed_tail() -> None:
    """Five seconds of no views against a usual 250 that vary twelve times as much as Poisson counts: 4.6
    standard deviations out, as rare as a normal deviate of 6.0; a surge to twice as many is rarer by
    the normal approximation than by the count's long right tail. At a ratio of one: the Poisson tail."""
    assert round(250 / math.sqrt(12 * 250), 1) == 4.6
    assert round(overdispersed_poisson_z(0, 250, 12), 1) == -6.0
    assert 250 / math.sqrt(12 * 250) > overdispersed_poisson_z(500, 250, 12) > 3.5
    assert overdispersed_poisson_z(324, 180, 1) == pytest.approx(poisson_z(324, 180), rel=1e-9)
    assert overdispersed_poisson_z(54, 180, 0.3) == pytest.approx(poisson_z(54, 180), rel=1e-9)  # never below 1
    assert overdispersed_poisson_z(250, 250, 12) == 0.0


@settings(max_examples=200)
@given(st.floats(0.5, 2000.0), st.floats(1.0, 30.0), st.floats(0.5, 5.0))
def test_overdispersed_counts_are_calibrated_in_their_units(mean: float, ratio: float, t: float) -> None:
    """Counts that come in units of ``ratio`` events (a Poisson number of them): a z of at least t comes
    no more often than a normal deviate's, both ways."""
    units = mean / ratio
    top = int(units + 20 * math.sqrt(units) + 20)
    high = sum(poisson.pmf(k, units) for k in range(top) if overdispersed_poisson_z(k * ratio, mean, ratio) >= t)
    low = sum(poisson.pmf(k, units) for k in range(top) if overdispersed_poisson_z(k * ratio, mean, ratio) <= -t)
    tail = 1 - NORMAL.cdf(t)
    assert high <= tail * (1 + 1e-6) + 1e-12 and low <= tail * (1 + 1e-6) + 1e-12


@given(st.integers(0, 200), st.integers(1, 200), st.floats(0.01, 5.0))
def test_more_of_the_numerator_is_never_less_unusual_upwards(numerator: int, denominator: int, ratio: float) -> None:
    assert flow_ratio_z(numerator + 1, denominator, ratio) >= flow_ratio_z(numerator, denominator, ratio)


def test_a_point_says_which_count_is_behind_it() -> None:
    """Abandonment is one minus orders per cart: a jump in it is a fall in orders, tested as the orders
    given the carts and orders of the window; a quantile has no count to test."""
    usual_abandonment = Point(0.7, 100, "ratio", flow=True, complement=True)
    surge = Point(0.9, 100, "ratio", flow=True, complement=True)
    assert usual_abandonment.counting_z(0.7) == 0.0
    z = surge.counting_z(0.7)
    assert z is not None and z > 2 and z == pytest.approx(-flow_ratio_z(10, 100, 0.3) / 1.5)
    assert Point(0.2, 50, "ratio").counting_z(0.05) == binomial_z(10, 50, 0.05) / 1.5
    assert Point(3.0, 180, "rate").counting_z(2.0) == poisson_z(180, 120) / 1.5
    assert Point(400.0, 30, "quantile").counting_z(300.0) is None
    assert Point(0.0, 0, "rate").counting_z(2.0) is None
