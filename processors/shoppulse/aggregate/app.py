"""The aggregation processor (Quix Streams, event time, exactly-once): clean events ->

* ``metrics_1s``: funnel counts, orders, items and revenue per country and second (one tumbling
  window, one aggregator, so one state update per event);
* ``payment_latency_1s``: attempts, failures and a latency histogram per country, gateway, second
  (from the same window);
* ``sessions``: one row per closed session (cart events only, tracked in the country's state by
  ``aggregate.sessions.SessionTracker``), for abandonment and conversion;
* ``late_events``: events too late for their window, counted per country.

(``metrics_live``, the provisional sums of the seconds whose window is still open, is written by
ingestion, one Kafka hop earlier: ``ingest.live_metrics``.)

A late event is not lost: besides its ``late_events`` row it is written to ``metrics_1s`` and
``payment_latency_1s`` as a correction row for its second, so those tables may hold several rows
per key and are always read with ``sum() ... GROUP BY``. Every table is written by one sink,
which gets each event that adds a row (a late one, or one that closed sessions) and each closed
window: a table's rows reach it in offset order and the sink's offset fence keeps them exactly
once. ClickHouse rolls the 1 s tables up to 1 min and 1 h with materialized
views, which are additive too.

Sessions have a grace period of their own; an event later than that for the sessions is
counted (``shoppulse_aggregate_session_late_events_total``) and left out of its session."""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import Counter, start_http_server
from quixstreams import Application
from quixstreams.state import State

from shoppulse import clickhouse
from shoppulse.aggregate.lateness import LatenessCheck
from shoppulse.aggregate.sessions import SESSION_EVENT_TYPES, SessionTracker, is_abandoned
from shoppulse.aggregate.store_metrics import (
    METRICS_COLUMNS,
    TABLE_COUNTERS,
    StoreMetrics,
    to_datetime,
    to_money,
)
from shoppulse.consumer_lag import export_consumer_lag
from shoppulse.settings import Settings
from shoppulse.sink.clickhouse_sink import ClickHouseSink, Table
from shoppulse.streaming import built_once_topics_are_visible, processor_app, run_processor
from shoppulse.topics import CLEAN_EVENTS

log = logging.getLogger(__name__)

CONSUMER_GROUP = "shoppulse-aggregate"
WINDOW_MS = 1000

LATE_EVENTS = Counter("shoppulse_aggregate_late_events", "Events later than the window grace period", ["country"])
WINDOWS = Counter("shoppulse_aggregate_windows", "Closed 1 s store-metric windows")
SESSIONS = Counter("shoppulse_aggregate_sessions", "Closed sessions", ["outcome"])
SESSION_LATE = Counter("shoppulse_aggregate_session_late_events", "Events too late for their session window")

LATENCY_COLUMNS = ["ts", "country", "gateway", "attempts", "failures", "bucket_keys", "bucket_counts"]
SESSION_COLUMNS = ["session_end", "session_start", "session_id", "country", "events", "cart_adds", "checkouts",
                   "purchased", "abandoned", "revenue"]
LATE_COLUMNS = ["event_time", "country", "event_type", "late_by_ms"]
CLOSED_SESSIONS = "closed_sessions"


def metrics_row(window: dict[str, Any]) -> list[Any]:
    *counts, revenue_units = (window["metrics"].get(name, 0) for name in TABLE_COUNTERS)
    return [to_datetime(window["start"]), window["country"], *counts, to_money(revenue_units)]


def latency_row(window: dict[str, Any], gateway: str, payments: dict[str, Any]) -> list[Any]:
    keys = sorted(payments["latency"], key=int)
    return [to_datetime(window["start"]), window["country"], gateway, payments["attempts"], payments["failures"],
            [int(k) for k in keys], [payments["latency"][k] for k in keys]]


def session_row(s: dict[str, Any]) -> list[Any]:
    return [to_datetime(s["last"]), to_datetime(s["start"]), s["session_id"], s["country"], s["events"],
            s["cart_adds"], s["checkouts"], int(s["purchases"] > 0), int(is_abandoned(s)), to_money(s["revenue_units"])]


def one_event_window(event: dict[str, Any]) -> dict[str, Any]:
    """One event as a window of its second: a late event's correction row."""
    aggregator = StoreMetrics()
    timestamp = event["event_time_ms"]
    start = timestamp - timestamp % WINDOW_MS
    return {"start": start, "end": start + WINDOW_MS, "country": event["country"],
            "metrics": aggregator.agg(aggregator.initialize(), event, timestamp)}


# The sink gets two kinds of values: clean events (marked by ``EventMarker``) and closed windows.
def is_window(value: dict[str, Any]) -> bool:
    return "metrics" in value


def final_window(value: dict[str, Any]) -> dict[str, Any] | None:
    """The window a value adds to the 1 s tables: a closed window, or a late event's correction."""
    if is_window(value):
        return value
    return one_event_window(value) if value["late_by_ms"] else None


def metrics_rows(value: dict[str, Any]) -> tuple[list[Any], ...]:
    window = final_window(value)
    return () if window is None else (metrics_row(window),)


def latency_rows(value: dict[str, Any]) -> list[list[Any]]:
    window = final_window(value)
    if window is None:
        return []
    payments = sorted(window["metrics"]["payments"].items())
    return [latency_row(window, gateway, of_gateway) for gateway, of_gateway in payments]


def late_rows(value: dict[str, Any]) -> tuple[list[Any], ...]:
    if is_window(value) or not value["late_by_ms"]:
        return ()
    return ([to_datetime(value["event_time_ms"]), value["country"], value["event_type"],
             min(value["late_by_ms"], 2**32 - 1)],)


def session_rows(value: dict[str, Any]) -> list[list[Any]]:
    return [] if is_window(value) else [session_row(s) for s in value.get(CLOSED_SESSIONS, ())]


def aggregate_tables() -> list[Table]:
    """Every table the aggregation writes, all through one sink: the windows and the late events'
    corrections of a 1 s table reach it in offset order, so its offset fence keeps them exactly once."""
    return [Table("metrics_1s", METRICS_COLUMNS, metrics_rows),
            Table("payment_latency_1s", LATENCY_COLUMNS, latency_rows),
            Table("late_events", LATE_COLUMNS, late_rows),
            Table("sessions", SESSION_COLUMNS, session_rows)]


class EventMarker:
    """The stateful step every clean event passes first, keyed by country: marks how late it is
    for its window (``late_by_ms``) and, for an on-time cart event, attaches the sessions its
    event time closed (``closed_sessions``) — so one branch point, not four, copies each event."""

    def __init__(self, lateness: LatenessCheck, sessions: SessionTracker) -> None:
        self._lateness = lateness
        self._sessions = sessions

    def __call__(self, event: dict[str, Any], state: State) -> None:
        late_by_ms = event["late_by_ms"] = self._lateness.late_by_ms(event, state)
        if late_by_ms:
            LATE_EVENTS.labels(event["country"]).inc()
        elif event["event_type"] in SESSION_EVENT_TYPES:
            closed = self._sessions(event, state)
            if closed:
                event[CLOSED_SESSIONS] = closed
                for summary in closed:
                    SESSIONS.labels("abandoned" if is_abandoned(summary) else "other").inc()


def adds_rows(event: dict[str, Any]) -> bool:
    """Whether a marked event gives the sink a row of its own (most give none: their window does)."""
    return bool(event["late_by_ms"]) or CLOSED_SESSIONS in event


def _with_key(field: str) -> Any:
    def attach(value: dict[str, Any], key: Any, _timestamp: int, _headers: Any) -> dict[str, Any]:
        value[field] = key
        return value

    return attach


def _session_late(_event: dict[str, Any]) -> None:
    SESSION_LATE.inc()


def build_app(settings: Settings, consumer_group: str = CONSUMER_GROUP) -> Application:
    app = processor_app(settings, consumer_group, settings.aggregate_commit_interval_s)
    clean = app.topic(CLEAN_EVENTS.name, key_deserializer="str", value_deserializer="json")
    marker = EventMarker(LatenessCheck(WINDOW_MS, settings.window_grace_ms),
                         SessionTracker(settings.session_gap_ms, settings.session_grace_ms, on_late=_session_late))
    tables = ClickHouseSink(lambda: clickhouse.connect(settings), aggregate_tables())

    events = app.dataframe(clean).update(marker, stateful=True)
    events.filter(adds_rows).sink(tables)
    (events.filter(lambda e: e["late_by_ms"] == 0)
     .tumbling_window(WINDOW_MS, grace_ms=settings.window_grace_ms, name="store-1s")
     .agg(metrics=StoreMetrics()).final()
     .apply(_with_key("country"), metadata=True)
     .update(lambda _w: WINDOWS.inc())
     .sink(tables))
    return app


def run(settings: Settings) -> None:
    """Run the aggregation processor until SIGTERM/SIGINT, exposing Prometheus metrics."""
    os.nice(settings.aggregate_nice)
    start_http_server(settings.aggregate_metrics_port, addr=settings.host)
    export_consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, CLEAN_EVENTS.name, "aggregate")
    log.info("aggregation starting", extra={"bootstrap": settings.kafka_bootstrap,
                                            "grace_ms": settings.window_grace_ms,
                                            "session_gap_ms": settings.session_gap_ms,
                                            "nice": os.nice(0)})
    run_processor(built_once_topics_are_visible(lambda: build_app(settings)))
