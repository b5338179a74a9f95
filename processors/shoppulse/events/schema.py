"""Version 1 of the shop event contract: one typed model per event type along the funnel.

The JSON Schema files in ``docs/schemas/`` are generated from these models
(``shoppulse events schemas``) and checked in; ``docs/events.md`` is the catalogue."""

from __future__ import annotations

import socket
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator

SCHEMA_VERSION = 1

COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "IN", "JP")
Country = Literal["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "IN", "JP"]
Currency = Literal["USD", "GBP", "EUR", "SEK", "PLN", "BRL", "INR", "JPY"]
Device = Literal["desktop", "mobile", "tablet", "app"]
Gateway = Literal["stripe", "adyen", "paypal", "klarna", "pix", "upi", "konbini"]
FailureReason = Literal["declined", "insufficient_funds", "fraud_suspected", "gateway_timeout", "gateway_error",
                        "3ds_failed"]
# "unauthorized": the card holder's bank disputes the charge (a chargeback: a stolen card paid the order).
RefundReason = Literal["damaged", "not_as_described", "not_received", "changed_mind", "unauthorized"]


class EventType(StrEnum):
    PRODUCT_VIEW = "product_view"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT_START = "checkout_start"
    PAYMENT_ATTEMPT = "payment_attempt"
    PURCHASE = "purchase"
    AD_CLICK = "ad_click"
    REFUND = "refund"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("event_time needs a time zone offset (e.g. 2026-11-25T12:00:00Z)")
    return value


def _ip_address(value: str) -> str:
    """An IPv4 (dotted quad, no leading zeros) or IPv6 address, checked by the C library's inet_pton:
    Python's ``ipaddress`` parses in Python, a large part of validating an event that carries one (the
    address is dropped at ingestion; only its form is checked). Zone ids (``%eth0``) are not accepted."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return value
        except (OSError, ValueError):
            continue
    raise ValueError("not an IPv4 or IPv6 address")


IpAddress = Annotated[str, Field(max_length=45), AfterValidator(_ip_address),
                      WithJsonSchema({"anyOf": [{"format": "ipv4", "type": "string"},
                                                {"format": "ipv6", "type": "string"}]})]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class EventBase(BaseModel):
    """Fields every event carries. ``user_id``, ``email`` and ``ip`` are PII: ingestion hashes
    ``user_id`` with a keyed hash and drops ``email`` and ``ip`` before anything is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = Field(description="Version of this contract.")
    event_id: UUID = Field(description="Unique per event; a retry resends the same id.")
    event_time: Annotated[datetime, AfterValidator(_aware)] = Field(
        description="When it happened on the shopper's side, ISO 8601 with offset.")
    session_id: Identifier = Field(description="The shopper's browsing session.")
    country: Country = Field(description="ISO 3166-1 alpha-2 code of the storefront.")
    device: Device
    user_id: Identifier | None = Field(default=None, description="PII: logged-in shopper; absent when anonymous.")
    email: Email | None = Field(default=None, description="PII: dropped at ingestion.")
    ip: IpAddress | None = Field(default=None, description="PII: dropped at ingestion.")


class ProductView(EventBase):
    event_type: Literal[EventType.PRODUCT_VIEW]
    product_id: Identifier
    category: Annotated[str, Field(min_length=1, max_length=64)]
    price: Money
    currency: Currency


class AddToCart(EventBase):
    event_type: Literal[EventType.ADD_TO_CART]
    product_id: Identifier
    quantity: Annotated[int, Field(ge=1, le=1000)]
    unit_price: Money
    currency: Currency


class RemoveFromCart(EventBase):
    event_type: Literal[EventType.REMOVE_FROM_CART]
    product_id: Identifier
    quantity: Annotated[int, Field(ge=1, le=1000)]


class CheckoutStart(EventBase):
    event_type: Literal[EventType.CHECKOUT_START]
    cart_value: Money
    currency: Currency
    items: Annotated[int, Field(ge=1, le=1000)]


class PaymentAttempt(EventBase):
    event_type: Literal[EventType.PAYMENT_ATTEMPT]
    order_id: Identifier
    gateway: Gateway
    latency_ms: Annotated[int, Field(ge=0, le=600_000)]
    result: Literal["success", "failure"]
    failure_reason: FailureReason | None = None
    amount: Money
    currency: Currency

    @model_validator(mode="after")
    def _reason_iff_failure(self) -> PaymentAttempt:
        if (self.result == "failure") != (self.failure_reason is not None):
            raise ValueError("failure_reason is required for a failed payment and absent for a successful one")
        return self


class LineItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: Identifier
    quantity: Annotated[int, Field(ge=1, le=1000)]
    unit_price: Money


class Purchase(EventBase):
    event_type: Literal[EventType.PURCHASE]
    order_id: Identifier
    amount: Money
    currency: Currency
    items: Annotated[list[LineItem], Field(min_length=1, max_length=200)]
    campaign_id: Identifier | None = Field(default=None, description="The ad campaign the shop attributes the order "
                                                                     "to (the session's last paid click); absent "
                                                                     "when none.")


class AdClick(EventBase):
    """A paid click on one of the shop's ads, as the ad platform bills it: its cost counts whether or not the
    shopper's visit follows (a bot's or an accidental click is billed all the same). ``session_id`` is the
    session the click opens on the storefront."""

    event_type: Literal[EventType.AD_CLICK]
    campaign_id: Identifier
    cost: Money = Field(description="What the click costs the shop.")
    currency: Currency


class Refund(EventBase):
    """Money paid back for an order, at the shopper's request or their bank's (``unauthorized``: a chargeback).
    ``session_id`` and ``device`` are those of the order's visit."""

    event_type: Literal[EventType.REFUND]
    order_id: Identifier
    amount: Money = Field(description="What is paid back (all or part of the order).")
    currency: Currency
    reason: RefundReason


ShopEvent = Annotated[ProductView | AddToCart | RemoveFromCart | CheckoutStart | PaymentAttempt | Purchase
                      | AdClick | Refund, Field(discriminator="event_type")]
EVENT_MODELS: dict[EventType, type[EventBase]] = {
    EventType.PRODUCT_VIEW: ProductView, EventType.ADD_TO_CART: AddToCart,
    EventType.REMOVE_FROM_CART: RemoveFromCart, EventType.CHECKOUT_START: CheckoutStart,
    EventType.PAYMENT_ATTEMPT: PaymentAttempt, EventType.PURCHASE: Purchase, EventType.AD_CLICK: AdClick,
    EventType.REFUND: Refund,
}
SHOP_EVENT: TypeAdapter[ShopEvent] = TypeAdapter(ShopEvent)


def json_schemas() -> dict[str, dict[str, object]]:
    """The JSON Schema of each event type, and of any event, keyed by file name."""
    schemas: dict[str, dict[str, object]] = {
        f"{event_type.value}.json": model.model_json_schema() for event_type, model in EVENT_MODELS.items()
    }
    schemas["shop_event.json"] = SHOP_EVENT.json_schema()
    for name, schema in schemas.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://shoppulse.dev/schemas/v{SCHEMA_VERSION}/{name}"
    return schemas
