-- component_heartbeats: one row per stack component every few seconds (health, address, pid), kept 7 days.
CREATE TABLE IF NOT EXISTS component_heartbeats
(
    ts        DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    component LowCardinality(String),
    state     LowCardinality(String),
    address   String,
    pid       UInt32,
    detail    String
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (component, ts)
TTL toDateTime(ts) + INTERVAL 7 DAY;
