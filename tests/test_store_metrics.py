"""The per-event counts of the live sums agree with what the 1 s window's aggregator counts, and
windows merged are the window of all their events (payments by gateway, reason and latency too)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shoppulse.events.store_metrics import SEGMENT_COUNTERS, TABLE_COUNTERS, StoreMetrics, event_counts

EVENT_TYPES = ("product_view", "add_to_cart", "remove_from_cart", "checkout_start", "payment_attempt", "purchase",
               "ad_click", "refund")

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
    "campaign_id": st.sampled_from((None, "de-search", "de-social")),  # an ad click always has one (below)
    "reason": st.sampled_from(("damaged", "unauthorized")),  # read for refunds only
}).map(lambda e: {**e, "campaign_id": e["campaign_id"] or "de-search"} if e["event_type"] == "ad_click" else e)


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


def test_a_campaign_counts_its_paid_clicks_their_cost_and_the_orders_attributed_to_it() -> None:
    aggregator = StoreMetrics()
    window = aggregator.initialize()
    for event in ({"event_type": "ad_click", "device": "app", "campaign_id": "de-search", "amount": "0.8500"},
                  {"event_type": "ad_click", "device": "app", "campaign_id": "de-search", "amount": "1.1500"},
                  {"event_type": "purchase", "device": "app", "campaign_id": "de-search", "items": 1,
                   "amount": "40.0000"},
                  {"event_type": "purchase", "device": "app", "campaign_id": None, "items": 1, "amount": "10.0000"}):
        window = aggregator.agg(window, event, 0)
    campaign = dict(zip(SEGMENT_COUNTERS, window["segments"]["campaign:de-search"], strict=True))
    assert (campaign["ad_clicks"], campaign["ad_spend_units"], campaign["orders"], campaign["revenue_units"]) == (
        2, 20_000, 1, 400_000)
    device = dict(zip(SEGMENT_COUNTERS, window["segments"]["device:app"], strict=True))
    assert (device["ad_clicks"], device["orders"]) == (2, 2)
    assert [window.get(name, 0) for name in TABLE_COUNTERS] == [0, 0, 0, 0, 0, 0, 2, 2, 500_000]  # clicks: no funnel


def test_a_window_state_kept_from_before_the_ad_counters_goes_on_with_zeros() -> None:
    """A window open across the upgrade holds segments of seven counters; it keeps counting, merging and
    writing its rows with the ad counters at zero."""
    aggregator = StoreMetrics()
    old = {"payments": {}, "segments": {"device:app": [3, 1, 0, 0, 0, 1, 250_000]}, "orders": 1, "items": 1,
           "revenue_units": 250_000, "product_views": 3, "cart_adds": 1}
    window = aggregator.agg(old, {"event_type": "ad_click", "device": "app", "campaign_id": "de-search",
                                  "amount": "1.0000"}, 0)
    assert window["segments"]["device:app"] == [3, 1, 0, 0, 0, 1, 250_000, 1, 10_000, 0, 0]
    merged = aggregator.merge({"payments": {}, "segments": {"device:app": [1, 0, 0, 0, 0, 0, 0]}}, window)
    assert merged["segments"]["device:app"] == [4, 1, 0, 0, 0, 1, 250_000, 1, 10_000, 0, 0]


def test_a_refund_counts_in_its_reason_with_the_amount_refunded_and_in_no_funnel_counter() -> None:
    aggregator = StoreMetrics()
    window = aggregator.initialize()
    for amount in ("30.0000", "12.5000"):
        window = aggregator.agg(window, {"event_type": "refund", "device": "mobile", "reason": "unauthorized",
                                         "amount": amount}, 0)
    reason = dict(zip(SEGMENT_COUNTERS, window["segments"]["refund reason:unauthorized"], strict=True))
    assert (reason["refunds"], reason["refunded_units"], reason["orders"]) == (2, 425_000, 0)
    assert window["segments"]["device:mobile"] == window["segments"]["refund reason:unauthorized"]
    assert [window.get(name, 0) for name in TABLE_COUNTERS] == [0] * len(TABLE_COUNTERS)
