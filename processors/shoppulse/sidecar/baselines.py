"""The same-hour-of-week baseline (``baselines_how``): per country and metric, the mean and spread
of each hour of the week over the last ``WEEKS`` weeks of complete hours, refreshed before each
seasonal fit, which takes the week's shape from it (``seasonal.week_shapes``).

One INSERT ... SELECT in ClickHouse: the hourly rollup (``metrics_1h``) holds partial sums, so each
country-hour is summed first, then averaged per hour of the week (0 = Monday 00:00 UTC). The table
is a ReplacingMergeTree on ``updated_at``: a refresh replaces the previous one, and running it twice
is harmless."""

from __future__ import annotations

import logging
from datetime import datetime

from clickhouse_connect.driver.client import Client

from shoppulse.sidecar.seasonal import METRIC_TOTALS

log = logging.getLogger(__name__)

WEEKS = 4
HOUR_S = 3600
# The seasonal fit's metrics (per 10 minutes there), as rates over a complete hour.
HOURLY = {name: f"{total} / {HOUR_S}" for name, total in METRIC_TOTALS.items()}

REFRESH = f"""
INSERT INTO baselines_how (country, metric, hour_of_week, mean, stddev, samples, updated_at)
SELECT country, metric, (toDayOfWeek(hour) - 1) * 24 + toHour(hour) AS hour_of_week,
       avg(value), stddevPop(value), count(), {{now:DateTime}}
FROM (
    SELECT country, toStartOfHour(ts) AS hour, {', '.join(f'{expr} AS {name}' for name, expr in HOURLY.items())}
    FROM metrics_1h
    WHERE ts >= toStartOfHour({{now:DateTime}}) - INTERVAL {{weeks:UInt8}} WEEK AND ts < toStartOfHour({{now:DateTime}})
    GROUP BY country, hour
)
ARRAY JOIN [{', '.join(f"'{name}'" for name in HOURLY)}] AS metric, [{', '.join(HOURLY)}] AS value
GROUP BY country, metric, hour_of_week
"""


def refresh(client: Client, now: datetime, weeks: int = WEEKS) -> int:
    """Recompute every baseline from the complete hours before ``now``; returns the rows written."""
    summary = client.command(REFRESH, parameters={"now": now.replace(tzinfo=None), "weeks": weeks})
    written = int(getattr(summary, "written_rows", 0))
    log.info("same-hour-of-week baselines refreshed", extra={"rows": written, "weeks": weeks})
    return written
