"""The consumer-lag gauge asks the broker when Prometheus scrapes, not when a processor starts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from shoppulse.consumer_lag import ConsumerLagCollector


class CountingLag(ConsumerLagCollector):
    """The real collector with the broker round-trip replaced by a count of how often it is asked."""

    asked = 0

    def _lag(self) -> dict[int, int]:
        type(self).asked += 1
        return {0: 5, 1: 0}


def test_registering_asks_the_broker_nothing_and_a_scrape_asks_once() -> None:
    registry = CollectorRegistry()
    registry.register(CountingLag("127.0.0.1:1", "shoppulse-ingest", "shop.events.raw", "ingest"))
    assert CountingLag.asked == 0
    text = generate_latest(registry).decode()
    assert CountingLag.asked == 1
    assert 'shoppulse_consumer_lag_messages{partition="0",processor="ingest",topic="shop.events.raw"} 5.0' in text

