"""Anomaly regions from a stream of verdicts: open, update, close — with hysteresis so they do not flap.

The combination rule, over the detectors' opinions in the verdict (whichever detectors the series
runs). The baseline's z proposes, and so does any detector that measures how rare a point is (its
surprise, as a |z|: an accumulating detector sees a lasting shift no single point shows): a step
is *strong* when the larger of |z| and every surprise is >= ``open_z`` and the value is at least
``min_change_pct`` away from the expected one. A detector that sees the value as the usual
for this series (the seasonal band for this time of the week: the daily swing the fast baseline
lags behind) vetoes a strong step — unless the evidence is overwhelming (|z| >= ``open_at_once_z``)
and the veto is not firm (a firm one: the value itself recurs at this time every day).
The others corroborate: a region opens after ``open_after`` consecutive strong steps, or at the
first strong step when a detector whose judgement rests on something else also sees it as unusual
(two detectors that both measure the deviation from a level are one piece of evidence; the time of
day, a record or an isolation score is another), or at once when |z| or any surprise is >=
``open_at_once_z`` (one point thirty times the usual is news on its own). Its
``onset`` is the first step of the run of steps, each beyond ``close_z`` the same way, that led to it:
the series had left its usual range before the evidence was strong.
It closes after ``close_after`` consecutive steps with |z| < ``close_z``. Its severity grows with
the size of the deviation (|delta| against the expected value) and with its duration; its
``detectors`` name every detector that agreed when it opened. Its id is derived from the series
and the step it opened at, so a restarted sidecar that replays the same data names the same region
the same way (no duplicate annotations).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shoppulse.sidecar.detectors import Opinion, Verdict

NAMESPACE = uuid.UUID("5d7c1f1e-8a43-4c1e-9a0e-5b6f2b9d0c11")
SEVERITIES = ("low", "medium", "high", "critical")


def severity(delta_pct: float, duration: timedelta) -> str:
    """From the size of the deviation and how long it has lasted."""
    size = abs(delta_pct)
    level = 0 if size < 25 else 1 if size < 50 else 2 if size < 80 else 3
    if duration >= timedelta(minutes=5):
        level += 1
    return SEVERITIES[min(level, 3)]


def region_id(metric: str, country: str, opened_at: datetime) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{metric}|{country}|{opened_at.isoformat()}")


@dataclass
class Region:
    anomaly_id: uuid.UUID
    metric: str
    country: str
    opened_at: datetime
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    z: float
    closed_at: datetime | None = None
    detected_at: datetime | None = None  # wall clock, set when the region is first written
    peak_delta_pct: float = 0.0
    peak_z: float = 0.0  # the largest |z| while open: how strong its evidence has been
    detectors: list[str] = field(default_factory=list)
    onset: datetime | None = None  # when the series left its usual range on the way to opening it
    driven_by: list[str] = field(default_factory=list)  # a store-wide region: the countries whose move it is
    status: str = "final"  # or "provisional" (the fast path's, until the final windows confirm it), "withdrawn"

    @property
    def delta_pct(self) -> float:
        return 100.0 * (self.observed - self.expected) / self.expected if self.expected else 0.0

    def severity(self, now: datetime) -> str:
        return severity(self.peak_delta_pct, (self.closed_at or now) - self.opened_at)


@dataclass(frozen=True)
class Change:
    kind: str  # opened | updated | closed | withdrawn (a provisional region the final windows did not confirm)
    region: Region


@dataclass
class RegionTracker:
    metric: str
    country: str
    open_z: float = 4.0
    close_z: float = 2.0
    open_after: int = 2
    min_change_pct: float = 10.0  # smaller changes are not worth a page, however certain
    open_at_once_z: float = 8.0  # evidence this strong opens a region without waiting for a second step
    close_after: int = 3
    region: Region | None = None
    last_closed: Region | None = None
    _above: int = 0
    _below: int = 0
    _deviating_since: datetime | None = None
    _deviating_sign: int = 0

    @property
    def is_open(self) -> bool:
        return self.region is not None

    def step(self, at: datetime, observed: float, verdict: Verdict) -> Change | None:
        magnitude = abs(verdict.z)
        band = abs(verdict.expected - observed) / magnitude if magnitude else 0.0
        if self.region is None:
            self._track_deviation(at, verdict.z)
            surprise = _surprise(verdict)
            agreeing = self._agreeing(verdict, observed, surprise)
            if not agreeing:
                self._above = 0
                return None
            self._above += 1
            overwhelming = surprise >= self.open_at_once_z
            if self._above < self.open_after and not overwhelming and len({o.basis() for o in agreeing}) < 2:
                return None
            self._above, self._below = 0, 0
            self.region = Region(region_id(self.metric, self.country, at), self.metric, self.country, at,
                                 observed, verdict.expected, verdict.expected - 2 * band, verdict.expected + 2 * band,
                                 verdict.score, verdict.z, detectors=[o.detector for o in agreeing],
                                 onset=self._deviating_since or at)
            self._deviating_since = None
            self.region.peak_delta_pct, self.region.peak_z = self.region.delta_pct, magnitude
            return Change("opened", self.region)
        region = self.region
        region.observed, region.score, region.z = observed, max(region.score, verdict.score), verdict.z
        region.peak_z = max(region.peak_z, magnitude)
        if abs(region.delta_pct) > abs(region.peak_delta_pct):
            region.peak_delta_pct = region.delta_pct
        self._below = self._below + 1 if magnitude < self.close_z else 0
        if self._below >= self.close_after:
            region.closed_at = at
            self.region, self.last_closed = None, region
            self._below = 0
            return Change("closed", region)
        return Change("updated", region)

    def hold(self) -> None:
        """A step not judged (a known event's): the run of strong steps towards a region starts again after it."""
        self._above = 0
        self._deviating_since = None

    def _track_deviation(self, at: datetime, z: float) -> None:
        sign = 1 if z > 0 else -1
        if abs(z) < self.close_z:
            self._deviating_since = None
        elif self._deviating_since is None or sign != self._deviating_sign:
            self._deviating_since, self._deviating_sign = at, sign

    def _agreeing(self, verdict: Verdict, observed: float, surprise: float) -> list[Opinion]:
        """The detectors that see this step as an anomaly, in the series' order; none when the step is
        not strong (``surprise``, the rarest any detector finds it, below ``open_z``) or a detector
        vetoes it as the usual."""
        magnitude = abs(verdict.z)
        change_pct = 100 * abs(observed - verdict.expected) / abs(verdict.expected) if verdict.expected else 100.0
        if surprise < self.open_z or change_pct < self.min_change_pct:
            return []
        if any(o.unusual is False and (o.firm or magnitude < self.open_at_once_z) for o in verdict.opinions):
            return []
        return [o for o in verdict.opinions if o.unusual]


def _surprise(verdict: Verdict) -> float:
    """How rare the step is by the detector that finds it rarest, as a |z|."""
    return max([abs(verdict.z), *(o.surprise for o in verdict.opinions)])
