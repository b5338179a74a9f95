"""The ClickHouse sink against the real engine: several tables behind one sink, each written
exactly once per source offset — also when a flush wrote some tables and then lost ClickHouse."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from kafka import KafkaAdminClient
from quixstreams.sinks import SinkBackpressureError

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse import clickhouse
from shoppulse.sink.clickhouse_sink import DEAD_LETTER_TABLE, ClickHouseSink, Table, sum_by_key
from shoppulse.sink.topic_epochs import TopicEpochs, kafka_topic_ids, source_offset
from shoppulse.topics import TopicSpec, create_topics

pytestmark = pytest.mark.integration
TOPIC = "clean-events"
BASE = 1_764_000_000  # a moment in 2025, in Unix seconds


class InsertFailsOnce:
    """A real client whose first INSERT into one table fails as if ClickHouse had gone away."""

    def __init__(self, client: Client, table: str) -> None:
        self._client = client
        self._table = table
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert(self, *args: Any, context: Any, **kwargs: Any) -> Any:
        if self._table in context.table and not self.failed:  # the context names it quoted, with its database
            self.failed = True
            raise OperationalError("Connection refused")
        return self._client.insert(*args, context=context, **kwargs)


@pytest.fixture
def tables(ch: Client, table_name: str) -> Iterator[tuple[str, str]]:
    every, evens = f"{table_name}_every", f"{table_name}_sums"
    ch.command(f"CREATE TABLE {every} (n UInt32, src_partition UInt16, src_offset UInt64) "
               "ENGINE = MergeTree ORDER BY (src_partition, src_offset)")
    ch.command(f"CREATE TABLE {evens} (parity UInt8, total UInt64, src_partition UInt16, src_offset UInt64) "
               "ENGINE = MergeTree ORDER BY (src_partition, src_offset)")
    try:
        yield every, evens
    finally:
        ch.command(f"DROP TABLE IF EXISTS {every}")
        ch.command(f"DROP TABLE IF EXISTS {evens}")


def sink_for(clickhouse_endpoint: EndpointProcess, every: str, sums: str, connect: Any = None) -> ClickHouseSink:
    settings = clickhouse_endpoint.settings()
    return ClickHouseSink(connect or (lambda: clickhouse.connect(settings, database="default")), [
        Table(every, ["n"], lambda n: ([n],)),
        Table(sums, ["parity", "total"], lambda n: ([n % 2, n],) if n % 3 else (), collapse=sum_by_key(1)),
    ], retry_after=0.1)


def add(sink: ClickHouseSink, partition: int, offsets: range) -> None:
    for offset in offsets:
        sink.add(value=offset, key=b"k", timestamp=0, headers=[], topic=TOPIC, partition=partition, offset=offset)


def test_each_table_gets_its_own_rows_of_every_value(ch: Client, clickhouse_endpoint: EndpointProcess,
                                                      tables: tuple[str, str]) -> None:
    every, sums = tables
    sink = sink_for(clickhouse_endpoint, every, sums)
    add(sink, 0, range(0, 30))
    add(sink, 1, range(0, 12))
    sink.flush()
    assert ch.query(f"SELECT src_partition, count(), sum(n) FROM {every} GROUP BY 1 ORDER BY 1").result_rows == [
        (0, 30, sum(range(30))), (1, 12, sum(range(12)))]
    # per partition, one row per parity (collapsed), carrying the highest offset of its rows
    assert ch.query(f"SELECT src_partition, parity, total, src_offset FROM {sums} ORDER BY 1, 2").result_rows == [
        (0, 0, sum(n for n in range(30) if n % 3 and n % 2 == 0), 28),
        (0, 1, sum(n for n in range(30) if n % 3 and n % 2 == 1), 29),
        (1, 0, sum(n for n in range(12) if n % 3 and n % 2 == 0), 10),
        (1, 1, sum(n for n in range(12) if n % 3 and n % 2 == 1), 11)]


def test_a_flush_that_lost_clickhouse_after_one_table_is_replayed_exactly_once(
        ch: Client, clickhouse_endpoint: EndpointProcess, tables: tuple[str, str]) -> None:
    every, sums = tables
    settings = clickhouse_endpoint.settings()
    flaky = InsertFailsOnce(clickhouse.connect(settings, database="default"), sums)
    sink = sink_for(clickhouse_endpoint, every, sums, connect=lambda: flaky)
    add(sink, 0, range(0, 20))
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    assert flaky.failed
    assert ch.query(f"SELECT count() FROM {every}").result_rows == [(20,)]
    assert ch.query(f"SELECT count() FROM {sums}").result_rows == [(0,)]

    add(sink, 0, range(0, 35))  # Quix re-reads from the last commit, and more has arrived meanwhile
    sink.flush()
    assert ch.query(f"SELECT count(), uniqExact(src_offset), sum(n) FROM {every}").result_rows == [
        (35, 35, sum(range(35)))]
    assert ch.query(f"SELECT sum(total) FROM {sums}").result_rows == [(sum(n for n in range(35) if n % 3),)]


class SeesWhatIsWritten:
    """A real client that, when the watermark table's INSERT starts, counts the rows the other table
    already holds in ClickHouse (what a reader trusting the watermark at that moment would find)."""

    def __init__(self, client: Client, watermark: str, other: str) -> None:
        self._client = client
        self._watermark, self._other = watermark, other
        self.other_rows_before_watermark: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert(self, *args: Any, context: Any, **kwargs: Any) -> Any:
        if context.table.endswith(f"`{self._watermark}`") or context.table == self._watermark:
            counted = self._client.query(f"SELECT count() FROM {self._other}").result_rows[0][0]
            self.other_rows_before_watermark.append(counted)
        return self._client.insert(*args, context=context, **kwargs)


def test_the_watermark_table_is_written_after_the_others_and_not_at_all_when_one_fails(
        ch: Client, clickhouse_endpoint: EndpointProcess, tables: tuple[str, str]) -> None:
    every, sums = tables
    settings = clickhouse_endpoint.settings()
    seen = SeesWhatIsWritten(clickhouse.connect(settings, database="default"), every, sums)
    sink = ClickHouseSink(lambda: seen, [Table(every, ["n"], lambda n: ([n],)),
                                         Table(sums, ["parity", "total"], lambda n: ([n % 2, n],))],
                          retry_after=0.1, watermark=every)
    add(sink, 0, range(0, 10))
    sink.flush()
    add(sink, 0, range(10, 25))
    sink.flush()
    assert seen.other_rows_before_watermark == [10, 25]

    # The other table's INSERT fails: the watermark table gets nothing of that flush, then both exactly once.
    flaky = InsertFailsOnce(clickhouse.connect(settings, database="default"), sums)
    sink = ClickHouseSink(lambda: flaky, [Table(every, ["n"], lambda n: ([n],)),
                                          Table(sums, ["parity", "total"], lambda n: ([n % 2, n],))],
                          retry_after=0.1, watermark=every)
    add(sink, 0, range(25, 40))
    with pytest.raises(SinkBackpressureError):
        sink.flush()
    assert ch.query(f"SELECT count() FROM {every}").result_rows == [(25,)]
    add(sink, 0, range(25, 40))
    sink.flush()
    assert ch.query(f"SELECT count(), uniqExact(src_offset) FROM {every}").result_rows == [(40, 40)]
    assert ch.query(f"SELECT count(), sum(total) FROM {sums}").result_rows == [(40, sum(range(40)))]
    with pytest.raises(ValueError, match="watermark table"):
        ClickHouseSink(lambda: seen, [Table(every, ["n"], lambda n: ([n],))], watermark="elsewhere")


def test_a_sink_needs_distinct_tables(clickhouse_endpoint: EndpointProcess) -> None:
    with pytest.raises(ValueError, match="distinct tables"):
        ClickHouseSink(lambda: None, [Table("a", ["n"], lambda n: ([n],)), Table("a", ["n"], lambda n: ([n],))])


class CrashAfterDeadLetters:
    """A real client that fails (as ClickHouse gone) the first INSERT into a table after the dead letters'."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.dead_letters_written = False
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert(self, table: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if table == DEAD_LETTER_TABLE:
            self.dead_letters_written = True
        elif self.dead_letters_written and not self.crashed:
            self.crashed = True
            raise OperationalError("Connection refused")
        return self._client.insert(table, *args, **kwargs)


def test_rows_clickhouse_cannot_hold_are_dead_lettered_once_and_the_rest_written(
        ch: Client, clickhouse_endpoint: EndpointProcess, table_name: str) -> None:
    """A value whose row is outside its column's type (a time before 1970, a number too big) once failed
    every replay of its checkpoint; now it is recorded in sink_dead_letters and the others are written —
    also across a crash between the two INSERTs."""
    ch.command((ROOT / "clickhouse" / "0015_sink_dead_letters.sql").read_text())
    ch.command(f"CREATE TABLE {table_name} (ts DateTime, n UInt8, src_partition UInt16, src_offset UInt64) "
               "ENGINE = MergeTree ORDER BY (src_partition, src_offset)")
    sums = f"{table_name}_sums"
    ch.command(f"CREATE TABLE {sums} (k UInt8, ts DateTime, src_partition UInt16, src_offset UInt64) "
               "ENGINE = MergeTree ORDER BY (src_partition, src_offset)")
    settings = clickhouse_endpoint.settings()
    flaky = CrashAfterDeadLetters(clickhouse.connect(settings, database="default"))

    def sink() -> ClickHouseSink:
        return ClickHouseSink(lambda: flaky, [
            Table(table_name, ["ts", "n"], lambda v: ([datetime.fromtimestamp(v[0], UTC), v[1]],)),
            Table(sums, ["k", "ts"], lambda v: ([1, v[0] - BASE],),  # seconds after BASE, summed
                  collapse=sum_by_key(1, finish=lambda row: [row[0], datetime.fromtimestamp(BASE + row[1], UTC),
                                                             *row[2:]])),
        ], retry_after=0.1)

    values = [(BASE + i, i) for i in range(10)]
    values[3] = (-(10**10), 3)  # before 1970
    values[6] = (BASE + 6, 300)  # not a UInt8

    def add_all(target: ClickHouseSink) -> None:
        for offset, value in enumerate(values):
            target.add(value=value, key=b"k", timestamp=0, headers=[], topic=TOPIC, partition=0, offset=offset)

    first = sink()
    add_all(first)
    with pytest.raises(SinkBackpressureError):
        first.flush()
    assert flaky.crashed
    replay = sink()  # the checkpoint is replayed from the last commit
    add_all(replay)
    replay.flush()
    written = ch.query(f"SELECT n FROM {table_name} ORDER BY n").result_rows
    assert written == [(n,) for n in range(10) if n not in (3, 6)]
    dead = ch.query("SELECT target, src_offset, count() FROM sink_dead_letters WHERE target IN {t:Array(String)} "
                    "GROUP BY 1, 2 ORDER BY 1, 2", parameters={"t": [table_name, sums]}).result_rows
    assert dead == [(table_name, 3, 1), (table_name, 6, 1), (sums, 3, 1)]
    # the sums table: the one value before 1970 is dead, the others are summed into one row
    assert ch.query(f"SELECT toUnixTimestamp(ts), src_offset FROM {sums}").result_rows == [
        (BASE + sum(v[0] - BASE for v in values if v[0] > 0), 9)]
    again = sink()
    add_all(again)
    again.flush()  # a true replay: nothing written twice
    assert ch.query(f"SELECT count() FROM {table_name}").result_rows == [(8,)]
    assert ch.query("SELECT count() FROM sink_dead_letters WHERE target IN {t:Array(String)}",
                    parameters={"t": [table_name, sums]}).result_rows == [(3,)]


def test_a_recreated_topics_rows_are_written_and_a_replay_is_not(ch: Client, clickhouse_endpoint: EndpointProcess,
                                                               kafka_bootstrap: str, table_name: str) -> None:
    """A topic deleted and created again (a new cluster, a reset) numbers its offsets from 0 again; a
    fence of partition and offset alone skipped its rows as if written. Topic ids tell them apart."""
    ch.command((ROOT / "clickhouse" / "0017_sink_topic_epochs.sql").read_text())
    ch.command(f"CREATE TABLE {table_name} (n UInt32, src_partition UInt16, src_offset UInt64) "
               "ENGINE = MergeTree ORDER BY (src_partition, src_offset)")
    topic = f"recreated-{uuid.uuid4().hex[:8]}"
    settings = clickhouse_endpoint.settings()
    topic_ids = kafka_topic_ids(kafka_bootstrap)

    def write(values: list[int]) -> None:
        """One process' sink writing offsets 0.. of the topic as it is now."""
        sink = ClickHouseSink(lambda: clickhouse.connect(settings, database="default"),
                              [Table(table_name, ["n"], lambda n: ([n],))], epochs=TopicEpochs(topic_ids))
        for offset, value in enumerate(values):
            sink.add(value=value, key=b"k", timestamp=0, headers=[], topic=topic, partition=0, offset=offset)
        sink.flush()

    create_topics(kafka_bootstrap, 1, specs=(TopicSpec(topic, "a topic recreated by the test"),))
    first_id = topic_ids(topic)
    write(list(range(10)))
    write(list(range(10)))  # a replay
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while topic in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        admin.close()
    create_topics(kafka_bootstrap, 1, specs=(TopicSpec(topic, "a topic recreated by the test"),))
    assert topic_ids(topic) != first_id
    write([100, 101, 102, 103, 104])
    write([100, 101, 102, 103, 104])  # a replay of the new topic's offsets
    rows = ch.query(f"SELECT n, src_offset FROM {table_name} ORDER BY n").result_rows
    assert [n for n, _ in rows] == [*range(10), 100, 101, 102, 103, 104]
    assert [source_offset(stored) for _, stored in rows] == [*range(10), *range(5)]
