-- dead_letters and events_sample: rejected raw events (reason, digest; never their bytes) and a 1 % sample of clean events.
CREATE TABLE IF NOT EXISTS dead_letters
(
    received_at   DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    reason        LowCardinality(String),
    detail        String,
    size_bytes    UInt32,
    sha256        FixedString(64),
    src_partition UInt16,
    src_offset    UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (reason, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY;

CREATE TABLE IF NOT EXISTS events_sample
(
    event_time    DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    event_id      UUID,
    event_type    LowCardinality(String),
    country       LowCardinality(String),
    device        LowCardinality(String),
    session_id    String,
    user_hash     String,
    amount        Nullable(Decimal(18, 4)),
    payload       String CODEC(ZSTD(3)),
    src_partition UInt16,
    src_offset    UInt64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (country, event_type, event_time)
TTL toDateTime(event_time) + INTERVAL 30 DAY;
