"""Validation of raw event bytes: a typed event, or a rejection with a reason — never an exception.

Rejection details name the field and the rule that failed but never echo the input, since
an invalid event may still carry PII."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import ValidationError

from shoppulse.events.schema import SHOP_EVENT, EventBase

MAX_EVENT_BYTES = 16 * 1024
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_EVENT_AGE = timedelta(days=7)  # the raw topic's retention: older is a corrupt or replayed-wrong clock
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # whatever the limits: ClickHouse DateTime starts at 1970
_AMOUNT_FIELDS = frozenset({"amount", "price", "unit_price", "cart_value"})


class Reason(StrEnum):
    """Why an event went to the dead-letter topic."""

    OVERSIZED = "oversized"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_schema_version"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_COUNTRY = "unknown_country"
    NEGATIVE_AMOUNT = "negative_amount"
    TIME_IN_FUTURE = "time_in_future"
    TIME_TOO_OLD = "time_too_old"
    INVALID_VALUE = "invalid_value"
    MISSING_KEY = "missing_key"  # transport: raw events must be keyed by session_id


@dataclass(frozen=True)
class TimeLimits:
    """How far an event's time may be ahead of (clock skew) or behind (age) the moment it was received."""

    max_skew: timedelta = MAX_CLOCK_SKEW
    max_age: timedelta = MAX_EVENT_AGE


DEFAULT_LIMITS = TimeLimits()


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str


_TYPE_ERRORS = ("_type", "_parsing", "_instance")


def validate(raw: bytes, now: datetime, limits: TimeLimits = DEFAULT_LIMITS) -> EventBase | Rejection:
    """Validate one raw event against the contract; its event_time must lie within ``limits`` of
    ``now`` (the moment it was received) and after EARLIEST_EVENT_TIME."""
    if len(raw) > MAX_EVENT_BYTES:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes, more than the {MAX_EVENT_BYTES} allowed")
    try:
        event = SHOP_EVENT.validate_json(raw)
    except ValidationError as exc:
        return _rejection(exc)
    except OverflowError:  # pydantic-core converting an integer past 64 bits inside a list, for one
        return Rejection(Reason.INVALID_VALUE, "a number is too large")
    except (ValueError, RecursionError) as exc:  # pragma: no cover - pydantic reports these as errors
        return Rejection(Reason.BAD_JSON, type(exc).__name__)
    if event.event_time > now + limits.max_skew:
        return Rejection(Reason.TIME_IN_FUTURE,
                         f"event_time is more than {int(limits.max_skew.total_seconds())} s ahead of ingestion time")
    if event.event_time < max(now - limits.max_age, EARLIEST_EVENT_TIME):
        return Rejection(Reason.TIME_TOO_OLD,
                         f"event_time is more than {int(limits.max_age.total_seconds())} s before ingestion time "
                         f"or before {EARLIEST_EVENT_TIME:%Y-%m-%d}")
    return event


def _rejection(exc: ValidationError) -> Rejection:
    error = exc.errors(include_input=False, include_url=False)[0]
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    where = ".".join(p for p in loc if p not in _MODEL_TAGS) or "event"
    detail = f"{where}: {kind}"
    if kind in ("json_invalid", "json_type"):
        return Rejection(Reason.BAD_JSON, "not valid JSON")
    if kind == "union_tag_not_found":
        return Rejection(Reason.MISSING_FIELD, "event_type: missing")
    if kind == "union_tag_invalid":
        return Rejection(Reason.UNKNOWN_EVENT_TYPE, "event_type is not one of the contract's event types")
    if not loc or kind in ("model_attributes_type", "dict_type", "model_type"):
        return Rejection(Reason.NOT_AN_OBJECT, "an event must be a JSON object")
    field = loc[-1]
    if field == "schema_version" and kind == "literal_error":
        return Rejection(Reason.UNSUPPORTED_VERSION, "schema_version: only version 1 is accepted")
    if kind == "missing":
        return Rejection(Reason.MISSING_FIELD, detail)
    if kind == "extra_forbidden":
        return Rejection(Reason.UNKNOWN_FIELD, detail)
    if field == "country" and kind == "literal_error":
        return Rejection(Reason.UNKNOWN_COUNTRY, "country is not one of US GB DE FR ES IT NL SE PL BR IN JP")
    if field in _AMOUNT_FIELDS and kind == "greater_than_equal":
        return Rejection(Reason.NEGATIVE_AMOUNT, f"{where} is negative")
    if kind.endswith(_TYPE_ERRORS):
        return Rejection(Reason.WRONG_TYPE, detail)
    return Rejection(Reason.INVALID_VALUE, detail)


_MODEL_TAGS = frozenset({"product_view", "add_to_cart", "remove_from_cart", "checkout_start", "payment_attempt",
                         "purchase"})
