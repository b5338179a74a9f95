"""The signals the sidecar watches, read from ClickHouse's final windows, one step at a time.

At each step end ``t`` (a multiple of ``step_s``) every signal is evaluated over the trailing
window ``[t - window_s, t)`` per country and for the whole store (country ``ALL``). A step is
read only once it lies below the freshness watermark of ``metrics_1s``, so its numbers are final
(the aggregation writes ``metrics_1s`` after its other tables, the payments among them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from shoppulse.events.histogram import quantile
from shoppulse.sidecar.detectors import Point, SeasonalBand

GLOBAL = "ALL"
# The live funnel ratios are flows of one window (clickhouse/0022: orders_per_view, carts_without_order,
# checkouts_per_cart), not the session-based conversion and abandonment of the tiles and rules, which
# are known only once a session has closed, minutes later: their own names keep an insight from
# contradicting the tile beside it.
# Paid traffic (segment_metrics_1s, dimension 'campaign'): the ad spend per second, and the orders attributed to
# the campaigns per paid click — a flow too (the click comes minutes before its order). Refunds (dimension
# 'refund reason'): per second, whatever their reason.
METRICS = ("orders_per_s", "revenue_per_s", "views_per_s", "orders_per_view", "carts_without_order",
           "checkouts_per_cart", "payment_failure_rate", "payment_latency_p95", "ad_spend_per_s",
           "orders_per_ad_click", "refunds_per_s")
MIN_TRIALS = {"orders_per_view": 20, "carts_without_order": 5, "checkouts_per_cart": 5, "payment_failure_rate": 5,
              "payment_latency_p95": 5, "orders_per_ad_click": 20}


@dataclass(frozen=True)
class Totals:
    orders: float = 0.0
    revenue: float = 0.0
    views: float = 0.0
    carts: float = 0.0
    attempts: float = 0.0
    failures: float = 0.0
    checkouts: float = 0.0
    ad_clicks: float = 0.0
    ad_spend: float = 0.0
    ad_orders: float = 0.0  # the orders attributed to a campaign
    refunds: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


# The store counters of metrics_1s and metrics_live, summed, in the order of ``Totals``' first fields.
STORE_SUMS = ("sum(orders), sum(revenue), sum(product_views), sum(cart_adds), sum(payment_attempts), "
              "sum(payment_failures), sum(checkouts)")


def store_totals(numbers: Sequence[object]) -> Totals:
    """A row of STORE_SUMS as Totals (revenue comes as a Decimal)."""
    return Totals(*(float(n) if isinstance(n, Decimal | int | float) else 0.0 for n in numbers))


def _rate(amount: float, events: float, window_s: float) -> Point:
    value = amount / window_s
    return Point(value, events, "rate", window_s)


def points(totals: Totals, latency: dict[int, int], window_s: float) -> dict[str, Point]:
    """Each metric's point for one country's window (metrics without enough evidence are left out)."""
    found = {"orders_per_s": _rate(totals.orders, totals.orders, window_s),
             "revenue_per_s": _rate(totals.revenue, totals.orders, window_s),
             "views_per_s": _rate(totals.views, totals.views, window_s)}
    # Orders per view, orders and checkouts per cart: flows of one window, not successes among its
    # trials (an order's cart may have been added a window earlier).
    if totals.views >= MIN_TRIALS["orders_per_view"]:
        found["orders_per_view"] = Point(totals.orders / totals.views, totals.views, "ratio", window_s, flow=True)
    if totals.carts >= MIN_TRIALS["carts_without_order"]:
        found["carts_without_order"] = Point(max(0.0, 1 - totals.orders / totals.carts), totals.carts, "ratio",
                                             window_s, flow=True, complement=True)
    if totals.carts >= MIN_TRIALS["checkouts_per_cart"]:
        found["checkouts_per_cart"] = Point(min(1.0, totals.checkouts / totals.carts), totals.carts, "ratio",
                                            window_s, flow=True)
    if totals.attempts >= MIN_TRIALS["payment_failure_rate"]:
        found["payment_failure_rate"] = Point(totals.failures / totals.attempts, totals.attempts, "ratio", window_s)
    found["refunds_per_s"] = _rate(totals.refunds, totals.refunds, window_s)
    if totals.ad_clicks:
        found["ad_spend_per_s"] = _rate(totals.ad_spend, totals.ad_clicks, window_s)
    if totals.ad_clicks >= MIN_TRIALS["orders_per_ad_click"]:
        found["orders_per_ad_click"] = Point(min(1.0, totals.ad_orders / totals.ad_clicks), totals.ad_clicks, "ratio",
                                             window_s, flow=True)
    trials = sum(latency.values())
    if trials >= MIN_TRIALS["payment_latency_p95"]:
        found["payment_latency_p95"] = Point(quantile(latency, 0.95), trials, "quantile", window_s)
    return found


def as_utc(moment: datetime) -> datetime:
    """A DateTime read from ClickHouse as an aware UTC datetime (the driver may give it naive)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def watermark(client: Client) -> datetime | None:
    """The end of the newest complete second of every country (the freshness of metrics_1s)."""
    rows = client.query("SELECT min(watermark) FROM freshness WHERE source = 'metrics_1s'").result_rows
    value = rows[0][0] if rows else None
    if not isinstance(value, datetime) or value.year <= 1970:
        return None
    return as_utc(value)


def read_windows(client: Client, ends: list[datetime], window_s: int,
                 step_s: int) -> dict[datetime, dict[str, dict[str, Point]]]:
    """step end -> country (and ALL) -> metric -> point, for the trailing window of each of ``ends`` (steps
    ``step_s`` apart, ``window_s`` a multiple of ``step_s``). Two queries whatever the number of steps: the
    seconds are summed per step-long slice, and each window adds up its slices."""
    if not ends:
        return {}
    if window_s % step_s:
        raise ValueError(f"the window ({window_s} s) must be a whole number of steps ({step_s} s)")
    first = ends[0] - timedelta(seconds=window_s)
    offset = int(first.timestamp()) % step_s
    parameters = {"start": first.replace(tzinfo=None), "end": ends[-1].replace(tzinfo=None), "step": step_s,
                  "offset": offset}
    slice_of = "intDiv(toUnixTimestamp(ts) - {offset:Int64}, {step:Int64})"
    totals: dict[int, dict[str, Totals]] = defaultdict(dict)
    for index, country, *numbers in client.query(
            f"SELECT {slice_of} AS slice, country, {STORE_SUMS} FROM metrics_1s "
            "WHERE ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY slice, country",
            parameters=parameters).result_rows:
        totals[int(index)][str(country)] = store_totals(numbers)
    # a window's segment rows are written with the rest of it, before its metrics_1s row: final below the watermark
    for index, country, clicks, spend, orders, refunds in client.query(
            f"SELECT {slice_of} AS slice, country, sumIf(ad_clicks, dimension = 'campaign'), "
            "sumIf(ad_spend, dimension = 'campaign'), sumIf(orders, dimension = 'campaign'), "
            "sumIf(refunds, dimension = 'refund reason') FROM segment_metrics_1s "
            "WHERE dimension IN ('campaign', 'refund reason') AND ts >= {start:DateTime} AND ts < {end:DateTime} "
            "GROUP BY slice, country", parameters=parameters).result_rows:
        slice_totals = totals[int(index)]
        slice_totals[str(country)] = replace(slice_totals.get(str(country), Totals()), ad_clicks=float(clicks),
                                             ad_spend=float(spend), ad_orders=float(orders), refunds=float(refunds))
    histograms: dict[int, dict[str, dict[int, int]]] = defaultdict(dict)
    for index, country, merged in client.query(
            f"SELECT {slice_of} AS slice, country, sumMap(bucket_keys, bucket_counts) FROM payment_latency_1s "
            "WHERE ts >= {start:DateTime} AND ts < {end:DateTime} GROUP BY slice, country",
            parameters=parameters).result_rows:
        keys, counts = merged
        histograms[int(index)][str(country)] = {int(k): int(c) for k, c in zip(keys, counts, strict=True)}
    per_window = window_s // step_s
    found: dict[datetime, dict[str, dict[str, Point]]] = {}
    for end in ends:
        last = (int(end.timestamp()) - offset) // step_s - 1  # the slice ending at ``end``
        window_totals: dict[str, Totals] = defaultdict(Totals)
        window_histograms: dict[str, dict[int, int]] = defaultdict(dict)
        for index in range(last - per_window + 1, last + 1):
            for country, amounts in totals.get(index, {}).items():
                window_totals[country] = window_totals[country] + amounts
            for country, histogram in histograms.get(index, {}).items():
                merged_histogram = window_histograms[country]
                for key, count in histogram.items():
                    merged_histogram[key] = merged_histogram.get(key, 0) + count
        found[end] = points_by_country(window_totals, window_histograms, window_s)
    return found


def read_live_seconds(client: Client, since: datetime) -> dict[str, dict[datetime, Totals]]:
    """country -> second -> the live (provisional) sums of ``metrics_live`` from ``since`` on: the store
    counters ingestion writes about a second after the events (no segments, no latency histograms)."""
    found: dict[str, dict[datetime, Totals]] = defaultdict(dict)
    for second, country, *numbers in client.query(
            f"SELECT ts, country, {STORE_SUMS} FROM metrics_live WHERE ts >= {{since:DateTime}} GROUP BY ts, country",
            parameters={"since": since.replace(tzinfo=None)}).result_rows:
        found[str(country)][as_utc(second)] = store_totals(numbers)
    return found


def read_seasonal_bands(client: Client, first: datetime,
                        last: datetime | None = None) -> dict[datetime, dict[tuple[str, str], SeasonalBand]]:
    """10-minute bucket start -> (metric, country) -> the seasonal band of that bucket, for every bucket
    from the one holding ``first`` to the one holding ``last`` (``first``'s alone without it), each from
    the newest fit that covers it (a fitted value, or a forecast made before the bucket began)."""
    rows = client.query(
        "SELECT ts, metric, country, argMax(lower, fitted_at), argMax(upper, fitted_at) FROM expected_band "
        "WHERE ts >= toStartOfInterval({first:DateTime}, INTERVAL 10 MINUTE) "
        "AND ts <= toStartOfInterval({last:DateTime}, INTERVAL 10 MINUTE) AND kind IN ('seasonal', 'forecast') "
        "GROUP BY ts, metric, country",
        parameters={"first": first.replace(tzinfo=None), "last": (last or first).replace(tzinfo=None)}).result_rows
    bands: dict[datetime, dict[tuple[str, str], SeasonalBand]] = defaultdict(dict)
    for bucket, metric, country, lower, upper in rows:
        bands[as_utc(bucket)][(str(metric), str(country))] = SeasonalBand(float(lower), float(upper))
    return bands


def seasonal_bucket(at: datetime) -> datetime:
    """The start of the 10-minute bucket holding ``at`` (the seasonal bands' granularity)."""
    return at - timedelta(seconds=int(at.timestamp()) % 600, microseconds=at.microsecond)


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
