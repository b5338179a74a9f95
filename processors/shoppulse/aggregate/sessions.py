"""Shopper sessions for cart abandonment: a session ends after an inactivity gap in event time;
one with an add-to-cart and no purchase is abandoned."""

from __future__ import annotations

from typing import Any

from quixstreams.dataframe.windows.aggregations import Aggregator

from shoppulse.aggregate.store_metrics import to_units

# Views are left out of the session pass (70 % of traffic): abandonment depends on cart events only.
SESSION_EVENT_TYPES = frozenset({"add_to_cart", "remove_from_cart", "checkout_start", "payment_attempt", "purchase"})


class SessionSummary(Aggregator):
    """Country, counts of cart events, purchase and revenue of one session (mergeable)."""

    def initialize(self) -> dict[str, Any]:
        return {"country": "", "events": 0, "cart_adds": 0, "checkouts": 0, "purchases": 0, "revenue_units": 0}

    def agg(self, old: dict[str, Any], new: dict[str, Any], timestamp: int) -> dict[str, Any]:
        old["country"] = new["country"]
        old["events"] += 1
        event_type = new["event_type"]
        if event_type == "add_to_cart":
            old["cart_adds"] += 1
        elif event_type == "checkout_start":
            old["checkouts"] += 1
        elif event_type == "purchase":
            old["purchases"] += 1
            old["revenue_units"] += to_units(new["amount"])
        return old

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        merged = {k: a[k] + b[k] for k in ("events", "cart_adds", "checkouts", "purchases", "revenue_units")}
        merged["country"] = b["country"] or a["country"]
        return merged

    def result(self, value: dict[str, Any]) -> dict[str, Any]:
        return value


def is_abandoned(summary: dict[str, Any]) -> bool:
    return summary["cart_adds"] > 0 and summary["purchases"] == 0
