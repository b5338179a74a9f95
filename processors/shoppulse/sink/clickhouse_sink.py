"""A Quix Streams batching sink that writes to ClickHouse tables through clickhouse-connect."""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform
from prometheus_client import Counter, Histogram
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from shoppulse.sink.topic_epochs import OFFSET_BITS, TopicEpochs, TopicIdentityError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
SOURCE_COLUMNS = ("src_partition", "src_offset")
DEAD_LETTER_TABLE = "sink_dead_letters"  # clickhouse/0015
DEAD_LETTER_COLUMNS = ("target", "reason", "row", *SOURCE_COLUMNS)
DEAD_ROW_CHARS = 4096  # of a dead row's JSON kept

Rows = list[list[Any]]
SINK_ROWS = Counter("shoppulse_sink_rows", "Rows written to ClickHouse", ["table"])
SINK_SKIPPED = Counter("shoppulse_sink_replayed_rows", "Rows not written again after a replay", ["table"])
SINK_BATCH_ROWS = Histogram("shoppulse_sink_batch_rows", "Rows per INSERT", ["table"],
                            buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
SINK_SECONDS = Histogram("shoppulse_sink_write_seconds", "Duration of one INSERT of a batch",
                         ["table"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SINK_DEAD_ROWS = Counter("shoppulse_sink_dead_rows", "Rows ClickHouse cannot hold (a value outside its column's "
                         "type), recorded in sink_dead_letters instead", ["table"])
SINK_BACKPRESSURE = Counter("shoppulse_sink_backpressure", "Times ClickHouse was unreachable and the sink paused",
                            ["table"])


@dataclass(frozen=True)
class Table:
    """A table a ``ClickHouseSink`` writes: its columns, the rows one processed value gives it
    (none, one or several), and optionally how a partition's rows are folded before the INSERT
    (see ``sum_by_key``; rows end with their source partition and offset)."""

    name: str
    columns: Sequence[str]
    rows: Callable[[Any], Sequence[Sequence[Any]]]
    collapse: Callable[[Rows], Rows] | None = None


class ClickHouseSink(BatchingSink):
    """Writes each checkpoint's rows — all partitions of the source topic — in one INSERT per table.

    Delivery guarantee: exactly once per source offset and table. Every row carries the partition
    and offset of the message that produced it (``src_partition``, ``src_offset``). Before each
    write the sink reads the highest offset each table already holds for each partition in the
    batch (one query for all its tables, answered by each table's ``sink_fence`` projection, so its
    cost does not grow with the table) and drops the rows at or below it, so a replay after a
    crash — rows flushed, Kafka commit lost, or only some tables written — writes nothing twice,
    whatever the checkpoint boundaries were. One INSERT is one ClickHouse block, so a
    checkpoint's rows of a table land whole or not at all. This needs offsets to grow in the
    order a table's rows are written, which holds per partition when all rows of a table go
    through one sink instance, and one source topic per sink. The fence is read on every write
    rather than cached: after a rebalance another consumer may have written the same partition,
    and the sink is not told. Given ``epochs``, a row's offset carries its topic's incarnation
    (``topic_epochs``): rows of a topic deleted and created again are written, not fenced as replays.

    One sink may serve several tables and several branches of a dataframe: a processor whose
    values feed five tables then adds each value to one sink, and Quix copies it once per branch
    rather than once per table. The insert context (column types) is built once per connection.

    When ClickHouse cannot be reached, the flush raises ``SinkBackpressureError``: Quix drops
    the in-memory batches, pauses the assignment and re-reads it from the last commit after
    ``retry_after`` seconds, so nothing is lost and the consumer does not race ahead.

    A row a table's column types cannot hold (a time before 1970 in a DateTime, a number out of
    range) would fail every replay of its checkpoint and stall every partition behind it. So when a
    table's INSERT fails on its data, each value's rows are tried alone: those that cannot be
    written go to ``sink_dead_letters`` with the reason (and ``shoppulse_sink_dead_rows``), first,
    then the table gets the others — the dead letters have a fence of their own, so a crash between
    the two INSERTs records nothing twice. A data error no single value explains is raised as is.

    Given ``watermark``, the table readers take their freshness from (its newest second), that table
    is written only after every other table of the flush has landed: a reader that trusts its
    watermark finds the other tables' rows of the same seconds too, never a flush half-written."""

    def __init__(self, connect: Callable[[], Client], tables: Sequence[Table],
                 retry_after: float = RETRY_AFTER_S, epochs: TopicEpochs | None = None,
                 watermark: str | None = None) -> None:
        super().__init__()
        if not tables or len({table.name for table in tables}) != len(tables):
            raise ValueError(f"a ClickHouse sink needs one or more distinct tables, got {[t.name for t in tables]}")
        if watermark is not None and watermark not in {table.name for table in tables}:
            raise ValueError(f"the watermark table {watermark!r} is not one of the sink's {[t.name for t in tables]}")
        self._watermark = watermark
        self.tables = list(tables)
        self._connect = connect
        self._client: Client | None = None
        self._insert_contexts: dict[str, InsertContext] = {}
        self._retry_after = retry_after
        self._topic: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._epochs = epochs

    def setup(self) -> None:
        """Connect early to fail fast on a bad configuration; a ClickHouse that is merely down
        is not an error here — writes back-pressure until it is back."""
        try:
            self._client = self._connect()
        except (OperationalError, ConnectionError) as exc:
            log.warning("clickhouse unavailable at start", extra={"tables": self._names(), "error": str(exc)[:200]})

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
                raise ValueError(f"{self._names()} are fed from {self._topic}; a second source topic {batch.topic} "
                                 "would break their offset fence")
        try:
            client = self._client or self._connect()
            self._client = client
            base = self._epochs.epoch(client, batches[0].topic) << OFFSET_BITS if self._epochs else 0
            fences = self._written_up_to(client, sorted({batch.partition for batch in batches}))
            inserts = [(table, rows) for table in self.tables
                       if (rows := self._fresh_rows(table, batches, fences.get(table.name, {}), base))]
            others = [(table, rows) for table, rows in inserts if table.name != self._watermark]
            last = [(table, rows) for table, rows in inserts if table.name == self._watermark]
            for group in (others, last):
                for table, exc in self._insert_all(client, group):
                    self._write_around_dead_rows(client, table, batches, fences.get(table.name, {}), base, exc)
        except (OperationalError, ConnectionError, TopicIdentityError) as exc:
            self._pause(exc)
        except DatabaseError as exc:
            if not _is_unavailable(exc):
                raise
            self._pause(exc)

    def _fresh_rows(self, table: Table, batches: list[SinkBatch], fences: dict[int, int], base: int) -> Rows:
        """The table's rows of the batches' values above its fence (rows end with partition, offset:
        the Kafka offset plus ``base``, the topic's epoch in the high bits)."""
        rows: Rows = []
        replayed = 0
        for batch in batches:
            fence = fences.get(batch.partition, -1)
            fresh: Rows = []
            for item in batch:
                produced = table.rows(item.value)
                if not produced:
                    continue
                offset = base + item.offset
                if offset > fence:
                    fresh += [[*row, batch.partition, offset] for row in produced]
                else:
                    replayed += len(produced)
            rows += table.collapse(fresh) if table.collapse and fresh else fresh
        SINK_SKIPPED.labels(table.name).inc(replayed)
        return rows

    def _insert_all(self, client: Client, inserts: list[tuple[Table, Rows]]) -> list[tuple[Table, DataError]]:
        """One INSERT per table, side by side: each is mostly waiting for ClickHouse to write its
        part (and its materialized views'), and the processor waits for them all at every commit.
        All are waited for before a failure is raised, so that none is still in flight when a
        replay reads the fences. Returns the tables whose rows could not be encoded for their columns."""
        if not inserts:
            return []
        contexts = [self._context(client, table) for table, _ in inserts]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self.tables), thread_name_prefix="clickhouse-insert")
        futures = [self._pool.submit(self._insert, client, table, rows, context)
                   for (table, rows), context in zip(inserts, contexts, strict=True)]
        wait(futures)
        bad_data: list[tuple[Table, DataError]] = []
        for (table, _), future in zip(inserts, futures, strict=True):
            exc = future.exception()
            if isinstance(exc, DataError):
                bad_data.append((table, exc))
            elif exc is not None:
                raise exc
        return bad_data

    def _write_around_dead_rows(self, client: Client, table: Table, batches: list[SinkBatch],
                                fences: dict[int, int], base: int, error: DataError) -> None:
        """The table's rows of the batches, each value's alone checked against the columns: the dead
        ones into sink_dead_letters (above their own fence), then the rest into the table."""
        probe = client.create_insert_context(table.name, [*table.columns, *SOURCE_COLUMNS])
        good: Rows = []
        dead: Rows = []
        for batch in batches:
            fence = fences.get(batch.partition, -1)
            fresh: Rows = []
            for item in batch:
                offset = base + item.offset
                produced = table.rows(item.value) if offset > fence else ()
                rows = [[*row, batch.partition, offset] for row in produced]
                if rows and table.collapse:
                    rows = table.collapse(rows)
                reason = _unencodable(probe, rows) if rows else None
                if reason is None:
                    fresh += [[*row, batch.partition, offset] for row in produced]
                else:
                    dead += [[table.name, reason, _as_json(row), batch.partition, offset] for row in rows]
            good += table.collapse(fresh) if table.collapse and fresh else fresh
        if not dead:
            raise error
        dead_fences = self._dead_letters_written_up_to(client, table.name, sorted({b.partition for b in batches}))
        dead = [row for row in dead if row[-1] > dead_fences.get(row[-2], -1)]
        if dead:
            client.insert(DEAD_LETTER_TABLE, dead, column_names=list(DEAD_LETTER_COLUMNS))
            SINK_DEAD_ROWS.labels(table.name).inc(len(dead))
            log.warning("rows ClickHouse cannot hold recorded in sink_dead_letters",
                        extra={"table": table.name, "rows": len(dead), "reason": dead[0][1][:200]})
        if good:
            self._insert(client, table, good, self._context(client, table))

    def _dead_letters_written_up_to(self, client: Client, target: str, partitions: list[int]) -> dict[int, int]:
        result = client.query(f"SELECT src_partition, max(src_offset) FROM {DEAD_LETTER_TABLE} WHERE target = "
                              "{t:String} AND src_partition IN {ps:Array(UInt16)} GROUP BY src_partition",
                              parameters={"t": target, "ps": partitions})
        return {int(partition): int(highest) for partition, highest in result.result_rows}

    @staticmethod
    def _insert(client: Client, table: Table, rows: Rows, context: InsertContext) -> None:
        started = time.perf_counter()
        client.insert(data=rows, context=context)
        SINK_ROWS.labels(table.name).inc(len(rows))
        SINK_BATCH_ROWS.labels(table.name).observe(len(rows))
        SINK_SECONDS.labels(table.name).observe(time.perf_counter() - started)

    def _context(self, client: Client, table: Table) -> InsertContext:
        context = self._insert_contexts.get(table.name)
        if context is None:
            context = client.create_insert_context(table.name, [*table.columns, *SOURCE_COLUMNS])
            self._insert_contexts[table.name] = context
        return context

    def _names(self) -> list[str]:
        return [table.name for table in self.tables]

    def _pause(self, exc: Exception) -> None:
        self._client = None
        self._insert_contexts.clear()
        for table in self.tables:
            SINK_BACKPRESSURE.labels(table.name).inc()
        log.warning("clickhouse unavailable, pausing", extra={"tables": self._names(), "error": str(exc)[:200]})
        raise SinkBackpressureError(retry_after=self._retry_after) from exc

    def _written_up_to(self, client: Client, partitions: list[int]) -> dict[str, dict[int, int]]:
        """The highest source offset each table holds, per partition (absent: nothing written)."""
        result = client.query(fence_query(self._names()), parameters={"ps": partitions})
        fences: dict[str, dict[int, int]] = {}
        for table, partition, highest in result.result_rows:
            fences.setdefault(table, {})[int(partition)] = int(highest)
        return fences


def fence_query(tables: Sequence[str]) -> str:
    """The highest source offset of each table per partition (parameter ``ps``), in one query. Each
    table has a ``sink_fence`` projection (clickhouse/0013) that answers it from a few rows per part."""
    return " UNION ALL ".join(
        f"SELECT '{table}' AS t, src_partition, max(src_offset) FROM {table} "
        "WHERE src_partition IN {ps:Array(UInt16)} GROUP BY src_partition" for table in tables)


def sum_by_key(key_columns: int, finish: Callable[[list[Any]], list[Any]] | None = None
               ) -> Callable[[Rows], Rows]:
    """A ``collapse`` for additive tables: rows of one partition with the same first ``key_columns``
    values become one row with the other columns summed and the highest source offset, then
    ``finish`` (optional) turns each summed row into the table's row in place — so that
    conversions to column types are paid per table row, not per event. The fence stays exact
    because one batch is written whole: its highest offset covers all its rows."""

    def collapse(rows: Rows) -> Rows:
        groups: dict[tuple[Any, ...], Rows] = {}
        for row in rows:
            key = tuple(row[:key_columns])
            group = groups.get(key)
            if group is None:
                groups[key] = [row]
            else:
                group.append(row)
        folded: Rows = []
        for key, group in groups.items():  # summed column by column (in C: a row's sums were a Python loop)
            columns = list(zip(*group, strict=True))
            row = [*key, *map(sum, columns[key_columns:-2]), columns[-2][0], max(columns[-1])]
            folded.append(finish(row) if finish else row)
        return folded

    return collapse


def _unencodable(probe: InsertContext, rows: Rows) -> str | None:
    """Why ``rows`` cannot be encoded for the probe's columns (None: they can). Encoding is what
    clickhouse-connect does before sending an INSERT; nothing is sent here. (Its encoder logs each
    failure with a traceback at ERROR: the sink logs one line for the rows it records instead.)"""
    failures: list[Exception] = []
    probe.data = rows
    encoder_log = logging.getLogger("clickhouse_connect.driver.transform")
    level, encoder_log.level = encoder_log.level, logging.CRITICAL
    try:
        for _ in NativeTransform.build_insert(probe, error_handler=failures.append):
            pass
    except (DataError, ValueError, TypeError, OverflowError, struct.error) as exc:
        failures.append(exc)
    finally:
        encoder_log.setLevel(level)
    if not failures:
        return None
    return str(failures[0]).splitlines()[0][:500] or type(failures[0]).__name__


def _as_json(row: Sequence[Any]) -> str:
    return json.dumps(row[:-2], default=str, ensure_ascii=False)[:DEAD_ROW_CHARS]


def _is_unavailable(exc: DatabaseError) -> bool:
    text = str(exc)
    return any(marker in text for marker in ("Connection refused", "timed out", "503", "Max retries"))
