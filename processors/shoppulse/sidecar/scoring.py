"""``shoppulse score``: how well the sidecar's detectors catch the load generator's scripted incidents.

The load generator's own event stream (same sessions, seasonality and incident effects as a live
run) is played on a simulated clock, folded per country and second into the counters the
aggregation writes (amounts converted to USD with the same rates table), and scored step by step
by the sidecar's detectors exactly as they run on ClickHouse's final windows. Per incident: was a
region opened on an affected metric in an affected country during the incident, and how long after
its start. On a separate incident-free run: false alerts per country-day.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shoppulse.aggregate.histogram import bucket
from shoppulse.aggregate.store_metrics import REVENUE_UNITS
from shoppulse.events.currency import load_rates
from shoppulse.loadgen.generator import EventStream
from shoppulse.loadgen.scenario import AFFECTED_METRICS, ActiveIncident, Scenario, schedule
from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.detectors import Point
from shoppulse.sidecar.regions import Region
from shoppulse.sidecar.signals import Totals, points_by_country

WARM_UP = timedelta(minutes=20)  # traffic before the scenario's clock starts, for the baselines
MARGIN = timedelta(minutes=2)  # a region this close to an incident is not a false alert


@dataclass
class Second:
    totals: dict[str, Totals]
    latency: dict[str, dict[int, int]]

    @classmethod
    def of_windows(cls, windows: dict[str, dict[str, Any]]) -> Second:
        """From the aggregation's closed 1 s windows of one second (country -> StoreMetrics window)."""
        totals, latency = {}, {}
        for country, window in windows.items():
            m = window["metrics"]
            totals[country] = Totals(m.get("orders", 0), m.get("revenue_units", 0) / REVENUE_UNITS,
                                     m.get("product_views", 0), m.get("cart_adds", 0), m.get("payment_attempts", 0),
                                     m.get("payment_failures", 0), m.get("checkouts", 0))
            histogram: dict[int, int] = {}
            for gateway in m["payments"].values():
                for key, count in gateway["latency"].items():
                    histogram[int(key)] = histogram.get(int(key), 0) + count
            latency[country] = histogram
        return cls(totals, latency)


def seconds_of_traffic(stream: EventStream, start: datetime, seconds: int, rate: float) -> Iterator[Second]:
    """The generator's events second by second, folded per country into the aggregation's counters."""
    rates = load_rates()
    for offset in range(seconds):
        now = start + timedelta(seconds=offset)
        counts: dict[str, list[float]] = defaultdict(lambda: [0.0] * 7)
        latency: dict[str, dict[int, int]] = defaultdict(dict)
        for _ in range(int(rate * stream.load(now))):
            emission = stream.next(now)
            if emission.kind != "valid":
                continue
            event = json.loads(emission.value)
            country, kind = event["country"], event["event_type"]
            row = counts[country]  # orders, revenue, views, carts, attempts, failures, checkouts
            if kind == "purchase":
                row[0] += 1
                row[1] += float(rates.to_reporting(Decimal(event["amount"]), event["currency"]))
            elif kind == "product_view":
                row[2] += 1
            elif kind == "add_to_cart":
                row[3] += 1
            elif kind == "checkout_start":
                row[6] += 1
            elif kind == "payment_attempt":
                row[4] += 1
                row[5] += event["result"] == "failure"
                key = bucket(event["latency_ms"])
                latency[country][key] = latency[country].get(key, 0) + 1
        yield Second({c: Totals(*v) for c, v in counts.items()}, dict(latency))


@dataclass(frozen=True)
class IncidentScore:
    kind: str
    countries: list[str]
    detected: bool
    delay_s: float | None
    regions: list[Region]


@dataclass(frozen=True)
class RunScore:
    incidents: list[IncidentScore]
    false_alerts: list[Region]
    country_days: float


def run(scenario: Scenario | None, rate: float, duration: timedelta, seed: int = 7,
        start: datetime | None = None, progress: Callable[[str], None] = lambda _: None,
        step_s: int | None = None, window_s: int | None = None) -> RunScore:
    """Simulate ``duration`` of traffic (after a warm-up) with ``scenario``'s incidents and score it."""
    start = start or datetime(2026, 11, 23, 12, tzinfo=UTC)
    incidents = schedule(scenario, start) if scenario else []
    stream = EventStream(rate, incidents=incidents, seed=seed)
    sidecar = Sidecar(None, record=False)
    sidecar.step_s, sidecar.window_s = step_s or sidecar.step_s, window_s or sidecar.window_s
    window, step = sidecar.window_s, sidecar.step_s
    recent: list[Second] = []
    opened: list[Region] = []
    begin = start - WARM_UP
    total = int((duration + WARM_UP).total_seconds())
    for offset, second in enumerate(seconds_of_traffic(stream, begin, total, rate)):
        recent.append(second)
        del recent[:-window]
        end = begin + timedelta(seconds=offset + 1)
        if (offset + 1) % step or len(recent) < window:
            continue
        changes = sidecar.score_windows(end, windows_of(recent, window))
        opened += [c.region for c in changes if c.kind == "opened" and end >= start]
        if (offset + 1) % 600 == 0:
            progress(f"simulated {(offset + 1) / 60:.0f} of {total / 60:.0f} minutes")
    return _score(incidents, opened, duration)


def windows_of(recent: list[Second], window_s: int) -> dict[str, dict[str, Point]]:
    """The recent seconds summed per country, as ClickHouse's window query would give them."""
    totals: dict[str, Totals] = defaultdict(Totals)
    latency: dict[str, dict[int, int]] = defaultdict(dict)
    for second in recent:
        for country, counted in second.totals.items():
            totals[country] = totals[country] + counted
        for country, histogram in second.latency.items():
            for key, count in histogram.items():
                latency[country][key] = latency[country].get(key, 0) + count
    return points_by_country(totals, latency, window_s)


def _score(incidents: list[ActiveIncident], opened: list[Region], duration: timedelta) -> RunScore:
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
    country_days = 12 * duration.total_seconds() / 86400  # the store's 12 countries
    return RunScore(scores, false_alerts, country_days)
