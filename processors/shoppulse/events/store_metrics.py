"""One aggregator for all store metrics of a country-second, so a window costs one state update per event.

The value is a small dict of counters; revenue is summed in integer units of 0.0001 USD so that
sums are exact (the clean event carries it as a 4-decimal string)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from quixstreams.dataframe.windows.aggregations import Aggregator

from shoppulse.events.histogram import bucket

REVENUE_UNITS = 10_000  # 1 unit = 0.0001 USD
_COUNTERS = {"product_view": "product_views", "add_to_cart": "cart_adds", "remove_from_cart": "cart_removes",
             "checkout_start": "checkouts", "payment_attempt": "payment_attempts", "purchase": "orders",
             "ad_click": "ad_clicks", "refund": "refunds"}
# Every counter, in the order of the metrics tables' columns (revenue last).
TABLE_COUNTERS = ("product_views", "cart_adds", "cart_removes", "checkouts", "payment_attempts", "payment_failures",
                  "orders", "items", "revenue_units")
# The columns of metrics_1s and metrics_live (the counters, with revenue as money).
METRICS_COLUMNS = ["ts", "country", "product_views", "cart_adds", "cart_removes", "checkouts", "payment_attempts",
                   "payment_failures", "orders", "items", "revenue"]
_ONE_EVENT = {event_type: tuple(int(name == counter) for name in TABLE_COUNTERS)
              for event_type, counter in _COUNTERS.items()}
# The event types the metrics tables count one each of (the funnel's); paid clicks and refunds count in segments only.
FUNNEL_EVENT_TYPES = frozenset(event_type for event_type, counts in _ONE_EVENT.items() if any(counts))
# A segment's counters, in the order of segment_metrics_1s' columns: what an incident's contributors compare per
# device, product category, ad campaign and refund reason. The money ones (revenue, ad spend, refunded) are summed
# in REVENUE_UNITS; counters added later go last, so a window state kept from before them is completed with zeros.
SEGMENT_COUNTERS = ("product_views", "cart_adds", "checkouts", "payment_attempts", "payment_failures", "orders",
                    "revenue_units", "ad_clicks", "ad_spend_units", "refunds", "refunded_units")
SEGMENT_MONEY = frozenset({"revenue_units", "ad_spend_units", "refunded_units"})
SEGMENT_COLUMNS = ["ts", "country", "dimension", "segment", "product_views", "cart_adds", "checkouts",
                   "payment_attempts", "payment_failures", "orders", "revenue", "ad_clicks", "ad_spend", "refunds",
                   "refunded"]
_SEGMENT_INDEX = {name: SEGMENT_COUNTERS.index(name) for name in SEGMENT_COUNTERS}
_FAILURES, _ITEMS, _REVENUE = (TABLE_COUNTERS.index(name) for name in ("payment_failures", "items", "revenue_units"))


def to_units(amount: str) -> int:
    return int(Decimal(amount) * REVENUE_UNITS)


def to_money(units: int) -> Decimal:
    return Decimal(units) / REVENUE_UNITS


def to_datetime(ms: int) -> datetime:
    """An event time in epoch milliseconds as the metrics tables' UTC timestamp."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def event_counts(event: dict[str, Any]) -> list[int]:
    """What one event adds to each counter, in ``TABLE_COUNTERS`` order: what ``StoreMetrics``
    counts of it, without a dict per event (ingestion's live sums fold every event at each checkpoint)."""
    event_type = event["event_type"]
    counts = list(_ONE_EVENT[event_type])
    if event_type == "purchase":
        counts[_ITEMS] = event["items"]
        counts[_REVENUE] = to_units(event["amount"])
    elif event_type == "payment_attempt" and event["result"] == "failure":
        counts[_FAILURES] = 1
    return counts


def segment_keys(event: dict[str, Any]) -> tuple[str, ...]:
    """The segments an event counts in, as ``dimension:segment``: its device, a product view's category, a
    refund's reason, and the campaign of an ad click or of an order attributed to one."""
    keys = [f"device:{event['device']}"]
    if event["event_type"] == "product_view":
        keys.append(f"category:{event['category']}")
    elif event["event_type"] == "refund":
        keys.append(f"refund reason:{event['reason']}")
    if event.get("campaign_id"):
        keys.append(f"campaign:{event['campaign_id']}")
    return tuple(keys)


def segment_counts(counts: list[int]) -> list[int]:
    """A segment's counters in ``SEGMENT_COUNTERS`` order, completed with zeros when kept from before the later
    counters (the same list, extended)."""
    if len(counts) < len(SEGMENT_COUNTERS):
        counts.extend([0] * (len(SEGMENT_COUNTERS) - len(counts)))
    return counts


def _count_in_segments(segments: dict[str, list[int]], event: dict[str, Any], name: str, amount: int) -> None:
    index = _SEGMENT_INDEX.get(name)
    if index is None:
        return
    for key in segment_keys(event):
        counts = segments.get(key)
        if counts is None:
            counts = segments[key] = [0] * len(SEGMENT_COUNTERS)
        segment_counts(counts)[index] += amount


class StoreMetrics(Aggregator):
    """Funnel counts, orders, items, revenue; per gateway: payments, failures by reason and a latency
    histogram; per segment (device, product category, ad campaign, refund reason): the funnel counts, revenue,
    ad clicks and spend, refunds and the amount refunded."""

    def initialize(self) -> dict[str, Any]:
        return {"payments": {}, "segments": {}}

    def agg(self, old: dict[str, Any], new: dict[str, Any], timestamp: int) -> dict[str, Any]:
        event_type = new["event_type"]
        name = _COUNTERS[event_type]
        old[name] = old.get(name, 0) + 1
        segments = old.setdefault("segments", {})  # a state written before segments were kept has none yet
        _count_in_segments(segments, new, name, 1)
        if event_type == "purchase":
            old["items"] = old.get("items", 0) + new["items"]
            units = to_units(new["amount"])
            old["revenue_units"] = old.get("revenue_units", 0) + units
            _count_in_segments(segments, new, "revenue_units", units)
        elif event_type == "ad_click":
            _count_in_segments(segments, new, "ad_spend_units", to_units(new["amount"]))
        elif event_type == "refund":
            _count_in_segments(segments, new, "refunded_units", to_units(new["amount"]))
        elif event_type == "payment_attempt":
            failed = new["result"] == "failure"
            if failed:
                old["payment_failures"] = old.get("payment_failures", 0) + 1
                _count_in_segments(segments, new, "payment_failures", 1)
            gateway = old["payments"].setdefault(new["gateway"], {"attempts": 0, "failures": 0, "latency": {}})
            gateway["attempts"] += 1
            gateway["failures"] += int(failed)
            if failed:  # a state written before reasons were kept has none yet
                reasons = gateway.setdefault("reasons", {})
                reasons[new["failure_reason"]] = reasons.get(new["failure_reason"], 0) + 1
            key = str(bucket(new["latency_ms"]))  # str keys: the state is JSON
            gateway["latency"][key] = gateway["latency"].get(key, 0) + 1
        return old

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        merged = {name: a.get(name, 0) + b.get(name, 0) for name in TABLE_COUNTERS}
        payments = {g: dict(v, latency=dict(v["latency"]), reasons=dict(v.get("reasons", {})))
                    for g, v in a["payments"].items()}
        for g, v in b["payments"].items():
            target = payments.setdefault(g, {"attempts": 0, "failures": 0, "latency": {}, "reasons": {}})
            target["attempts"] += v["attempts"]
            target["failures"] += v["failures"]
            for k, n in v["latency"].items():
                target["latency"][k] = target["latency"].get(k, 0) + n
            for reason, n in v.get("reasons", {}).items():
                target["reasons"][reason] = target["reasons"].get(reason, 0) + n
        merged["payments"] = payments
        segments = {key: segment_counts(list(counts)) for key, counts in a.get("segments", {}).items()}
        for key, counts in b.get("segments", {}).items():
            summed = segments.setdefault(key, [0] * len(SEGMENT_COUNTERS))
            for index, n in enumerate(counts):
                summed[index] += n
        merged["segments"] = segments
        return merged

    def result(self, value: dict[str, Any]) -> dict[str, Any]:
        return value
