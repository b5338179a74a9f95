"""The seasonal baseline: Holt-Winters (statsmodels) on a week of 10-minute history per country,
shaped by the week where the store has the history to know it.

Each refit reads the last ``days`` of ``metrics_1m`` per country (and for the whole store),
fits additive daily seasonality with ``ExponentialSmoothing``, and writes to ``expected_band``:
the fitted expectation with a band of two residual standard deviations over the recent hours
(kind ``seasonal``) and a forecast cone for the next half hour whose width grows with the horizon
(kind ``forecast``). The Store live dashboard draws them around orders/s. A series with less
than ``MIN_DAYS`` of history is skipped: a seasonal model needs to have seen the season.

The week: a Saturday afternoon is not a Tuesday afternoon, and a daily model a week long learns
their average. Where the same-hour-of-week baselines (``baselines_how``, ``baselines.py``) have
seen every hour of the week at least ``MIN_WEEKS`` times, each bucket is first divided by its
hour's *weekly factor* — how much busier that hour of the week is than the same hour on the
average day — the daily model is fitted on what is left, and its expectation, band and cone are
multiplied back by the factor (a multiplicative weekly season on top of the additive daily one).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Histogram
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from shoppulse.sidecar.signals import GLOBAL

log = logging.getLogger(__name__)

BUCKET = timedelta(minutes=10)
PERIOD = 144  # buckets per day
MIN_DAYS = 2
SHOWN = timedelta(hours=6)
HORIZON = 3  # buckets forecast ahead
# Each metric's total over a span of metrics rows; divided by the span's seconds it is a rate.
METRIC_TOTALS = {"orders_per_s": "sum(orders)", "revenue_per_s": "toFloat64(sum(revenue))"}
METRICS = {name: f"{total} / {int(BUCKET.total_seconds())}" for name, total in METRIC_TOTALS.items()}
BAND_COLUMNS = ["ts", "country", "metric", "kind", "expected", "lower", "upper", "fitted_at"]

FITS = Counter("shoppulse_sidecar_seasonal_fits", "Seasonal baseline fits", ["outcome"])
FIT_SECONDS = Histogram("shoppulse_sidecar_seasonal_fit_seconds", "Time to refit every seasonal baseline")


MIN_WEEKS = 2  # an hour of the week seen fewer times says nothing about the week
# A weekly factor is kept within this range: an hour the store is all but closed would otherwise
# blow its quiet buckets up into outliers of the daily model.
FACTOR_RANGE = (0.1, 10.0)
HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class Band:
    fitted: list[tuple[datetime, float, float]]  # time, expected, standard deviation
    forecast: list[tuple[datetime, float, float]]  # time, expected, standard deviation
    sigma: float  # of the residuals, on the scale of an hour whose weekly factor is 1
    weekly: bool = False  # shaped by the week


def hour_of_week(ts: datetime) -> int:
    """0 = Monday 00:00 UTC, as ``baselines_how`` counts."""
    return ts.weekday() * 24 + ts.hour


def weekly_factors(means: dict[int, tuple[float, int]]) -> dict[int, float] | None:
    """hour of the week -> its weekly factor (its mean over the same hour's mean on the average day),
    from the same-hour-of-week baselines' (mean, samples) per hour; None unless every hour of the
    week has been seen MIN_WEEKS times."""
    if len(means) < HOURS_PER_WEEK or min(samples for _, samples in means.values()) < MIN_WEEKS:
        return None
    factors = {}
    low, high = FACTOR_RANGE
    for hour in range(HOURS_PER_WEEK):
        same_hour = [means[day * 24 + hour % 24][0] for day in range(7)]
        typical = sum(same_hour) / 7
        factors[hour] = min(high, max(low, means[hour][0] / typical)) if typical > 0 else 1.0
    return factors


def fit(stamps: list[datetime], values: list[float], horizon: int = HORIZON,
        weekly: dict[int, float] | None = None) -> Band | None:
    """The seasonal fit of a regular 10-minute series, shaped by ``weekly`` factors where given
    (``weekly_factors``), or None without enough history."""
    if len(values) < MIN_DAYS * PERIOD:
        return None
    ahead_stamps = [stamps[-1] + BUCKET * (h + 1) for h in range(horizon)]
    factor = np.asarray([weekly[hour_of_week(ts)] if weekly else 1.0 for ts in [*stamps, *ahead_stamps]])
    series = np.asarray(values, dtype=float) / factor[:len(stamps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the residuals say how good it is
        model = ExponentialSmoothing(series, seasonal="add", seasonal_periods=PERIOD, trend=None,
                                     initialization_method="estimated").fit()
    sigma = float(np.std(model.resid)) or 1e-9
    ahead = model.forecast(horizon)
    fitted = [(ts, float(v) * f, sigma * f) for ts, v, f in zip(stamps, model.fittedvalues, factor[:len(stamps)],
                                                                  strict=True)]
    forecast = [(ts, float(ahead[h]) * factor[len(stamps) + h], sigma * math.sqrt(h + 1) * factor[len(stamps) + h])
                for h, ts in enumerate(ahead_stamps)]
    return Band(fitted, forecast, sigma, weekly is not None)


def history(client: Client, metric: str, country: str, end: datetime, days: int) -> tuple[list[datetime], list[float]]:
    """A regular 10-minute series (missing buckets are zero) ending at ``end``, floored to a bucket."""
    last = end - timedelta(seconds=end.timestamp() % BUCKET.total_seconds())
    first = last - timedelta(days=days)
    where = "" if country == GLOBAL else "AND country = {country:String}"
    rows = client.query(
        f"SELECT toStartOfInterval(ts, INTERVAL 10 MINUTE) AS bucket, {METRICS[metric]} FROM metrics_1m "
        f"WHERE ts >= {{first:DateTime}} AND ts < {{last:DateTime}} {where} GROUP BY bucket ORDER BY bucket",
        parameters={"first": first.replace(tzinfo=None), "last": last.replace(tzinfo=None), "country": country},
    ).result_rows
    found = {(b.replace(tzinfo=UTC) if b.tzinfo is None else b): float(v) for b, v in rows}
    if not found:
        return [], []
    start = min(found)
    stamps = [start + BUCKET * i for i in range(int((last - start) / BUCKET))]
    return stamps, [found.get(s, 0.0) for s in stamps]


def week_shapes(client: Client) -> dict[tuple[str, str], dict[int, float]]:
    """(metric, country) -> weekly factors, for the series whose every hour of the week the same-hour-of-week
    baselines have seen MIN_WEEKS times; the whole store's from its countries' hourly rates added up."""
    means: dict[tuple[str, str], dict[int, tuple[float, int]]] = {}
    store: dict[str, dict[int, list[float]]] = {}
    for country, metric, hour, mean, samples in client.query(
            "SELECT country, metric, hour_of_week, mean, samples FROM baselines_how FINAL").result_rows:
        means.setdefault((str(metric), str(country)), {})[int(hour)] = (float(mean), int(samples))
        total = store.setdefault(str(metric), {}).setdefault(int(hour), [0.0, float("inf")])
        total[0] += float(mean)
        total[1] = min(total[1], int(samples))
    for metric, hours in store.items():
        means[(metric, GLOBAL)] = {hour: (mean, int(samples)) for hour, (mean, samples) in hours.items()}
    shapes = {key: weekly_factors(hours) for key, hours in means.items() if key[0] in METRICS}
    return {key: shape for key, shape in shapes.items() if shape is not None}


def refit(client: Client, now: datetime, days: int = 7) -> int:
    """Refit every series and write its band; returns how many series had enough history."""
    countries = [str(r[0]) for r in client.query(
        "SELECT DISTINCT country FROM metrics_1m WHERE ts > {now:DateTime} - INTERVAL 1 DAY AND ts <= {now:DateTime}",
        parameters={"now": now.replace(tzinfo=None)}).result_rows]
    rows: list[list[object]] = []
    fitted_series = 0
    weeks = week_shapes(client)
    with FIT_SECONDS.time():
        for metric in METRICS:
            for country in [*countries, GLOBAL]:
                stamps, values = history(client, metric, country, now, days)
                band = fit(stamps, values, weekly=weeks.get((metric, country))) if stamps else None
                if band is None:
                    FITS.labels("too_little_history").inc()
                    continue
                FITS.labels("ok_weekly" if band.weekly else "ok").inc()
                fitted_series += 1
                for ts, expected, sd in band.fitted:
                    if ts >= now - SHOWN:
                        rows.append([ts, country, metric, "seasonal", expected, expected - 2 * sd, expected + 2 * sd,
                                     now])
                rows += [[ts, country, metric, "forecast", expected, expected - 2 * sd, expected + 2 * sd, now]
                         for ts, expected, sd in band.forecast]
    if rows:
        client.insert("expected_band", rows, column_names=BAND_COLUMNS)
    log.info("seasonal baselines refitted", extra={"series": fitted_series, "rows": len(rows)})
    return fitted_series
