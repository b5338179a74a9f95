"""A whole pipeline for tests: a fresh broker and database, `shoppulse ingest` and `shoppulse aggregate`
as real processes (killable and restartable), a generator run with known content, and the expected
aggregates recomputed straight from the clean topic."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer

from checkout import ROOT
from shoppulse import clickhouse
from shoppulse.aggregate.sessions import SESSION_EVENT_TYPES
from shoppulse.devstack.kafka import KafkaBroker
from shoppulse.devstack.process import free_port
from shoppulse.events.histogram import bucket
from shoppulse.settings import Settings
from shoppulse.sink.migrations import migrate
from shoppulse.topics import CLEAN_EVENTS, create_topics

PII_KEY = "test-pii-key-0123456789abcdef"
GRACE_MS = 5000
SESSION_GAP_MS = 8000
SESSION_GRACE_MS = GRACE_MS + 1000
PARTITIONS = 3


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0, settle_s: float = 3.0) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level="read_committed", group_id=f"check-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False)
    messages: list = []
    deadline, settled = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
            if len(messages) >= expected:
                settled = settled or time.monotonic()
                if time.monotonic() - settled >= settle_s:
                    break
        return messages
    finally:
        consumer.close()


class Processor:
    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log = command, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "shoppulse", self.command], env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _committed_records_after(consumer: Any, positions: dict[Any, int]) -> bool:
    """Whether any committed record follows these positions (markers and aborted data do not count:
    a read_committed consumer skips them)."""
    consumer.assign(list(positions))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)
    # a fetch may take a moment to bring data that is there: three polls before saying there is none
    return any(any(consumer.poll(timeout_ms=1000).values()) for _ in range(3))


@dataclass
class Pipeline:
    broker: KafkaBroker
    settings: Settings
    env: dict[str, str]
    ingest: Processor
    aggregate: Processor
    # More instances of each processor, in the same consumer groups: each with its own state folder
    # and metrics ports, as separate containers would have.
    replicas: list[Processor] = field(default_factory=list)

    @property
    def processors(self) -> list[Processor]:
        return [self.ingest, self.aggregate, *self.replicas]

    @classmethod
    def start(cls, broker: KafkaBroker, endpoint_url: str, password: str, workdir: Path,
              instances: int = 1) -> Pipeline:
        database = f"agg_{uuid.uuid4().hex[:8]}"
        settings = Settings(clickhouse_url=endpoint_url, clickhouse_password=password, clickhouse_database=database,
                            kafka_bootstrap_servers=broker.bootstrap)
        migrate(lambda db: clickhouse.connect(settings, db), database, ROOT / "clickhouse")
        create_topics(broker.bootstrap, PARTITIONS)
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CLICKHOUSE_URL": endpoint_url,
               "CLICKHOUSE_PASSWORD": password, "SHOPPULSE_CLICKHOUSE_DATABASE": database,
               "SHOPPULSE_PII_KEY": PII_KEY, "SHOPPULSE_DATA_DIR": str(workdir),
               "SHOPPULSE_INGEST_METRICS_PORT": str(free_port()),
               "SHOPPULSE_AGGREGATE_METRICS_PORT": str(free_port()),
               "SHOPPULSE_WINDOW_GRACE_MS": str(GRACE_MS), "SHOPPULSE_SESSION_GAP_MS": str(SESSION_GAP_MS),
               "SHOPPULSE_SESSION_GRACE_MS": str(SESSION_GRACE_MS), "PATH": "/usr/bin:/bin"}
        replicas = []
        for n in range(2, instances + 1):
            own = {**env, "SHOPPULSE_DATA_DIR": str(workdir / f"instance-{n}"),
                   "SHOPPULSE_INGEST_METRICS_PORT": str(free_port()),
                   "SHOPPULSE_AGGREGATE_METRICS_PORT": str(free_port())}
            replicas += [Processor("ingest", own, workdir / f"ingest-{n}.log"),
                         Processor("aggregate", own, workdir / f"aggregate-{n}.log")]
        pipeline = cls(broker, settings, env, Processor("ingest", env, workdir / "ingest.log"),
                       Processor("aggregate", env, workdir / "aggregate.log"), replicas)
        for processor in pipeline.processors:
            processor.start()
        try:
            pipeline.wait_ready()
        except BaseException:
            pipeline.stop()
            raise
        return pipeline

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Until both processors' consumer groups own their partitions, so a test's events are
        processed as they arrive rather than as a start-up backlog."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        members = 1 + len(self.replicas) // 2
        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    groups = admin.describe_groups(["shoppulse-ingest", "shoppulse-aggregate"])
                except KafkaError:  # the group coordinator is still loading
                    time.sleep(0.5)
                    continue
                if all(str(g.get("group_state", g.get("state"))).lower() == "stable"
                       and len(g.get("members") or ()) == members for g in groups.values()):
                    return
                time.sleep(0.5)
        finally:
            admin.close()
        raise AssertionError(f"processors not ready:\n{self.logs()}")

    def stop(self) -> None:
        for processor in self.processors:
            processor.stop()

    def wait_caught_up(self, timeout_s: float = 120) -> None:
        """Until both processors have committed every message of every topic they read (lag 0)."""
        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.errors import KafkaError

        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, isolation_level="read_committed")
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    committed = admin.list_group_offsets(["shoppulse-ingest", "shoppulse-aggregate"])
                except KafkaError:
                    time.sleep(0.5)
                    continue
                offsets = {tp: meta.offset for group in committed.values() for tp, meta in group.items()}
                try:
                    ends = consumer.end_offsets(list(offsets))
                except (KafkaError, KeyError):  # metadata of a topic not known yet, e.g. after a broker restart
                    time.sleep(0.5)
                    continue
                # A committed offset may stop short of the end by transaction markers only: a commit
                # marker, and abort markers of transactions the broker aborted when it restarted.
                behind = {tp: offsets[tp] for tp in offsets if ends[tp] - offsets[tp] > 1}
                if offsets and not (behind and _committed_records_after(consumer, behind)):
                    return
                time.sleep(0.5)
        finally:
            consumer.close()
            admin.close()
        raise AssertionError(f"processors did not catch up:\n{self.logs()}")

    def client(self) -> Any:
        return clickhouse.connect(self.settings)

    def logs(self) -> str:
        return "\n".join(p.log.read_text()[-3000:] for p in self.processors if p.log.exists())


@dataclass
class Expected:
    """Aggregates recomputed from the clean topic, with the processor's lateness rule."""

    metrics: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    latency: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    # (country, dimension, segment, second) -> views, cart adds, checkouts, attempts, failures, orders, revenue,
    # paid clicks, ad spend, refunds, refunded
    segments: dict[tuple[str, str, str, int], list[Any]] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    session_late: int = 0  # cart events later than the sessions' grace, left out of their session
    sessions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    latencies: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


# The segment_metrics_1s counter an event adds one to, and the money column its amount adds to (in the order of
# Expected.segments).
SEGMENT_COLUMN = {"product_view": 0, "add_to_cart": 1, "checkout_start": 2, "payment_attempt": 3, "purchase": 5,
                  "ad_click": 7, "refund": 9}
SEGMENT_MONEY_COLUMN = {"purchase": 6, "ad_click": 8, "refund": 10}


def recompute(clean_messages: list) -> Expected:
    expected = Expected()
    newest: dict[str, int] = {}
    newest_cart: dict[str, int] = {}  # the sessions' watermark: the newest cart event of the country
    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in sorted(clean_messages, key=lambda m: (m.partition, m.offset)):
        event = json.loads(message.value)
        country, ts = event["country"], event["event_time_ms"]
        newest[country] = max(newest.get(country, 0), ts)
        start = ts - ts % 1000
        if start <= newest[country] - GRACE_MS - 1000:
            expected.late[country] += 1  # counted as late, and still in its second's totals
        m = expected.metrics.setdefault((country, start), defaultdict(int))
        kind = event["event_type"]
        m[kind] += 1
        if kind == "purchase":
            m["items"] += event["items"]
            m["revenue"] += Decimal(event["amount"])
        segments = [("device", event["device"])] + ([("category", event["category"])] if kind == "product_view" else [])
        segments += [("refund reason", event["reason"])] if kind == "refund" else []
        segments += [("campaign", event["campaign_id"])] if event.get("campaign_id") else []
        for dimension, segment in segments:
            counts = expected.segments.setdefault((country, dimension, segment, start),
                                                  [0] * 6 + [Decimal(0), 0, Decimal(0), 0, Decimal(0)])
            column = SEGMENT_COLUMN.get(kind)
            if column is not None:
                counts[column] += 1
            if kind == "payment_attempt" and event["result"] == "failure":
                counts[4] += 1
            if kind in SEGMENT_MONEY_COLUMN:
                counts[SEGMENT_MONEY_COLUMN[kind]] += Decimal(event["amount"])
        if kind == "payment_attempt":
            m["failures"] += event["result"] == "failure"
            lat = expected.latency.setdefault((country, event["gateway"], start),
                                              {"attempts": 0, "failures": 0, "buckets": defaultdict(int),
                                               "reasons": defaultdict(int)})
            lat["attempts"] += 1
            lat["failures"] += event["result"] == "failure"
            lat["buckets"][bucket(event["latency_ms"])] += 1
            if event["result"] == "failure":
                lat["reasons"][event["failure_reason"]] += 1
            expected.latencies[country].append(event["latency_ms"])
        if kind in SESSION_EVENT_TYPES:
            newest_cart[country] = max(newest_cart.get(country, 0), ts)
            if ts < newest_cart[country] - SESSION_GRACE_MS:
                expected.session_late += 1
            else:
                by_session[event["session_id"]].append(event)
    for session_id, events in by_session.items():
        events.sort(key=lambda e: e["event_time_ms"])
        group: list[dict[str, Any]] = []
        for event in events:
            if group and event["event_time_ms"] - group[-1]["event_time_ms"] > SESSION_GAP_MS:
                expected.sessions[(session_id, group[0]["event_time_ms"])] = summarize(group)
                group = []
            group.append(event)
        expected.sessions[(session_id, group[0]["event_time_ms"])] = summarize(group)
    return expected


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    purchases = [e for e in events if e["event_type"] == "purchase"]
    adds = sum(e["event_type"] == "add_to_cart" for e in events)
    return {"end": events[-1]["event_time_ms"], "country": events[-1]["country"], "events": len(events),
            "cart_adds": adds, "checkouts": sum(e["event_type"] == "checkout_start" for e in events),
            "purchased": int(bool(purchases)), "abandoned": int(adds > 0 and not purchases),
            "revenue": sum((Decimal(e["amount"]) for e in purchases), Decimal(0))}


def nearest_rank(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def closing_time() -> datetime:
    return datetime.now(UTC)


def closers(now: datetime, count: int = 60) -> list[tuple[bytes, bytes]]:
    """Add-to-cart events at ``now`` in every country and many sessions, so that every partition of
    the clean topic moves past the run and closes its windows and sessions."""
    from shoppulse.events.schema import COUNTRIES

    out = []
    for i in range(count):
        session = f"closer-{i}"
        event = {"schema_version": 1, "event_id": str(uuid.uuid4()), "event_type": "add_to_cart",
                 "event_time": now.isoformat(timespec="milliseconds"), "session_id": session,
                 "country": COUNTRIES[i % len(COUNTRIES)], "device": "desktop", "product_id": "sku-1",
                 "quantity": 1, "unit_price": "1.00", "currency": "USD"}
        out.append((session.encode(), json.dumps(event).encode()))
    return out


def settled_window_end(now: datetime) -> int:
    """Windows and sessions that end before this (ms) are certainly closed once the closers are processed."""
    return int((now - timedelta(milliseconds=2 * SESSION_GAP_MS + SESSION_GRACE_MS + GRACE_MS + 2000))
               .timestamp() * 1000)


__all__ = ["CLEAN_EVENTS", "Expected", "Pipeline", "closers", "read_all", "recompute"]
