"""Invalid events of every kind the validator knows, each with the reason it must be dead-lettered for."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from shoppulse.events.validate import MAX_EVENT_BYTES, Reason

Corruptor = Callable[[dict[str, Any], datetime], bytes]


def _dumps(event: object) -> bytes:
    return orjson.dumps(event)


def _with(event: dict[str, Any], **changes: Any) -> bytes:
    return _dumps({**event, **changes})


COMMON_FIELDS = ("schema_version", "event_id", "event_time", "session_id", "country", "device")


def _common(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event[k] for k in COMMON_FIELDS if k in event}


def _without(event: dict[str, Any], field: str) -> bytes:
    return _dumps({k: v for k, v in event.items() if k != field})


CORRUPTORS: dict[Reason, Corruptor] = {
    Reason.BAD_JSON: lambda e, _: _dumps(e)[: len(_dumps(e)) // 2],
    Reason.NOT_AN_OBJECT: lambda e, _: _dumps([e]),
    Reason.OVERSIZED: lambda e, _: _with(e, padding="x" * (MAX_EVENT_BYTES + 1)),
    Reason.UNSUPPORTED_VERSION: lambda e, _: _with(e, schema_version=2),
    Reason.UNKNOWN_EVENT_TYPE: lambda e, _: _with(e, event_type="wishlist_add"),
    Reason.MISSING_FIELD: lambda e, _: _without(e, "session_id"),
    Reason.UNKNOWN_FIELD: lambda e, _: _with(e, coupon_code="BLACKFRIDAY"),
    Reason.WRONG_TYPE: lambda e, _: _with(e, session_id=12345),
    Reason.UNKNOWN_COUNTRY: lambda e, _: _with(e, country="XX"),
    Reason.NEGATIVE_AMOUNT: lambda e, _: _dumps({**_common(e), "event_type": "checkout_start",
                                                 "cart_value": "-12.50", "currency": "USD", "items": 1}),
    Reason.TIME_IN_FUTURE: lambda e, now: _with(e, event_time=(now + timedelta(days=1)).isoformat()),
    Reason.TIME_TOO_OLD: lambda e, _: _with(e, event_time="1969-12-31T23:59:59Z"),
    Reason.INVALID_VALUE: lambda e, _: _with(e, device="toaster"),
}
BAD_KINDS: tuple[Reason, ...] = (*CORRUPTORS, Reason.MISSING_KEY)


def corrupt(event: dict[str, Any], kind: Reason, now: datetime) -> bytes:
    """The bytes of ``event`` broken so that validation rejects it for ``kind``
    (MISSING_KEY keeps the event valid: the caller sends it without a key)."""
    if kind is Reason.MISSING_KEY:
        return _dumps(event)
    return CORRUPTORS[kind](event, now)


def pick_kind(rng: random.Random, serial: int) -> Reason:
    """Cycle through every kind, so that any run with enough bad input contains each."""
    return BAD_KINDS[serial % len(BAD_KINDS)] if serial >= 0 else rng.choice(BAD_KINDS)
