"""A Quix Streams batching sink that writes to one ClickHouse table through clickhouse-connect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.insert import InsertContext
from prometheus_client import Counter, Histogram
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
SOURCE_COLUMNS = ("src_partition", "src_offset")

RowBuilder = Callable[[Any], Sequence[Any]]
Rows = list[list[Any]]

SINK_ROWS = Counter("shoppulse_sink_rows", "Rows written to ClickHouse", ["table"])
SINK_SKIPPED = Counter("shoppulse_sink_replayed_rows", "Rows not written again after a replay", ["table"])
SINK_BATCH_ROWS = Histogram("shoppulse_sink_batch_rows", "Rows per INSERT", ["table"],
                            buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
SINK_SECONDS = Histogram("shoppulse_sink_write_seconds", "Duration of one batch write (fence read + INSERT)",
                         ["table"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SINK_BACKPRESSURE = Counter("shoppulse_sink_backpressure", "Times ClickHouse was unreachable and the sink paused",
                            ["table"])


class ClickHouseSink(BatchingSink):
    """Writes each checkpoint's rows — all partitions of the source topic — in one INSERT.

    Delivery guarantee: exactly once per source offset. Every row carries the partition and
    offset of the message that produced it (``src_partition``, ``src_offset``). Before each
    write the sink reads the highest offset the table already holds for each partition in the
    batch (one query) and drops the rows at or below it, so a replay after a crash — rows
    flushed, Kafka commit lost — writes nothing twice, whatever the checkpoint boundaries were.
    One INSERT is one ClickHouse block, so a checkpoint's rows land whole or not at all. This
    needs offsets to grow in the order rows are written, which holds per partition, and one
    source topic per table. The fence is read on every write rather than cached: after a
    rebalance another consumer may have written the same partition, and the sink is not told.

    So a checkpoint costs two requests per table, whatever the partition count; the insert
    context (column types) is built once per connection, not per write.

    When ClickHouse cannot be reached, the flush raises ``SinkBackpressureError``: Quix drops
    the in-memory batches, pauses the assignment and re-reads it from the last commit after
    ``retry_after`` seconds, so nothing is lost and the consumer does not race ahead.
    A ClickHouse error about the data itself is raised as is: the checkpoint fails loudly."""

    def __init__(self, connect: Callable[[], Client], table: str, columns: Sequence[str], to_row: RowBuilder,
                 retry_after: float = RETRY_AFTER_S, collapse: Callable[[Rows], Rows] | None = None) -> None:
        """``collapse`` optionally folds the rows of one partition's batch before the INSERT (see
        ``sum_by_key``); rows end with their source partition and offset."""
        super().__init__()
        self._collapse = collapse
        self._connect = connect
        self._client: Client | None = None
        self._insert_context: InsertContext | None = None
        self.table = table
        self.columns = [*columns, *SOURCE_COLUMNS]
        self._to_row = to_row
        self._retry_after = retry_after
        self._topic: str | None = None

    def setup(self) -> None:
        """Connect early to fail fast on a bad configuration; a ClickHouse that is merely down
        is not an error here — writes back-pressure until it is back."""
        try:
            self._client = self._connect()
        except (OperationalError, ConnectionError) as exc:
            log.warning("clickhouse unavailable at start", extra={"table": self.table, "error": str(exc)[:200]})

    def flush(self) -> None:
        try:
            batches = [batch for batch in self._batches.values() if batch.size]
            if batches:
                self._write(batches)
        finally:
            self._batches.clear()

    def write(self, batch: SinkBatch) -> None:
        self._write([batch])

    def _write(self, batches: list[SinkBatch]) -> None:
        for batch in batches:
            self._topic = self._topic or batch.topic
            if batch.topic != self._topic:
                raise ValueError(f"{self.table} is fed from {self._topic}; a second source topic {batch.topic} "
                                 "would break its offset fence")
        started = time.perf_counter()
        rows: Rows = []
        replayed = 0
        try:
            client = self._client or self._connect()
            self._client = client
            fences = self._written_up_to(client, [batch.partition for batch in batches])
            for batch in batches:
                fence = fences.get(batch.partition, -1)
                fresh = [[*self._to_row(item.value), batch.partition, item.offset] for item in batch
                         if item.offset > fence]
                replayed += batch.size - len(fresh)
                rows += self._collapse(fresh) if self._collapse and fresh else fresh
            if rows:
                client.insert(data=rows, context=self._context(client))
        except (OperationalError, ConnectionError) as exc:
            self._pause(exc)
        except DatabaseError as exc:
            if not _is_unavailable(exc):
                raise
            self._pause(exc)
        SINK_ROWS.labels(self.table).inc(len(rows))
        SINK_SKIPPED.labels(self.table).inc(replayed)
        SINK_BATCH_ROWS.labels(self.table).observe(len(rows))
        SINK_SECONDS.labels(self.table).observe(time.perf_counter() - started)

    def _context(self, client: Client) -> InsertContext:
        if self._insert_context is None:
            self._insert_context = client.create_insert_context(self.table, self.columns)
        return self._insert_context

    def _pause(self, exc: Exception) -> None:
        self._client = None
        self._insert_context = None
        SINK_BACKPRESSURE.labels(self.table).inc()
        log.warning("clickhouse unavailable, pausing", extra={"table": self.table, "error": str(exc)[:200]})
        raise SinkBackpressureError(retry_after=self._retry_after) from exc

    def _written_up_to(self, client: Client, partitions: list[int]) -> dict[int, int]:
        """The highest source offset the table holds, per partition (absent: nothing written)."""
        result = client.query(
            f"SELECT src_partition, max(src_offset) FROM {self.table} "
            "WHERE src_partition IN {ps:Array(UInt16)} GROUP BY src_partition",
            parameters={"ps": sorted(set(partitions))})
        return {int(partition): int(highest) for partition, highest in result.result_rows}


def sum_by_key(key_columns: int) -> Callable[[Rows], Rows]:
    """A ``collapse`` for additive tables: rows of one partition with the same first ``key_columns``
    values become one row with the other columns summed and the highest source offset. The
    fence stays exact because one batch is written whole: its highest offset covers all its rows."""

    def collapse(rows: Rows) -> Rows:
        folded: dict[tuple[Any, ...], list[Any]] = {}
        for row in rows:
            key = tuple(row[:key_columns])
            into = folded.get(key)
            if into is None:
                folded[key] = list(row)
                continue
            for i in range(key_columns, len(row) - 2):
                into[i] += row[i]
            into[-1] = max(into[-1], row[-1])
        return list(folded.values())

    return collapse


def _is_unavailable(exc: DatabaseError) -> bool:
    text = str(exc)
    return any(marker in text for marker in ("Connection refused", "timed out", "503", "Max retries"))
