"""``metrics_live``: the store counters of every clean event, summed per country and event-time
second at each ingestion checkpoint — provisional figures one Kafka hop after the shop sent the
event, while the aggregation's window of that second is still open.

Why here and not in the aggregation: the live sums need no window and no state — each event adds
its counts to its second — but an event reaches the aggregation only after ingestion's
transaction commits, and it is queryable from there only after the aggregation's own checkpoint.
Summed at ingestion, an event is in ClickHouse at ingestion's checkpoint: one commit interval
instead of two (``shoppulse bench pipeline`` measures both tables). Ingestion has every clean
event exactly once (de-duplicated by event id, in the same transaction as its offsets) and the
sink's offset fence on the raw topic writes each partial sum once, so a second's live sum still
equals its final ``metrics_1s`` sum, late events included (the aggregation writes those as
corrections)."""

from __future__ import annotations

from typing import Any

from shoppulse.events.store_metrics import METRICS_COLUMNS, event_counts, to_datetime, to_money
from shoppulse.sink.clickhouse_sink import Table, sum_by_key

SECOND_MS = 1000


def live_rows(value: dict[str, Any]) -> tuple[list[Any], ...]:
    """A clean event's counts keyed by its second (in ms) and country; ``live_row`` makes the
    table row once they are summed. Anything else (a dead letter) counts nothing."""
    if "event_time_ms" not in value:
        return ()
    timestamp = value["event_time_ms"]
    return ([timestamp - timestamp % SECOND_MS, value["country"], *event_counts(value)],)


def live_row(summed: list[Any]) -> list[Any]:
    """A summed ``live_rows`` row (…, revenue units, partition, offset) as a ``metrics_live`` row."""
    summed[0] = to_datetime(summed[0])
    summed[-3] = to_money(summed[-3])
    return summed


def live_metrics_table() -> Table:
    return Table("metrics_live", METRICS_COLUMNS, live_rows, collapse=sum_by_key(2, finish=live_row))
