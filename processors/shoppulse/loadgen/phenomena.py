"""How real store traffic moves when nothing is broken, scripted in a scenario beside its incidents:
bursty arrivals, a slow drift, a level shift that becomes the new normal, a holiday, a campaign (an
e-mail or a sale that brings more shoppers for a while), seconds in which no event arrives, outliers
(now and then one order many times the usual basket: a business buying in bulk) — each with its ground
truth (whether an ops team wants an alert, and when). A holiday or a campaign may be *announced*: in
the calendar of known events the sidecar reads (``detection/calendar.yaml``), so no alert is wanted at
all.

A phenomenon scales the traffic of the countries it ``moves`` (``traffic(when)``: 1.0 is the usual);
the generator starts that many more or fewer sessions there, so a country's every volume moves together
and its ratios stay what they were, as when real shoppers come and go. Missing seconds are the
store's whole feed: no event at all in those seconds (a collector restarting, a network blip)."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shoppulse.events.schema import Country
from shoppulse.sidecar.event_calendar import MAX_EVENT_DAYS, MAX_LEVEL, MIN_LEVEL, Calendar, KnownEvent

PhenomenonKind = Literal["bursts", "drift", "level_shift", "holiday", "campaign", "missing_seconds", "outliers"]
# Whether an ops team wants to hear of it: "wanted at onset" — an alert within ONSET of its start is right (a level
# shift: the new level is the normal after that); "tolerated at onset" — one within ONSET of its start or end is
# no false alert, nor a missed one if absent (a holiday, a campaign); "never" — any alert while it lasts is false
# (an announced holiday or campaign too: the sidecar was told).
Alerting = Literal["wanted at onset", "tolerated at onset", "never"]
ALERTING: dict[str, Alerting] = {"bursts": "never", "drift": "never", "missing_seconds": "never", "outliers": "never",
                                 "level_shift": "wanted at onset", "holiday": "tolerated at onset",
                                 "campaign": "tolerated at onset"}
ONSET = timedelta(minutes=10)
DEFAULT_LEVEL = {"drift": 0.7, "level_shift": 0.6, "holiday": 0.5, "campaign": 1.5}
PLANNED = ("holiday", "campaign")  # the kinds a calendar may announce
DEFAULT_SPREAD = 0.5  # bursts: the rate's coefficient of variation from second to second
DEFAULT_SHARE = 0.05  # missing_seconds: the share of seconds without events
DEFAULT_OUTLIERS = 6  # outliers: how many bulk orders while it lasts
DEFAULT_SIZE = 40  # outliers: each one's quantity of one product (a usual basket holds one or two)
# bursts: how much of a second's excess arrivals the next one keeps (a push or a post brings shoppers for a
# minute or so; their visits spread it further)
BURST_MEMORY = math.exp(-1 / 30)
# How long a planned event's traffic takes to ease to its level (and back), at most a quarter of it: a
# holiday's shoppers drift away over an hour; a campaign's e-mail lands within minutes.
RAMP = {"holiday": timedelta(hours=1), "campaign": timedelta(minutes=5)}


class Phenomenon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PhenomenonKind
    countries: list[Country] | None = Field(default=None, min_length=1,
                                            description="The countries it moves; default: every country "
                                                        "(missing_seconds: always the whole store)")
    start_after_s: float = Field(ge=-86_400, description="Seconds after the run starts; negative: under way "
                                                         "before (through `shoppulse score`'s warm-up)")
    duration_s: float | None = Field(default=None, gt=0, description="How long it lasts (a drift: how long it "
                                                                      "takes; a level shift lasts for good)")
    level: float | None = Field(default=None, gt=0, le=10,
                                description="drift, level_shift, holiday, campaign: the traffic it leads to, "
                                            "1 = the usual")
    spread: float | None = Field(default=None, gt=0, le=2,
                                 description="bursts: the arrival rate's coefficient of variation per second")
    share: float | None = Field(default=None, gt=0, le=0.5, description="missing_seconds: share of seconds lost")
    count: int | None = Field(default=None, ge=1, le=10_000, description="outliers: how many bulk orders, spread "
                                                                         "over its duration")
    size: int | None = Field(default=None, ge=2, le=1000, description="outliers: the quantity of each bulk "
                                                                        "order (one product)")
    announced: bool = Field(default=False, description="holiday, campaign: listed in the sidecar's calendar of "
                                                       "known events, so no alert is wanted")
    announced_level: float | None = Field(default=None, ge=MIN_LEVEL, le=MAX_LEVEL,
                                          description="an announced one: the level its calendar event gives (the "
                                                      "furthest it may take the volumes); none: not judged")

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Phenomenon:
        own = {"level": self.kind in DEFAULT_LEVEL, "spread": self.kind == "bursts",
               "share": self.kind == "missing_seconds", "count": self.kind == "outliers",
               "size": self.kind == "outliers"}
        for name, allowed in own.items():
            if getattr(self, name) is not None and not allowed:
                kinds = {"level": "drift, level_shift, holiday and campaign", "spread": "bursts",
                         "share": "missing_seconds", "count": "outliers", "size": "outliers"}[name]
                raise ValueError(f"{name} is for {kinds}, not {self.kind}")
        if self.announced and self.kind not in PLANNED:
            raise ValueError(f"only a holiday or a campaign can be announced, not a {self.kind}")
        if self.announced_level is not None and not self.announced:
            raise ValueError("announced_level is the calendar's level of an announced holiday or campaign: "
                             "add announced: true")
        if self.announced and (self.duration_s or 0) > MAX_EVENT_DAYS * 86_400:
            raise ValueError(f"an announced {self.kind} lasts at most {MAX_EVENT_DAYS} days, as calendar events do")
        if self.kind == "level_shift" and self.duration_s is not None:
            raise ValueError("a level shift lasts for good: give it no duration_s")
        if self.kind != "level_shift" and self.duration_s is None:
            raise ValueError(f"a {self.kind} needs a duration_s")
        if self.kind == "missing_seconds" and self.countries is not None:
            raise ValueError("missing seconds are the whole store's feed: give them no countries")
        return self

    @property
    def alerting(self) -> Alerting:
        return "never" if self.announced else ALERTING[self.kind]

    @property
    def target_level(self) -> float:
        return self.level if self.level is not None else DEFAULT_LEVEL.get(self.kind, 1.0)

    @property
    def bulk_size(self) -> int:
        """outliers: the quantity of each bulk order."""
        return self.size if self.size is not None else DEFAULT_SIZE


@dataclass
class ActivePhenomenon:
    """A phenomenon placed on the run's clock; ``seed`` makes its bursts and lost seconds the same on every run."""

    phenomenon: Phenomenon
    start: datetime
    end: datetime | None  # a level shift: never
    seed: int
    _burst_second: int | None = field(default=None, repr=False)
    _burst_x: float = field(default=0.0, repr=False)
    _burst_rng: random.Random | None = field(default=None, repr=False)

    def moves(self, country: str) -> bool:
        countries = self.phenomenon.countries
        return countries is None or country in countries

    def traffic(self, when: datetime) -> float:
        """Its countries' traffic at ``when`` relative to the usual (1.0 outside it)."""
        p = self.phenomenon
        if when < self.start or p.kind in ("missing_seconds", "outliers"):  # these leave the arrivals alone
            return 1.0
        if p.kind == "level_shift":
            return p.target_level
        assert self.end is not None
        if p.kind == "drift":  # eases from the usual to its level, then stays there
            done = min(1.0, (when - self.start) / (self.end - self.start))
            return 1.0 + (p.target_level - 1.0) * done
        if when >= self.end:
            return 1.0
        if p.kind in RAMP:
            ramp = min(RAMP[p.kind], (self.end - self.start) / 4)
            eased = min(1.0, (when - self.start) / ramp, (self.end - when) / ramp)
            return 1.0 + (p.target_level - 1.0) * eased
        return self._burst(int(when.timestamp()))

    def silent(self, when: datetime) -> bool:
        """Whether ``when`` falls in a second the store's feed lost."""
        if self.phenomenon.kind != "missing_seconds" or not self.start <= when < (self.end or when):
            return False
        second = int(when.timestamp())
        digest = hashlib.blake2b(f"{self.seed}:{second}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64 < (self.phenomenon.share or DEFAULT_SHARE)

    def _burst(self, second: int) -> float:
        """A log-normal AR(1) of mean 1: bursts of arrivals that last tens of seconds, spread as scripted."""
        spread = self.phenomenon.spread or DEFAULT_SPREAD
        sigma = math.sqrt(math.log(1 + spread**2))  # of the log rate, for this coefficient of variation
        if self._burst_rng is None:
            self._burst_rng = random.Random(self.seed)
        if self._burst_second is None or second < self._burst_second or second - self._burst_second > 600:
            self._burst_second, self._burst_x = second, self._burst_rng.gauss(0, sigma)
        while self._burst_second < second:
            self._burst_second += 1
            innovation = self._burst_rng.gauss(0, sigma * math.sqrt(1 - BURST_MEMORY**2))
            self._burst_x = BURST_MEMORY * self._burst_x + innovation
        return math.exp(self._burst_x - sigma**2 / 2)

    def onsets(self) -> list[datetime]:
        """When its alerts are wanted or tolerated: its start (and a holiday's or campaign's end, as traffic
        comes back)."""
        if self.phenomenon.alerting == "never":
            return []
        return [self.start] + ([self.end] if self.phenomenon.kind in PLANNED and self.end else [])

    def ground_truth(self) -> dict[str, object]:
        p = self.phenomenon
        return {"phenomenon": p.kind, "countries": p.countries or "ALL", "start": self.start.isoformat(),
                "end": self.end.isoformat() if self.end else None, "level": p.level, "spread": p.spread,
                "share": p.share, "count": p.count, "size": p.size, "announced": p.announced,
                "announced_level": p.announced_level, "alerting": p.alerting,
                "onset_s": ONSET.total_seconds(), **({"outliers": [{"at": at.isoformat(), "country": country}
                                                                   for at, country in self.outliers]}
                                                     if p.kind == "outliers" else {})}

    @cached_property
    def outliers(self) -> list[tuple[datetime, str]]:
        """When and where its bulk orders begin (their shopper's visit): one in each of ``count`` equal
        slices of its duration, at a point of the slice and in a country of its own drawn from its seed
        (drawn once: the generator asks every second)."""
        p = self.phenomenon
        if p.kind != "outliers" or self.end is None:
            return []
        rng = random.Random(self.seed)
        count = p.count or DEFAULT_OUTLIERS
        countries = sorted(p.countries) if p.countries else None
        slice_s = (self.end - self.start).total_seconds() / count
        return [(self.start + timedelta(seconds=int(slice_s * (i + rng.random()))),
                 rng.choice(countries) if countries else "") for i in range(count)]

    def outliers_between(self, after: datetime, until: datetime) -> list[str]:
        """The countries of the bulk orders that begin in (``after``, ``until``] ("" where any country may)."""
        return [country for at, country in self.outliers if after < at <= until]


def schedule_phenomena(phenomena: list[Phenomenon], run_start: datetime) -> list[ActivePhenomenon]:
    return [ActivePhenomenon(p, run_start + timedelta(seconds=p.start_after_s),
                             None if p.duration_s is None else
                             run_start + timedelta(seconds=p.start_after_s + p.duration_s), seed=index + 1)
            for index, p in enumerate(phenomena)]


def announced_calendar(phenomena: list[ActivePhenomenon]) -> Calendar:
    """The announced holidays and campaigns as the calendar of known events the sidecar reads."""
    events = []
    for active in phenomena:
        p = active.phenomenon
        if p.announced and active.end is not None:  # only a holiday or a campaign can be (the model checks)
            where = ", ".join(p.countries) if p.countries else "every country"
            events.append(KnownEvent.model_validate({"name": f"{p.kind} in {where}", "kind": p.kind,
                                                     "countries": p.countries, "start": active.start,
                                                     "end": active.end, "level": p.announced_level}))
    return Calendar(tuple(events))
