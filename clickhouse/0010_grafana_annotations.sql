-- grafana_annotations: the sidecar's record of which Grafana annotation shows each anomaly and whether its end reached Grafana.
CREATE TABLE IF NOT EXISTS grafana_annotations
(
    anomaly_id     UUID,
    annotation_id  UInt64,
    closed_synced  UInt8,
    synced_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(synced_at)
ORDER BY anomaly_id
TTL toDateTime(synced_at) + INTERVAL 2 YEAR;
