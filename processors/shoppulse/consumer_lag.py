"""Consumer lag as a Prometheus gauge, read from the broker when Prometheus scrapes.

The lag of a processor is how many messages of its input topic lie beyond its consumer group's
committed offsets (exactly-once processors commit with their transactions, so this is the work
not yet durably done). It is asked of the broker at scrape time (a custom collector), so it is
right even while the processor itself is stuck.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

BROKER_TIMEOUT_MS = 3000


class ConsumerLagCollector(Collector):
    def __init__(self, bootstrap: str, group: str, topic: str, processor: str) -> None:
        self._bootstrap, self._group, self._topic, self._processor = bootstrap, group, topic, processor
        self._admin: KafkaAdminClient | None = None
        self._ends: KafkaConsumer | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The family without samples: registering the collector then asks the broker nothing
        (prometheus-client calls collect() at registration of a collector without describe())."""
        yield self._family()

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("shoppulse_consumer_lag_messages",
                                 "Messages of the input topic beyond the consumer group's committed offsets",
                                 labels=["processor", "topic", "partition"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            for partition, lag in sorted(self._lag().items()):
                family.add_metric([self._processor, self._topic, str(partition)], lag)
        except (KafkaError, OSError) as exc:
            log.warning("consumer lag unavailable", extra={"group": self._group, "error": str(exc)[:200]})
            self._admin = self._ends = None
        yield family

    def _lag(self) -> dict[int, int]:
        if self._admin is None or self._ends is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=BROKER_TIMEOUT_MS)
            self._ends = KafkaConsumer(bootstrap_servers=self._bootstrap, request_timeout_ms=BROKER_TIMEOUT_MS + 1000)
        committed = {tp: meta.offset for tp, meta in self._admin.list_group_offsets([self._group])[self._group].items()
                     if tp.topic == self._topic}
        if not committed:
            return {}
        ends = self._ends.end_offsets(list(committed))
        return {tp.partition: max(0, ends[tp] - offset) for tp, offset in committed.items()}


def export_consumer_lag(bootstrap: str, group: str, topic: str, processor: str) -> None:
    """Add the lag of ``group`` on ``topic`` to the default registry (served by start_http_server)."""
    REGISTRY.register(ConsumerLagCollector(bootstrap, group, topic, processor))
