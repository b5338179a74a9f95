"""The time range and interval Grafana gives a panel's queries (its ``rangeutil`` and panel query
runner, Grafana 12): the dashboard's range, the panel's relative time and time shift, and
``$__interval`` = the span divided by the panel's resolution (``maxDataPoints``, else its width in
pixels), rounded to Grafana's steps, never below the panel's (or the datasource's) minimum interval.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

# The wall display the dashboards are laid out for: a panel's width in pixels is its share of it.
SCREEN_WIDTH_PX = 1920
GRID_COLUMNS = 24
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
            "M": 2_592_000_000, "y": 31_536_000_000}
_INTERVAL = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])$")
_RELATIVE = re.compile(r"^now(?:-(\d+)(ms|[smhdwMy]))?(?:/([smhdwMy]))?$")
# Grafana's roundInterval: (below this many ms, use this many ms).
_STEPS = ((10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
          (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
          (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000),
          (1500000, 1200000), (2700000, 1800000), (5400000, 3600000), (9000000, 7200000),
          (16200000, 10800000), (32400000, 21600000), (86400000, 43200000), (604800000, 86400000),
          (1814400000, 604800000), (3628800000, 2592000000))
YEAR_MS = 31536000000


class TimeRangeError(ValueError):
    """A time range or interval Grafana would not accept."""


def interval_ms(text: str) -> int:
    """Grafana's ``intervalToMs``: ``30s``, ``5m``, ``500ms``; a bare number is seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return int(text) * 1000
    match = _INTERVAL.match(text)
    if not match:
        raise TimeRangeError(f"{text!r} is not a Grafana interval like 500ms, 30s, 5m or 1h")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def round_interval(ms: float) -> int:
    """Grafana's ``roundInterval``: the nearest of its interval steps."""
    return next((step for below, step in _STEPS if ms < below), YEAR_MS)


def interval_text(ms: int) -> str:
    """Grafana's ``secondsToHms``, as ``$__interval`` shows an interval: its largest whole unit
    (``10m``, ``1h``, ``1d``, ``500ms``)."""
    seconds = ms / 1000
    for count, unit in ((seconds // 31536000, "y"), (seconds % 31536000 // 86400, "d"),
                        (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60 // 1, "s"),
                        (seconds * 1000 // 1, "ms")):
        if count:
            return f"{int(count)}{unit}"
    return "less than a millisecond"


def relative_time(text: str, now: datetime) -> datetime:
    """A dashboard time like ``now``, ``now-6h`` or ``now-1d/d`` (Grafana's date math, UTC)."""
    match = _RELATIVE.match(str(text).strip())
    if not match:
        raise TimeRangeError(f"time {text!r} is not relative to now (now, now-6h, now-7d/d): a lint needs a "
                             "range it can place at any moment")
    moment = now
    if match.group(1):
        moment -= timedelta(milliseconds=int(match.group(1)) * _UNIT_MS[match.group(2)])
    unit = match.group(3)
    if unit:
        fields = {"s": "microsecond", "m": "second", "h": "minute", "d": "hour"}
        if unit in ("w", "M", "y"):
            raise TimeRangeError(f"time {text!r}: rounding to /{unit} is not supported by the lint")
        keep = list(fields).index(unit)
        zeroed: dict[str, Any] = {name: 0 for name in ("microsecond", "second", "minute", "hour")[:keep + 1]}
        moment = moment.replace(**zeroed)
    return moment


def panel_range(dashboard_time: dict[str, Any] | None, panel: dict[str, Any], now: datetime) -> tuple[datetime,
                                                                                                     datetime]:
    """The range Grafana queries a panel over: the dashboard's, or the panel's relative time
    (``timeFrom``, counted back from now), moved back by its ``timeShift``."""
    time = dashboard_time or {"from": "now-6h", "to": "now"}
    start, end = relative_time(time.get("from", "now-6h"), now), relative_time(time.get("to", "now"), now)
    if panel.get("timeFrom"):
        start, end = now - timedelta(milliseconds=interval_ms(str(panel["timeFrom"]))), now
    if panel.get("timeShift"):
        shift = timedelta(milliseconds=interval_ms(str(panel["timeShift"])))
        start, end = start - shift, end - shift
    if start >= end:
        raise TimeRangeError(f"the time range {time} gives nothing to query (from is not before to)")
    return start, end


def panel_interval_ms(panel: dict[str, Any], start: datetime, end: datetime, min_interval: str | None = None) -> int:
    """``$__interval_ms`` for a panel over [start, end]."""
    resolution = panel.get("maxDataPoints") or max(1, int((panel.get("gridPos") or {}).get("w", GRID_COLUMNS)
                                                          * SCREEN_WIDTH_PX / GRID_COLUMNS))
    ms = round_interval((end - start).total_seconds() * 1000 / int(resolution))
    low = panel.get("interval") or min_interval
    return max(ms, interval_ms(str(low))) if low else ms
