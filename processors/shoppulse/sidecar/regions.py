"""Anomaly regions from a stream of verdicts: open, update, close — with hysteresis so they do not flap.

The combination rule. The robust z-score proposes: a step is *strong* when |z| >= ``open_z`` and the
value is at least ``min_change_pct`` away from the expected one. The seasonal baseline vetoes: a
strong step whose value lies inside the seasonal band for this time of the week (where a fitted
one exists) is the usual daily swing the fast baseline lags behind, not an anomaly — unless the
evidence is overwhelming (|z| >= ``open_at_once_z``). HalfSpaceTrees corroborates: a region opens
after ``open_after`` consecutive strong steps, or at the first strong step when River's
HalfSpaceTrees also scores it as unusual (>= ``HST_AGREES``) or the value is outside the seasonal
band, or at once when |z| >= ``open_at_once_z``. It closes after ``close_after`` consecutive steps
with |z| < ``close_z``. Its severity grows with the size of the deviation (|delta| against the
expected value) and with its duration; its ``detectors`` name every detector that agreed when it
opened. Its id is derived from the series and the step it opened at, so a restarted sidecar that
replays the same data names the same region the same way (no duplicate annotations).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shoppulse.sidecar.detectors import Verdict

NAMESPACE = uuid.UUID("5d7c1f1e-8a43-4c1e-9a0e-5b6f2b9d0c11")
SEVERITIES = ("low", "medium", "high", "critical")
HST_AGREES = 0.7  # River's HalfSpaceTrees score from which it counts as seeing the point as unusual


@dataclass(frozen=True)
class SeasonalBand:
    """The seasonal baseline's band for this series at this time of the week (``expected_band``)."""

    lower: float
    upper: float

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper


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
    detectors: list[str] = field(default_factory=list)

    @property
    def delta_pct(self) -> float:
        return 100.0 * (self.observed - self.expected) / self.expected if self.expected else 0.0

    def severity(self, now: datetime) -> str:
        return severity(self.peak_delta_pct, (self.closed_at or now) - self.opened_at)


@dataclass(frozen=True)
class Change:
    kind: str  # opened | updated | closed
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

    @property
    def is_open(self) -> bool:
        return self.region is not None

    def step(self, at: datetime, observed: float, verdict: Verdict,
             seasonal: SeasonalBand | None = None) -> Change | None:
        magnitude = abs(verdict.z)
        band = abs(verdict.expected - observed) / magnitude if magnitude else 0.0
        if self.region is None:
            agreeing = self._agreeing(verdict, observed, seasonal)
            if not agreeing:
                self._above = 0
                return None
            self._above += 1
            overwhelming = magnitude >= self.open_at_once_z
            if self._above < self.open_after and not overwhelming and len(agreeing) < 2:
                return None
            self._above, self._below = 0, 0
            self.region = Region(region_id(self.metric, self.country, at), self.metric, self.country, at,
                                 observed, verdict.expected, verdict.expected - 2 * band, verdict.expected + 2 * band,
                                 verdict.score, verdict.z, detectors=agreeing)
            self.region.peak_delta_pct = self.region.delta_pct
            return Change("opened", self.region)
        region = self.region
        region.observed, region.score, region.z = observed, max(region.score, verdict.score), verdict.z
        if abs(region.delta_pct) > abs(region.peak_delta_pct):
            region.peak_delta_pct = region.delta_pct
        self._below = self._below + 1 if magnitude < self.close_z else 0
        if self._below >= self.close_after:
            region.closed_at = at
            self.region, self.last_closed = None, region
            self._below = 0
            return Change("closed", region)
        return Change("updated", region)

    def _agreeing(self, verdict: Verdict, observed: float, seasonal: SeasonalBand | None) -> list[str]:
        """The detectors that see this step as an anomaly, robust z first; none when z does not
        (or the seasonal band vetoes it)."""
        magnitude = abs(verdict.z)
        change_pct = 100 * abs(observed - verdict.expected) / abs(verdict.expected) if verdict.expected else 100.0
        if magnitude < self.open_z or change_pct < self.min_change_pct:
            return []
        if seasonal is not None and seasonal.contains(observed) and magnitude < self.open_at_once_z:
            return []  # usual for this time of the week
        agreeing = ["robust_z"]
        if verdict.hst >= HST_AGREES:
            agreeing.append("half_space_trees")
        if seasonal is not None and not seasonal.contains(observed):
            agreeing.append("seasonal_band")
        return agreeing
