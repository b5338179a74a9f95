-- metrics_1s (+ _1m, _1h rollups): funnel counts, orders and revenue (USD) per country and second, from `shoppulse aggregate`.
-- A second may have a window row and late-event correction rows: always read with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS metrics_1s
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
PARTITION BY toDate(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS metrics_1m
(
    ts               DateTime('UTC') CODEC(Delta, ZSTD),
    country          LowCardinality(String),
    product_views    UInt64,
    cart_adds        UInt64,
    cart_removes     UInt64,
    checkouts        UInt64,
    payment_attempts UInt64,
    payment_failures UInt64,
    orders           UInt64,
    items            UInt64,
    revenue          Decimal(18, 4)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_1m_mv TO metrics_1m AS
SELECT toStartOfMinute(ts) AS ts, country,
       sum(product_views) AS product_views, sum(cart_adds) AS cart_adds, sum(cart_removes) AS cart_removes,
       sum(checkouts) AS checkouts, sum(payment_attempts) AS payment_attempts,
       sum(payment_failures) AS payment_failures, sum(orders) AS orders, sum(items) AS items,
       sum(revenue) AS revenue
FROM metrics_1s
GROUP BY ts, country;

CREATE TABLE IF NOT EXISTS metrics_1h
(
    ts               DateTime('UTC') CODEC(Delta, ZSTD),
    country          LowCardinality(String),
    product_views    UInt64,
    cart_adds        UInt64,
    cart_removes     UInt64,
    checkouts        UInt64,
    payment_attempts UInt64,
    payment_failures UInt64,
    orders           UInt64,
    items            UInt64,
    revenue          Decimal(18, 4)
)
ENGINE = SummingMergeTree
PARTITION BY toYear(ts)
ORDER BY (country, ts)
TTL ts + INTERVAL 2 YEAR;

CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_1h_mv TO metrics_1h AS
SELECT toStartOfHour(ts) AS ts, country,
       sum(product_views) AS product_views, sum(cart_adds) AS cart_adds, sum(cart_removes) AS cart_removes,
       sum(checkouts) AS checkouts, sum(payment_attempts) AS payment_attempts,
       sum(payment_failures) AS payment_failures, sum(orders) AS orders, sum(items) AS items,
       sum(revenue) AS revenue
FROM metrics_1m
GROUP BY ts, country;
