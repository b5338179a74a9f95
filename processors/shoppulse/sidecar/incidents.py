"""Incidents: the anomaly regions that share a root cause, told as one story with one lifecycle.

A region joins an incident that is still open when it is the same country's (a payment outage
moves the failure rate, orders, revenue and abandonment of one country), or when it is store-wide
and driven by the incident's countries (``drivers.py``: a US flash sale shifts the store's mix, so
the store's conversion drops with no other country's), or when it is the same move as one of the
incident's regions, the same metric the same way or that move's other name (``SAME_SYMPTOM``: the
store-wide series a country drives, or one incident hitting several countries at once), or when it
is a country's and the incident is store-wide with no country yet (the first country to move drives
the store).
Otherwise it opens an incident of its own. An incident resolves once all its regions have closed
and ``resolve_after`` has passed with no region joining (so one that flaps is not paged twice); a
region after that opens a new one.

An incident is told (written, annotated, explained, paged) once it is confirmed: one of its regions
is a large move (high severity or worse) on overwhelming evidence (|z| of ``CONFIRM_Z``, the strength
that opens a region at once), or has stayed open for ``CONFIRM_AFTER``. A minute-long blip in one
series — a few tens of per cent of a country's product views, or a thin ratio tripling on a handful
of payments — is a region on its dashboard and nothing more: an ops wall that declares an incident
for every such blip is soon ignored. Nor is an incident told while its kind names no cause
(``KINDS``): a metric moving the harmless way — conversion or orders per paid click up, ad spend or
latency down, as a flash sale's store-wide mix settles after it — is a region on the dashboard, not
a problem anyone must act on. A store-wide incident no country has joined waits ``CONFIRM_AFTER``
however strong its move: the country driving it may show the same move a step later and take it in.
Until it is confirmed an incident still gathers its regions, holds its countries' baselines and
books its revenue at risk from the onset, so nothing is lost by telling it late.

Everything is decided in event time (the sidecar's steps), so a restarted sidecar replaying the same
data rebuilds the same incidents, and an incident's id is derived from its first region's (itself
stable across restarts).

Its kind is the most specific cause among its regions (``KINDS``, most specific first: a payment
failure rate that rose explains the fall in orders beside it); its severity the worst of its
regions', one level higher once it has lasted ``GROWS_AFTER``; its revenue at risk the expected
minus the observed revenue of its countries (for ad spend without orders, the spend above its usual:
``revenue.py``), summed over the steps from its onset until it closes
(the expected level of a country in an open incident learns nothing meanwhile: see
``Sidecar._score``). The onset is its regions' (when their series left the usual range), less one
aggregation window (``onset_margin``): a window that first shows a deviation already holds up to a
window of it, and everything lost before the incident was detected was lost to it all the same.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shoppulse.sidecar.regions import SEVERITIES, Region
from shoppulse.sidecar.revenue import OVERSPEND, Shortfall

NAMESPACE = uuid.UUID("0b0f9f62-4a56-4f0e-8a55-3c1b2f1d6e47")
GLOBAL = "ALL"
RESOLVE_AFTER = timedelta(minutes=3)
# A region in another country joins an incident by moving like one of its regions only while that
# one is recent: one cause moves its countries together, and an incident kept open for long by its
# own country must not absorb a later, unrelated one elsewhere (a JP latency regression 15 minutes
# into a US flash sale whose store-wide latency had moved too).
JOIN_WITHIN = timedelta(minutes=5)
GROWS_AFTER = timedelta(minutes=30)
CONFIRM_AFTER = timedelta(minutes=2)
CONFIRMING_SEVERITIES = frozenset({"high", "critical"})
CONFIRM_Z = 8.0
# (metric, direction) -> kind, the most specific cause first.
KINDS: tuple[tuple[str, int, str], ...] = (
    ("payment_failure_rate", 1, "payment_failures"),
    ("payment_latency_p95", 1, "checkout_latency"),
    ("refunds_per_s", 1, "refund_surge"),
    ("views_per_s", 1, "traffic_surge"),
    ("ad_spend_per_s", 1, "campaign_spend_without_orders"),
    ("carts_without_order", 1, "cart_abandonment"),
    ("checkouts_per_cart", -1, "checkout_drop"),
    ("orders_per_view", -1, "conversion_drop"),
    ("views_per_s", -1, "traffic_drop"),
    ("orders_per_s", -1, "sales_drop"),
    ("revenue_per_s", -1, "sales_drop"),
    ("orders_per_s", 1, "sales_surge"),
    ("revenue_per_s", 1, "sales_surge"),
)
CAUSES = frozenset(kind for _, _, kind in KINDS)
# What must not have moved for a kind: ad spend running higher is money burnt only while the orders do not follow
# (bots, a runaway bid); a campaign whose orders rise with its spend is a sales surge, one that brings shoppers a
# traffic surge (above). (Orders per paid click rising says nothing here: it is what the end of a flood of clicks
# looks like, while the orders of the clicks before it still come in.)
UNLESS_MOVED: dict[str, tuple[tuple[str, int], ...]] = {
    "campaign_spend_without_orders": (("orders_per_s", 1), ("revenue_per_s", 1))}
TITLES = {"payment_failures": "Payment failures", "campaign_spend_without_orders": "Ad spend without orders",
          "refund_surge": "Refund surge",
          "checkout_latency": "Checkout latency regression",
          "traffic_surge": "Traffic surge", "cart_abandonment": "Cart abandonment surge",
          "checkout_drop": "Checkout drop", "conversion_drop": "Conversion drop", "traffic_drop": "Traffic drop",
          "sales_drop": "Sales drop", "sales_surge": "Sales surge"}
METRIC_NAMES = {"orders_per_s": "orders/s", "revenue_per_s": "revenue/s", "views_per_s": "product views/s",
                "orders_per_view": "orders per product view", "carts_without_order": "carts without an order",
                "checkouts_per_cart": "checkouts per cart", "payment_failure_rate": "payment failure rate",
                "payment_latency_p95": "payment latency p95", "ad_spend_per_s": "ad spend/s",
                "orders_per_ad_click": "orders per paid click", "refunds_per_s": "refunds/s"}


# Moves that are one symptom under several names: fewer checkouts per cart, more carts left without an order, fewer
# orders and less revenue all say that shoppers leave between their cart and their order. One cause in several
# countries may show first as any of them: recorded abandonment surges in FR and GB opened checkouts per cart in FR
# and carts without order in GB, and on another recording orders in FR, then carts without order in GB.
LOST_AFTER_THE_CART = ("carts_without_order", 1)
SAME_SYMPTOM = {("checkouts_per_cart", -1): LOST_AFTER_THE_CART, ("orders_per_s", -1): LOST_AFTER_THE_CART,
                ("revenue_per_s", -1): LOST_AFTER_THE_CART}


def direction(region: Region) -> int:
    """Which way the region's metric moved, at its largest (its latest value may be back to normal)."""
    return 1 if region.peak_delta_pct >= 0 else -1


def symptom(region: Region) -> tuple[str, int]:
    """The region's move (metric, direction), under one name for the moves that are one symptom."""
    move = (region.metric, direction(region))
    return SAME_SYMPTOM.get(move, move)


def kind_of(regions: list[Region]) -> str:
    moved = {(r.metric, direction(r)) for r in regions}
    for metric, sign, kind in KINDS:
        if (metric, sign) in moved and moved.isdisjoint(UNLESS_MOVED.get(kind, ())):
            return kind
    first = regions[0]
    return f"{first.metric}_{'up' if direction(first) > 0 else 'down'}"


def incident_id(first: Region) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, str(first.anomaly_id))


@dataclass
class Incident:
    regions: list[Region]  # in the order they joined; the first names the incident
    opened_at: datetime
    incident_id: uuid.UUID
    resolved_at: datetime | None = None
    # expected minus observed revenue summed over the steps it has been open, signed: clipping each
    # step at zero would add the noise of every step where revenue runs at its usual level
    shortfall: float = 0.0
    detected_at: datetime | None = None  # wall clock, set when the incident is first written
    contributors: list[str] = field(default_factory=list)  # ranked, described (contributors.py)
    # (step, shortfall added): a restarted sidecar adds to the stored sum what its replay saw after it
    risk_steps: deque[tuple[datetime, float]] = field(default_factory=lambda: deque(maxlen=4320))
    confirmed: bool = False  # told from the step it was confirmed on (see the module's doc)

    @property
    def kind(self) -> str:
        return kind_of(self.regions)

    @property
    def countries(self) -> list[str]:
        named = sorted({r.country for r in self.regions if r.country != GLOBAL})
        return named or [GLOBAL]

    @property
    def metrics(self) -> list[str]:
        return sorted({r.metric for r in self.regions})

    @property
    def revenue_at_risk(self) -> float:
        return max(0.0, self.shortfall)

    @property
    def is_open(self) -> bool:
        return any(r.closed_at is None for r in self.regions)

    def book_lost(self, at: datetime, lost: float) -> None:
        """Add revenue lost to the shortfall, remembered by the step it was booked at."""
        if lost:
            self.shortfall += lost
            self.risk_steps.append((at, lost))

    def confirms(self, at: datetime) -> bool:
        """Whether it is confirmed at ``at``: of a kind that names a cause, with a region of high severity or worse
        on evidence of CONFIRM_Z, or one open for CONFIRM_AFTER. A store-wide move no country has joined yet waits
        CONFIRM_AFTER however strong: the country driving it may show it a step later (``_absorb_store_wide``)."""
        strength_counts = self.countries != [GLOBAL]
        return self.kind in CAUSES and any((strength_counts and r.severity(at) in CONFIRMING_SEVERITIES
                                            and r.peak_z >= CONFIRM_Z)
                                           or (r.closed_at or at) - r.opened_at >= CONFIRM_AFTER
                                           for r in self.regions)

    def last_closed_at(self) -> datetime:
        return max((r.closed_at or self.opened_at) for r in self.regions)

    def severity(self, at: datetime) -> str:
        worst = max(SEVERITIES.index(r.severity(at)) for r in self.regions)
        if (self.resolved_at or at) - self.opened_at >= GROWS_AFTER:
            worst += 1
        return SEVERITIES[min(worst, len(SEVERITIES) - 1)]

    def story(self, at: datetime) -> str:
        """What, where, since when, what moved, the top contributor and the revenue at risk so far."""
        where = "the whole store" if self.countries == [GLOBAL] else ", ".join(self.countries)
        since = self.opened_at.strftime("%H:%M UTC")
        state = f"resolved at {self.resolved_at.strftime('%H:%M UTC')}" if self.resolved_at else "ongoing"
        moved = []
        for region in sorted(self.regions, key=lambda r: -abs(r.peak_delta_pct))[:4]:
            scope = "store-wide" if region.country == GLOBAL else region.country
            moved.append(f"{METRIC_NAMES.get(region.metric, region.metric)} {scope} "
                         f"{region.peak_delta_pct:+.0f} %")
        title = TITLES.get(self.kind, self.kind.replace("_", " ").capitalize())
        top = f" Top contributor: {self.contributors[0]}." if self.contributors else ""
        at_risk = "Ad spend above its usual so far" if self.kind in OVERSPEND else "Revenue at risk so far"
        return (f"{title} in {where} since {since} ({state}, {self.severity(at)}): {'; '.join(moved)}.{top} "
                f"{at_risk}: ${self.revenue_at_risk:,.0f}.")


@dataclass(frozen=True)
class IncidentChange:
    kind: str  # opened | updated | resolved
    incident: Incident


@dataclass
class IncidentTracker:
    resolve_after: timedelta = RESOLVE_AFTER
    onset_margin: timedelta = timedelta(seconds=60)  # the aggregation window the steps are read over
    incidents: list[Incident] = field(default_factory=list)  # not yet resolved
    # the latest resolved, for a restarted sidecar whose replay saw one end that it had stored as open
    resolved: deque[Incident] = field(default_factory=lambda: deque(maxlen=100))
    # (step, lost revenue by country) of the latest steps: what an incident's onset reaches back to
    recent_lost: deque[tuple[datetime, Mapping[str, Shortfall]]] = field(default_factory=lambda: deque(maxlen=120))

    def step(self, at: datetime, opened: list[Region], lost_revenue: Mapping[str, Shortfall],
             step_s: float) -> list[IncidentChange]:
        """Take the regions opened at ``at`` into incidents, add each open incident's revenue at risk
        (``lost_revenue``: expected minus observed revenue per second, by country and ``ALL``, against the
        yardstick of the incident's kind: ``revenue.py``) and
        resolve those quiet for ``resolve_after``. Returns what changed of the confirmed incidents: one
        is "opened" on the step it is confirmed on, and one resolved unconfirmed was never told."""
        changes: dict[uuid.UUID, IncidentChange] = {}
        for region in opened:
            incident = self._joins(region)
            if incident is None:
                incident = Incident([region], at, incident_id(region))
                self.incidents.append(incident)
                changes[incident.incident_id] = IncidentChange("opened", incident)
                self._add_lost_before(incident, at, incident.countries, region.onset or at, step_s)
            else:
                counted = incident.countries
                incident.regions.append(region)
                changes.setdefault(incident.incident_id, IncidentChange("updated", incident))
                if region.country not in counted:  # a country newly in it: what it lost since its onset
                    newly = [c for c in incident.countries if c not in counted]
                    self._add_lost_before(incident, at, newly, region.onset or at, step_s)
            self._absorb_store_wide(incident, region)
        for incident in list(self.incidents):
            if incident.is_open:
                incident.book_lost(at, sum(lost_revenue[c].for_kind(incident.kind) for c in incident.countries
                                           if c in lost_revenue) * step_s)
                if not incident.confirmed and incident.confirms(at):
                    incident.confirmed = True
                    changes[incident.incident_id] = IncidentChange("opened", incident)
            elif at - incident.last_closed_at() >= self.resolve_after:
                incident.resolved_at = incident.last_closed_at()
                self.incidents.remove(incident)
                self.resolved.append(incident)
                changes[incident.incident_id] = IncidentChange("resolved", incident)
        self.recent_lost.append((at, lost_revenue))
        return [change for change in changes.values() if change.incident.confirmed]

    def _absorb_store_wide(self, incident: Incident, region: Region) -> None:
        """A country's region takes into its incident a store-wide one not yet told that shows the same move, opened
        within JOIN_WITHIN: the store moved a step before the country driving it did (a US flash sale's product
        views opened store-wide ten seconds before the US's own, beside the US's ad spend)."""
        if region.country == GLOBAL:
            return
        for other in list(self.incidents):
            if (other is not incident and not other.confirmed and other.countries == [GLOBAL]
                    and other.opened_at >= region.opened_at - JOIN_WITHIN
                    and any(symptom(r) == symptom(region) for r in other.regions)):
                incident.regions.extend(other.regions)
                self.incidents.remove(other)

    def _add_lost_before(self, incident: Incident, at: datetime, countries: list[str], onset: datetime,
                         step_s: float) -> None:
        """Add to the incident what ``countries`` lost in the steps from ``onset`` (less one window)
        to ``at``, booked at ``at`` (a restarted sidecar's replay books the same)."""
        since = onset - self.onset_margin
        kind = incident.kind
        lost = sum(by_country[c].for_kind(kind) for step, by_country in self.recent_lost if since < step < at
                   for c in countries if c in by_country) * step_s
        incident.book_lost(at, lost)

    def _joins(self, region: Region) -> Incident | None:
        """The open incident this region belongs to: its country's first, else (a store-wide region) the
        one of the countries that drive it, else one with the same move (``symptom``) within
        JOIN_WITHIN (a store-wide series, or a second country of one cause), else a store-wide one no
        country has joined yet, opened within JOIN_WITHIN."""
        same_country = [i for i in self.incidents
                        if region.country != GLOBAL and any(r.country == region.country for r in i.regions)]
        if same_country:
            return same_country[-1]
        driving = [i for i in self.incidents if set(region.driven_by) & set(i.countries)]
        if driving:
            return driving[-1]
        recent = region.opened_at - JOIN_WITHIN
        same_move = [i for i in self.incidents
                     if any(symptom(r) == symptom(region) and r.opened_at >= recent for r in i.regions)]
        if same_move:
            return same_move[-1]
        store_wide = [i for i in self.incidents if region.country != GLOBAL and i.countries == [GLOBAL]
                      and i.opened_at >= recent]
        return store_wide[-1] if store_wide else None  # the first country to move drives the store's

    def open_countries(self) -> set[str]:
        """The countries (and ``ALL``) with a region in an incident that is still open."""
        return {r.country for i in self.incidents if i.is_open for r in i.regions}

    def incident_of(self, region: Region) -> Incident | None:
        """The unresolved incident holding this region (the very object: ids change at a take-over)."""
        return next((i for i in self.incidents if any(r is region for r in i.regions)), None)
