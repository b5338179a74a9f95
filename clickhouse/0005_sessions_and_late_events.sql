-- sessions (+ sessions_1m) and late_events: closed shopper sessions (cart abandonment, conversion) and events too late for their window.
CREATE TABLE IF NOT EXISTS sessions
(
    session_end    DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    session_start  DateTime64(3, 'UTC'),
    session_id     String,
    country        LowCardinality(String),
    events         UInt32,
    cart_adds      UInt32,
    checkouts      UInt32,
    purchased      UInt8,
    abandoned      UInt8,
    revenue        Decimal(18, 4),
    src_partition  UInt16,
    src_offset     UInt64
)
ENGINE = MergeTree
PARTITION BY toDate(session_end)
ORDER BY (country, session_end)
TTL toDateTime(session_end) + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS sessions_1m
(
    ts         DateTime('UTC') CODEC(Delta, ZSTD),
    country    LowCardinality(String),
    sessions   UInt64,
    with_cart  UInt64,
    abandoned  UInt64,
    converted  UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 2 YEAR;

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_1m_mv TO sessions_1m AS
SELECT toStartOfMinute(session_end) AS ts, country, count() AS sessions, countIf(cart_adds > 0) AS with_cart,
       sum(abandoned) AS abandoned, sum(purchased) AS converted
FROM sessions
GROUP BY ts, country;

CREATE TABLE IF NOT EXISTS late_events
(
    event_time     DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    country        LowCardinality(String),
    event_type     LowCardinality(String),
    late_by_ms     UInt32,
    src_partition  UInt16,
    src_offset     UInt64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (country, event_time)
TTL toDateTime(event_time) + INTERVAL 30 DAY;
