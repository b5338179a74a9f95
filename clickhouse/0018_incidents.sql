-- incidents: the sidecar's anomaly regions grouped by root cause (one story, one lifecycle, one page each; its ranked contributors); anomalies.incident_id names a region's incident.
CREATE TABLE IF NOT EXISTS incidents
(
    incident_id      UUID,
    kind             LowCardinality(String),
    countries        Array(LowCardinality(String)),
    metrics          Array(LowCardinality(String)),
    anomaly_ids      Array(UUID),
    opened_at        DateTime64(3, 'UTC'),
    resolved_at      Nullable(DateTime64(3, 'UTC')),
    severity         LowCardinality(String),
    revenue_at_risk  Float64,
    contributors     Array(String),
    story            String,
    as_of            DateTime64(3, 'UTC'),
    detected_at      DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (incident_id)
TTL toDateTime(opened_at) + INTERVAL 2 YEAR;

ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS incident_id Nullable(UUID);
