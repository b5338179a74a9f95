"""The clean event: what leaves ingestion — validated, PII-free, amounts in the reporting currency."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shoppulse.events.currency import RatesTable
from shoppulse.events.pii import PiiHasher
from shoppulse.events.schema import (
    AdClick,
    AddToCart,
    CheckoutStart,
    EventBase,
    PaymentAttempt,
    ProductView,
    Purchase,
    Refund,
    RemoveFromCart,
)

CleanEvent = dict[str, Any]


def to_clean(event: EventBase, hasher: PiiHasher, rates: RatesTable) -> CleanEvent:
    """A flat JSON-ready dict. ``user_id`` becomes ``user_hash``; ``email`` and ``ip`` are not copied."""
    clean: CleanEvent = {
        "event_id": str(event.event_id),
        "event_type": str(event.event_type),  # type: ignore[attr-defined]
        "event_time_ms": int(event.event_time.timestamp() * 1000),
        "session_id": event.session_id,
        "country": event.country,
        "device": event.device,
        "user_hash": hasher.pseudonym(event.user_id) if event.user_id else None,
    }
    amount: Decimal | None = None
    currency: str | None = None
    match event:
        case ProductView():
            clean |= {"product_id": event.product_id, "category": event.category}
            amount, currency = event.price, event.currency
        case AddToCart():
            clean |= {"product_id": event.product_id, "quantity": event.quantity}
            amount, currency = event.unit_price * event.quantity, event.currency
        case RemoveFromCart():
            clean |= {"product_id": event.product_id, "quantity": event.quantity}
        case CheckoutStart():
            clean |= {"items": event.items}
            amount, currency = event.cart_value, event.currency
        case PaymentAttempt():
            clean |= {"order_id": event.order_id, "gateway": event.gateway, "latency_ms": event.latency_ms,
                      "result": event.result, "failure_reason": event.failure_reason}
            amount, currency = event.amount, event.currency
        case Purchase():
            clean |= {"order_id": event.order_id, "items": sum(item.quantity for item in event.items),
                      "campaign_id": event.campaign_id}
            amount, currency = event.amount, event.currency
        case AdClick():
            clean |= {"campaign_id": event.campaign_id}
            amount, currency = event.cost, event.currency
        case Refund():
            clean |= {"order_id": event.order_id, "reason": event.reason}
            amount, currency = event.amount, event.currency
    if amount is not None and currency is not None:
        clean |= {"currency": currency, "amount_local": str(amount),
                  "amount": str(rates.to_reporting(amount, currency))}
    return clean
