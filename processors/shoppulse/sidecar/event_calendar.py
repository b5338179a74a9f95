"""Known events that move a country's traffic — holidays, campaigns — kept as a reviewed file.

A public holiday halves a country's shoppers; a campaign's e-mail brings half as many again. Both
are news to the detectors and none to the ops team, who planned them. ``detection/calendar.yaml`` in
the as-code home lists them (as Grafana Machine Learning's holidays list custom periods):

    events:
      - name: Golden Week
        kind: holiday
        countries: [JP]
        start: 2026-04-29T00:00:00+09:00
        end: 2026-05-07T00:00:00+09:00
      - name: Black Friday e-mail
        kind: campaign              # no countries: the whole store, the store-wide series too
        start: 2026-11-27T07:00:00+01:00
        end: 2026-11-28T00:00:00+01:00

While an event lasts, the sidecar does not judge its countries' volumes (the rates: views, orders,
revenue, ad spend, refunds per second) against their usual level, and does not learn from them;
just after it, they take the level the day has moved to. Their ratios and latencies (payment failures,
conversion, checkout latency) are judged as always: a payment outage on a holiday still pages. The
start and end take a UTC offset (a holiday begins at its country's midnight); an event lasts at most
MAX_EVENT_DAYS. The sidecar reads the file at start (one it cannot use stops it) and again whenever
it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shoppulse.events.schema import Country
from shoppulse.project_files import detection_dir
from shoppulse.sidecar.reviewed_file import ReviewedFileError
from shoppulse.sidecar.signals import GLOBAL

MAX_EVENT_DAYS = 31  # longer is no event but a new normal: the detectors adopt it as one
MAX_EVENTS = 10_000


class CalendarError(ReviewedFileError):
    """The calendar cannot be used; the message names the file, the place and the fix."""


class KnownEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["holiday", "campaign"]
    countries: list[Country] | None = Field(default=None, min_length=1,
                                            description="The countries whose traffic it moves; none: the store")
    start: AwareDatetime
    end: AwareDatetime

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


class _CalendarFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[KnownEvent] = Field(default_factory=list, max_length=MAX_EVENTS)


@dataclass(frozen=True)
class Calendar:
    events: Sequence[KnownEvent] = ()

    def event(self, country: str, start: datetime, end: datetime) -> KnownEvent | None:
        """An event that moves ``country``'s traffic at some time in [``start``, ``end``], if any."""
        return next((e for e in self.events if e.covers(country, start, end)), None)

    def as_yaml(self) -> str:
        return yaml.safe_dump({"events": [e.model_dump(mode="json", exclude_none=True) for e in self.events]},
                              sort_keys=False, default_flow_style=False)


def calendar_path() -> Path:
    return detection_dir() / "calendar.yaml"


def parse_calendar(text: str, origin: str) -> Calendar:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CalendarError(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict):
        raise CalendarError(f"{origin}: expected a mapping with a list of events, found a {type(document).__name__}")
    try:
        parsed = _CalendarFile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise CalendarError(f"{origin}: {where}: {first['msg']} (each event needs a name, a kind (holiday or "
                            "campaign), a start and an end with a UTC offset, and may name its countries)") from None
    return Calendar(tuple(parsed.events))


def load_calendar(path: Path) -> Calendar:
    """The file's events; none when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Calendar()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalendarError(f"cannot read {path}: {exc}") from None
    return parse_calendar(text, str(path))
