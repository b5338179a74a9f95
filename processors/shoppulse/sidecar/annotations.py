"""Anomaly regions as Grafana annotations: exactly one per anomaly, its end set when it closes.

The ``anomalies`` table is the durable queue: a sync pass reads the anomalies whose annotation is
missing or whose close has not reached Grafana yet (``grafana_annotations`` records what was
done) and makes Grafana match. Each step is idempotent: before creating, the annotation is looked
up by its ``anomaly_id:<uuid>`` tag, so a crash between Grafana's answer and our record never
makes a second one. The pass runs in its own thread; when Grafana is unreachable it backs off and
tries again — detection never waits for it, and nothing is lost.
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

from shoppulse.grafana_api import GrafanaClient, GrafanaError

log = logging.getLogger(__name__)

WALL_DASHBOARD = "shoppulse-store-live"
# Where each metric's anomalies are drawn: the panel that shows the metric over time, else the
# dashboard as a whole (panel None). `shoppulse dashboards lint` checks these panels exist.
PANELS: dict[str, tuple[str, int | None]] = {"orders_per_s": (WALL_DASHBOARD, 7)}
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)

ANNOTATIONS = Counter("shoppulse_sidecar_annotations", "Grafana annotation writes", ["action", "outcome"])
PENDING = Gauge("shoppulse_sidecar_annotations_pending", "Anomalies whose Grafana annotation is not up to date")
ONSET_TO_ANNOTATION = Histogram("shoppulse_sidecar_onset_to_annotation_seconds",
                                "From an anomaly's detection to its annotation in Grafana",
                                buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))


@dataclass(frozen=True)
class PendingAnnotation:
    anomaly_id: uuid.UUID
    metric: str
    country: str
    severity: str
    opened_at: datetime
    closed_at: datetime | None
    text: str
    annotation_id: int | None
    detected_at: datetime


def _ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def tags(item: PendingAnnotation) -> list[str]:
    return ["anomaly", f"metric:{item.metric}", f"country:{item.country}", f"severity:{item.severity}",
            f"anomaly_id:{item.anomaly_id}"]


def pending(client: Client) -> list[PendingAnnotation]:
    """Anomalies whose annotation is missing or still open in Grafana while the anomaly has closed."""
    rows = client.query(
        "SELECT a.anomaly_id, a.metric, a.country, a.severity, a.opened_at, a.closed_at, "
        "       ifNull(i.text, ''), g.annotation_id, a.detected_at "
        "FROM (SELECT * FROM anomalies FINAL) AS a "
        "LEFT JOIN (SELECT anomaly_id, any(text) AS text FROM insights GROUP BY anomaly_id) AS i "
        "  ON i.anomaly_id = a.anomaly_id "
        "LEFT JOIN (SELECT anomaly_id, argMax(annotation_id, synced_at) AS annotation_id, "
        "                  argMax(closed_synced, synced_at) AS closed_synced "
        "           FROM grafana_annotations GROUP BY anomaly_id) AS g ON g.anomaly_id = a.anomaly_id "
        "WHERE g.annotation_id = 0 OR (a.closed_at IS NOT NULL AND g.closed_synced = 0) "
        "ORDER BY a.opened_at", settings={"join_use_nulls": 0}).result_rows
    return [PendingAnnotation(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]) or None, r[8]) for r in rows]


def _record(client: Client, item: PendingAnnotation, annotation_id: int, closed: bool) -> None:
    client.insert("grafana_annotations", [[item.anomaly_id, annotation_id, int(closed), datetime.now(UTC)]],
                  column_names=["anomaly_id", "annotation_id", "closed_synced", "synced_at"])


def sync_one(client: Client, grafana: GrafanaClient, item: PendingAnnotation) -> None:
    dashboard, panel = PANELS.get(item.metric, (WALL_DASHBOARD, None))
    annotation_id = item.annotation_id
    if annotation_id is None:
        found = grafana.find_annotations([f"anomaly_id:{item.anomaly_id}"], dashboard)
        if found:
            annotation_id = int(found[0]["id"])
            ANNOTATIONS.labels("adopt", "ok").inc()
        else:
            body: dict[str, Any] = {"dashboardUID": dashboard, "time": _ms(item.opened_at),
                                    "timeEnd": _ms(item.closed_at or item.opened_at), "tags": tags(item),
                                    "text": item.text or f"{item.metric} anomaly in {item.country}"}
            if panel is not None:
                body["panelId"] = panel
            annotation_id = grafana.create_annotation(body)
            ANNOTATIONS.labels("create", "ok").inc()
            ONSET_TO_ANNOTATION.observe(max(0.0, (datetime.now(UTC) - item.detected_at.replace(
                tzinfo=item.detected_at.tzinfo or UTC)).total_seconds()))
        _record(client, item, annotation_id, closed=False)
    if item.closed_at is not None:
        grafana.patch_annotation(annotation_id, {"timeEnd": _ms(item.closed_at), "tags": tags(item)})
        ANNOTATIONS.labels("close", "ok").inc()
        _record(client, item, annotation_id, closed=True)


def sync(client: Client, grafana: GrafanaClient) -> int:
    """One pass; returns how many anomalies still wait (0 when Grafana is up to date)."""
    items = pending(client)
    PENDING.set(len(items))
    for index, item in enumerate(items):
        try:
            sync_one(client, grafana, item)
        except GrafanaError as exc:
            ANNOTATIONS.labels("write", "error").inc()
            log.warning("grafana annotation not written, will retry",
                        extra={"anomaly_id": str(item.anomaly_id), "error": str(exc)[:200]})
            return len(items) - index
    return 0


class AnnotationSyncer(threading.Thread):
    """Runs ``sync`` whenever asked (``wake``) and on a timer, backing off while Grafana fails."""

    def __init__(self, connect: Callable[[], Client], grafana: GrafanaClient, interval_s: float = 1.0) -> None:
        super().__init__(name="grafana-annotations", daemon=True)
        self._connect, self._grafana, self._interval = connect, grafana, interval_s
        self._wake, self._stop = threading.Event(), threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        client = self._connect()
        failures = 0
        while not self._stop.is_set():
            try:
                left = sync(client, self._grafana)
            except Exception as exc:  # ClickHouse away: same treatment, try again later
                log.warning("annotation sync failed", extra={"error": str(exc)[:200]})
                left = -1
            failures = failures + 1 if left else 0
            delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1] if failures else self._interval
            self._wake.wait(delay)
            self._wake.clear()
            time.sleep(0)
        client.close()
