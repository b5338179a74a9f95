"""The ingestion processor (Quix Streams): raw topic -> clean topic + dead-letter topic + ClickHouse.

Per raw message: validate against the contract (judged at the message's Kafka timestamp, so that a
backfill's events are not "from the future"); an invalid one goes to the dead-letter topic
with its original bytes, reason and source offset (and its digest to ClickHouse); a valid one
is de-duplicated by event id, stripped of PII, converted to the reporting currency, stamped
with its event time and written to the clean topic keyed by country, and its counts go to
ClickHouse ``metrics_live`` (see ``ingest.live_metrics``). Exactly-once processing makes the
produced messages, the dedup state and the consumer offsets one transaction; the ClickHouse sink's
offset fence writes each row once."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from quixstreams import Application, message_context
from quixstreams.state import State

from shoppulse import clickhouse
from shoppulse.consumer_lag import export_consumer_lag
from shoppulse.events.clean import CleanEvent, to_clean
from shoppulse.events.currency import RatesTable, load_rates
from shoppulse.events.pii import PiiHasher
from shoppulse.events.validate import DEFAULT_LIMITS, MAX_EVENT_BYTES, Reason, Rejection, TimeLimits, validate
from shoppulse.ingest import metrics
from shoppulse.ingest.dedup import first_sighting
from shoppulse.ingest.live_metrics import live_metrics_table
from shoppulse.settings import Settings
from shoppulse.sink.clickhouse_sink import ClickHouseSink, Table
from shoppulse.sink.topic_epochs import TopicEpochs, kafka_topic_ids
from shoppulse.streaming import built_once_topics_are_visible, prepare_processor, processor_app, run_processor
from shoppulse.topics import CLEAN_EVENTS, DEAD_LETTERS, RAW_EVENTS

log = logging.getLogger(__name__)

CONSUMER_GROUP = "shoppulse-ingest"
SAMPLE_PER_MILLE = 10  # share of clean events copied to ClickHouse events_sample
DEAD_LETTER_TTL_MS = 90 * 86_400_000  # dead_letters' TTL (clickhouse/0002_ingestion.sql)
# A dead letter carries its original whole up to this size, else its head (with the whole's size and
# digest): a raw message may be up to the topic's max.message.bytes, and its base64 would not fit.
DEAD_LETTER_ORIGINAL_BYTES = MAX_EVENT_BYTES

DEAD_LETTER_COLUMNS = ["received_at", "reason", "detail", "size_bytes", "sha256"]
SAMPLE_COLUMNS = ["event_time", "event_id", "event_type", "country", "device", "session_id", "user_hash",
                  "amount", "payload"]


def received_at_ms(message_timestamp_ms: int, now_ms: int) -> int:
    """When a raw message was received: its Kafka timestamp, so that a backlog or a backfill is
    judged at the moment it arrived rather than when ingestion got to it (an event may not be
    ahead of its own message, and its dead letter sits at that moment); the processing time when
    the timestamp is implausible (ahead of now, or older than dead_letters keeps rows)."""
    if now_ms - DEAD_LETTER_TTL_MS < message_timestamp_ms <= now_ms:
        return message_timestamp_ms
    return now_ms


class DeadLetter(dict[str, Any]):
    """A rejected raw message's dead letter: its fields are the dead-letter topic's JSON; ``key`` is
    the raw message's key, which the dead letter keeps."""

    def __init__(self, fields: dict[str, Any], key: bytes | None) -> None:
        super().__init__(fields)
        self.key = key


class Classifier:
    """Turns one raw message into its clean event, its dead letter, or None for a retried duplicate."""

    def __init__(self, hasher: PiiHasher, rates: RatesTable, limits: TimeLimits | None = None) -> None:
        self._hasher = hasher
        self._rates = rates
        self._limits = limits or DEFAULT_LIMITS

    def classify(self, raw: bytes | None, key: bytes | None, timestamp: int, _headers: Any,
                 state: State) -> CleanEvent | DeadLetter | None:
        metrics.EVENTS_IN.inc()
        raw = raw or b""
        received = received_at_ms(timestamp, int(time.time() * 1000))
        if key is None:
            return self._dead(raw, key, Reason.MISSING_KEY, "raw events must be keyed by session_id", received)
        result = validate(raw, datetime.fromtimestamp(received / 1000, UTC), self._limits)
        if isinstance(result, Rejection):
            return self._dead(raw, key, result.reason, result.detail, received)
        if not first_sighting(result.event_id.bytes, state):
            metrics.DUPLICATES.inc()
            return None
        event = to_clean(result, self._hasher, self._rates)
        metrics.EVENTS_OUT.inc()
        return event

    @staticmethod
    def _dead(raw: bytes, key: bytes | None, reason: str, detail: str, received: int) -> DeadLetter:
        metrics.DEAD_LETTERS.labels(str(reason)).inc()
        context = message_context()
        return DeadLetter({
            "reason": str(reason), "detail": detail, "received_at_ms": received,
            "size_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
            "source": {"topic": context.topic, "partition": context.partition, "offset": context.offset},
            "original_b64": base64.b64encode(raw[:DEAD_LETTER_ORIGINAL_BYTES]).decode(),
            "original_truncated": len(raw) > DEAD_LETTER_ORIGINAL_BYTES,
        }, key)


def dead_letter_rows(value: CleanEvent | DeadLetter) -> tuple[list[Any], ...]:
    if not is_dead(value):
        return ()
    return ([datetime.fromtimestamp(value["received_at_ms"] / 1000, UTC), value["reason"], value["detail"],
             value["size_bytes"], value["sha256"]],)


def sample_rows(value: CleanEvent | DeadLetter) -> tuple[list[Any], ...]:
    if is_dead(value) or not sampled(value):
        return ()
    return ([datetime.fromtimestamp(value["event_time_ms"] / 1000, UTC), value["event_id"], value["event_type"],
             value["country"], value["device"], value["session_id"], value["user_hash"] or "",
             Decimal(value["amount"]) if "amount" in value else None, json.dumps(value, separators=(",", ":"))],)


def sampled(event: CleanEvent) -> bool:
    return int(event["event_id"][:8], 16) % 1000 < SAMPLE_PER_MILLE


def is_dead(value: CleanEvent | DeadLetter) -> bool:
    return isinstance(value, DeadLetter)


def ingest_tables() -> list[Table]:
    """Every table ingestion writes, all through one sink."""
    return [live_metrics_table(),
            Table("dead_letters", DEAD_LETTER_COLUMNS, dead_letter_rows),
            Table("events_sample", SAMPLE_COLUMNS, sample_rows)]


def time_limits(settings: Settings) -> TimeLimits:
    return TimeLimits(max_skew=timedelta(seconds=settings.max_clock_skew_s),
                      max_age=timedelta(seconds=settings.max_event_age_s))


def build_app(settings: Settings, hasher: PiiHasher, rates: RatesTable | None = None,
              consumer_group: str = CONSUMER_GROUP) -> Application:
    """One chain without a branch: Quix copies every message at a branch (a pickle round trip),
    which was a tenth of ingestion's time; one sink writes the three tables."""
    app = processor_app(settings, consumer_group, settings.ingest_commit_interval_s)
    raw = app.topic(RAW_EVENTS.name, key_deserializer="bytes", value_deserializer="bytes")
    clean_topic = app.topic(CLEAN_EVENTS.name, key_serializer="str", value_serializer="json")
    dead_topic = app.topic(DEAD_LETTERS.name, key_serializer="bytes", value_serializer="json")
    classifier = Classifier(hasher, rates or load_rates(), time_limits(settings))

    def connect() -> Any:
        return clickhouse.connect(settings)

    sdf = app.dataframe(raw).apply(classifier.classify, stateful=True, metadata=True)
    sdf = sdf.filter(lambda value: value is not None)  # a retried duplicate
    sdf = sdf.set_timestamp(lambda value, *_: value["received_at_ms"] if is_dead(value) else value["event_time_ms"])
    sdf = sdf.to_topic(lambda value, *_: dead_topic if is_dead(value) else clean_topic,
                       key=lambda value: value.key if is_dead(value) else value["country"])
    sdf.sink(ClickHouseSink(connect, ingest_tables(), epochs=TopicEpochs(kafka_topic_ids(settings.kafka_bootstrap))))
    return app


def run(settings: Settings) -> None:
    """Run the ingestion processor until SIGTERM/SIGINT, exposing Prometheus metrics."""
    hasher = PiiHasher.from_settings(settings.pii_key, settings.demo)
    prepare_processor(settings, settings.ingest_metrics_port, "SHOPPULSE_INGEST_METRICS_PORT")
    export_consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, RAW_EVENTS.name, "ingest")
    log.info("ingestion starting", extra={"bootstrap": settings.kafka_bootstrap,
                                          "metrics_port": settings.ingest_metrics_port, "demo": settings.demo})
    run_processor(built_once_topics_are_visible(lambda: build_app(settings, hasher)))
