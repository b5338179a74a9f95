"""The seasonal baseline's weekly shape: factors from the same-hour-of-week baselines, and a daily
Holt-Winters fit that follows a weekend it could not see as a day (unit tests)."""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from shoppulse.sidecar.seasonal import (
    BUCKET,
    FACTOR_RANGE,
    HOURS_PER_WEEK,
    MIN_WEEKS,
    fit,
    hour_of_week,
    weekly_factors,
)

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def truth(ts: datetime) -> float:
    """Orders/s: a daily swing, and weekends twice as busy as weekdays."""
    daily = 20 + 10 * math.sin(2 * math.pi * (ts.hour * 60 + ts.minute) / 1440)
    return daily * (2.0 if ts.weekday() >= 5 else 1.0)


def series(start: datetime, end: datetime, rng: random.Random) -> tuple[list[datetime], list[float]]:
    stamps, values = [], []
    ts = start
    while ts < end:
        stamps.append(ts)
        values.append(truth(ts) * rng.uniform(0.97, 1.03))
        ts += BUCKET
    return stamps, values


def hourly_means(stamps: list[datetime], values: list[float]) -> dict[int, tuple[float, int]]:
    """What baselines_how holds: per hour of the week, the mean of its hours and how many there were."""
    hours: dict[datetime, list[float]] = defaultdict(list)
    for ts, value in zip(stamps, values, strict=True):
        hours[ts.replace(minute=0)].append(value)
    by_how: dict[int, list[float]] = defaultdict(list)
    for hour, buckets in hours.items():
        by_how[hour_of_week(hour)].append(statistics.fmean(buckets))
    return {how: (statistics.fmean(means), len(means)) for how, means in by_how.items()}


def test_weekly_factors_say_how_much_busier_an_hour_is_than_the_same_hour_on_the_average_day() -> None:
    stamps, values = series(MONDAY, MONDAY + timedelta(weeks=3), random.Random(1))
    factors = weekly_factors(hourly_means(stamps, values))
    assert factors is not None and set(factors) == set(range(HOURS_PER_WEEK))
    # five weekdays at 1 and two weekend days at 2: the average day is 9/7
    assert factors[hour_of_week(MONDAY + timedelta(hours=13))] == pytest.approx(7 / 9, rel=0.02)
    assert factors[hour_of_week(MONDAY + timedelta(days=5, hours=13))] == pytest.approx(14 / 9, rel=0.02)


def test_no_weekly_shape_until_every_hour_of_the_week_was_seen_often_enough() -> None:
    stamps, values = series(MONDAY, MONDAY + timedelta(weeks=MIN_WEEKS) - timedelta(hours=1), random.Random(2))
    assert weekly_factors(hourly_means(stamps, values)) is None  # Sunday 23:00 seen once
    stamps, values = series(MONDAY, MONDAY + timedelta(weeks=MIN_WEEKS), random.Random(2))
    assert weekly_factors(hourly_means(stamps, values)) is not None


def test_an_hour_the_store_is_all_but_closed_keeps_a_bounded_factor() -> None:
    means = {how: (0.0 if how == 3 else 5.0, 4) for how in range(HOURS_PER_WEEK)}
    factors = weekly_factors(means)
    assert factors is not None and factors[3] == FACTOR_RANGE[0]


def test_the_band_follows_the_weekend_that_a_daily_model_averages_away() -> None:
    """A week of history ending at Saturday 00:00 (what the refit reads), three weeks of baselines: the
    forecast for Saturday's first half hour is the weekend's level with the weekly shape, and the
    weekday's without it."""
    rng = random.Random(3)
    saturday = MONDAY + timedelta(weeks=3, days=5)
    stamps, values = series(saturday - timedelta(days=7), saturday, rng)
    baseline_stamps, baseline_values = series(saturday - timedelta(weeks=3), saturday, rng)
    factors = weekly_factors(hourly_means(baseline_stamps, baseline_values))
    shaped, daily = fit(stamps, values, weekly=factors), fit(stamps, values)
    assert shaped is not None and daily is not None and shaped.weekly and not daily.weekly
    for (ts, expected, sd), (_, plain, _) in zip(shaped.forecast, daily.forecast, strict=True):
        assert ts >= saturday
        assert abs(expected - truth(ts)) < 2 * sd, (ts, expected, truth(ts), sd)
        assert abs(plain - truth(ts)) > 0.3 * truth(ts), (ts, plain, truth(ts))
    # and on the days it fitted, the band is as wide as the hour is busy
    friday_noon = next(row for row in shaped.fitted if row[0] == saturday - timedelta(hours=12))
    sunday_noon = next(row for row in shaped.fitted if row[0] == saturday - timedelta(days=5, hours=12))
    assert sunday_noon[2] == pytest.approx(2 * friday_noon[2], rel=0.05)
