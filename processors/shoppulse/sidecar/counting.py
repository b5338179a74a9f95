"""How rare a count is if nothing changed: exact tails instead of the normal approximation.

A window holding a few carts or payments is where the normal approximation fails: 2 failures in 8
payments against a usual 3 % is 3.6 standard deviations out by sqrt(p(1-p)/n), yet happens once
in 45 windows. These give the exact one-sided tail of the observed count — binomial
successes among trials, Poisson events — as the signed z of a normal deviate as rare, so the
detectors judge sparse and dense series on one scale. Tails come from scipy's special functions
(the regularised incomplete beta and gamma functions), fast enough for every point of every series.
"""

from __future__ import annotations

from collections.abc import Callable

from scipy.special import bdtr, bdtrc, gammainc, gammaincc, ndtri, pdtr, pdtrc

MAX_Z = 40.0  # beyond this a tail is below double precision; nothing is rarer for our purposes
_EPS = 1e-12


def _signed_z(upper: float, lower: float) -> float:
    """The z of the rarer one-sided tail: positive when the count is high, negative when low."""
    tail = min(upper, lower)
    if tail >= 0.5:
        return 0.0
    z = min(MAX_Z, -float(ndtri(max(tail, 1e-300))))  # the quantile of the small tail itself, not of 1 - tail
    return z if upper < lower else -z


def _tail_z(k: int, at_most: Callable[[int], float], above: Callable[[int], float]) -> float:
    """From a distribution's P(X <= k) and P(X > k), each computed directly (a tail far out is not a
    difference of numbers near 1, which would lose every digit of it): the one-sided tails
    P(X >= k) and P(X <= k). Exact, not mid-p, so under the usual distribution a z of at least t
    comes at most as often as a normal deviate's would: a count never looks rarer than it is."""
    upper = above(k - 1) if k > 0 else 1.0
    return _signed_z(upper, at_most(k))


def binomial_z(successes: int, trials: int, p: float) -> float:
    """``successes`` of ``trials`` against a usual share ``p``."""
    if trials <= 0:
        return 0.0
    p = min(max(p, _EPS), 1 - _EPS)
    k = min(max(successes, 0), trials)
    return _tail_z(k, lambda j: float(bdtr(j, trials, p)), lambda j: float(bdtrc(j, trials, p)))


def poisson_z(events: int, mean: float) -> float:
    """``events`` counted against a usual ``mean``."""
    mean = max(mean, _EPS)
    return _tail_z(max(events, 0), lambda j: float(pdtr(j, mean)), lambda j: float(pdtrc(j, mean)))


def overdispersed_poisson_z(events: float, mean: float, variance_ratio: float) -> float:
    """``events`` counted against a usual ``mean`` when such counts vary ``variance_ratio`` times as much
    as Poisson counts (shoppers come in sessions of several events): as a Poisson count of units of
    ``variance_ratio`` events each — events / ratio against mean / ratio, the quasi-Poisson tail. A
    count's tails are skewed — it cannot fall below zero, a surge has a long right tail — where a
    normal deviate's are not: five seconds of no views against a usual 250 that vary 12 times as much
    as Poisson are 4.6 standard deviations out, and as rare as a normal deviate of 6.0. The units need
    not be whole: the incomplete gamma functions extend the Poisson tails between them, each at least
    the tail of the whole units either side, so a count never looks rarer than its units say."""
    ratio = max(variance_ratio, 1.0)
    units, usual = max(events, 0.0) / ratio, max(mean, _EPS) / ratio
    upper = float(gammainc(units, usual)) if units > 0 else 1.0  # P(Y >= units)
    return _signed_z(upper, float(gammaincc(units + 1, usual)))  # P(Y <= units)


def flow_ratio_z(numerator: int, denominator: int, ratio: float) -> float:
    """Two event counts of one window whose usual ratio is ``ratio`` (orders per cart added: an order's
    cart may have been added in an earlier window, so orders are not successes among these carts).
    As two Poisson counts, the numerator given their sum is binomial with share ratio / (1 + ratio)."""
    ratio = max(ratio, _EPS)
    return binomial_z(numerator, numerator + denominator, ratio / (1 + ratio))
