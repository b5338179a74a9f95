"""The ClickHouse sink against the real engine: several tables behind one sink, each written
exactly once per source offset — also when a flush wrote some tables and then lost ClickHouse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from quixstreams.sinks import SinkBackpressureError

from conftest import EndpointProcess
from shoppulse import clickhouse
from shoppulse.sink.clickhouse_sink import ClickHouseSink, Table, sum_by_key

pytestmark = pytest.mark.integration
TOPIC = "clean-events"


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


def test_a_sink_needs_distinct_tables(clickhouse_endpoint: EndpointProcess) -> None:
    with pytest.raises(ValueError, match="distinct tables"):
        ClickHouseSink(lambda: None, [Table("a", ["n"], lambda n: ([n],)), Table("a", ["n"], lambda n: ([n],))])
