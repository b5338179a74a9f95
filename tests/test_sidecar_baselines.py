"""The same-hour-of-week baselines against the real engine: rows written through metrics_1s (and its
rollups) give, per country, metric and hour of the week, the mean, spread and count of the complete
hours of the last four weeks — as a straightforward recomputation gives them."""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from conftest import EndpointProcess
from shoppulse.events.store_metrics import METRICS_COLUMNS
from shoppulse.sidecar import baselines
from shoppulse.sidecar.seasonal import METRICS

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)  # a Wednesday; its 10:00 hour is not complete


@pytest.fixture
def db(clickhouse_endpoint: EndpointProcess) -> Iterator[Client]:
    _settings, client = clickhouse_endpoint.migrated("how")
    yield client
    client.close()


def metrics_row(ts: datetime, country: str, orders: int, revenue: Decimal) -> list[object]:
    counts = dict.fromkeys(METRICS_COLUMNS[2:], 0) | {"orders": orders, "revenue": revenue}
    return [ts, country, *counts.values(), 0, 0]


def test_each_hour_of_the_week_is_the_mean_of_its_complete_hours(db: Client) -> None:
    rng = random.Random(5)
    monday_9 = datetime(2026, 11, 23, 9, tzinfo=UTC)
    hours = [monday_9 - timedelta(weeks=w) for w in range(4)]  # this week's Monday and the three before
    hours += [monday_9 + timedelta(days=2) - timedelta(weeks=w) for w in (1, 2)]  # Wednesdays 09:00
    outside = [monday_9 - timedelta(weeks=5), NOW.replace(minute=0)]  # too old; not complete yet
    sums: dict[tuple[str, datetime], list] = defaultdict(lambda: [0, Decimal(0)])
    for _checkpoint in range(3):  # three INSERTs, as three checkpoints: the hourly rollup holds partial sums
        rows = []
        for hour in [*hours, *outside]:
            for country in ("DE", "BR"):
                ts = hour + timedelta(seconds=rng.randrange(3600))
                orders, revenue = rng.randrange(1, 50), Decimal(rng.randrange(100, 90_000)) / 100
                rows.append(metrics_row(ts, country, orders, revenue))
                sums[(country, hour)][0] += orders
                sums[(country, hour)][1] += revenue
        db.insert("metrics_1s", rows, column_names=[*METRICS_COLUMNS, "src_partition", "src_offset"])

    baselines.refresh(db, NOW)
    baselines.refresh(db, NOW)  # again: replaced, not doubled

    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for (country, hour), (orders, revenue) in sums.items():
        if hour in hours:
            how = hour.weekday() * 24 + hour.hour
            values[(country, "orders_per_s", how)].append(orders / 3600)
            values[(country, "revenue_per_s", how)].append(float(revenue) / 3600)
    got = {(c, m, h): (mean, sd, n) for c, m, h, mean, sd, n in db.query(
        "SELECT country, metric, hour_of_week, mean, stddev, samples FROM baselines_how FINAL").result_rows}
    assert set(got) == set(values)
    assert {metric for _, metric, _ in got} == set(METRICS)
    for key, hourly in values.items():
        mean, sd, n = got[key]
        assert n == len(hourly), key
        assert mean == pytest.approx(statistics.fmean(hourly), rel=1e-9), key
        assert sd == pytest.approx(statistics.pstdev(hourly), rel=1e-6, abs=1e-12), key
    assert len(values) == 2 * 2 * 2  # two countries, two metrics, Monday and Wednesday 09:00


def test_the_seasonal_band_takes_the_week_s_shape_from_the_baselines(db: Client) -> None:
    """Three weeks of one country's orders, weekends twice as busy: refreshed baselines and a refit at
    Saturday 00:05 give Saturday's first half hour the weekend's level (a week of daily history
    alone forecasts Friday night's) — for the country and for the whole store."""
    from shoppulse.sidecar.seasonal import refit

    saturday = datetime(2026, 11, 28, tzinfo=UTC)
    now = saturday + timedelta(minutes=5)

    def orders_per_minute(ts: datetime) -> int:
        daily = 20 + 10 * math.sin(2 * math.pi * (ts.hour * 60 + ts.minute) / 1440)
        return round(60 * daily * (2.0 if ts.weekday() >= 5 else 1.0))

    rng = random.Random(7)
    rows = [metrics_row(ts, "DE", round(orders_per_minute(ts) * rng.uniform(0.95, 1.05)), Decimal(100))
            for ts in (saturday - timedelta(minutes=m) for m in range(1, 21 * 1440 + 1))]
    db.insert("metrics_1s", rows, column_names=[*METRICS_COLUMNS, "src_partition", "src_offset"])
    baselines.refresh(db, now)
    assert refit(db, now) == 4  # orders and revenue, DE and the whole store
    forecast = db.query("SELECT country, ts, expected, lower, upper FROM expected_band WHERE metric = 'orders_per_s' "
                        "AND kind = 'forecast' AND fitted_at = {now:DateTime} ORDER BY country, ts",
                        parameters={"now": now.replace(tzinfo=None)}).result_rows
    assert {country for country, *_ in forecast} == {"DE", "ALL"}
    for _country, ts, expected, lower, upper in forecast:
        truth = orders_per_minute(ts.replace(tzinfo=UTC)) / 60
        assert lower < truth < upper and expected == pytest.approx(truth, rel=0.1), (ts, expected, truth)
