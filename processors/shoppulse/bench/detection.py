"""``shoppulse score``: how well the sidecar catches the load generator's scripted incidents.

Each scenario (and a stretch of incident-free traffic) is recorded through a throwaway pipeline —
the load generator's events into a Kafka broker, ``shoppulse ingest``, ``shoppulse aggregate`` and
``shoppulse sidecar`` as processes, ClickHouse — and scored on the anomaly regions the sidecar wrote:
per incident, was a region opened on an affected metric in an affected country during the incident,
and how long after its start; on the incident-free run, false alerts per country-day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoppulse.devstack.recording import recorded_run
from shoppulse.loadgen.scenario import AFFECTED_METRICS, ActiveIncident, Scenario
from shoppulse.settings import Settings

WARM_UP = timedelta(minutes=20)  # traffic before the scenario's clock starts, for the baselines
MARGIN = timedelta(minutes=2)  # a region this close to an incident is not a false alert
PLAYS = datetime(2026, 11, 23, 12, tzinfo=UTC)  # a Monday noon: every run plays the same hours of the week
COUNTRIES = 12  # the store's


@dataclass(frozen=True)
class OpenedRegion:
    metric: str
    country: str
    opened_at: datetime
    delta_pct: float


@dataclass(frozen=True)
class IncidentScore:
    kind: str
    countries: list[str]
    detected: bool
    delay_s: float | None
    regions: list[OpenedRegion]


@dataclass(frozen=True)
class RunScore:
    incidents: list[IncidentScore]
    false_alerts: list[OpenedRegion]
    country_days: float


def run(settings: Settings, scenario: Scenario | None, rate: float, tail: timedelta, seed: int = 7,
        progress: Callable[[str], None] = lambda _: None) -> RunScore:
    """Record ``scenario``'s incidents after a warm-up and ``tail`` of traffic after the last one (all
    of the traffic scored, without a scenario), and score the regions the sidecar opened."""
    with recorded_run(settings, scenario, rate, WARM_UP, tail, PLAYS, seed, progress) as (recorded, client):
        rows = client.query(
            "SELECT metric, country, opened_at, if(expected = 0, 0, 100 * (observed - expected) / expected) "
            "FROM anomalies FINAL WHERE opened_at >= {start:DateTime64(3)} ORDER BY opened_at",
            parameters={"start": recorded.start.replace(tzinfo=None)}).result_rows
    opened = [OpenedRegion(str(metric), str(country), at.replace(tzinfo=UTC) if at.tzinfo is None else at, float(delta))
              for metric, country, at, delta in rows]
    return score(recorded.incidents, opened, recorded.end - recorded.start)


def score(incidents: list[ActiveIncident], opened: list[OpenedRegion], duration: timedelta) -> RunScore:
    scores, explained = [], set()
    for incident in incidents:
        countries = list(incident.incident.countries)
        metrics = AFFECTED_METRICS[incident.incident.kind]
        hits = [r for r in opened if r.metric in metrics and r.country in countries
                and incident.start <= r.opened_at <= incident.end]
        delay = min((r.opened_at - incident.start).total_seconds() for r in hits) if hits else None
        scores.append(IncidentScore(incident.incident.kind, countries, bool(hits), delay, hits))
        explained |= {id(r) for r in opened if incident.start - MARGIN <= r.opened_at <= incident.end + MARGIN}
    false_alerts = [r for r in opened if id(r) not in explained]
    return RunScore(scores, false_alerts, COUNTRIES * duration.total_seconds() / 86400)
