"""Each rate's live dispersion (sidecar/live_dispersion.py): how much its events vary over a few live
seconds, learned from them, starting from what the final path's baseline implies."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shoppulse.sidecar.detectors import RobustZ
from shoppulse.sidecar.live_dispersion import BLOCK_S, PRIOR_BLOCKS, LiveDispersion, prior_ratio

START = datetime(2026, 12, 1, 12, tzinfo=UTC)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count by its arrivals' gaps (the standard library has no Poisson sampler)."""
    count, waited = 0, rng.expovariate(1.0)
    while waited < mean:
        count, waited = count + 1, waited + rng.expovariate(1.0)
    return count


def learned(counts: list[float], expected: float, prior: float) -> LiveDispersion:
    live = LiveDispersion()
    for i, events in enumerate(counts):
        live.learn_one(START + timedelta(seconds=i), events, expected, prior)
    return live


def test_independent_events_vary_as_poisson_counts_and_sessions_of_four_four_times_as_much() -> None:
    """Half an hour of seconds: events one by one (Poisson, 40 a second) learn a ratio near 1 from a
    prior of 12; events that come four at a time (sessions of four views) near 4."""
    rng = random.Random(7)
    single = learned([poisson(rng, 40) for _ in range(1800)], 40, prior=12)
    grouped = learned([4 * poisson(rng, 10) for _ in range(1800)], 40, prior=12)
    seen = 1800 // BLOCK_S
    weight = seen / (seen + PRIOR_BLOCKS)
    assert single.ratio(12) == pytest.approx(weight * 1 + (1 - weight) * 12, abs=0.5)
    assert grouped.ratio(12) == pytest.approx(weight * 4 + (1 - weight) * 12, abs=1.0)
    assert single.ratio(12) < grouped.ratio(12) < 12


def test_nothing_learned_is_the_prior_and_never_below_poisson() -> None:
    assert LiveDispersion().ratio(9.0) == 9.0
    assert LiveDispersion().ratio(0.2) == 1.0


def test_a_block_holds_consecutive_seconds_only() -> None:
    """Seconds with a gap between them (a second skipped: a region open, the feed silent) make no block:
    four seconds, a gap, four more teach nothing; a fifth consecutive one completes a block."""
    live = LiveDispersion()
    for i in [*range(4), *range(5, 9)]:
        live.learn_one(START + timedelta(seconds=i), 0, 40, prior=1.0)
    assert len(live.squares.window) == 0
    live.learn_one(START + timedelta(seconds=9), 0, 40, prior=1.0)
    assert len(live.squares.window) == 1
    live.learn_one(START + timedelta(seconds=10), 40, 40, prior=1.0)
    live.skip()
    for i in range(11, 15):
        live.learn_one(START + timedelta(seconds=i), 40, 40, prior=1.0)
    assert len(live.squares.window) == 1


def test_one_wild_block_is_clipped() -> None:
    """A block of silence against 200 expected events is 14 Poisson deviations out: it counts as at most
    the clip (2.5 squared times the ratio), so one such block cannot teach that silence is usual."""
    live = learned([40.0] * 50 + [0.0] * 5, 40, prior=1.0)
    assert live.ratio(1.0) < 1.2


def test_the_final_paths_figure_carries_its_counting_noise_and_the_levels_moves_to_five_seconds() -> None:
    """A baseline whose minute-long windows vary by counting alone implies its overdispersion squared;
    one whose level also moves implies more, the more the shorter the usual count."""
    baseline = RobustZ(level=40.0, deviation=0.0, seen=100)
    assert prior_ratio(baseline, 60.0) == pytest.approx(baseline.dispersion() ** 2)
    moving = RobustZ(level=40.0, deviation=5.0, seen=100)
    assert prior_ratio(moving, 60.0) > baseline.dispersion() ** 2
