"""The 12 storefronts: time zone, currency, price level, payment gateways, size — and their seasonality."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Market:
    country: str
    timezone: ZoneInfo
    currency: str
    price_level: float  # local price of a 1-USD list price, in local currency
    gateways: tuple[str, ...]
    weight: float  # share of global traffic at equal local time


def _m(country: str, tz: str, currency: str, price_level: float, gateways: tuple[str, ...], weight: float) -> Market:
    return Market(country, ZoneInfo(tz), currency, price_level, gateways, weight)


MARKETS: dict[str, Market] = {m.country: m for m in (
    _m("US", "America/New_York", "USD", 1.0, ("stripe", "paypal", "adyen"), 30),
    _m("GB", "Europe/London", "GBP", 0.8, ("stripe", "paypal"), 10),
    _m("DE", "Europe/Berlin", "EUR", 0.95, ("adyen", "klarna", "paypal"), 12),
    _m("FR", "Europe/Paris", "EUR", 0.95, ("adyen", "stripe"), 8),
    _m("ES", "Europe/Madrid", "EUR", 0.9, ("adyen", "stripe"), 5),
    _m("IT", "Europe/Rome", "EUR", 0.92, ("adyen", "paypal"), 5),
    _m("NL", "Europe/Amsterdam", "EUR", 0.95, ("adyen", "klarna"), 4),
    _m("SE", "Europe/Stockholm", "SEK", 10.5, ("klarna", "adyen"), 3),
    _m("PL", "Europe/Warsaw", "PLN", 3.9, ("adyen", "stripe"), 4),
    _m("BR", "America/Sao_Paulo", "BRL", 5.0, ("pix", "adyen"), 7),
    _m("IN", "Asia/Kolkata", "INR", 80.0, ("upi", "stripe"), 7),
    _m("JP", "Asia/Tokyo", "JPY", 150.0, ("konbini", "stripe"), 10),
)}

# Relative traffic by local hour of day (night trough, lunch bump, evening peak) and weekday (Mon=0).
HOUR_OF_DAY = (0.35, 0.22, 0.15, 0.12, 0.12, 0.16, 0.3, 0.55, 0.8, 0.95, 1.05, 1.15,
               1.3, 1.2, 1.1, 1.1, 1.15, 1.25, 1.45, 1.65, 1.75, 1.6, 1.2, 0.7)
DAY_OF_WEEK = (0.94, 0.92, 0.95, 0.98, 1.02, 1.08, 1.11)


def seasonal_factor(market: Market, when: datetime) -> float:
    """How busy the market is at ``when`` (an aware datetime), 1.0 on average over a week."""
    local = when.astimezone(market.timezone)
    hour = local.hour + local.minute / 60
    low = HOUR_OF_DAY[int(hour) % 24]
    high = HOUR_OF_DAY[(int(hour) + 1) % 24]
    return (low + (high - low) * (hour - int(hour))) * DAY_OF_WEEK[local.weekday()] / _MEAN


_MEAN = sum(HOUR_OF_DAY) / 24 * sum(DAY_OF_WEEK) / 7


def country_weights(when: datetime) -> dict[str, float]:
    """Each country's usual share of the sessions starting at ``when``."""
    raw = {c: m.weight * seasonal_factor(m, when) for c, m in MARKETS.items()}
    total = sum(raw.values())
    return {c: w / total for c, w in raw.items()}


def global_factor(when: datetime) -> float:
    """Global traffic at ``when`` relative to the weekly mean (for history replay)."""
    total = sum(m.weight for m in MARKETS.values())
    return sum(m.weight * seasonal_factor(m, when) for m in MARKETS.values()) / total
