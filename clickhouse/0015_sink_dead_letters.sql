-- sink_dead_letters: rows a ClickHouse sink could not write (a value outside its column's type, e.g. a time before 1970 in a
-- DateTime), recorded here with the reason instead of failing every checkpoint after them. target names the table the row
-- was for; the row is written as JSON, as the table would have held it. Fenced per target and source partition like the
-- tables themselves (the projection answers the fence), so a replay records each once.
CREATE TABLE IF NOT EXISTS sink_dead_letters
(
    written_at    DateTime64(3, 'UTC') DEFAULT now64(3),
    target        LowCardinality(String),
    reason        String,
    row           String,
    src_partition UInt16,
    src_offset    UInt64,
    PROJECTION sink_fence (SELECT target, src_partition, max(src_offset) GROUP BY target, src_partition)
)
ENGINE = MergeTree
ORDER BY (target, src_partition, src_offset)
TTL toDateTime(written_at) + INTERVAL 90 DAY;
