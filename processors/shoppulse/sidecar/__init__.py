"""The anomaly sidecar: detect, explain, write back to ClickHouse and Grafana."""
