"""The seasonal baseline: Holt-Winters (statsmodels) on a week of 10-minute history per country.

Each refit reads the last ``days`` of ``metrics_1m`` per country (and for the whole store),
fits additive daily seasonality with ``ExponentialSmoothing``, and writes to ``expected_band``:
the fitted expectation with a band of two residual standard deviations over the recent hours
(kind ``seasonal``) and a forecast cone for the next half hour whose width grows with the horizon
(kind ``forecast``). The Store live
dashboard draws them around orders/s. A series with less than ``MIN_DAYS`` of history is skipped:
a seasonal model needs to have seen the season.
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


@dataclass(frozen=True)
class Band:
    fitted: list[tuple[datetime, float]]
    forecast: list[tuple[datetime, float, float]]  # time, expected, standard deviation
    sigma: float


def fit(stamps: list[datetime], values: list[float], horizon: int = HORIZON) -> Band | None:
    """The seasonal fit of a regular 10-minute series, or None without enough history."""
    if len(values) < MIN_DAYS * PERIOD:
        return None
    series = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the residuals say how good it is
        model = ExponentialSmoothing(series, seasonal="add", seasonal_periods=PERIOD, trend=None,
                                     initialization_method="estimated").fit()
    sigma = float(np.std(model.resid)) or 1e-9
    ahead = model.forecast(horizon)
    fitted = list(zip(stamps, (float(v) for v in model.fittedvalues), strict=True))
    forecast = [(stamps[-1] + BUCKET * (h + 1), float(ahead[h]), sigma * math.sqrt(h + 1)) for h in range(horizon)]
    return Band(fitted, forecast, sigma)


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


def refit(client: Client, now: datetime, days: int = 7) -> int:
    """Refit every series and write its band; returns how many series had enough history."""
    countries = [str(r[0]) for r in client.query(
        "SELECT DISTINCT country FROM metrics_1m WHERE ts > {now:DateTime} - INTERVAL 1 DAY AND ts <= {now:DateTime}",
        parameters={"now": now.replace(tzinfo=None)}).result_rows]
    rows: list[list[object]] = []
    fitted_series = 0
    with FIT_SECONDS.time():
        for metric in METRICS:
            for country in [*countries, GLOBAL]:
                stamps, values = history(client, metric, country, now, days)
                band = fit(stamps, values) if stamps else None
                if band is None:
                    FITS.labels("too_little_history").inc()
                    continue
                FITS.labels("ok").inc()
                fitted_series += 1
                for ts, expected in band.fitted:
                    if ts >= now - SHOWN:
                        rows.append([ts, country, metric, "seasonal", expected, expected - 2 * band.sigma,
                                     expected + 2 * band.sigma, now])
                rows += [[ts, country, metric, "forecast", expected, expected - 2 * sd, expected + 2 * sd, now]
                         for ts, expected, sd in band.forecast]
    if rows:
        client.insert("expected_band", rows, column_names=BAND_COLUMNS)
    log.info("seasonal baselines refitted", extra={"series": fitted_series, "rows": len(rows)})
    return fitted_series
