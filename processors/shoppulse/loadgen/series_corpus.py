"""A labelled corpus of store-like series with the phenomena real traffic has, for scoring detection.

Each series is two weeks of 5-minute order counts with a daily and a weekly cycle, written as a
``timestamp,value,label`` CSV (the layout of public benchmarks such as NAB, so a folder of those
scores the same way). Some phenomena are incidents an ops team wants to hear about and are labelled
(label 1 over the window in which an alert is useful): outages, spikes, a level shift's onset,
single outliers. Others are how healthy traffic looks and must not alert (label 0 throughout):
bursty arrivals, growth, a slow drift, missing points and pauses in the feed. Every series is
drawn from a seeded generator, so the corpus is the same on every machine.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

STEP = timedelta(minutes=5)
DAYS = 14
POINTS = DAYS * 24 * 12
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
BASE_LEVEL = 40.0  # orders per 5 minutes at the daily mean


@dataclass(frozen=True)
class Series:
    name: str
    description: str
    values: list[float | None]  # None: missing
    labels: list[int]
    timestamps: list[datetime]


def usual_level(index: int) -> float:
    """The expected count at point ``index``: a daily cycle (quiet at night) and quieter weekends."""
    moment = START + STEP * index
    hour = moment.hour + moment.minute / 60
    daily = 1 + 0.6 * math.sin(2 * math.pi * (hour - 9) / 24)
    weekly = 0.8 if moment.weekday() >= 5 else 1.0
    return BASE_LEVEL * daily * weekly


def _poisson(rng: random.Random, mean: float) -> float:
    if mean <= 0:
        return 0.0
    if mean > 60:  # a normal approximation is exact enough and far faster
        return float(max(0, round(rng.gauss(mean, math.sqrt(mean)))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return float(k)


def _draw(seed: int, level: Callable[[int], float], burstiness: float = 0.0) -> list[float | None]:
    """Counts around ``level``; with ``burstiness`` the rate itself varies point to point (a gamma
    mixture: negative-binomial counts, as sessions and campaigns make real arrivals)."""
    rng = random.Random(seed)
    values: list[float | None] = []
    for index in range(POINTS):
        mean = level(index)
        if burstiness > 0:
            mean *= rng.gammavariate(1 / burstiness, burstiness)
        values.append(_poisson(rng, mean))
    return values


def _windows(*spans: tuple[int, int]) -> list[int]:
    labels = [0] * POINTS
    for first, last in spans:
        for index in range(first, min(last, POINTS)):
            labels[index] = 1
    return labels


def _day(day: float) -> int:
    return int(day * 24 * 12)


def corpus() -> list[Series]:
    stamps = [START + STEP * i for i in range(POINTS)]
    unlabelled = [0] * POINTS
    found: list[Series] = []

    def add(name: str, description: str, values: list[float | None], labels: list[int]) -> None:
        found.append(Series(name, description, values, labels, stamps))

    add("seasonal_calm", "daily and weekly cycles, nothing else", _draw(1, usual_level), unlabelled)
    add("bursty", "arrivals in bursts (rate varies 50 % point to point)", _draw(2, usual_level, 0.25), unlabelled)
    add("growth", "the store doubles its traffic over the two weeks",
        _draw(3, lambda i: usual_level(i) * (1 + i / POINTS)), unlabelled)
    add("slow_drift", "traffic fades by a third over five days, then holds",
        _draw(4, lambda i: usual_level(i) * (1 - min(1.0, max(0, i - _day(6)) / _day(5)) / 3)), unlabelled)

    outages = [(_day(d), _day(d) + 6) for d in (5.45, 8.6, 11.9)]  # 30 minutes each
    add("outages", "three outages: orders fall to a tenth for 30 minutes",
        _draw(5, lambda i: usual_level(i) * (0.1 if any(a <= i < b for a, b in outages) else 1.0)),
        _windows(*outages))
    spikes = [(_day(d), _day(d) + 4) for d in (4.55, 9.4, 12.7)]  # 20 minutes each
    add("spikes", "three spikes: orders triple for 20 minutes",
        _draw(6, lambda i: usual_level(i) * (3.0 if any(a <= i < b for a, b in spikes) else 1.0)),
        _windows(*spikes))
    shift = _day(8.5)
    add("level_shift", "orders fall to 60 % for good (a lost channel): the onset is the incident",
        _draw(7, lambda i: usual_level(i) * (0.6 if i >= shift else 1.0)), _windows((shift, shift + 24)))

    rng = random.Random(8)
    outlier_at = [_day(d) for d in (3.5, 7.55, 10.45, 13.6)]
    values = _draw(8, usual_level)
    for index in outlier_at:
        values[index] = float(round(usual_level(index) * rng.choice((5.0, 6.0))))
    add("outliers", "four single points five to six times the usual", values,
        _windows(*((i, i + 3) for i in outlier_at)))

    values = _draw(9, usual_level)
    for index in rng.sample(range(POINTS), POINTS // 50):  # 2 % of points missing
        values[index] = None
    drop = (_day(10.4), _day(10.4) + 6)
    for index in range(_day(6.2), _day(6.2) + 36):  # the feed paused for three hours: no rows at all
        values[index] = math.nan
    for index in range(*drop):
        values[index] = float(_poisson(rng, usual_level(index) * 0.1))
    kept = [i for i, v in enumerate(values) if not (isinstance(v, float) and math.isnan(v))]
    labels = _windows(drop)
    found.append(Series("gaps", "2 % of points blank, a three-hour pause in the feed, one outage",
                        [values[i] for i in kept], [labels[i] for i in kept], [stamps[i] for i in kept]))
    return found


def write_corpus(folder: Path) -> list[Path]:
    """Write every series as ``<name>.csv`` (timestamp, value, label) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for series in corpus():
        path = folder / f"{series.name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value", "label"])
            for stamp, value, label in zip(series.timestamps, series.values, series.labels, strict=True):
                writer.writerow([stamp.isoformat(), "" if value is None else f"{value:g}", label])
        written.append(path)
    return written
