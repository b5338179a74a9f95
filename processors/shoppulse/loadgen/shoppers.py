"""Sessions of anonymous and logged-in shoppers walking the funnel, shaped by active incidents."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shoppulse.loadgen.markets import Market

CATEGORIES = ("shoes", "apparel", "electronics", "home", "beauty", "toys", "sports", "books")
PRODUCTS = 5000
LOGGED_IN_SHARE = 0.4
DEVICES = ("mobile", "desktop", "app", "tablet")
DEVICE_CUMULATIVE = (0.55, 0.85, 0.95, 1.0)
# A step carrying this key is where a payment incident lost the order: the amount (in the step's
# currency) it would have paid without the incident. The stream takes it off before sending.
LOST_ORDER = "_lost_order_amount"
GATEWAY_KINDS = ("payment_outage", "checkout_latency")  # the incidents one payment gateway can cause
USUAL_REASONS = ("declined", "insufficient_funds", "gateway_error", "gateway_timeout", "3ds_failed")
OUTAGE_REASONS = ("gateway_error", "gateway_timeout")  # a failing gateway errs or times out; it declines no one
# Paid traffic: a quarter of the visits start with a click on one of the country's two campaigns, a search campaign
# (most of the clicks, the dearer ones) and a social one; an order of such a visit is attributed to its campaign.
AD_SHARE = 0.25
CAMPAIGN_CHANNELS = (("search", 0.65, 0.90), ("social", 0.35, 0.45))  # channel, share of the paid visits, CPC in USD


# About one order in twenty is refunded, days later: the shop's back office sends a refund as an event of its own,
# at about one per hundred visits of the country's usual traffic — not of today's (a sale's shoppers get refunds
# next week) — for these reasons (a chargeback, "unauthorized", is rare).
REFUND_SHARE = 0.01
REFUND_REASONS = (("damaged", 0.25), ("not_as_described", 0.3), ("not_received", 0.15), ("changed_mind", 0.27),
                  ("unauthorized", 0.03))


def campaign_id(country: str, channel: str) -> str:
    """The id of a country's campaign on a channel (``us-search``)."""
    return f"{country.lower()}-{channel}"


def ad_click(rng: random.Random, market: Market, channel: str) -> dict[str, Any]:
    """The paid click of ``market``'s campaign on ``channel``, its cost drawn around the channel's CPC."""
    cpc = next(usd for name, _, usd in CAMPAIGN_CHANNELS if name == channel)
    cost = cpc * market.price_level * rng.uniform(0.6, 1.4)
    return {"event_type": "ad_click", "campaign_id": campaign_id(market.country, channel),
            "cost": f"{cost:.0f}" if market.currency == "JPY" else f"{cost:.2f}", "currency": market.currency}


@dataclass(frozen=True)
class Effects:
    """How incidents shift shopper behaviour in one country while they are active."""

    payment_failure: float = 0.06
    latency_factor: float = 1.0
    add_to_cart: float = 0.32
    checkout: float = 0.55
    drop_before_payment: float = 0.12
    traffic_boost: float = 1.0
    gateway: str | None = None  # the payment effects hit this gateway only (None: every gateway)

    def at_gateway(self, gateway: str) -> Effects:
        """The effects a payment through ``gateway`` meets: another gateway's outage or slowness leaves it
        at the usual failure rate and latency."""
        if self.gateway is None or self.gateway == gateway:
            return self
        usual = Effects()
        return replace(self, payment_failure=usual.payment_failure, latency_factor=usual.latency_factor)


def effects_for(active: list[tuple[str, float, str | None]]) -> Effects:
    """The effects of the incidents active in one country: (kind, magnitude, gateway or None) each.
    Payment incidents on two different gateways at once count as hitting every gateway."""
    e = Effects()
    gateways = {gateway for kind, _, gateway in active if kind in GATEWAY_KINDS}
    for kind, m, _ in active:
        if kind == "payment_outage":
            e = replace(e, payment_failure=min(0.98, 0.85 * m))
        elif kind == "flash_sale":
            e = replace(e, add_to_cart=min(0.9, e.add_to_cart * 1.6), checkout=min(0.95, e.checkout * 1.2),
                        traffic_boost=e.traffic_boost * 3 * m)
        elif kind == "checkout_latency":
            e = replace(e, latency_factor=e.latency_factor * 6 * m,
                        drop_before_payment=min(0.9, e.drop_before_payment * 2.5))
        elif kind == "abandonment_surge":
            e = replace(e, checkout=e.checkout * 0.5, drop_before_payment=min(0.95, 0.6 * m))
    return replace(e, gateway=next(iter(gateways)) if len(gateways) == 1 else None)


@dataclass
class Session:
    """One shopper's visit: the common fields and the remaining steps, emitted one at a time."""

    common: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    effects: Effects = field(default_factory=Effects)  # the incidents' effects it was planned with


def _price(rng: random.Random, product: int, market: Market) -> str:
    base = 8 + (product * 7919 % 1000) / 10  # a stable list price per product, 8-108 USD
    local = base * market.price_level
    return f"{local:.0f}" if market.currency == "JPY" else f"{local:.2f}"


def refund(rng: random.Random, market: Market, reason: str | None = None) -> dict[str, Any]:
    """A refund of an earlier order of ``market``: all of it, or one of its items."""
    if reason is None:
        reason = rng.choices([name for name, _ in REFUND_REASONS], [share for _, share in REFUND_REASONS])[0]
    amount = _price(rng, rng.randrange(PRODUCTS), market)
    return {"event_type": "refund", "order_id": f"o-{rng.getrandbits(40):010x}", "amount": amount,
            "currency": market.currency, "reason": reason}


def new_session(rng: random.Random, market: Market, effects_of: Callable[[str], Effects], serial: int) -> Session:
    """A new visit in ``market``, planned with the effects its device meets (``effects_of(device)``)."""
    device = DEVICES[bisect.bisect(DEVICE_CUMULATIVE, rng.random())]
    effects = effects_of(device)
    common: dict[str, Any] = {"schema_version": 1, "session_id": f"s-{serial:x}-{rng.getrandbits(24):06x}",
                              "country": market.country, "device": device}
    if rng.random() < LOGGED_IN_SHARE:
        user = rng.randrange(1, 2_000_000)
        common |= {"user_id": f"cust-{user:07d}", "email": f"shopper{user}@example.com",
                   "ip": f"198.51.{user % 256}.{(user >> 8) % 254 + 1}"}
    if rng.random() < AD_SHARE:
        channel = rng.choices([name for name, _, _ in CAMPAIGN_CHANNELS],
                              [share for _, share, _ in CAMPAIGN_CHANNELS])[0]
        click = ad_click(rng, market, channel)
        return Session(common, [click, *plan_steps(rng, market, effects, serial, click["campaign_id"])], effects)
    return Session(common, plan_steps(rng, market, effects, serial), effects)


def apply_live_effects(rng: random.Random, session: Session, step: dict[str, Any],
                       now: Effects) -> dict[str, Any] | None:
    """The step as the shop treats it *now*: an incident that began after the session was planned
    reaches the shoppers already in it. A checkout the shopper now gives up is not emitted (None, and
    the visit ends); a payment that now fails, or a shopper who now leaves at checkout, ends the visit."""
    planned = session.effects
    kind = step["event_type"]
    if kind == "checkout_start" and now.checkout < planned.checkout \
            and rng.random() < 1 - now.checkout / planned.checkout:
        session.steps.clear()
        return None
    leaving = (now.drop_before_payment - planned.drop_before_payment) / (1 - planned.drop_before_payment)
    if kind == "checkout_start" and leaving > 0 and rng.random() < leaving:
        session.steps.clear()  # starts the checkout, never pays
    if kind != "payment_attempt":
        return step
    now, planned = now.at_gateway(step["gateway"]), planned.at_gateway(step["gateway"])
    if now.latency_factor != planned.latency_factor:
        step = {**step, "latency_ms": min(int(step["latency_ms"] * now.latency_factor / planned.latency_factor),
                                          600_000)}
    if step["result"] == "success" and now.payment_failure > planned.payment_failure:
        extra = (now.payment_failure - planned.payment_failure) / (1 - planned.payment_failure)
        if rng.random() < extra:  # it would have paid: the incident lost this order
            step = {**step, "result": "failure", "failure_reason": "gateway_error", LOST_ORDER: step["amount"]}
            session.steps.clear()
    return step


def plan_steps(rng: random.Random, market: Market, effects: Effects, serial: int,
               campaign: str | None = None) -> list[dict[str, Any]]:
    """A visit's steps; its order is attributed to ``campaign``, the paid click the visit began with."""
    steps: list[dict[str, Any]] = []
    cart: list[tuple[int, int, str]] = []
    for _ in range(1 + min(int(rng.expovariate(1 / 2.5)), 20)):
        product = rng.randrange(PRODUCTS)
        price = _price(rng, product, market)
        steps.append({"event_type": "product_view", "product_id": f"sku-{product}",
                      "category": CATEGORIES[product % len(CATEGORIES)], "price": price, "currency": market.currency})
        if rng.random() < effects.add_to_cart:
            quantity = 1 if rng.random() < 0.8 else 2
            cart.append((product, quantity, price))
            steps.append({"event_type": "add_to_cart", "product_id": f"sku-{product}", "quantity": quantity,
                          "unit_price": price, "currency": market.currency})
    if len(cart) > 1 and rng.random() < 0.1:
        product, quantity, _ = cart.pop(rng.randrange(len(cart)))
        steps.append({"event_type": "remove_from_cart", "product_id": f"sku-{product}", "quantity": quantity})
    if not cart or rng.random() >= effects.checkout:
        return steps
    return steps + _check_out(rng, market, effects, serial, cart, campaign)


def bulk_order(rng: random.Random, market: Market, effects: Effects, serial: int, size: int) -> list[dict[str, Any]]:
    """A business buying ``size`` of one product in one order: a view, the cart, and on to payment (it does
    not leave at checkout; its payment meets the incidents' effects as any other)."""
    product = rng.randrange(PRODUCTS)
    price = _price(rng, product, market)
    return [{"event_type": "product_view", "product_id": f"sku-{product}",
             "category": CATEGORIES[product % len(CATEGORIES)], "price": price, "currency": market.currency},
            {"event_type": "add_to_cart", "product_id": f"sku-{product}", "quantity": size, "unit_price": price,
             "currency": market.currency},
            *_check_out(rng, market, replace(effects, drop_before_payment=0.0), serial, [(product, size, price)])]


def _check_out(rng: random.Random, market: Market, effects: Effects, serial: int, cart: list[tuple[int, int, str]],
               campaign: str | None = None) -> list[dict[str, Any]]:
    """From checkout to a purchase, or to leaving before or after a failed payment."""
    steps: list[dict[str, Any]] = []
    total = sum(float(p) * q for _, q, p in cart)
    amount = f"{total:.0f}" if market.currency == "JPY" else f"{total:.2f}"
    steps.append({"event_type": "checkout_start", "cart_value": amount, "currency": market.currency,
                  "items": sum(q for _, q, _ in cart)})
    if rng.random() < effects.drop_before_payment:
        return steps
    order_id = f"o-{serial:x}-{rng.getrandbits(20):05x}"
    gateway = rng.choice(market.gateways)
    effects = effects.at_gateway(gateway)
    usual_failure = Effects().payment_failure
    lost_at: dict[str, Any] | None = None  # the attempt that would have paid without an incident
    for _attempt in range(3):
        latency = int(rng.lognormvariate(5.8, 0.45) * effects.latency_factor)  # median ~330 ms
        draw = rng.random()
        failed = draw < effects.payment_failure
        attempt = {"event_type": "payment_attempt", "order_id": order_id, "gateway": gateway,
                   "latency_ms": min(latency, 600_000), "result": "failure" if failed else "success",
                   "amount": amount, "currency": market.currency}
        if failed:
            if draw >= usual_failure:  # the incident's failure (the same draw pays at the usual rate)
                attempt["failure_reason"] = rng.choice(OUTAGE_REASONS)
                lost_at = lost_at or attempt
            else:
                attempt["failure_reason"] = rng.choice(USUAL_REASONS)
        steps.append(attempt)
        if not failed:
            purchase = {"event_type": "purchase", "order_id": order_id, "amount": amount, "currency": market.currency,
                        "items": [{"product_id": f"sku-{p}", "quantity": q, "unit_price": price}
                                  for p, q, price in cart]}
            steps.append(purchase if campaign is None else {**purchase, "campaign_id": campaign})
            return steps
        if rng.random() < 0.4:
            break  # gives up after a failed payment
    if lost_at is not None:  # never paid, and without the incident it would have: a lost order
        lost_at[LOST_ORDER] = amount
    return steps
