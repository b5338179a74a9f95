"""Mute timings as Grafana's Alertmanager reads them (the ``timeinterval`` package of prometheus/alertmanager,
which Grafana's alerting embeds): a mute timing holds time intervals, and a moment is muted when any
interval contains it — every field the interval sets must match, a field it leaves out matches anything.

- ``times``: ``start_time`` / ``end_time`` as ``HH:MM``, the end exclusive (``24:00`` allowed as an end);
- ``weekdays``: names, or ranges ``monday:friday``;
- ``days_of_month``: numbers 1 to 31 or from the end (-1 is the last day), or ranges of them;
- ``months``: names or numbers, or ranges; ``years``: numbers, or ranges;
- ``location``: the IANA time zone the fields are read in (UTC when not set).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Go's numbering, as Alertmanager's: sunday = 0 (a range may not run backwards, e.g. saturday:monday).
WEEKDAYS = {name: index for index, name in enumerate(
    ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))}
MONTHS = {name.lower(): index for index, name in enumerate(calendar.month_name) if name}


class MuteTimingError(ValueError):
    """A mute timing Grafana would refuse; the message names the field."""


def _ranges(values: Iterable[Any], names: dict[str, int] | None, field: str) -> list[tuple[int, int]]:
    found = []
    for value in values:
        low_text, _, high_text = str(value).strip().lower().partition(":")
        try:
            low = names[low_text] if names and low_text in names else int(low_text)
            high = (names[high_text] if names and high_text in names else int(high_text)) if high_text else low
        except (KeyError, ValueError):
            raise MuteTimingError(f"{field}: {value!r} is not a value or a range of them") from None
        if field != "days_of_month" and low > high:
            raise MuteTimingError(f"{field}: {value!r} runs backwards")
        found.append((low, high))
    return found


def _minutes(text: Any, field: str) -> int:
    hours, _, minutes = str(text).partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise MuteTimingError(f"times.{field}: {text!r} is not HH:MM")
    total = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or total > 24 * 60:
        raise MuteTimingError(f"times.{field}: {text!r} is past 24:00")
    return total


@dataclass(frozen=True)
class TimeInterval:
    times: tuple[tuple[int, int], ...]  # minutes of the day, end exclusive
    weekdays: tuple[tuple[int, int], ...]
    days_of_month: tuple[tuple[int, int], ...]
    months: tuple[tuple[int, int], ...]
    years: tuple[tuple[int, int], ...]
    location: tzinfo

    @classmethod
    def parse(cls, item: dict[str, Any]) -> TimeInterval:
        times = []
        for span in item.get("times") or []:
            start, end = _minutes(span.get("start_time"), "start_time"), _minutes(span.get("end_time"), "end_time")
            if start >= end:
                raise MuteTimingError(f"times: {span.get('start_time')} is not before {span.get('end_time')}")
            times.append((start, end))
        try:
            location = ZoneInfo(str(item["location"])) if item.get("location") else UTC
        except (ZoneInfoNotFoundError, ValueError):
            raise MuteTimingError(f"location: {item.get('location')!r} is not an IANA time zone") from None
        return cls(tuple(times), tuple(_ranges(item.get("weekdays") or [], WEEKDAYS, "weekdays")),
                   tuple(_ranges(item.get("days_of_month") or [], None, "days_of_month")),
                   tuple(_ranges(item.get("months") or [], MONTHS, "months")),
                   tuple(_ranges(item.get("years") or [], None, "years")), location)

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.location)
        minute = local.hour * 60 + local.minute
        if self.times and not any(start <= minute < end for start, end in self.times):
            return False
        weekday = (local.weekday() + 1) % 7  # Python's monday = 0 to Go's sunday = 0
        if self.weekdays and not any(low <= weekday <= high for low, high in self.weekdays):
            return False
        if self.days_of_month:
            last = calendar.monthrange(local.year, local.month)[1]

            def day(n: int) -> int:
                return n if n > 0 else last + 1 + n  # -1 is the month's last day

            if not any(day(low) <= local.day <= day(high) for low, high in self.days_of_month):
                return False
        if self.months and not any(low <= local.month <= high for low, high in self.months):
            return False
        return not self.years or any(low <= local.year <= high for low, high in self.years)


def mute_timings(items: Iterable[dict[str, Any]]) -> dict[str, tuple[TimeInterval, ...]]:
    """The provisioned mute timings by name (``muteTimes``), each as its intervals."""
    return {str(item.get("name")): tuple(TimeInterval.parse(i) for i in item.get("time_intervals") or [])
            for item in items}


def muted(intervals: Iterable[TimeInterval], moment: datetime) -> bool:
    return any(interval.contains(moment) for interval in intervals)
