"""The revenue a country would have made: what an incident's revenue at risk is measured against.

For a cause inside the funnel, what the shoppers who were there would usually have bought: the
shoppers who reached the step before the one that fails, times the usual revenue per shopper at
that step (``REFERENCE_FLOW``: a payment outage loses the orders of the checkouts started, a
checkout drop those of the carts filled, a conversion drop those of the products viewed). That
expectation follows the traffic of the moment — its time of the day, its bursts — so what is left
is the spread of the failing step alone: a level learned over the last half hour, multiplied by
everything the country would have sold while the incident lasts, was off by as much as a partial
outage costs (docs/benchmarks.md).

For ad spend running without orders (``OVERSPEND``) what is at risk is not sales but the money
spent above the country's usual spend: its spend per second less its mean over the last half hour
of usual steps.

Otherwise (a traffic or sales move, whose cause is the shoppers themselves), the level: where the
seasonal baseline is fitted, its expectation for the time of the week (the middle of its band);
elsewhere the mean of the country's revenue per second over its last ``USUAL_STEPS`` usual steps —
not the detectors' fast baseline, whose eight-minute memory of a series as noisy as revenue puts
its level several per cent off. A step is usual when the country has no open incident and its
revenue no open region, so an outage never lowers its own yardstick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from river import stats, utils

from shoppulse.sidecar.detectors import Point, SeasonalBand

USUAL_STEPS = 180  # half an hour of 10 s steps
MIN_USUAL_STEPS = 30  # before that, the detectors' baseline
# incident kind -> the funnel flow whose shoppers it costs the orders of
REFERENCE_FLOW = {"payment_failures": "checkouts", "checkout_latency": "checkouts", "cart_abandonment": "carts",
                  "checkout_drop": "carts", "conversion_drop": "views"}
# incident kind -> the spending series whose money above its usual the incident costs
OVERSPEND = {"campaign_spend_without_orders": "ad_spend_per_s"}


def funnel_flows(points: Mapping[str, Point]) -> dict[str, float]:
    """Product views, cart adds and checkouts per second in one window, from its points (those it has)."""
    flows = {}
    if "views_per_s" in points:
        flows["views"] = points["views_per_s"].value
    per_cart = points.get("checkouts_per_cart")
    if per_cart is not None:
        flows["carts"] = per_cart.count / per_cart.window_s
        flows["checkouts"] = per_cart.value * per_cart.count / per_cart.window_s
    return flows


def _rolling_mean() -> utils.Rolling:
    return utils.Rolling(stats.Mean, window_size=USUAL_STEPS)


def _learn(means: dict[str, utils.Rolling], key: str, value: float) -> None:
    """Add ``value`` to the rolling mean of ``key``, started on first use (a Rolling is not cheap to make: not
    one per step)."""
    if key not in means:
        means[key] = _rolling_mean()
    means[key].update(value)


@dataclass(frozen=True)
class Shortfall:
    """Expected minus observed revenue per second of one step, against the level and against each flow."""

    level: float
    by_flow: Mapping[str, float] = field(default_factory=dict)
    overspend: Mapping[str, float] = field(default_factory=dict)  # spending series -> observed less usual, per s

    def for_kind(self, kind: str) -> float:
        """Against the yardstick of an incident of ``kind``: the money spent above usual for a spending kind, else
        its reference flow's where the step has it, else the level."""
        if kind in OVERSPEND:
            return self.overspend.get(OVERSPEND[kind], 0.0)
        flow = REFERENCE_FLOW.get(kind)
        return self.by_flow.get(flow, self.level) if flow is not None else self.level


@dataclass
class UsualRevenue:
    mean: utils.Rolling = field(default_factory=_rolling_mean)
    # per flow, the revenue and the flow over the same usual steps (a step without the flow teaches neither)
    revenue_with: dict[str, utils.Rolling] = field(default_factory=dict)
    flow_mean: dict[str, utils.Rolling] = field(default_factory=dict)
    spend: dict[str, utils.Rolling] = field(default_factory=dict)  # the usual level of each spending series

    def learn_spend(self, series: str, per_s: float) -> None:
        _learn(self.spend, series, per_s)

    def learn_one(self, revenue_per_s: float, flows: Mapping[str, float] | None = None) -> None:
        self.mean.update(revenue_per_s)
        for flow, per_s in (flows or {}).items():
            _learn(self.revenue_with, flow, revenue_per_s)
            _learn(self.flow_mean, flow, per_s)

    def expected(self, band: SeasonalBand | None, fallback: float) -> float:
        """Revenue per second expected now: the seasonal band's middle, the usual mean, else ``fallback``."""
        if band is not None:
            return (band.lower + band.upper) / 2
        if self.mean.obj.n >= MIN_USUAL_STEPS:  # the steps in the window: all learned, up to USUAL_STEPS
            return float(self.mean.obj.get())
        return fallback

    def expected_from(self, flow: str, per_s: float) -> float | None:
        """Revenue per second the shoppers of ``flow`` (``per_s`` of them) usually bring; None before it is known."""
        flow_mean = self.flow_mean.get(flow)
        if flow_mean is None or flow_mean.obj.n < MIN_USUAL_STEPS or flow_mean.obj.get() <= 0:
            return None
        return per_s * float(self.revenue_with[flow].obj.get()) / float(flow_mean.obj.get())

    def shortfall(self, observed: float, band: SeasonalBand | None, fallback: float,
                  flows: Mapping[str, float], spending: Mapping[str, float] | None = None) -> Shortfall:
        """Expected minus ``observed`` revenue per second, against the level and each flow of ``flows``; and each
        spending series of ``spending`` (its value now) above its usual level."""
        by_flow = {}
        for flow, per_s in flows.items():
            expected = self.expected_from(flow, per_s)
            if expected is not None:
                by_flow[flow] = expected - observed
        overspend = {series: per_s - float(self.spend[series].obj.get()) for series, per_s in (spending or {}).items()
                     if series in self.spend and self.spend[series].obj.n >= MIN_USUAL_STEPS}
        return Shortfall(self.expected(band, fallback) - observed, by_flow, overspend)
