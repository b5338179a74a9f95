"""The sidecar's loop: read each new step of final aggregates, detect, explain, write back.

Every ``step_s`` of event time that has become final (below the freshness watermark) is scored
for every metric in every country and for the whole store. Region changes go to ``anomalies``
(ReplacingMergeTree by anomaly id: the newest row wins), the regions' incidents (``incidents.py``)
to ``incidents`` when they change and every minute while open, one insight per incident to
``insights`` when it opens and again when a region joins it (the same insight id: the newest
wording wins), and the annotation syncer is woken to mirror them into Grafana.

State is rebuilt on start by replaying the last ``warm_up`` of steps from ClickHouse, which is
deterministic: a region that was open when the sidecar died is found again with the same id, its
incident's insight has the same id, and its annotation is adopted rather than duplicated; an open
incident keeps its id and adds to its stored revenue at risk what the replay saw after it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import TypeVar

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge
from river import stats, utils

from shoppulse.sidecar.band_refit import BandRefitter, refit_bands
from shoppulse.sidecar.calendar_table import show as show_calendar
from shoppulse.sidecar.contributors import incident_contributors
from shoppulse.sidecar.detectors import ADOPTED_KINDS, USUAL, Point, Range, SeasonalBand, SeriesDetector, Verdict
from shoppulse.sidecar.drivers import Usual, drive
from shoppulse.sidecar.event_calendar import Calendar, KnownEvent, expected_range
from shoppulse.sidecar.explain import MOVED_Z, InsightPayload, Signal, correlation, scope_of, template_insight
from shoppulse.sidecar.fast_path import FAST_WINDOW_S, FastPath, judged_live
from shoppulse.sidecar.incidents import GLOBAL, Incident, IncidentChange, IncidentTracker
from shoppulse.sidecar.regions import Change, Region, RegionTracker
from shoppulse.sidecar.revenue import OVERSPEND, USUAL_STEPS, Shortfall, UsualRevenue, funnel_flows
from shoppulse.sidecar.reviewed_file import FileWatch, ReviewedFileError
from shoppulse.sidecar.sensitivity import Sensitivity
from shoppulse.sidecar.signals import (
    as_utc,
    read_live_seconds,
    read_seasonal_bands,
    read_windows,
    seasonal_bucket,
    watermark,
)

log = logging.getLogger(__name__)

STEP_S = 10
WINDOW_S = 60
REFIT_EVERY = timedelta(minutes=15)
HISTORY = 30
READ_BATCH_STEPS = 360  # an hour of steps per read while catching up
SPENDING = frozenset(OVERSPEND.values())  # the series whose usual level an incident's money at risk is measured from
POLL_S = 0.5  # how often new final steps and live seconds are looked for: the fast path's resolution
STORE_SHARE = 0.05  # countries bringing this much of the store's volume move its total with their known event
SETTLE_STEPS = 18  # after a known event: three minutes of steps (four of data) set its volumes' usual level again
INCIDENT_REFRESH_S = 60  # an open incident's row (revenue at risk, severity, story) is rewritten this often

STEPS = Counter("shoppulse_sidecar_steps", "Steps of final aggregates scored")
REGIONS = Counter("shoppulse_sidecar_regions", "Anomaly region changes", ["change", "severity"])
OPEN = Gauge("shoppulse_sidecar_open_anomalies", "Anomaly regions open now")
INCIDENTS = Counter("shoppulse_sidecar_incidents", "Incident changes", ["change", "kind"])
OPEN_INCIDENTS = Gauge("shoppulse_sidecar_open_incidents", "Incidents not yet resolved")
BEHIND = Gauge("shoppulse_sidecar_behind_seconds", "Event time between the newest final second and the last step")
LAST_STEP = Gauge("shoppulse_sidecar_last_step_seconds", "Event time (Unix seconds) up to which steps are scored")
SENSITIVITY_RELOADS = Counter("shoppulse_sidecar_sensitivity_reloads", "Reads of the sensitivity file "
                              "(detection/sensitivity.yaml) after it changed, by result", ["result"])
CALENDAR_RELOADS = Counter("shoppulse_sidecar_calendar_reloads", "Reads of the calendar of known events "
                           "(detection/calendar.yaml) after it changed, by result", ["result"])
KNOWN_EVENT_STEPS = Counter("shoppulse_sidecar_known_event_steps", "Steps of a series a known event of the calendar "
                            "moves (not judged, or judged against the levels it may take it to), by kind of event "
                            "(settling: just after one)", ["kind"])
DISPERSION = Gauge("shoppulse_sidecar_dispersion", "How much more a series' counts vary than counting alone "
                   "(the factor its counting floor is widened by, learned from its usual windows)",
                   ["metric", "country"])
LIVE_VARIANCE = Gauge("shoppulse_sidecar_live_variance_ratio", "How many times a Poisson count's variance a rate's "
                      "events vary over five live seconds (the fast path's yardstick, learned from its live seconds)",
                      ["metric", "country"])

T = TypeVar("T")

ANOMALY_COLUMNS = ["anomaly_id", "metric", "country", "opened_at", "closed_at", "severity", "observed", "expected",
                   "lower", "upper", "score", "detectors", "updated_at", "detected_at", "incident_id", "status"]
INCIDENT_COLUMNS = ["incident_id", "kind", "countries", "metrics", "anomaly_ids", "opened_at", "resolved_at",
                    "severity", "revenue_at_risk", "story", "as_of", "detected_at", "updated_at", "contributors",
                    "contributor_dimensions", "contributor_values", "contributor_shares"]
INSIGHT_COLUMNS = ["created_at", "insight_id", "anomaly_id", "metric", "country", "severity", "text", "source",
                   "payload", "incident_id"]


@dataclass
class Series:
    detector: SeriesDetector
    tracker: RegionTracker
    values: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    last: Verdict | None = None
    point: Point | None = None
    # the evidence (events, trials) of its usual windows: what a country's share of the store is (drivers.py)
    usual_count: utils.Rolling = field(default_factory=lambda: utils.Rolling(stats.Mean, window_size=USUAL_STEPS))
    # after a known event: its first values, not yet judged, whose median becomes its usual level
    settling: list[float] | None = None


def unjudged(series: Series, events: Sequence[KnownEvent], within: Range | None) -> bool:
    """Whether a step of ``series`` is scored without being judged: during known ``events`` that set no
    level it may go to (``within`` None; unless a region of its own is open: it closes as it would), and
    in the steps that settle its level after them."""
    if events:
        return within is None and not series.tracker.is_open
    return series.settling is not None


@dataclass
class Sidecar:
    client: Client
    step_s: int = STEP_S
    window_s: int = WINDOW_S
    on_change: Callable[[], None] = lambda: None
    explain: Callable[[InsightPayload, datetime, uuid.UUID, list[object]], None] | None = None
    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    last_step: datetime | None = None
    replaying: bool = False
    incidents: IncidentTracker = field(default_factory=IncidentTracker)
    insight_covers: dict[uuid.UUID, frozenset[uuid.UUID]] = field(default_factory=dict)  # the regions each told
    stored_incident_of: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    usual_revenue: dict[str, UsualRevenue] = field(default_factory=dict)  # by country (and ALL)
    sensitivity: Sensitivity = field(default_factory=Sensitivity)  # each series' open_z (sensitivity.py)
    calendar: Calendar = field(default_factory=Calendar)  # when a country's volumes are not judged (event_calendar.py)
    # called with (step end, metric, country, value, verdict) for every series scored (a backtest's view)
    on_verdict: Callable[[datetime, str, str, float, Verdict], None] | None = None
    # insights of this step to hand to ``explain`` once their template rows are written
    to_reword: list[tuple[InsightPayload, datetime, uuid.UUID, list[object]]] = field(default_factory=list)
    fast: FastPath | None = None  # provisional regions from the live seconds (fast_path.py)
    # A replay that only decides (a backtest: it writes nothing) leaves out the detectors that only add to
    # the combined score stored with a region; every region opens and closes as it would live.
    deciding_only: bool = False

    def __post_init__(self) -> None:
        self.incidents.onset_margin = timedelta(seconds=self.window_s)
        self.fast = self.fast or FastPath(self.window_s)

    def look_live(self) -> list[Region]:
        """Judge the live seconds above the final steps (the fast path) and write the provisional regions
        it opens; nothing before the final path has caught up (start() replays first)."""
        assert self.fast is not None
        if self.last_step is None:
            return []
        seconds = read_live_seconds(self.client, self.last_step - timedelta(seconds=FAST_WINDOW_S + 1))
        newest = max((s for by_second in seconds.values() for s in by_second), default=None)
        if newest is None or newest <= self.last_step:
            return []
        since = newest - timedelta(seconds=FAST_WINDOW_S)
        judged = {}
        for (metric, country), s in self.series.items():
            if not judged_live(metric, country):
                continue
            events = self._known_events(metric, s.point, country, since, newest)
            within = self._expected_range(country, events) if events else USUAL
            if s.settling is None and within is not None:  # a known event without a level: not judged
                judged[(metric, country)] = (s.detector.robust, s.tracker, within)
        opened = self.fast.look(newest, seconds, judged)
        for key in self.fast.live.keys() & judged.keys():
            LIVE_VARIANCE.labels(*key).set(self.fast.ratio(key, judged[key][0]))
        if opened:
            self._write(newest, [Change("opened", r) for r in opened])
        return opened

    def _series(self, metric: str, country: str) -> Series:
        key = (metric, country)
        if key not in self.series:
            seed = uuid.uuid5(uuid.NAMESPACE_DNS, f"{metric}.{country}").int % 2**31
            detector = SeriesDetector(seed)
            if self.deciding_only:
                detector.detectors = [d for d in detector.detectors if d.decides]
            self.series[key] = Series(detector, RegionTracker(
                metric, country, open_z=self.sensitivity.open_z(metric, country)))
        return self.series[key]

    def _not_judged(self, series: Series, point: Point, planned: KnownEvent | None) -> None:
        """A step of a known event (the ops team's own doing) is scored, not judged nor learned from. Its
        usual level is hours old when the event ends — the day has moved on meanwhile — so the first
        SETTLE_STEPS after it are not judged either: their median is its usual level from then on."""
        series.last, series.point = series.detector.score_one(point), point
        series.values.append(point.value)
        series.tracker.hold()
        if planned is not None:
            KNOWN_EVENT_STEPS.labels(planned.kind).inc()
            series.settling = []
            return
        assert series.settling is not None
        KNOWN_EVENT_STEPS.labels("settling").inc()
        series.settling.append(point.judged().value)
        if len(series.settling) >= SETTLE_STEPS:
            series.detector.robust.adopt_level(median(series.settling))
            series.settling = None

    def _known_events(self, metric: str, point: Point | None, country: str, start: datetime,
                      end: datetime) -> list[KnownEvent]:
        """The calendar's events that move this series in [``start``, ``end``]: only the volumes (rates)
        move with the number of shoppers; ratios and latencies are judged as always. The store's own
        volumes move with an event of the whole store, and with one of countries that usually bring at
        least STORE_SHARE of them (a campaign in a big market moves the store's total past any alert)."""
        if point is None or point.kind not in ADOPTED_KINDS:
            return []
        if country != GLOBAL:
            return self.calendar.events_of(country, start, end)
        return [e for e in self.calendar.during(start, end)
                if e.countries is None or self._share(metric, e.countries) >= STORE_SHARE]

    def _expected_range(self, country: str, events: Sequence[KnownEvent]) -> tuple[float, float] | None:
        """How far ``events`` may take the series (event_calendar.expected_range); the store's own volumes
        only by events of the whole store (a country's level says nothing of the total)."""
        if country == GLOBAL and any(e.countries is not None for e in events):
            return None
        return expected_range(events)

    def _share(self, metric: str, countries: Sequence[str]) -> float:
        """The share of the store's ``metric`` that ``countries`` usually bring (1 before any is known)."""
        usual = {c: float(s.usual_count.obj.get()) for (m, c), s in self.series.items()
                 if m == metric and c != GLOBAL and s.usual_count.obj.n}
        total = sum(usual.values())
        return sum(usual.get(c, 0.0) for c in countries) / total if total > 0 else 1.0

    def retune(self, sensitivity: Sensitivity) -> None:
        """Use ``sensitivity`` from the next step on, for the series seen so far and those to come (a
        region open now keeps its hysteresis: it closes as before)."""
        self.sensitivity = sensitivity
        for (metric, country), series in self.series.items():
            series.tracker.open_z = sensitivity.open_z(metric, country)

    def start(self, warm_up: timedelta) -> None:
        """Rebuild the detectors by replaying the last ``warm_up`` of final steps (writing nothing),
        then take over the regions a previous run left open: a region still open in the replay keeps
        its stored id; one that closed meanwhile is closed when the replay saw it close."""
        newest = watermark(self.client)
        if newest is None:
            return
        aligned = newest - timedelta(seconds=newest.timestamp() % self.step_s)
        self.last_step = aligned - warm_up
        self.replaying = True
        try:
            self.catch_up()
        finally:
            self.replaying = False
        self._take_over()

    def _take_over(self) -> None:
        stored = self.client.query(
            "SELECT anomaly_id, metric, country, opened_at, detected_at, incident_id, status, observed, expected, "
            "lower, upper, score FROM anomalies FINAL WHERE closed_at IS NULL").result_rows
        changes: list[Change] = []
        adopted: set[tuple[str, str]] = set()
        unseen: dict[str, Region] = {}  # stored open regions the replay never saw, closed now
        for anomaly_id, metric, country, opened_at, detected_at, incident_id, status, *last in stored:
            if incident_id is not None:  # a region closed below keeps the incident it was part of
                self.stored_incident_of[anomaly_id] = incident_id
            series = self.series.get((metric, country))
            opened = as_utc(opened_at)
            if series is not None and series.tracker.region is not None:
                region = series.tracker.region
                region.anomaly_id, region.opened_at, region.detected_at = anomaly_id, opened, detected_at
                adopted.add((metric, country))
                changes.append(Change("updated", series.tracker.region))
                continue
            if status == "provisional":  # the live seconds that opened it are not replayed: the final ones did not
                observed, expected, lower, upper, score = last
                withdrawn = Region(anomaly_id, metric, country, opened, observed, expected, lower, upper, score, 0.0,
                                   closed_at=self.last_step, detected_at=detected_at, detectors=["fast_path"],
                                   status="withdrawn")
                changes.append(Change("withdrawn", withdrawn))
                continue
            # It ended while we were away: close it when the replay saw its series calm down, as the region the
            # replay saw (under its stored name: the replay, from another first step, may have opened it a step
            # apart, and its incident holds that region); else now, with the stored numbers.
            ended = series.tracker.last_closed if series is not None else None
            if ended is not None and ended.closed_at and ended.closed_at > opened:
                ended.anomaly_id, ended.opened_at, ended.detected_at = anomaly_id, opened, detected_at
                changes.append(Change("closed", ended))
                continue
            observed, expected, lower, upper, score = last
            closing = Region(anomaly_id, metric, country, opened, observed, expected, lower, upper, score, 0.0,
                             closed_at=self.last_step, detected_at=detected_at)
            closing.peak_delta_pct = closing.delta_pct
            unseen[str(anomaly_id)] = closing
            changes.append(Change("closed", closing))
        for (metric, country), series in self.series.items():
            if series.tracker.region is not None and (metric, country) not in adopted:
                changes.append(Change("opened", series.tracker.region))  # opened while we were away
        if self.last_step is not None:
            incident_changes = self._take_over_incidents(self.last_step, unseen)
            if changes or incident_changes:
                self._write(self.last_step, changes, incident_changes)

    def _take_over_incidents(self, at: datetime, unseen: Mapping[str, Region]) -> list[IncidentChange]:
        """An incident stored as open keeps its id, start and revenue at risk when the replay rebuilt
        it (it holds one of its regions, under their stored ids), open or resolved meanwhile, and its
        stored regions the replay never saw (``unseen``, closed now) stay its members; one the replay
        did not see at all is resolved now, as it was."""
        stored = self.client.query(
            "SELECT incident_id, anomaly_ids, opened_at, detected_at, revenue_at_risk, as_of, kind, countries, "
            "metrics, severity, story, contributors, contributor_dimensions, contributor_values, contributor_shares "
            "FROM incidents FINAL WHERE resolved_at IS NULL").result_rows
        changes: list[IncidentChange] = []
        adopted: set[int] = set()
        for incident_id, anomaly_ids, opened_at, detected_at, at_risk, as_of, *rest in stored:
            members = {str(a) for a in anomaly_ids}
            live = next((i for i in [*self.incidents.incidents, *self.incidents.resolved]
                         if any(str(r.anomaly_id) in members for r in i.regions)), None)
            if live is None:
                kind, countries, metrics, severity, story, *contributors = rest
                self.client.insert("incidents", [[incident_id, kind, countries, metrics, anomaly_ids, opened_at,
                                                  at, severity, at_risk, story, as_of, detected_at,
                                                  datetime.now(UTC), *contributors]], column_names=INCIDENT_COLUMNS)
                continue
            held = {str(r.anomaly_id) for r in live.regions}
            for region in sorted((unseen[m] for m in members - held if m in unseen), key=lambda r: r.opened_at):
                # where it joined, before the first member that opened after it (the first names the incident)
                place = next((i for i, r in enumerate(live.regions) if r.opened_at > region.opened_at),
                             len(live.regions))
                live.regions.insert(place, region)
            after = as_utc(as_of)
            live.incident_id, live.opened_at, live.detected_at = incident_id, as_utc(opened_at), detected_at
            live.confirmed = True  # told already
            live.shortfall = float(at_risk) + sum(lost for step, lost in live.risk_steps if step > after)
            adopted.add(id(live))
            changes.append(IncidentChange("resolved" if live.resolved_at else "updated", live))
        changes += [IncidentChange("opened", i) for i in self.incidents.incidents
                    if id(i) not in adopted and i.confirmed]
        return changes

    def catch_up(self) -> int:
        """Score every step that became final since the last one; returns how many."""
        newest = watermark(self.client)
        if newest is None:
            return 0
        if self.last_step is None:
            self.last_step = newest - timedelta(seconds=newest.timestamp() % self.step_s) - timedelta(
                seconds=self.step_s)
        done = self.score_until(newest)
        BEHIND.set((newest - self.last_step).total_seconds())
        return done

    def score_until(self, until: datetime) -> int:
        """Score the steps after the last one up to ``until``, reading them in batches of READ_BATCH_STEPS
        (a restart's replay or a sidecar that fell behind reads hours in a few queries); returns how many."""
        assert self.last_step is not None, "score_until needs the last step scored (start() sets it)"
        done = 0
        while self.last_step + timedelta(seconds=self.step_s) <= until:
            ends: list[datetime] = []
            following = self.last_step + timedelta(seconds=self.step_s)
            while following <= until and len(ends) < READ_BATCH_STEPS:
                ends.append(following)
                following += timedelta(seconds=self.step_s)
            windows = read_windows(self.client, ends, self.window_s, self.step_s)
            bands = read_seasonal_bands(self.client, ends[0], ends[-1])
            for end in ends:
                self._score(end, windows[end], bands.get(seasonal_bucket(end), {}))
                self.last_step = end
                LAST_STEP.set(end.timestamp())
                done += 1
        return done

    def _score(self, end: datetime, windows: dict[str, dict[str, Point]],
               seasonal: dict[tuple[str, str], SeasonalBand]) -> list[Change]:
        """Score one step's points for every metric and country, with the seasonal bands where fitted;
        write the region changes unless replaying."""
        changes: list[Change] = []
        # A country in an open incident teaches none of its series: its revenue may never move far
        # enough to open a region of its own, and a baseline that learned the dip would shrink the
        # revenue at risk measured against it.
        held = self.incidents.open_countries()
        # ...and while its shoppers meet a failure (a region open on a ratio or a latency), its rates keep
        # their usual level however long it lasts: they are what recovery is measured against.
        failing = {country for (_, country), s in self.series.items()
                   if s.tracker.is_open and s.point is not None and s.point.kind not in ADOPTED_KINDS}
        for country, points in windows.items():
            for metric, bare in points.items():
                series = self._series(metric, country)
                point = replace(bare, band=seasonal.get((metric, country)))
                events = self._known_events(metric, point, country, end - timedelta(seconds=self.window_s), end)
                within = self._expected_range(country, events) if events else None
                if unjudged(series, events, within):
                    self._not_judged(series, point, events[0] if events else None)
                    continue
                if within is not None:  # judged against the levels the event may take it to, learned from never
                    verdict = series.detector.score_one(point, within)
                    KNOWN_EVENT_STEPS.labels(events[0].kind).inc()
                else:
                    verdict = series.detector.step(point, series.tracker.is_open or country in held,
                                                   may_adopt=country not in failing)
                series.values.append(point.value)
                series.last, series.point = verdict, point
                DISPERSION.labels(metric, country).set(series.detector.robust.dispersion())
                if self.on_verdict is not None:
                    self.on_verdict(end, metric, country, point.value, verdict)
                change = series.tracker.step(end, point.value, verdict)
                if change is not None:
                    changes.append(change)
                if within is not None:  # settles after the event, unless it ends inside a region of its own
                    series.settling = None if series.tracker.is_open else []
                    continue
                if not (series.tracker.is_open or country in held):
                    series.usual_count.update(point.count)
                    if metric == "revenue_per_s":
                        self.usual_revenue.setdefault(country, UsualRevenue()).learn_one(point.value,
                                                                                         funnel_flows(points))
                    elif metric in SPENDING:
                        self.usual_revenue.setdefault(country, UsualRevenue()).learn_spend(metric, point.value)
        assert self.fast is not None
        for change in changes:  # a provisional region the fast path opened becomes this one
            if change.kind == "opened" and self.fast.confirm(change.region):
                log.info("provisional anomaly confirmed", extra={"metric": change.region.metric,
                                                                 "country": change.region.country,
                                                                 "anomaly_id": str(change.region.anomaly_id)})
        changes += [Change("withdrawn", r) for r in self.fast.withdraw_unconfirmed(end)]
        # store-wide regions last: one the countries opened at this step drive joins their incident
        opened = sorted((c.region for c in changes if c.kind == "opened"), key=lambda r: r.country == GLOBAL)
        for region in opened:
            if region.country == GLOBAL:
                region.driven_by = self._drivers(region, windows)
        incident_changes = self.incidents.step(end, opened,
                                               self._lost_revenue(windows), self.step_s)
        if int(end.timestamp()) % INCIDENT_REFRESH_S == 0:
            changed = {c.incident.incident_id for c in incident_changes}
            incident_changes += [IncidentChange("updated", i) for i in self.incidents.incidents
                                 if i.incident_id not in changed and i.confirmed]
        STEPS.inc()
        if (changes or incident_changes) and not self.replaying:
            self._write(end, changes, incident_changes)
        OPEN.set(sum(1 for s in self.series.values() if s.tracker.is_open))
        OPEN_INCIDENTS.set(len(self.incidents.incidents))
        return changes

    def _drivers(self, region: Region, windows: dict[str, dict[str, Point]]) -> list[str]:
        """The countries that drive a store-wide region's move (drivers.py), among those of the unresolved
        incidents and those with a region open."""
        metric = region.metric
        store = windows.get(GLOBAL, {}).get(metric)
        if store is None:
            return []
        by_country = {c: points[metric] for c, points in windows.items() if c != GLOBAL and metric in points}
        usual = {c: Usual(s.last.expected, float(s.usual_count.obj.get())) for (m, c), s in self.series.items()
                 if m == metric and c != GLOBAL and s.last is not None and s.last.warm and s.usual_count.obj.n}
        # the suspects: each unresolved incident's countries (its regions may have closed already: the end of a flash
        # sale moves the store's mix as its start did, while the sale's late orders still come in), and each country
        # with a region open (one opened at this very step has no incident yet)
        suspects = [i.countries for i in self.incidents.incidents if i.countries != [GLOBAL]]
        suspects += [[c] for (_, c), s in self.series.items() if c != GLOBAL and s.tracker.is_open]
        return sorted({c for countries in suspects if drive(store, region.expected, by_country, usual, countries)
                       for c in countries})

    def _lost_revenue(self, windows: dict[str, dict[str, Point]]) -> dict[str, Shortfall]:
        """Expected minus observed revenue per second, by country (and ALL), at this step."""
        lost = {}
        for country, points in windows.items():
            series = self.series.get(("revenue_per_s", country))
            if series is not None and series.last is not None and series.last.warm and series.point is not None:
                usual = self.usual_revenue.setdefault(country, UsualRevenue())
                lost[country] = usual.shortfall(series.point.value, series.point.band, series.last.expected,
                                                funnel_flows(points),
                                                {s: points[s].value for s in SPENDING if s in points})
        return lost

    def _write(self, at: datetime, changes: list[Change], incident_changes: Sequence[IncidentChange] = ()) -> None:
        now = datetime.now(UTC)
        anomalies, insights = [], []
        # an incident told for the first time: its regions that closed before it was confirmed are written again
        # with its id (the open ones are written at every step)
        written = {id(c.region) for c in changes}
        changes = [*changes, *(Change("updated", r) for c in incident_changes if c.kind == "opened"
                               for r in c.incident.regions if id(r) not in written)]
        for change in changes:
            region = change.region
            region.detected_at = region.detected_at or now
            severity = region.severity(at)
            REGIONS.labels("provisional" if region.status == "provisional" else change.kind, severity).inc()
            incident = self.incidents.incident_of(region)
            anomalies.append([region.anomaly_id, region.metric, region.country, region.opened_at, region.closed_at,
                              severity, region.observed, region.expected, region.lower, region.upper, region.score,
                              region.detectors, now, region.detected_at,
                              incident.incident_id if incident is not None and incident.confirmed
                              else self.stored_incident_of.get(region.anomaly_id), region.status])
            if change.kind == "opened":
                log.info("anomaly opened", extra={"metric": region.metric, "country": region.country,
                                                  "severity": severity, "anomaly_id": str(region.anomaly_id)})
            elif change.kind in ("closed", "withdrawn"):
                log.info(f"anomaly {change.kind}", extra={"metric": region.metric, "country": region.country,
                                                          "anomaly_id": str(region.anomaly_id)})
        incident_rows = [self._incident_row(c, at, now) for c in incident_changes]
        for incident_change in incident_changes:  # one insight per incident, reworded when it grows
            incident = incident_change.incident
            covered = frozenset(r.anomaly_id for r in incident.regions)
            if incident_change.kind == "resolved":
                self.insight_covers.pop(incident.incident_id, None)
            elif self.insight_covers.get(incident.incident_id) != covered:
                insights.append(self._insight(incident, at))
                self.insight_covers[incident.incident_id] = covered
        if anomalies:
            self.client.insert("anomalies", anomalies, column_names=ANOMALY_COLUMNS)
        if insights:
            self.client.insert("insights", insights, column_names=INSIGHT_COLUMNS)
        if self.explain is not None:
            for rewording in self.to_reword:
                self.explain(*rewording)
        self.to_reword.clear()
        if incident_rows:
            self.client.insert("incidents", incident_rows, column_names=INCIDENT_COLUMNS)
        self.on_change()

    def _incident_row(self, change: IncidentChange, at: datetime, now: datetime) -> list[object]:
        incident: Incident = change.incident
        incident.detected_at = incident.detected_at or now
        ranked = incident_contributors(self.client, incident.kind, incident.countries, incident.opened_at,
                                       incident.resolved_at or at)[:3]
        incident.contributors = [c.describe(incident.kind) for c in ranked]
        if change.kind != "updated":
            INCIDENTS.labels(change.kind, incident.kind).inc()
            log.info(f"incident {change.kind}", extra={"incident_id": str(incident.incident_id),
                                                        "kind": incident.kind, "countries": incident.countries})
        return [incident.incident_id, incident.kind, incident.countries, incident.metrics,
                [r.anomaly_id for r in incident.regions], incident.opened_at, incident.resolved_at,
                incident.severity(at), round(incident.revenue_at_risk, 2), incident.story(at), at,
                incident.detected_at, now, incident.contributors, [c.dimension for c in ranked],
                [c.value for c in ranked], [round(c.share, 4) for c in ranked]]

    def correlated(self, region: Region) -> list[Signal]:
        """Signals that moved with the region's: the same country's others, the same metric elsewhere."""
        mine = self.series[(region.metric, region.country)]
        found: list[Signal] = []
        for (metric, country), series in self.series.items():
            if (metric, country) == (region.metric, region.country) or series.last is None:
                continue
            if metric != region.metric and country != region.country:
                continue
            if abs(series.last.z) < MOVED_Z:
                continue
            expected = series.last.expected
            delta = 100.0 * (series.values[-1] - expected) / expected if expected else 0.0
            found.append(Signal(metric, country, series.last.z, delta, correlation(mine.values, series.values)))
        return sorted(found, key=lambda s: -abs(s.z))

    def _peers(self, metric: str) -> list[Signal]:
        return [Signal(m, c, s.last.z, 0.0, 0.0) for (m, c), s in self.series.items()
                if m == metric and s.last is not None]

    def _insight(self, incident: Incident, at: datetime) -> list[object]:
        """The incident's insight: its first region told with what moved with it, the other regions of
        the incident and its top contributor; one row per incident (the same id, replaced as it grows)."""
        lead = incident.regions[0]
        moved = self.correlated(lead)
        payload = InsightPayload(
            lead.metric, lead.country, round(lead.observed, 6), round(lead.expected, 6),
            round(lead.delta_pct, 1), f"{self.window_s} s", scope_of(lead.metric, lead.country, lead.z,
                                                                    self._peers(lead.metric)),
            [{"metric": s.metric, "country": s.country, "z": round(s.z, 1), "delta_pct": round(s.delta_pct, 1),
              "correlation": round(s.correlation, 2)} for s in moved[:8]],
            incident.kind,
            [{"metric": r.metric, "country": r.country, "delta_pct": round(r.peak_delta_pct, 1)}
             for r in incident.regions[1:]],
            incident.contributors[:1])
        text = template_insight(payload, lead.opened_at)
        insight_id = uuid.uuid5(incident.incident_id, "insight")
        row: list[object] = [incident.opened_at, insight_id, lead.anomaly_id, lead.metric, lead.country,
                             incident.severity(at), text, "template", json.dumps(payload.as_dict(), sort_keys=True),
                             incident.incident_id]
        if self.explain is not None:  # the model's wording replaces the template's, once that is written
            self.to_reword.append((payload, lead.opened_at, lead.anomaly_id, row))
        return row


def run(client: Client, should_stop: Callable[[], bool], on_change: Callable[[], None],
        warm_up: timedelta = timedelta(minutes=30), poll_s: float = POLL_S,
        refit_every: timedelta = REFIT_EVERY,
        explain: Callable[[InsightPayload, datetime, uuid.UUID, list[object]], None] | None = None,
        sensitivity: FileWatch[Sensitivity] | None = None, calendar: FileWatch[Calendar] | None = None,
        connect: Callable[[], Client] | None = None) -> None:
    """Detect until ``should_stop``: new final steps and the live seconds at every poll; the seasonal
    bands refitted every ``refit_every`` on a thread of their own (with a client from ``connect``)."""
    sidecar = Sidecar(client, on_change=on_change, explain=explain)
    if sensitivity is not None:
        retune(sidecar, sensitivity, starting=True)
    unshown = replan(sidecar, calendar, starting=True) if calendar is not None else None
    refitter = BandRefitter(connect, refit_every) if connect is not None else None
    if refitter is not None:
        refitter.start()
    next_refit = time.monotonic()
    try:
        sidecar.start(warm_up)
        log.info("sidecar detecting", extra={"step_s": sidecar.step_s, "window_s": sidecar.window_s,
                                             "series": len(sidecar.series)})
        while not should_stop():
            if sensitivity is not None:
                retune(sidecar, sensitivity)
            if calendar is not None:
                unshown = replan(sidecar, calendar) or unshown
            try:
                if unshown is not None:  # for the wall display; ClickHouse away: again at the next poll
                    show_calendar(client, unshown, datetime.now(UTC))
                    unshown = None
                if refitter is None and time.monotonic() >= next_refit:  # no client of its own: inline
                    next_refit = time.monotonic() + refit_every.total_seconds()
                    refit_bands(client)
                sidecar.catch_up()
                sidecar.look_live()
            except Exception as exc:  # ClickHouse away: keep the state, try again
                log.warning("sidecar step failed, retrying", extra={"error": str(exc)[:200]})
                time.sleep(5)
            time.sleep(poll_s)
    finally:
        if refitter is not None:
            refitter.stop()


def retune(sidecar: Sidecar, watch: FileWatch[Sensitivity], starting: bool = False) -> None:
    """Apply the sensitivity file when it changed (see ``_reread``)."""
    changed = _reread(watch, SENSITIVITY_RELOADS, "sensitivity", starting)
    if changed is not None:
        sidecar.retune(changed)
        log.info("sensitivity applied", extra={"file": str(watch.path), "default_open_z": changed.default,
                                               "tuned_series": len(changed.by_series)})


def replan(sidecar: Sidecar, watch: FileWatch[Calendar], starting: bool = False) -> Calendar | None:
    """Apply the calendar of known events when it changed (see ``_reread``); returns the one applied."""
    changed = _reread(watch, CALENDAR_RELOADS, "calendar", starting)
    if changed is not None:
        sidecar.calendar = changed
        log.info("calendar applied", extra={"file": str(watch.path), "events": len(changed.events)})
    return changed


def _reread(watch: FileWatch[T], reloads: Counter, what: str, starting: bool) -> T | None:
    """What a reviewed file says when it changed. At start a file that cannot be used stops the sidecar
    (ReviewedFileError); later one is logged and the one in use is kept, as Prometheus keeps its rules
    when a reload fails."""
    try:
        changed = watch.current() if starting else watch.changed()
    except ReviewedFileError as exc:
        reloads.labels("failed").inc()
        if starting:
            raise
        log.error(f"{what} file not applied, keeping the one in use", extra={"error": str(exc)})
        return None
    if changed is not None:
        reloads.labels("applied").inc()
    return changed
