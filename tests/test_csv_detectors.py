"""The detectors ``detect --csv`` adds for arbitrary series: a long-memory context, and a baseline that
judges nothing until it knows the series' tail."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from shoppulse.sidecar.csv_detect import region_tracker, series_detector
from shoppulse.sidecar.detectors import (
    CALIBRATE_AFTER,
    CONTEXT_MIN_POINTS,
    CONTEXT_STRETCH,
    WARM_UP_POINTS,
    ContextZ,
    HalfSpaceTreesDetector,
    Point,
    RobustZ,
)


def level(value: float) -> Point:
    return Point(value, 0.0, "level")


def test_a_shift_the_baseline_adopts_stays_unusual_against_the_context() -> None:
    """A level shift of 15 sigma that lasts, run through detect's detectors: the baseline creeps toward
    it (an anomaly teaches it a little) until its z no longer tells it; the context, which learns usual
    points only, still does for a while — and then it too adopts the new level as the normal."""
    rng = random.Random(5)
    detector, tracker = series_detector(), region_tracker()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seen = []  # after the shift: the baseline's |z| and the context's surprise
    for index in range(1400):
        value = rng.gauss(100, 2) + (30 if index >= 800 else 0)
        verdict = detector.step(level(value), tracker.is_open)
        tracker.step(start + timedelta(minutes=5 * index), value, verdict)
        surprise = next(o.surprise for o in verdict.opinions if o.detector == "context_z")
        if index >= 800:
            seen.append((abs(verdict.z), surprise))
    assert any(z < 2 and surprise > 4 for z, surprise in seen)
    assert all(z < 4 and surprise < 4 for z, surprise in seen[-50:])
    assert not tracker.is_open


def test_the_context_says_nothing_before_it_has_seen_enough_and_any_change_of_a_flat_one_is_news() -> None:
    context = ContextZ()
    for _ in range(CONTEXT_MIN_POINTS - 1):
        context.learn_one(level(7.0))
    assert context.score_one(level(70.0)).unusual is None
    context.learn_one(level(7.0))
    assert context.score_one(level(7.0)).surprise == 0.0
    assert context.score_one(level(7.5)).surprise == abs(context.z(7.5) or 0) / CONTEXT_STRETCH
    assert context.score_one(level(7.5)).unusual
    anomalous = Point(70.0, 0.0, "level", anomalous=True)
    context.learn_one(anomalous)  # inside a region: not part of the context
    assert context.score_one(level(7.0)).surprise == 0.0


def test_a_self_calibrating_baseline_judges_nothing_until_it_knows_the_tail() -> None:
    """A series whose spikes are its usual: before its tail is known, the first spikes would read as
    anomalies one after another; after, the same spike is no longer rare for it."""
    rng = random.Random(8)
    baseline = RobustZ(alpha=0.05, self_calibrating=True)
    spike_z = []
    for index in range(WARM_UP_POINTS + CALIBRATE_AFTER + 400):
        value = rng.gauss(10, 1) + (30 if index % 50 == 0 else 0)
        point = level(value)
        if index % 50 == 0:
            spike_z.append((index, baseline.z(point)))
        baseline.calibrate_one(point)
        baseline.learn_one(point)
    before = [z for index, z in spike_z if index < WARM_UP_POINTS + CALIBRATE_AFTER]
    after = [z for index, z in spike_z if index > WARM_UP_POINTS + CALIBRATE_AFTER + 50]
    assert before and all(z == 0.0 for z in before)
    assert after and all(0 < z < 8 for z in after)
    plain = RobustZ(alpha=0.05)  # the store's metrics: judged from the warm-up on
    for _ in range(WARM_UP_POINTS):
        plain.learn_one(level(rng.gauss(10, 1)))
    assert plain.z(level(40.0)) > 8


def test_half_space_trees_only_scores_where_it_does_not_corroborate() -> None:
    rng = random.Random(3)
    quiet, corroborating = (HalfSpaceTreesDetector(seed=3, corroborates=flag) for flag in (False, True))
    for _ in range(300):
        point = Point(rng.gauss(1, 0.1), 0.0, "level", previous=1.0)
        quiet.learn_one(point)
        corroborating.learn_one(point)
    far = Point(5.0, 0.0, "level", previous=1.0)
    assert quiet.score_one(far).score == corroborating.score_one(far).score >= 0.7
    assert corroborating.score_one(far).unusual and quiet.score_one(far).unusual is None
