"""Known events that move a country's traffic — holidays, campaigns — kept as a reviewed file.

A public holiday halves a country's shoppers; a campaign's e-mail brings half as many again. Both
are news to the detectors and none to the ops team, who planned them. ``detection/calendar.yaml`` in
the as-code home lists them (as Grafana Machine Learning's holidays list custom periods)::

    events:
      - name: Golden Week
        kind: holiday
        countries: [JP]
        start: 2026-04-29T00:00:00+09:00
        end: 2026-05-07T00:00:00+09:00
      - name: Black Friday e-mail
        kind: campaign              # no countries: the whole store
        level: 3                    # may triple the volumes: judged beyond that
        start: 2026-11-27T07:00:00+01:00
        end: 2026-11-28T00:00:00+01:00

Public holidays usually come as iCalendar files (a government's, or a calendar app's export): list them
under ``ical`` with the countries they move and the time zone their all-day events keep::

    ical:
      - file: holidays/jp.ics       # beside this file
        kind: holiday
        countries: [JP]
        timezone: Asia/Tokyo

Each event of the file (``VEVENT``: its summary, start and end or duration; a recurring one's
occurrences, less its exceptions) becomes one of the calendar's.

While an event lasts, the sidecar does not judge its countries' volumes (the rates: views, orders,
revenue, ad spend, refunds per second) against their usual level, and does not learn from them; just
after it, they take the level the day has moved to. An event with a ``level`` (the furthest it may take
them, as a multiple of the usual) is judged beyond it (``expected_range``). Their ratios and latencies
(payment failures, conversion, checkout latency) are judged as always: a payment outage on a holiday
still pages. The store's own volumes (the series ALL) are left unjudged by an event of the whole store,
or of countries that usually bring at least 5 % of them (``app.STORE_SHARE``): a campaign in a big
market moves the store's total too. The start and end take a UTC offset (a holiday begins at its
country's midnight); an event lasts at most MAX_EVENT_DAYS. The sidecar reads the file at start (one it
cannot use stops it) and again whenever it changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import yaml
from dateutil.rrule import rruleset, rrulestr
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shoppulse.events.schema import Country
from shoppulse.project_files import detection_dir
from shoppulse.sidecar.reviewed_file import ReviewedFileError, parse_reviewed, read_reviewed
from shoppulse.sidecar.signals import GLOBAL

MAX_EVENT_DAYS = 31  # longer is no event but a new normal: the detectors adopt it as one
MAX_EVENTS = 10_000
MIN_LEVEL, MAX_LEVEL = 0.01, 100.0
MAX_OCCURRENCES = 1_000  # of one recurring iCalendar event (a yearly holiday for centuries, a weekly sale for years)
Kind = Literal["holiday", "campaign"]


def expected_range(events: Sequence[KnownEvent]) -> tuple[float, float] | None:
    """The multiples of their usual that ``events`` together may take a series' volumes to, lowest and
    highest (a holiday's fall and a campaign's rise on one day: both); None when one of them gives no
    level (its volumes are not judged)."""
    low = high = 1.0
    for event in events:
        if event.level is None:
            return None
        low, high = (low * event.level, high) if event.level < 1 else (low, high * event.level)
    return low, high


class CalendarError(ReviewedFileError):
    """The calendar cannot be used; the message names the file, the place and the fix."""


class KnownEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    kind: Kind
    countries: list[Country] | None = Field(default=None, min_length=1,
                                            description="The countries whose traffic it moves; none: the store")
    start: AwareDatetime
    end: AwareDatetime
    level: float | None = Field(default=None, ge=MIN_LEVEL, le=MAX_LEVEL,
                                description="The furthest it may take its countries' volumes, as a multiple of "
                                            "their usual; none: they are not judged while it lasts")

    @model_validator(mode="after")
    def _a_bounded_period(self) -> KnownEvent:
        if self.end <= self.start:
            raise ValueError(f"{self.name!r} ends at {self.end.isoformat()}, not after its start "
                             f"{self.start.isoformat()}")
        if self.end - self.start > timedelta(days=MAX_EVENT_DAYS):
            raise ValueError(f"{self.name!r} lasts longer than {MAX_EVENT_DAYS} days: a change that long is the "
                             "new normal, which the detectors adopt by themselves; split it or leave it out")
        return self

    def covers(self, country: str, start: datetime, end: datetime) -> bool:
        """Whether it moves ``country``'s traffic at some time in [``start``, ``end``] (the store-wide series:
        only in an event of the whole store)."""
        in_it = self.countries is None or (country != GLOBAL and country in self.countries)
        return in_it and self.start <= end and start < self.end


class IcalSource(BaseModel):
    """An iCalendar file of events that move the traffic of ``countries`` (none: the whole store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1, description="The .ics file, relative to the calendar file's folder")
    kind: Kind = "holiday"
    countries: list[Country] | None = Field(default=None, min_length=1)
    timezone: str = Field(description="Where its all-day events begin and end at midnight, e.g. Asia/Tokyo")
    level: float | None = Field(default=None, ge=MIN_LEVEL, le=MAX_LEVEL)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not a time zone: give an IANA name such as Europe/Berlin") from None
        return name


class _CalendarFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[KnownEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    ical: list[IcalSource] = Field(default_factory=list, max_length=100)


@dataclass(frozen=True)
class Calendar:
    events: Sequence[KnownEvent] = ()

    @cached_property
    def _by_start(self) -> tuple[list[datetime], list[KnownEvent]]:
        ordered = sorted(self.events, key=lambda e: e.start)
        return [e.start for e in ordered], ordered

    def events_of(self, country: str, start: datetime, end: datetime) -> list[KnownEvent]:
        """The events that move ``country``'s traffic at some time in [``start``, ``end``]."""
        return [e for e in self.during(start, end) if e.covers(country, start, end)]

    def during(self, start: datetime, end: datetime) -> list[KnownEvent]:
        """The events under way at some time in [``start``, ``end``], wherever (found among those that begin
        at most MAX_EVENT_DAYS before ``start``: none lasts longer)."""
        starts, ordered = self._by_start
        first = bisect.bisect_left(starts, start - timedelta(days=MAX_EVENT_DAYS))
        last = bisect.bisect_right(starts, end)
        return [e for e in ordered[first:last] if e.start <= end and start < e.end]

    def as_yaml(self) -> str:
        return yaml.safe_dump({"events": [e.model_dump(mode="json", exclude_none=True) for e in self.events]},
                              sort_keys=False, default_flow_style=False)


def calendar_path() -> Path:
    return detection_dir() / "calendar.yaml"


def parse_calendar(text: str, origin: str, folder: Path | None = None) -> Calendar:
    """The calendar a file's ``text`` says; its iCalendar files are read from ``folder`` (the file's own)."""
    parsed = parse_reviewed(text, origin, _CalendarFile, CalendarError, "a list of events",
                            "each event needs a name, a kind (holiday or campaign), a start and an end with a UTC "
                            "offset, and may name its countries")
    events = list(parsed.events)
    for index, source in enumerate(parsed.ical):
        path = (folder or Path()) / source.file
        try:
            events += ical_events(path, source)
        except CalendarError as exc:
            raise CalendarError(f"{origin}: ical.{index}: {exc}") from None
    if len(events) > MAX_EVENTS:
        raise CalendarError(f"{origin}: {len(events)} events, more than {MAX_EVENTS}: keep the years that matter")
    return Calendar(tuple(events))


def ical_events(path: Path, source: IcalSource) -> list[KnownEvent]:
    """Every event of an iCalendar file, as known events of ``source``'s kind and countries."""
    try:
        parsed = icalendar.Calendar.from_ical(path.read_bytes())
    except OSError as exc:
        raise CalendarError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CalendarError(f"{path} is not an iCalendar file: {' '.join(str(exc).split())[:200]}") from None
    zone = ZoneInfo(source.timezone)
    events = []
    for vevent in parsed.events:
        name = str(vevent.get("SUMMARY") or "unnamed event")
        try:
            start, end = _aware(vevent.start, zone), _aware(vevent.end, zone)
            for begins in _occurrences(vevent, start, zone):
                events.append(KnownEvent(name=name[:200], kind=source.kind, countries=source.countries,
                                         start=begins, end=begins + (end - start), level=source.level))
        except (ValueError, TypeError, icalendar.InvalidCalendar) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else " ".join(str(exc).split())
            raise CalendarError(f"{path}: event {name!r}: {reason[:300]}") from None
    return events


def _aware(moment: date | datetime, zone: ZoneInfo) -> datetime:
    """An iCalendar start or end as a moment: an all-day one (a date) or a floating one (no zone) in ``zone``."""
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(0))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _occurrences(vevent: icalendar.Event, start: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """When a (possibly recurring) event begins: its start, or its RRULE's and RDATE's occurrences less
    its EXDATEs, at most MAX_OCCURRENCES."""
    rules = vevent.get("RRULE")
    if rules is None:
        yield start
        return
    occurrences = rruleset()
    for rule in rules if isinstance(rules, list) else [rules]:
        occurrences.rrule(rrulestr(rule.to_ical().decode(), dtstart=start, ignoretz=False))  # type: ignore[arg-type]
    for listed, add in (("RDATE", occurrences.rdate), ("EXDATE", occurrences.exdate)):
        found = vevent.get(listed)
        for entry in found if isinstance(found, list) else [found] if found is not None else []:
            for moment in entry.dts:
                add(_aware(moment.dt, zone))
    for count, begins in enumerate(occurrences):
        if count >= MAX_OCCURRENCES:
            return
        yield begins


def load_calendar(path: Path) -> Calendar:
    """The file's events; none when there is no file."""
    text = read_reviewed(path, CalendarError)
    return Calendar() if text is None else parse_calendar(text, str(path), path.parent)
