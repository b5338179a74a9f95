"""The signals the sidecar watches, read from ClickHouse's final windows, one step at a time.

At each step end ``t`` (a multiple of ``step_s``) every signal is evaluated over the trailing
window ``[t - window_s, t)`` per country and for the whole store (country ``ALL``). A step is
read only once it lies below the freshness watermark of ``metrics_1s``, so its numbers are final.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from shoppulse.events.histogram import quantile
from shoppulse.sidecar.detectors import Point
from shoppulse.sidecar.regions import SeasonalBand

GLOBAL = "ALL"
METRICS = ("orders_per_s", "revenue_per_s", "views_per_s", "conversion_rate", "abandonment_rate", "checkout_rate",
           "payment_failure_rate", "payment_latency_p95")
MIN_TRIALS = {"conversion_rate": 20, "abandonment_rate": 5, "checkout_rate": 5, "payment_failure_rate": 5,
              "payment_latency_p95": 5}


@dataclass(frozen=True)
class Totals:
    orders: float = 0.0
    revenue: float = 0.0
    views: float = 0.0
    carts: float = 0.0
    attempts: float = 0.0
    failures: float = 0.0
    checkouts: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


def _rate(amount: float, events: float, window_s: float) -> Point:
    value = amount / window_s
    return Point(value, events, "rate", window_s)


def points(totals: Totals, latency: dict[int, int], window_s: float) -> dict[str, Point]:
    """Each metric's point for one country's window (metrics without enough evidence are left out)."""
    found = {"orders_per_s": _rate(totals.orders, totals.orders, window_s),
             "revenue_per_s": _rate(totals.revenue, totals.orders, window_s),
             "views_per_s": _rate(totals.views, totals.views, window_s)}
    if totals.views >= MIN_TRIALS["conversion_rate"]:
        found["conversion_rate"] = Point(totals.orders / totals.views, totals.views, "ratio", window_s)
    if totals.carts >= MIN_TRIALS["abandonment_rate"]:
        found["abandonment_rate"] = Point(max(0.0, 1 - totals.orders / totals.carts), totals.carts, "ratio", window_s)
    if totals.carts >= MIN_TRIALS["checkout_rate"]:
        found["checkout_rate"] = Point(min(1.0, totals.checkouts / totals.carts), totals.carts, "ratio", window_s)
    if totals.attempts >= MIN_TRIALS["payment_failure_rate"]:
        found["payment_failure_rate"] = Point(totals.failures / totals.attempts, totals.attempts, "ratio", window_s)
    trials = sum(latency.values())
    if trials >= MIN_TRIALS["payment_latency_p95"]:
        found["payment_latency_p95"] = Point(quantile(latency, 0.95), trials, "quantile", window_s)
    return found


def watermark(client: Client) -> datetime | None:
    """The end of the newest complete second of every country (the freshness of metrics_1s)."""
    rows = client.query("SELECT min(watermark) FROM freshness WHERE source = 'metrics_1s'").result_rows
    value = rows[0][0] if rows else None
    if not isinstance(value, datetime) or value.year <= 1970:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_window(client: Client, end: datetime, window_s: float) -> dict[str, dict[str, Point]]:
    """country (and ALL) -> metric -> point, for the window ending at ``end``."""
    start = end - timedelta(seconds=window_s)
    parameters = {"start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
    rows = client.query(
        "SELECT country, sum(orders), sum(revenue), sum(product_views), sum(cart_adds), sum(payment_attempts), "
        "sum(payment_failures), sum(checkouts) FROM metrics_1s WHERE ts >= {start:DateTime} AND ts < {end:DateTime} "
        "GROUP BY country", parameters=parameters).result_rows
    totals: dict[str, Totals] = {}
    for country, *numbers in rows:
        totals[str(country)] = Totals(*(float(n) if isinstance(n, Decimal | int | float) else 0.0 for n in numbers))
    histograms: dict[str, dict[int, int]] = defaultdict(dict)
    for country, merged in client.query(
            "SELECT country, sumMap(bucket_keys, bucket_counts) FROM payment_latency_1s "
            "WHERE ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY country",
            parameters=parameters).result_rows:
        keys, counts = merged
        histograms[str(country)] = {int(k): int(c) for k, c in zip(keys, counts, strict=True)}
    return points_by_country(totals, histograms, window_s)


def read_seasonal_bands(client: Client, at: datetime) -> dict[tuple[str, str], SeasonalBand]:
    """(metric, country) -> the seasonal band of the 10-minute bucket holding ``at``, from the newest
    fit that covers it (a fitted value, or a forecast made before the bucket began)."""
    rows = client.query(
        "SELECT metric, country, argMax(lower, fitted_at), argMax(upper, fitted_at) FROM expected_band "
        "WHERE ts = toStartOfInterval({at:DateTime}, INTERVAL 10 MINUTE) AND kind IN ('seasonal', 'forecast') "
        "GROUP BY metric, country", parameters={"at": at.replace(tzinfo=None)}).result_rows
    return {(str(metric), str(country)): SeasonalBand(float(lower), float(upper))
            for metric, country, lower, upper in rows}


def points_by_country(totals: dict[str, Totals], histograms: dict[str, dict[int, int]],
                      window_s: float) -> dict[str, dict[str, Point]]:
    """Each country's points and the whole store's (``ALL``: totals summed, histograms merged)."""
    result: dict[str, dict[str, Point]] = {}
    everything, all_latency = Totals(), defaultdict[int, int](int)
    for country in sorted(set(totals) | set(histograms)):
        result[country] = points(totals.get(country, Totals()), histograms.get(country, {}), window_s)
        everything = everything + totals.get(country, Totals())
        for key, count in histograms.get(country, {}).items():
            all_latency[key] += count
    result[GLOBAL] = points(everything, dict(all_latency), window_s)
    return result
