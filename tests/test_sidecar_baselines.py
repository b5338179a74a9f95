"""The same-hour-of-week baselines against the real engine: rows written through metrics_1s (and its
rollups) give, per country, metric and hour of the week, the mean, spread and count of the complete
hours of the last four weeks — as a straightforward recomputation gives them."""

from __future__ import annotations

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
