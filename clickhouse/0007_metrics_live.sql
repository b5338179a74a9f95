-- metrics_live: provisional per-checkpoint sums of every event per country and second (same columns as metrics_1s), queryable ~1 s after the event; the final figures are metrics_1s.
-- Rows are additive partial sums, written exactly once by the sink's offset fence: always read with sum() ... GROUP BY.
-- A second is final once it is at or below the freshness watermark; dashboards read live only above it.
CREATE TABLE IF NOT EXISTS metrics_live
(
    ts               DateTime('UTC') CODEC(Delta, ZSTD),
    country          LowCardinality(String),
    product_views    UInt32,
    cart_adds        UInt32,
    cart_removes     UInt32,
    checkouts        UInt32,
    payment_attempts UInt32,
    payment_failures UInt32,
    orders           UInt32,
    items            UInt32,
    revenue          Decimal(18, 4),
    src_partition    UInt16,
    src_offset       UInt64
)
ENGINE = MergeTree
PARTITION BY toStartOfHour(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 1 DAY;
