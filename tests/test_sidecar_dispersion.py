"""Each series learns how much more its counts vary than counting alone says (views come in sessions
of several, orders one by one): its counting floor is as wide as its own traffic needs, and a series
of single events keeps its sensitivity."""

from __future__ import annotations

import math
import random
from collections import deque
from datetime import UTC, datetime, timedelta

from shoppulse.ascode.dashboards.demo_data import poisson
from shoppulse.sidecar.detectors import OVERDISPERSION, Point, SeriesDetector
from shoppulse.sidecar.regions import RegionTracker

STEP_S, WINDOW_S = 10, 60
START = datetime(2026, 11, 24, tzinfo=UTC)
SIX_HOURS = 6 * 3600
LONGEST_SESSION = 20  # views, as the load generator caps them


def views_in_session(rng: random.Random) -> int:
    """As the load generator's shoppers browse: one view, then a geometric number more (mean 2.5)."""
    return 1 + min(int(rng.expovariate(1 / 2.5)), LONGEST_SESSION)


def session_dispersion() -> float:
    """sqrt(E[k^2] / E[k]) of the views per session: the variance of a compound Poisson count over
    its mean, as a factor on a Poisson z."""
    stop = math.exp(-1 / 2.5)
    p = [(1 - stop) * stop ** j for j in range(LONGEST_SESSION)] + [stop ** LONGEST_SESSION]
    mean = sum((1 + j) * pj for j, pj in enumerate(p))
    square = sum((1 + j) ** 2 * pj for j, pj in enumerate(p))
    return math.sqrt(square / mean)


def views_stream(seconds: int, sessions_per_s: float, seed: int, in_sessions: bool,
                 surge: tuple[int, int, float] | None = None) -> list[Point]:
    """Rolling 60 s view rates every 10 s: sessions arriving at random, each viewing its products in
    the second it arrives (``in_sessions``), or as many views arriving one by one."""
    rng = random.Random(seed)
    window: deque[int] = deque(maxlen=WINDOW_S)
    mean_views = sum(views_in_session(random.Random(s)) for s in range(20_000)) / 20_000
    points = []
    for second in range(seconds):
        level = sessions_per_s * (surge[2] if surge and surge[0] <= second < surge[1] else 1.0)
        if in_sessions:
            views = sum(views_in_session(rng) for _ in range(poisson(rng, level)))
        else:
            views = poisson(rng, level * mean_views)
        window.append(views)
        if second % STEP_S == STEP_S - 1 and len(window) == WINDOW_S:
            points.append(Point(sum(window) / WINDOW_S, sum(window), "rate", WINDOW_S))
    return points


def run(points: list[Point]) -> tuple[SeriesDetector, list[int]]:
    """The sidecar's detector and region tracker over the points; the steps where regions opened."""
    detector, tracker, opened = SeriesDetector(seed=5), RegionTracker("views_per_s", "DE"), []
    for index, point in enumerate(points):
        change = tracker.step(START + timedelta(seconds=STEP_S * index), point.value,
                              detector.step(point, tracker.is_open))
        if change is not None and change.kind == "opened":
            opened.append(index)
    return detector, opened


def test_views_in_sessions_learn_how_overdispersed_they_are() -> None:
    expected = session_dispersion()
    assert expected > OVERDISPERSION  # more than the prior assumes
    for seed in (1, 2, 3):
        detector, _ = run(views_stream(SIX_HOURS, 3.0, seed, in_sessions=True))
        assert abs(detector.robust.dispersion() / expected - 1) < 0.15, (seed, detector.robust.dispersion())


def test_one_by_one_counts_learn_no_dispersion_and_keep_their_sensitivity() -> None:
    surge = (SIX_HOURS - 1800, SIX_HOURS - 1200, 1.25)  # a quarter more views for ten minutes, late in the run
    detector, opened = run(views_stream(SIX_HOURS, 3.0, 4, in_sessions=False, surge=surge))
    assert 1.0 <= detector.robust.dispersion() < 1.15
    at = (surge[0] - WINDOW_S) // STEP_S
    assert [i for i in opened if i < at] == []  # nothing before it
    assert any(at <= i <= at + 12 for i in opened), opened  # found within two minutes of its start
