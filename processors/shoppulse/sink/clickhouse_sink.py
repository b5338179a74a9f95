"""A Quix Streams batching sink that writes to one ClickHouse table through clickhouse-connect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from prometheus_client import Counter, Histogram
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
SOURCE_COLUMNS = ("src_partition", "src_offset")

RowBuilder = Callable[[Any], Sequence[Any]]

SINK_ROWS = Counter("shoppulse_sink_rows", "Rows written to ClickHouse", ["table"])
SINK_SKIPPED = Counter("shoppulse_sink_replayed_rows", "Rows not written again after a replay", ["table"])
SINK_BATCH_ROWS = Histogram("shoppulse_sink_batch_rows", "Rows per INSERT", ["table"],
                            buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
SINK_SECONDS = Histogram("shoppulse_sink_write_seconds", "Duration of one batch write (fence read + INSERT)",
                         ["table"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SINK_BACKPRESSURE = Counter("shoppulse_sink_backpressure", "Times ClickHouse was unreachable and the sink paused",
                            ["table"])


class ClickHouseSink(BatchingSink):
    """Writes each checkpoint's rows for a topic partition in one INSERT.

    Delivery guarantee: exactly once per source offset. Every row carries the partition and
    offset of the message that produced it (``src_partition``, ``src_offset``). Before each
    write the sink reads the highest offset the table already holds for that partition and
    drops the rows at or below it, so a replay after a crash — rows flushed, Kafka commit
    lost — writes nothing twice, whatever the checkpoint boundaries were. One INSERT is one
    ClickHouse block, so a batch lands whole or not at all. This needs offsets to grow in
    the order rows are written, which holds per partition, and one source topic per table.

    When ClickHouse cannot be reached, ``write`` raises ``SinkBackpressureError``: Quix drops
    the in-memory batch, pauses the partition and re-reads it from the last commit after
    ``retry_after`` seconds, so nothing is lost and the consumer does not race ahead.
    A ClickHouse error about the data itself is raised as is: the checkpoint fails loudly."""

    def __init__(self, connect: Callable[[], Client], table: str, columns: Sequence[str], to_row: RowBuilder,
                 retry_after: float = RETRY_AFTER_S) -> None:
        super().__init__()
        self._connect = connect
        self._client: Client | None = None
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

    def write(self, batch: SinkBatch) -> None:
        if self._topic is None:
            self._topic = batch.topic
        if batch.topic != self._topic:
            raise ValueError(f"{self.table} is fed from {self._topic}; a second source topic {batch.topic} "
                             "would break its offset fence")
        started = time.perf_counter()
        rows: list[list[Any]] = []
        try:
            client = self._client or self._connect()
            self._client = client
            fence = self._written_up_to(client, batch.partition)
            rows = [[*self._to_row(item.value), batch.partition, item.offset]
                    for item in batch if item.offset > fence]
            if rows:
                client.insert(self.table, rows, column_names=self.columns)
        except (OperationalError, ConnectionError) as exc:
            self._pause(exc)
        except DatabaseError as exc:
            if not _is_unavailable(exc):
                raise
            self._pause(exc)
        SINK_ROWS.labels(self.table).inc(len(rows))
        SINK_SKIPPED.labels(self.table).inc(batch.size - len(rows))
        SINK_BATCH_ROWS.labels(self.table).observe(len(rows))
        SINK_SECONDS.labels(self.table).observe(time.perf_counter() - started)

    def _pause(self, exc: Exception) -> None:
        self._client = None
        SINK_BACKPRESSURE.labels(self.table).inc()
        log.warning("clickhouse unavailable, pausing", extra={"table": self.table, "error": str(exc)[:200]})
        raise SinkBackpressureError(retry_after=self._retry_after) from exc

    def _written_up_to(self, client: Client, partition: int) -> int:
        result = client.query(
            f"SELECT max(src_offset), count() FROM {self.table} WHERE src_partition = {{p:UInt16}}",
            parameters={"p": partition})
        highest, count = result.result_rows[0]
        return int(highest) if count else -1


def _is_unavailable(exc: DatabaseError) -> bool:
    text = str(exc)
    return any(marker in text for marker in ("Connection refused", "timed out", "503", "Max retries"))
