"""The aggregation processor (Quix Streams, event time, exactly-once): clean events ->

* ``metrics_1s``: funnel counts, orders, items and revenue per country and second (one tumbling
  window, one aggregator, so one state update per event);
* ``payment_latency_1s``: attempts, failures and a latency histogram per country, gateway, second
  (from the same window);
* ``sessions``: one row per closed session (cart events only, tracked in the country's state by
  ``aggregate.sessions.SessionTracker``), for abandonment and conversion;
* ``late_events``: events too late for their window, counted per country;
* ``metrics_live``: the same counters as ``metrics_1s`` for every event, summed per country and
  second at each checkpoint — provisional figures about a second after the event, while the
  window of that second is still open (grace period). Rows are partial sums, exact by the
  sink's offset fence; a second's live sum equals its final ``metrics_1s`` sum.

A late event is not lost: besides its ``late_events`` row it is written to ``metrics_1s`` and
``payment_latency_1s`` as a correction row for its second, so those tables may hold several rows
per key and are always read with ``sum() ... GROUP BY``. The window results and the corrections
share one sink per table, so their rows reach it in offset order and the sink's offset fence
keeps them exactly once. ClickHouse rolls the 1 s tables up to 1 min and 1 h with materialized
views, which are additive too.

Sessions have a grace period of their own; an event later than that for the sessions is
counted (``shoppulse_aggregate_session_late_events_total``) and left out of its session."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, start_http_server
from quixstreams import Application
from quixstreams.state import State

from shoppulse import clickhouse
from shoppulse.aggregate.lateness import LatenessCheck
from shoppulse.aggregate.sessions import SESSION_EVENT_TYPES, SessionTracker, is_abandoned
from shoppulse.aggregate.store_metrics import REVENUE_UNITS, StoreMetrics
from shoppulse.consumer_lag import export_consumer_lag
from shoppulse.settings import Settings
from shoppulse.sink.clickhouse_sink import ClickHouseSink, sum_by_key
from shoppulse.streaming import built_once_topics_are_visible, processor_app
from shoppulse.topics import CLEAN_EVENTS

log = logging.getLogger(__name__)

CONSUMER_GROUP = "shoppulse-aggregate"
WINDOW_MS = 1000

LATE_EVENTS = Counter("shoppulse_aggregate_late_events", "Events later than the window grace period", ["country"])
WINDOWS = Counter("shoppulse_aggregate_windows", "Closed 1 s store-metric windows")
SESSIONS = Counter("shoppulse_aggregate_sessions", "Closed sessions", ["outcome"])
SESSION_LATE = Counter("shoppulse_aggregate_session_late_events", "Events too late for their session window")

METRICS_COLUMNS = ["ts", "country", "product_views", "cart_adds", "cart_removes", "checkouts", "payment_attempts",
                   "payment_failures", "orders", "items", "revenue"]
LATENCY_COLUMNS = ["ts", "country", "gateway", "attempts", "failures", "bucket_keys", "bucket_counts"]
SESSION_COLUMNS = ["session_end", "session_start", "session_id", "country", "events", "cart_adds", "checkouts",
                   "purchased", "abandoned", "revenue"]
LATE_COLUMNS = ["event_time", "country", "event_type", "late_by_ms"]


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _money(units: int) -> Decimal:
    return Decimal(units) / REVENUE_UNITS


def metrics_row(window: dict[str, Any]) -> list[Any]:
    m = window["metrics"]
    return [_ts(window["start"]), window["country"], m.get("product_views", 0), m.get("cart_adds", 0),
            m.get("cart_removes", 0), m.get("checkouts", 0), m.get("payment_attempts", 0),
            m.get("payment_failures", 0), m.get("orders", 0), m.get("items", 0), _money(m.get("revenue_units", 0))]


def latency_rows(window: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"start": window["start"], "country": window["country"], "gateway": gateway, **payments}
            for gateway, payments in sorted(window["metrics"]["payments"].items())]


def latency_row(row: dict[str, Any]) -> list[Any]:
    keys = sorted(row["latency"], key=int)
    return [_ts(row["start"]), row["country"], row["gateway"], row["attempts"], row["failures"],
            [int(k) for k in keys], [row["latency"][k] for k in keys]]


def session_row(s: dict[str, Any]) -> list[Any]:
    return [_ts(s["last"]), _ts(s["start"]), s["session_id"], s["country"], s["events"], s["cart_adds"],
            s["checkouts"], int(s["purchases"] > 0), int(is_abandoned(s)), _money(s["revenue_units"])]


def late_row(event: dict[str, Any]) -> list[Any]:
    return [_ts(event["event_time_ms"]), event["country"], event["event_type"], min(event["late_by_ms"], 2**32 - 1)]


def one_event_window(event: dict[str, Any]) -> dict[str, Any]:
    """One event as a window of its second: a late event's correction row, and a live partial sum."""
    aggregator = StoreMetrics()
    timestamp = event["event_time_ms"]
    start = timestamp - timestamp % WINDOW_MS
    return {"start": start, "end": start + WINDOW_MS, "country": event["country"],
            "metrics": aggregator.agg(aggregator.initialize(), event, timestamp)}


def _with_key(field: str) -> Any:
    def attach(value: dict[str, Any], key: Any, _timestamp: int, _headers: Any) -> dict[str, Any]:
        value[field] = key
        return value

    return attach


def _count_late(event: dict[str, Any]) -> None:
    LATE_EVENTS.labels(event["country"]).inc()


def _count_session(summary: dict[str, Any]) -> None:
    SESSIONS.labels("abandoned" if is_abandoned(summary) else "other").inc()


def _session_late(_event: dict[str, Any]) -> None:
    SESSION_LATE.inc()


def build_app(settings: Settings, consumer_group: str = CONSUMER_GROUP) -> Application:
    app = processor_app(settings, consumer_group)
    clean = app.topic(CLEAN_EVENTS.name, key_deserializer="str", value_deserializer="json")
    lateness = LatenessCheck(WINDOW_MS, settings.window_grace_ms)

    def mark_lateness(event: dict[str, Any], state: State) -> None:
        event["late_by_ms"] = lateness.late_by_ms(event, state)

    def sink(table: str, columns: list[str], row: Any, **options: Any) -> ClickHouseSink:
        return ClickHouseSink(lambda: clickhouse.connect(settings), table, columns, row, **options)

    events = app.dataframe(clean).update(mark_lateness, stateful=True)
    events.sink(sink("metrics_live", METRICS_COLUMNS, lambda event: metrics_row(one_event_window(event)),
                     collapse=sum_by_key(2)))

    metrics_sink = sink("metrics_1s", METRICS_COLUMNS, metrics_row)
    latency_sink = sink("payment_latency_1s", LATENCY_COLUMNS, latency_row)

    late = events.filter(lambda e: e["late_by_ms"] > 0).update(_count_late)
    late.sink(sink("late_events", LATE_COLUMNS, late_row))
    corrections = late.apply(one_event_window)

    on_time = events.filter(lambda e: e["late_by_ms"] == 0)
    windows = (on_time.tumbling_window(WINDOW_MS, grace_ms=settings.window_grace_ms, name="store-1s")
               .agg(metrics=StoreMetrics()).final()
               .apply(_with_key("country"), metadata=True)
               .update(lambda _w: WINDOWS.inc()))
    for results in (windows, corrections):
        results.sink(metrics_sink)
        results.apply(latency_rows, expand=True).sink(latency_sink)

    tracker = SessionTracker(settings.session_gap_ms, settings.session_grace_ms, on_late=_session_late)
    sessions = (on_time.filter(lambda e: e["event_type"] in SESSION_EVENT_TYPES)
                .apply(tracker, stateful=True, expand=True)
                .update(_count_session))
    sessions.sink(sink("sessions", SESSION_COLUMNS, session_row))
    return app


def run(settings: Settings) -> None:
    """Run the aggregation processor until SIGTERM/SIGINT, exposing Prometheus metrics."""
    start_http_server(settings.aggregate_metrics_port, addr=settings.host)
    export_consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, CLEAN_EVENTS.name, "aggregate")
    log.info("aggregation starting", extra={"bootstrap": settings.kafka_bootstrap,
                                            "grace_ms": settings.window_grace_ms,
                                            "session_gap_ms": settings.session_gap_ms})
    built_once_topics_are_visible(lambda: build_app(settings)).run()
