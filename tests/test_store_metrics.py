"""The per-event counts of the live sums agree with what the 1 s window's aggregator counts, and
windows merged are the window of all their events (payments by gateway, reason and latency too)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shoppulse.events.store_metrics import TABLE_COUNTERS, StoreMetrics, event_counts

EVENT_TYPES = ("product_view", "add_to_cart", "remove_from_cart", "checkout_start", "payment_attempt", "purchase")

events = st.fixed_dictionaries({
    "event_type": st.sampled_from(EVENT_TYPES),
    "items": st.integers(1, 50),
    "amount": st.decimals(min_value=0, max_value=100_000, places=4).map(str),
    "result": st.sampled_from(("success", "failure")),
    "gateway": st.sampled_from(("stripe", "adyen")),
    "latency_ms": st.integers(1, 30_000),
    "failure_reason": st.sampled_from(("declined", "gateway_error", "gateway_timeout")),
    "device": st.sampled_from(("mobile", "desktop", "app", "tablet")),
    "category": st.sampled_from(("shoes", "books")),  # read for product views only
})


@given(st.lists(events, min_size=1, max_size=30))
def test_event_counts_sum_to_the_window_aggregate(batch: list[dict[str, Any]]) -> None:
    aggregator = StoreMetrics()
    window = aggregator.initialize()
    for event in batch:
        window = aggregator.agg(window, event, 0)
    summed = [sum(column) for column in zip(*(event_counts(event) for event in batch), strict=True)]
    assert summed == [window.get(name, 0) for name in TABLE_COUNTERS]


@given(st.lists(events, max_size=30), st.lists(events, max_size=30))
def test_merged_windows_are_the_window_of_all_their_events(first: list[dict[str, Any]],
                                                          second: list[dict[str, Any]]) -> None:
    aggregator = StoreMetrics()

    def window(batch: list[dict[str, Any]]) -> dict[str, Any]:
        state = aggregator.initialize()
        for event in batch:
            state = aggregator.agg(state, event, 0)
        return state

    merged, whole = aggregator.merge(window(first), window(second)), window(first + second)
    assert [merged.get(name, 0) for name in TABLE_COUNTERS] == [whole.get(name, 0) for name in TABLE_COUNTERS]
    def payments(state: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        return {g: (v["attempts"], v["failures"], v["latency"], v.get("reasons", {}))
                for g, v in state["payments"].items()}

    assert payments(merged) == payments(whole)
    assert merged["segments"] == whole["segments"]  # each device's and category's counts too
    failed = [e for e in first + second if e["event_type"] == "payment_attempt" and e["result"] == "failure"]
    assert sum(sum(v.get("reasons", {}).values()) for v in merged["payments"].values()) == len(failed)
