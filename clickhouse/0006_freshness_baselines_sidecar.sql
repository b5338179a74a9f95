-- freshness (view), baselines_how, expected_band, anomalies, insights, llm_calls: watermarks, seasonal baselines and the sidecar's outputs.
CREATE VIEW IF NOT EXISTS freshness AS
SELECT 'metrics_1s' AS source, 'shoppulse aggregate: store metrics' AS processor, country,
       max(ts) + 1 AS watermark
FROM metrics_1s GROUP BY country
UNION ALL
SELECT 'payment_latency_1s', 'shoppulse aggregate: payments', country, max(ts) + 1
FROM payment_latency_1s GROUP BY country
UNION ALL
SELECT 'sessions', 'shoppulse aggregate: sessions', country, toDateTime(max(session_end))
FROM sessions GROUP BY country;

CREATE TABLE IF NOT EXISTS baselines_how
(
    country       LowCardinality(String),
    metric        LowCardinality(String),
    hour_of_week  UInt8,
    mean          Float64,
    stddev        Float64,
    samples       UInt32,
    updated_at    DateTime('UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (country, metric, hour_of_week);

CREATE TABLE IF NOT EXISTS expected_band
(
    ts          DateTime('UTC') CODEC(Delta, ZSTD),
    country     LowCardinality(String),
    metric      LowCardinality(String),
    kind        LowCardinality(String),
    expected    Float64,
    lower       Float64,
    upper       Float64,
    fitted_at   DateTime('UTC')
)
ENGINE = ReplacingMergeTree(fitted_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (country, metric, kind, ts)
TTL ts + INTERVAL 90 DAY;

CREATE TABLE IF NOT EXISTS anomalies
(
    anomaly_id   UUID,
    metric       LowCardinality(String),
    country      LowCardinality(String),
    opened_at    DateTime64(3, 'UTC'),
    closed_at    Nullable(DateTime64(3, 'UTC')),
    severity     LowCardinality(String),
    observed     Float64,
    expected     Float64,
    lower        Float64,
    upper        Float64,
    score        Float64,
    detectors    Array(LowCardinality(String)),
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (anomaly_id)
TTL toDateTime(opened_at) + INTERVAL 2 YEAR;

CREATE TABLE IF NOT EXISTS insights
(
    created_at   DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    insight_id   UUID,
    anomaly_id   UUID,
    metric       LowCardinality(String),
    country      LowCardinality(String),
    severity     LowCardinality(String),
    text         String,
    source       LowCardinality(String),
    payload      String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (created_at, insight_id)
TTL toDateTime(created_at) + INTERVAL 2 YEAR;

CREATE TABLE IF NOT EXISTS llm_calls
(
    ts                 DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    call_id            UUID,
    anomaly_id         Nullable(UUID),
    model              LowCardinality(String),
    prompt_tokens      UInt32,
    completion_tokens  UInt32,
    cost_usd           Decimal(12, 6),
    latency_ms         UInt32,
    cache_hit          UInt8,
    error              LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY ts
TTL toDateTime(ts) + INTERVAL 2 YEAR;
