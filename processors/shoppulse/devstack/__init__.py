"""The embedded local stack: a real Kafka broker, the real ClickHouse engine, Prometheus."""
