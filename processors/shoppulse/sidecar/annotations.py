"""Incidents and anomaly regions as Grafana annotations: exactly one each, its end set when it ends.

An incident is drawn across the whole wall dashboard (every panel shows it) when Grafana has that
dashboard, organisation-wide otherwise (said once in the log): tags ``incident``, ``kind:…``, a
``country:…`` per country, ``severity:…``, ``incident_id:…``, its story as the text. Its anomaly
regions are drawn organisation-wide, tagged ``anomaly`` (and their incident's ``incident_id:…``),
so the dashboards show them only behind their "Anomaly regions" tag filter: the wall tells one
story per cause, and the detail is a toggle away. A region says its move in numbers (and whether the
live seconds showed it first), or its insight where it leads an incident.

The ``anomalies`` and ``incidents`` tables are the durable queue: a sync pass reads those whose
annotation is missing or whose end has not reached Grafana yet (``grafana_annotations`` records
what was done, by anomaly or incident id) and makes Grafana match. Each step is idempotent: before
creating, the annotation is looked up by its id tag across the organisation, so a crash between
Grafana's answer and our record never makes a second one, wherever the first was drawn. One
deleted in Grafana is drawn again when it ends. An anomaly whose annotation Grafana
refuses is parked with its reason and retried on its own back-off, never blocking the others; when
Grafana as a whole is unreachable the pass stops and backs off. Detection never waits for any of it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge, Histogram

from shoppulse.grafana_api import GrafanaClient, GrafanaError, GrafanaTimeoutError
from shoppulse.sidecar.explain import region_text

log = logging.getLogger(__name__)

# Incidents are drawn across this dashboard; `shoppulse dashboards lint` checks it exists and shows
# the anomaly regions behind a tag filter.
WALL_DASHBOARD = "shoppulse-store-live"
REGIONS_TAG = "anomaly"
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # while Grafana as a whole fails
PARK_BACKOFF_S = (5.0, 15.0, 60.0, 300.0, 900.0)  # while Grafana refuses one anomaly's annotation
DASHBOARD_RECHECK_S = 300.0
# What the sidecar's token needs (Grafana's RBAC actions): draw and close regions, find them again, delete
# the annotation of a provisional region the final windows withdrew.
REQUIRED_PERMISSIONS = ("annotations:create", "annotations:write", "annotations:read", "annotations:delete",
                        "dashboards:read")

ANNOTATIONS = Counter("shoppulse_sidecar_annotations", "Grafana annotation writes", ["action", "outcome"])
PENDING = Gauge("shoppulse_sidecar_annotations_pending",
                "Anomalies and incidents whose Grafana annotation is not up to date")
PARKED = Gauge("shoppulse_sidecar_annotations_parked",
               "Anomalies whose annotation Grafana refused, waiting for their own retry")
ONSET_TO_ANNOTATION = Histogram("shoppulse_sidecar_onset_to_annotation_seconds",
                                "From an anomaly's detection to its annotation in Grafana",
                                buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))


@dataclass(frozen=True)
class PendingAnnotation:
    anomaly_id: uuid.UUID  # the anomaly's id, or the incident's
    metric: str  # an incident's kind
    country: str  # an incident's countries, comma-separated
    severity: str
    opened_at: datetime
    closed_at: datetime | None
    text: str
    annotation_id: int | None
    detected_at: datetime
    incident_id: uuid.UUID | None = None  # the incident an anomaly is part of, or the incident's own
    is_incident: bool = False
    withdrawn: bool = False  # a provisional region the final windows did not confirm: its annotation goes
    first_text: str = ""  # what an anomaly without an insight of its own says when drawn (its move in numbers)


def _ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def tags(item: PendingAnnotation) -> list[str]:
    if item.is_incident:
        return ["incident", f"kind:{item.metric}", *(f"country:{c}" for c in item.country.split(",")),
                f"severity:{item.severity}", f"incident_id:{item.anomaly_id}"]
    part_of = [f"incident_id:{item.incident_id}"] if item.incident_id else []
    return [REGIONS_TAG, f"metric:{item.metric}", f"country:{item.country}", f"severity:{item.severity}",
            f"anomaly_id:{item.anomaly_id}", *part_of]


def identity(item: PendingAnnotation) -> list[str]:
    """The tags that find this item's annotation and no other (an anomaly carries its incident's id too)."""
    return ["incident", f"incident_id:{item.anomaly_id}"] if item.is_incident else [f"anomaly_id:{item.anomaly_id}"]


SYNCED = ("LEFT JOIN (SELECT anomaly_id, argMax(annotation_id, synced_at) AS annotation_id, "
          "                  argMax(closed_synced, synced_at) AS closed_synced "
          "           FROM grafana_annotations GROUP BY anomaly_id) AS g ON g.anomaly_id = {id} ")


def pending(client: Client) -> list[PendingAnnotation]:
    """Incidents and anomalies whose annotation is missing, or still open in Grafana while they ended:
    incidents first (the wall's story), each kind in the order it began."""
    incidents = client.query(
        "SELECT i.incident_id, i.kind, arrayStringConcat(i.countries, ','), i.severity, i.opened_at, "
        "       i.resolved_at, i.story, g.annotation_id, i.detected_at "
        "FROM (SELECT * FROM incidents FINAL) AS i " + SYNCED.format(id="i.incident_id") +
        "WHERE g.annotation_id = 0 OR (i.resolved_at IS NOT NULL AND g.closed_synced = 0) "
        "ORDER BY i.opened_at", settings={"join_use_nulls": 0}).result_rows
    anomalies = client.query(
        "SELECT a.anomaly_id, a.metric, a.country, a.severity, a.opened_at, a.closed_at, "
        "       ifNull(i.text, ''), g.annotation_id, a.detected_at, a.incident_id, a.status = 'withdrawn', "
        "       a.observed, a.expected, a.status = 'provisional' "
        "FROM (SELECT * FROM anomalies FINAL) AS a "
        "LEFT JOIN (SELECT anomaly_id, any(text) AS text FROM insights GROUP BY anomaly_id) AS i "
        "  ON i.anomaly_id = a.anomaly_id " + SYNCED.format(id="a.anomaly_id") +
        "WHERE (a.status != 'withdrawn' "
        "       AND (g.annotation_id = 0 OR (a.closed_at IS NOT NULL AND g.closed_synced = 0))) "
        "   OR (a.status = 'withdrawn' AND g.closed_synced = 0) "
        "ORDER BY a.opened_at", settings={"join_use_nulls": 0}).result_rows
    return ([PendingAnnotation(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]) or None, r[8], r[0], True,
                               first_text=f"Incident: {r[1].replace('_', ' ')} in {r[2].replace(',', ', ')}")
             for r in incidents] +
            [PendingAnnotation(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]) or None, r[8], r[9],
                               withdrawn=bool(r[10]), first_text=region_text(r[1], r[2], r[11], r[12], bool(r[13])))
             for r in anomalies])


def _record(client: Client, item: PendingAnnotation, annotation_id: int, closed: bool) -> None:
    client.insert("grafana_annotations", [[item.anomaly_id, annotation_id, int(closed), datetime.now(UTC)]],
                  column_names=["anomaly_id", "annotation_id", "closed_synced", "synced_at"])


def grafana_wide(exc: GrafanaError) -> bool:
    """A failure of Grafana as a whole (unreachable, overloaded, timing out), not of one annotation."""
    return exc.status is None or exc.status == 429 or exc.status >= 500 or isinstance(exc, GrafanaTimeoutError)


@dataclass
class Parked:
    """An anomaly whose annotation Grafana keeps refusing: retried later, never blocking the others."""

    attempts: int
    retry_at: float
    reason: str


def missing_permissions(grafana: GrafanaClient) -> list[str] | None:
    """The permissions the syncer needs that the token lacks; None when Grafana does not say."""
    held = grafana.permissions()
    if held is None:
        return None
    return [action for action in REQUIRED_PERMISSIONS if action not in held]


class AnnotationSync:
    """Makes Grafana match the anomalies table, one anomaly at a time, remembering which ones fail."""

    def __init__(self, client: Client, grafana: GrafanaClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self._grafana, self._clock = client, grafana, clock
        self.parked: dict[uuid.UUID, Parked] = {}
        self._dashboards: dict[str, tuple[float, bool]] = {}  # uid -> (checked at, readable)

    def run_pass(self) -> int:
        """One pass; returns how many anomalies still wait (0 when Grafana is up to date). Stops early
        when Grafana as a whole fails: the other anomalies would fail the same way."""
        items = pending(self._client)
        PENDING.set(len(items))
        now = self._clock()
        waiting = 0
        for index, item in enumerate(items):
            parked = self.parked.get(item.anomaly_id)
            if parked is not None and parked.retry_at > now:
                waiting += 1
                continue
            try:
                self.sync_one(item)
            except GrafanaError as exc:
                ANNOTATIONS.labels("write", "error").inc()
                if grafana_wide(exc):
                    log.warning("grafana unavailable, annotations wait", extra={"error": str(exc)[:200]})
                    return waiting + len(items) - index
                self._park(item, exc)
                waiting += 1
                continue
            self.parked.pop(item.anomaly_id, None)
        PARKED.set(len(self.parked))
        return waiting

    def _park(self, item: PendingAnnotation, exc: GrafanaError) -> None:
        attempts = self.parked[item.anomaly_id].attempts + 1 if item.anomaly_id in self.parked else 1
        delay = PARK_BACKOFF_S[min(attempts, len(PARK_BACKOFF_S)) - 1]
        self.parked[item.anomaly_id] = Parked(attempts, self._clock() + delay, str(exc)[:200])
        PARKED.set(len(self.parked))
        log.warning("grafana refused an annotation; parked, the others go on",
                    extra={"anomaly_id": str(item.anomaly_id), "attempts": attempts, "retry_in_s": delay,
                           "error": str(exc)[:200]})

    def _dashboard_readable(self, uid: str) -> bool:
        """Whether Grafana has the dashboard and lets us read it (checked every few minutes)."""
        checked = self._dashboards.get(uid)
        if checked is not None and self._clock() - checked[0] < DASHBOARD_RECHECK_S:
            return checked[1]
        try:
            readable = self._grafana.get_dashboard(uid) is not None
        except GrafanaError as exc:
            if exc.status != 403:
                raise
            readable = False
        if not readable and (checked is None or checked[1]):
            log.warning("dashboard not found in Grafana (not provisioned there, or the token may not read it): "
                        "incidents go organisation-wide until it is",
                        extra={"dashboard": uid})
        self._dashboards[uid] = (self._clock(), readable)
        return readable

    def _adopt_or_create(self, item: PendingAnnotation) -> tuple[int, bool]:
        """The annotation of this anomaly or incident: one Grafana already has (found by its id tag,
        wherever it is), else a new one. True when it was created in its current state."""
        found = self._grafana.find_annotations(identity(item))
        if found:
            ANNOTATIONS.labels("adopt", "ok").inc()
            return int(found[0]["id"]), False
        body: dict[str, Any] = {"time": _ms(item.opened_at), "timeEnd": _ms(item.closed_at or item.opened_at),
                                "tags": tags(item), "text": item.text or item.first_text}
        if item.is_incident and self._dashboard_readable(WALL_DASHBOARD):
            body["dashboardUID"] = WALL_DASHBOARD
        annotation_id = self._grafana.create_annotation(body)
        ANNOTATIONS.labels("create", "ok").inc()
        ONSET_TO_ANNOTATION.observe(max(0.0, (datetime.now(UTC) - item.detected_at.replace(
            tzinfo=item.detected_at.tzinfo or UTC)).total_seconds()))
        return annotation_id, True

    def sync_one(self, item: PendingAnnotation) -> None:
        if item.withdrawn:
            self._delete(item)
            return
        annotation_id = item.annotation_id
        if annotation_id is None:
            annotation_id, current = self._adopt_or_create(item)
            _record(self._client, item, annotation_id, closed=current and item.closed_at is not None)
            if current:
                return
        if item.closed_at is None:
            return
        ending = {"timeEnd": _ms(item.closed_at), "tags": tags(item), **({"text": item.text} if item.text else {})}
        try:
            self._grafana.patch_annotation(annotation_id, ending)
        except GrafanaError as exc:
            if not self._gone(item, annotation_id, exc):
                raise
            # deleted in Grafana: the region is drawn again, once (adopted if another copy exists)
            log.warning("annotation gone from Grafana; drawn again",
                        extra={"anomaly_id": str(item.anomaly_id), "annotation_id": annotation_id})
            ANNOTATIONS.labels("recreate", "ok").inc()
            annotation_id, current = self._adopt_or_create(item)
            if not current:
                self._grafana.patch_annotation(annotation_id, ending)
        ANNOTATIONS.labels("close", "ok").inc()
        _record(self._client, item, annotation_id, closed=True)

    def _delete(self, item: PendingAnnotation) -> None:
        """A withdrawn region's annotation is deleted: the one recorded and any other copy with its id tag (a
        crash between Grafana's answer and our record leaves one unrecorded); then recorded as done."""
        copies = {int(a["id"]) for a in self._grafana.find_annotations(identity(item))}
        for annotation_id in sorted(copies | ({item.annotation_id} if item.annotation_id else set())):
            try:
                self._grafana.delete_annotation(annotation_id)
            except GrafanaError as exc:
                if not self._gone(item, annotation_id, exc, copies):
                    raise
                continue  # deleted already
            ANNOTATIONS.labels("delete", "ok").inc()
        _record(self._client, item, item.annotation_id or 0, closed=True)

    def _gone(self, item: PendingAnnotation, annotation_id: int, refused: GrafanaError,
              copies: set[int] | None = None) -> bool:
        """Whether Grafana no longer has the annotation a PATCH or DELETE was refused for: 404 — or 403 for
        one its id tag no longer finds (among ``copies`` when the caller has just looked them up). Grafana
        checks a token whose grant is scoped to annotation types (``annotations:type:dashboard``) by
        resolving the annotation's type first, and answers 403 when the annotation is missing; only a
        wildcard grant (``annotations:*``) reaches the 404."""
        if refused.status == 404:
            return True
        if refused.status != 403:
            return False
        if copies is None:
            copies = {int(a["id"]) for a in self._grafana.find_annotations(identity(item))}
        return annotation_id not in copies


def sync(client: Client, grafana: GrafanaClient) -> int:
    """One pass with no memory of earlier ones; returns how many anomalies and incidents still wait."""
    return AnnotationSync(client, grafana).run_pass()


class AnnotationSyncer(threading.Thread):
    """Runs passes whenever asked (``wake``) and on a timer, backing off while Grafana as a whole fails."""

    def __init__(self, connect: Callable[[], Client], grafana: GrafanaClient, interval_s: float = 1.0) -> None:
        super().__init__(name="grafana-annotations", daemon=True)
        self._connect, self._grafana, self._interval = connect, grafana, interval_s
        self._wake, self._stop = threading.Event(), threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _check_permissions(self) -> None:
        try:
            missing = missing_permissions(self._grafana)
        except GrafanaError as exc:
            log.warning("cannot read the token's permissions from Grafana", extra={"error": str(exc)[:200]})
            return
        if missing:
            log.warning(f"GRAFANA_TOKEN lacks {', '.join(missing)}: give its service account these permissions "
                        "(annotations:create and annotations:write draw and close regions, annotations:read and "
                        "dashboards:read find them again, annotations:delete removes a withdrawn provisional "
                        "region's)", extra={"missing": missing})

    def run(self) -> None:
        self._check_permissions()
        client = self._connect()
        state = AnnotationSync(client, self._grafana)
        failures = 0
        while not self._stop.is_set():
            try:
                left = state.run_pass()
                grafana_down = left > len(state.parked)
            except Exception as exc:  # ClickHouse away: same treatment, try again later
                log.warning("annotation sync failed", extra={"error": str(exc)[:200]})
                grafana_down = True
            failures = failures + 1 if grafana_down else 0
            delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1] if failures else self._interval
            self._wake.wait(delay)
            self._wake.clear()
        client.close()
