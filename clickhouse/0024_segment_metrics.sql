-- segment_metrics_1s: the funnel per country, second and segment — each device (every event carries one) and each
-- product category (product views carry one) — so an incident's contributors can name the device or category behind
-- it. A category row counts product views only. Like metrics_1s, a second may hold correction rows for late events:
-- read it with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS segment_metrics_1s
(
    ts               DateTime('UTC') CODEC(Delta, ZSTD),
    country          LowCardinality(String),
    dimension        LowCardinality(String),
    segment          LowCardinality(String),
    product_views    UInt32,
    cart_adds        UInt32,
    checkouts        UInt32,
    payment_attempts UInt32,
    payment_failures UInt32,
    orders           UInt32,
    revenue          Decimal(18, 4),
    src_partition    UInt16,
    src_offset       UInt64,
    PROJECTION sink_fence (SELECT src_partition, max(src_offset) GROUP BY src_partition)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (country, dimension, segment, ts)
TTL ts + INTERVAL 7 DAY;
