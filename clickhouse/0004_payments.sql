-- payment_latency_1s (+ _1m, _1h): payment attempts, failures and a log-bucket latency histogram per country, gateway and second.
-- Bucket b holds latencies in [1.1^b, 1.1^(b+1)) ms, so a percentile read from it is within 5 % of the true value.
CREATE TABLE IF NOT EXISTS payment_latency_1s
(
    ts             DateTime('UTC') CODEC(Delta, ZSTD),
    country        LowCardinality(String),
    gateway        LowCardinality(String),
    attempts       UInt32,
    failures       UInt32,
    bucket_keys    Array(UInt16),
    bucket_counts  Array(UInt32),
    src_partition  UInt16,
    src_offset     UInt64
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (country, gateway, ts)
TTL ts + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS payment_latency_1m
(
    ts        DateTime('UTC') CODEC(Delta, ZSTD),
    country   LowCardinality(String),
    gateway   LowCardinality(String),
    attempts  SimpleAggregateFunction(sum, UInt64),
    failures  SimpleAggregateFunction(sum, UInt64),
    histogram AggregateFunction(sumMap, Array(UInt16), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (country, gateway, ts)
TTL ts + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS payment_latency_1m_mv TO payment_latency_1m AS
SELECT toStartOfMinute(ts) AS ts, country, gateway, sum(toUInt64(attempts)) AS attempts,
       sum(toUInt64(failures)) AS failures,
       sumMapState(bucket_keys, arrayMap(c -> toUInt64(c), bucket_counts)) AS histogram
FROM payment_latency_1s
GROUP BY ts, country, gateway;

CREATE TABLE IF NOT EXISTS payment_latency_1h
(
    ts        DateTime('UTC') CODEC(Delta, ZSTD),
    country   LowCardinality(String),
    gateway   LowCardinality(String),
    attempts  SimpleAggregateFunction(sum, UInt64),
    failures  SimpleAggregateFunction(sum, UInt64),
    histogram AggregateFunction(sumMap, Array(UInt16), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(ts)
ORDER BY (country, gateway, ts)
TTL ts + INTERVAL 2 YEAR;

CREATE MATERIALIZED VIEW IF NOT EXISTS payment_latency_1h_mv TO payment_latency_1h AS
SELECT toStartOfHour(ts) AS ts, country, gateway, sum(attempts) AS attempts, sum(failures) AS failures,
       sumMapMergeState(histogram) AS histogram
FROM payment_latency_1m
GROUP BY ts, country, gateway;

-- latency_quantile(keys, counts, q): the q-quantile in ms of a log-bucket histogram (geometric bucket middle).
CREATE FUNCTION IF NOT EXISTS latency_quantile AS (keys, counts, q) ->
    if(arraySum(counts) = 0, nan,
       pow(1.1, keys[arrayFirstIndex(c -> c >= q * arraySum(counts), arrayCumSum(counts))] + 0.5));
