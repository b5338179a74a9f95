"""Prometheus metrics of the ingestion processor."""

from prometheus_client import Counter

EVENTS_IN = Counter("shoppulse_ingest_events_in", "Raw messages read from the raw topic")
EVENTS_OUT = Counter("shoppulse_ingest_events_out", "Clean events written to the clean topic")
DEAD_LETTERS = Counter("shoppulse_ingest_dead_letters", "Raw messages sent to the dead-letter topic", ["reason"])
DUPLICATES = Counter("shoppulse_ingest_duplicates", "Retried events dropped because their event id was seen")
