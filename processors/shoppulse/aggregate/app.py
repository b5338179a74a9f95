"""The aggregation processor (Quix Streams, event time, exactly-once): clean events ->

* ``metrics_1s``: funnel counts, orders, items and revenue per country and second (one tumbling
  window, one aggregator, so one state update per event);
* ``payment_latency_1s``: attempts, failures by reason and a latency histogram per country, gateway,
  second (from the same window);
* ``segment_metrics_1s``: the funnel per country, second and segment (each device, each product
  category, each ad campaign with its clicks and spend, each refund reason with its refunds), so an
  incident's contributors can name the device, category, campaign or reason behind it (same window);
* ``sessions``: one row per closed session (cart events only, tracked in the country's state by
  ``aggregate.sessions.SessionTracker``), for abandonment and conversion;
* ``late_events``: events too late for their window, counted per country.

(``metrics_live``, the provisional sums of the seconds whose window is still open, is written by
ingestion, one Kafka hop earlier: ``ingest.live_metrics``.)

A late event is not lost: besides its ``late_events`` row it is written to the 1 s tables as a
correction row for its second, so those tables may hold several rows per key and are always read
with ``sum() ... GROUP BY``. Lateness is the window's own rule (Quix's
"key" closing strategy: late when the event's window closed, by the newest event time of its
country, before it arrived), reported through its ``on_late``. Every table is written by one
sink, which gets each late event, the sessions each event closed and each closed window: a
table's rows reach it in offset order and the sink's offset fence keeps them exactly once.
ClickHouse rolls the 1 s tables up to 1 min and 1 h with materialized views, which are additive too.
``metrics_1s`` is the freshness readers go by (the sidecar reads a second once it is there), so the
sink writes it after the other tables of each flush.

Sessions have a grace period of their own and see every cart event, also one late for its 1 s
window; an event later than the sessions' grace is counted
(``shoppulse_aggregate_session_late_events_total``) and left out of its session."""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import Counter
from quixstreams import Application, message_context
from quixstreams.state import State

from shoppulse import clickhouse
from shoppulse.aggregate.sessions import SESSION_EVENT_TYPES, SessionTracker, is_abandoned
from shoppulse.consumer_lag import export_consumer_lag
from shoppulse.events.store_metrics import (
    METRICS_COLUMNS,
    SEGMENT_COLUMNS,
    SEGMENT_COUNTERS,
    SEGMENT_MONEY,
    TABLE_COUNTERS,
    StoreMetrics,
    segment_counts,
    to_datetime,
    to_money,
)
from shoppulse.settings import Settings
from shoppulse.sink.clickhouse_sink import ClickHouseSink, Table
from shoppulse.sink.topic_epochs import TopicEpochs, kafka_topic_ids
from shoppulse.streaming import built_once_topics_are_visible, prepare_processor, processor_app, run_processor
from shoppulse.topics import CLEAN_EVENTS

log = logging.getLogger(__name__)

CONSUMER_GROUP = "shoppulse-aggregate"
WINDOW_MS = 1000

LATE_EVENTS = Counter("shoppulse_aggregate_late_events", "Events later than the window grace period", ["country"])
EVENTS = Counter("shoppulse_aggregate_events", "Clean events processed")
WINDOWS = Counter("shoppulse_aggregate_windows", "Closed 1 s store-metric windows")
SESSIONS = Counter("shoppulse_aggregate_sessions", "Closed sessions", ["outcome"])
SESSION_LATE = Counter("shoppulse_aggregate_session_late_events", "Events too late for their session window")

LATENCY_COLUMNS = ["ts", "country", "gateway", "attempts", "failures", "bucket_keys", "bucket_counts",
                   "failure_reasons", "reason_counts"]
SESSION_COLUMNS = ["session_end", "session_start", "session_id", "country", "events", "cart_adds", "checkouts",
                   "purchased", "abandoned", "revenue"]
LATE_COLUMNS = ["event_time", "country", "event_type", "late_by_ms"]
CLOSED_SESSIONS = "closed_sessions"


def metrics_row(window: dict[str, Any]) -> list[Any]:
    *counts, revenue_units = (window["metrics"].get(name, 0) for name in TABLE_COUNTERS)
    return [to_datetime(window["start"]), window["country"], *counts, to_money(revenue_units)]


def latency_row(window: dict[str, Any], gateway: str, payments: dict[str, Any]) -> list[Any]:
    keys = sorted(payments["latency"], key=int)
    reasons = sorted(payments.get("reasons", {}).items())
    return [to_datetime(window["start"]), window["country"], gateway, payments["attempts"], payments["failures"],
            [int(k) for k in keys], [payments["latency"][k] for k in keys], [r for r, _ in reasons],
            [n for _, n in reasons]]


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


# The sink gets three kinds of values: closed windows, late events (from the window's ``on_late``,
# marked with ``late_by_ms``) and the sessions an event closed (``{CLOSED_SESSIONS: [...]}``).
def is_window(value: dict[str, Any]) -> bool:
    return "metrics" in value


def is_late(value: dict[str, Any]) -> bool:
    return "late_by_ms" in value


def final_window(value: dict[str, Any]) -> dict[str, Any] | None:
    """The window a value adds to the 1 s tables: a closed window, or a late event's correction."""
    if is_window(value):
        return value
    return one_event_window(value) if is_late(value) else None


def metrics_rows(value: dict[str, Any]) -> tuple[list[Any], ...]:
    window = final_window(value)
    return () if window is None else (metrics_row(window),)


def latency_rows(value: dict[str, Any]) -> list[list[Any]]:
    window = final_window(value)
    if window is None:
        return []
    payments = sorted(window["metrics"]["payments"].items())
    return [latency_row(window, gateway, of_gateway) for gateway, of_gateway in payments]


def segment_rows(value: dict[str, Any]) -> list[list[Any]]:
    """One row per device, product category, ad campaign and refund reason the window's events came in
    (``segment_metrics_1s``)."""
    window = final_window(value)
    if window is None:
        return []
    ts, country = to_datetime(window["start"]), window["country"]
    rows = []
    for key, counts in sorted(window["metrics"].get("segments", {}).items()):
        dimension, segment = key.split(":", 1)
        rows.append([ts, country, dimension, segment,
                     *(to_money(n) if name in SEGMENT_MONEY else n
                       for name, n in zip(SEGMENT_COUNTERS, segment_counts(list(counts)), strict=True))])
    return rows


def late_rows(value: dict[str, Any]) -> tuple[list[Any], ...]:
    if not is_late(value):
        return ()
    return ([to_datetime(value["event_time_ms"]), value["country"], value["event_type"],
             min(value["late_by_ms"], 2**32 - 1)],)


def session_rows(value: dict[str, Any]) -> list[list[Any]]:
    return [session_row(s) for s in value.get(CLOSED_SESSIONS, ())]


def aggregate_tables() -> list[Table]:
    """Every table the aggregation writes, all through one sink: the windows and the late events'
    corrections of a 1 s table reach it in offset order, so its offset fence keeps them exactly once."""
    return [Table("metrics_1s", METRICS_COLUMNS, metrics_rows),
            Table("payment_latency_1s", LATENCY_COLUMNS, latency_rows),
            Table("segment_metrics_1s", SEGMENT_COLUMNS, segment_rows),
            Table("late_events", LATE_COLUMNS, late_rows),
            Table("sessions", SESSION_COLUMNS, session_rows)]


class SessionStep:
    """The stateful step every clean event passes before the window, keyed by country: a cart
    event goes to the country's ``SessionTracker``, and the sessions it closed go to the sink
    as one value at the event's offset. Adding them to the sink here, as ``StreamingDataFrame.sink``
    does, keeps the dataframe one chain: a second branch for them made Quix copy every event
    (a pickle round trip, 6 % of the aggregation's time)."""

    def __init__(self, sessions: SessionTracker, sink: ClickHouseSink) -> None:
        self._sessions = sessions
        self._sink = sink

    def __call__(self, event: dict[str, Any], key: Any, timestamp: int, headers: Any, state: State) -> None:
        EVENTS.inc()
        if event["event_type"] not in SESSION_EVENT_TYPES:
            return
        closed = self._sessions(event, state)
        if closed:
            for summary in closed:
                SESSIONS.labels("abandoned" if is_abandoned(summary) else "other").inc()
            context = message_context()
            self._sink.add({CLOSED_SESSIONS: closed}, key, timestamp, headers,
                           context.topic, context.partition, context.offset)


class LateEvents:
    """The 1 s window's ``on_late``: an event too late for its window is counted per country and
    goes to the sink (its ``late_events`` row and its second's correction rows), marked with how
    late it is. The window applies its own lateness rule, so no event is both dropped and not
    counted. Returns False: Quix's warning per late event is replaced by the metric and table."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self._sink = sink

    def __call__(self, value: dict[str, Any], key: Any, timestamp_ms: int, late_by_ms: int, start: int,
                 end: int, store_name: str, topic: str, partition: int, offset: int) -> bool:
        LATE_EVENTS.labels(key).inc()
        self._sink.add({**value, "late_by_ms": late_by_ms}, key, timestamp_ms, [], topic, partition, offset)
        return False


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
    tables = ClickHouseSink(lambda: clickhouse.connect(settings), aggregate_tables(),
                            epochs=TopicEpochs(kafka_topic_ids(settings.kafka_bootstrap)), watermark="metrics_1s")
    sessions = SessionTracker(settings.session_gap_ms, settings.session_grace_ms, on_late=_session_late)

    (app.dataframe(clean)
     .update(SessionStep(sessions, tables), stateful=True, metadata=True)
     .tumbling_window(WINDOW_MS, grace_ms=settings.window_grace_ms, name="store-1s", on_late=LateEvents(tables))
     .agg(metrics=StoreMetrics()).final()
     .apply(_with_key("country"), metadata=True)
     .update(lambda _w: WINDOWS.inc())
     .sink(tables))
    return app


def run(settings: Settings) -> None:
    """Run the aggregation processor until SIGTERM/SIGINT, exposing Prometheus metrics."""
    os.nice(settings.aggregate_nice)
    prepare_processor(settings, settings.aggregate_metrics_port, "SHOPPULSE_AGGREGATE_METRICS_PORT")
    export_consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, CLEAN_EVENTS.name, "aggregate")
    log.info("aggregation starting", extra={"bootstrap": settings.kafka_bootstrap,
                                            "grace_ms": settings.window_grace_ms,
                                            "session_gap_ms": settings.session_gap_ms,
                                            "nice": os.nice(0)})
    run_processor(built_once_topics_are_visible(lambda: build_app(settings)))
