"""shoppulse: real-time e-commerce observability (Kafka -> Quix Streams -> ClickHouse -> Grafana)."""

__version__ = "0.1.0"
