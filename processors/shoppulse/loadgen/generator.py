"""The event stream: per country, a pool of live sessions that shoppers join at the rate its traffic
asks for and leave when their visit is over; every live session emits its next step on demand, at
the same pace, so that the store's events/s follow its live sessions.

``load(now)`` says how much busier than usual the store is (its live sessions against the usual
number; for a seasonal stream, against the week's mean); callers emit ``rate * load(now)``
events/s. An incident that brings shoppers (a flash sale) adds sessions in its country rather
than taking other countries' share, and once it is over its shoppers finish their visits at the
usual pace (the store stays busier by them for about a session's length), while every other
country's events/s stay what they were. The scenario's phenomena (bursts, drifts, holidays, level
shifts) scale countries' arrivals the same way; in a second the feed loses, ``load(now)`` is 0 and
nothing is sent."""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from shoppulse.events.currency import load_rates
from shoppulse.events.validate import Reason
from shoppulse.loadgen.bad_input import corrupt, pick_kind
from shoppulse.loadgen.markets import MARKETS, country_weights, global_factor
from shoppulse.loadgen.phenomena import ActivePhenomenon
from shoppulse.loadgen.scenario import ActiveIncident
from shoppulse.loadgen.scenario import Incident as ScriptedIncident
from shoppulse.loadgen.shoppers import (
    AD_SHARE,
    CAMPAIGN_CHANNELS,
    DEVICE_CUMULATIVE,
    DEVICES,
    LOST_ORDER,
    REFUND_SHARE,
    Effects,
    Session,
    ad_click,
    apply_live_effects,
    bulk_order,
    effects_for,
    new_session,
    refund,
)

NO_EFFECTS = Effects()
SESSION_SECONDS = 60.0  # a session's events spread over about this long at any rate
MEAN_EVENTS_PER_SESSION = 6.0
MIN_POOL = 20
MAX_POOL = 60_000  # at high rates sessions get shorter rather than the pool huge
PRIOR_SESSIONS = 50  # the steps per visit start at MEAN_EVENTS_PER_SESSION, worth this many visits, then are learned
LONG_VISIT_STEPS = 30  # visits this long or longer are all as likely to be under way at a given moment
MAX_ARRIVAL_GAP_S = 10.0  # a sender that stalled longer catches up on no more arrivals than this
OUT_OF_ORDER_MIN_S, OUT_OF_ORDER_MAX_S = 0.2, 2.5  # out of order, but within the windows' grace period
LATE_MIN_S, LATE_MAX_S = 120.0, 900.0  # late ones, beyond any grace period the aggregations use
# An ad click flood (bots, a runaway bid) adds this many paid clicks per usual click of its campaign at magnitude 1;
# the extra clicks are billed and bring no visit. A chargeback wave (stolen cards used weeks ago) adds this many
# "unauthorized" refunds per usual refund of its country. A visit is about this many events on average (the paid
# clicks are ~5 % of the events with a quarter of the visits paid), which gives the usual clicks or refunds per event.
FLOOD_CLICKS = 4.0
WAVE_REFUNDS = 10.0
EVENTS_PER_VISIT = 5.0


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def uuid4_text(bits: int) -> str:
    """The random (version 4) UUID of 128 random bits, as text: the version and variant bits set as
    ``str(uuid.UUID(int=bits, version=4))`` sets them, without building the object, which with the standard
    library's JSON encoder (now orjson) was a large part of the generator's own work per event."""
    text = f"{bits & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Emission:
    key: bytes | None
    value: bytes
    kind: str  # valid | invalid | duplicate
    reason: Reason | None = None
    country: str | None = None
    event_type: str | None = None  # of a valid event (and its duplicate)


@dataclass(frozen=True)
class LoneEvents:
    """Events that are no visit's steps, in one country: the back office's refunds, and what an incident adds on
    top of the visits (an ad click flood's billed clicks, a chargeback wave's refunds)."""

    country: str
    extra: float  # per usual event of the store
    step: Callable[[random.Random], dict[str, Any]]


def usual_refunds(country: str, share: float) -> LoneEvents:
    """The refunds of ``country``, whose share of the store's usual visits is ``share``."""
    return LoneEvents(country, REFUND_SHARE * share / EVENTS_PER_VISIT,
                      functools.partial(refund, market=MARKETS[country]))


def lone_events(incident: ScriptedIncident, country: str, share: float) -> LoneEvents | None:
    """The lone events ``incident`` adds in ``country``, whose share of the store's visits is ``share``."""
    market = MARKETS[country]
    if incident.kind == "ad_click_flood":
        channel_share = dict((name, part) for name, part, _ in CAMPAIGN_CHANNELS)[incident.channel]
        return LoneEvents(country, FLOOD_CLICKS * incident.magnitude * share * AD_SHARE * channel_share
                          / EVENTS_PER_VISIT, lambda rng: ad_click(rng, market, incident.channel))
    if incident.kind == "chargeback_wave":
        return LoneEvents(country, WAVE_REFUNDS * incident.magnitude * share * REFUND_SHARE / EVENTS_PER_VISIT,
                          lambda rng: refund(rng, market, "unauthorized"))
    return None


@dataclass(frozen=True)
class LostOrder:
    """An order a payment incident made fail (it would have paid at the usual failure rate)."""

    at: datetime
    country: str
    order_id: str
    usd: float


def revenue_lost(orders: Sequence[LostOrder], incident: ActiveIncident, after: timedelta) -> float:
    """What ``incident`` cost in USD: its countries' lost orders from its start to ``after`` its end
    (a shopper who began paying during it may finish a little later)."""
    countries = set(incident.incident.countries)
    return sum(o.usd for o in orders if o.country in countries and incident.start <= o.at <= incident.end + after)


@dataclass
class Tally:
    """What was sent, to compare with what arrived."""

    valid: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    late: int = 0
    out_of_order: int = 0
    pii: set[str] = field(default_factory=set)

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())


@dataclass(frozen=True)
class BadInput:
    """Shares of the emitted events (0-1) that are invalid, duplicated, late or out of order."""

    invalid: float = 0.0
    duplicates: float = 0.0
    late: float = 0.0
    out_of_order: float = 0.0


class EventStream:
    """Draws events from the live sessions of a store sized for ``rate`` events/s."""

    def __init__(self, rate: float, incidents: list[ActiveIncident] | None = None, bad: BadInput | None = None,
                 seed: int | None = None, record_pii: bool = False, traffic_shift: timedelta = timedelta(0),
                 phenomena: list[ActivePhenomenon] | None = None, seasonal: bool = False) -> None:
        """``traffic_shift``: the markets' time of the week the stream plays is the event time plus this
        (a recording stamped in the last hours can play the traffic of a fixed hour of the week).
        ``seasonal``: the store's volume follows the time of the week too (``rate`` is its weekly mean,
        as a replay of history has it); otherwise only the countries' mix does, and ``rate`` is held."""
        self.rng = random.Random(seed)
        self.rate = rate
        self.traffic_shift = traffic_shift
        self.incidents = incidents or []
        self.phenomena = phenomena or []
        self.seasonal = seasonal
        self.bad = bad or BadInput()
        self.record_pii = record_pii
        self.tally = Tally()
        self.pools: dict[str, list[Session]] = {country: [] for country in MARKETS}
        self.usual_pool_size = min(MAX_POOL, max(MIN_POOL, int(rate * SESSION_SECONDS / MEAN_EVENTS_PER_SESSION)))
        self._arriving: dict[str, float] = dict.fromkeys(MARKETS, 0.0)  # each country's arrivals owed, in sessions
        # per country, the steps and number of the usual visits planned: how long a visit lasts, learned
        self._steps_planned = {country: [MEAN_EVENTS_PER_SESSION * PRIOR_SESSIONS, float(PRIOR_SESSIONS)]
                               for country in MARKETS}
        self._load = 1.0
        self._serial = 0
        self._bad_serial = 0
        self._countries: list[str] = []
        self._cumulative: list[float] = []
        self._stamp: tuple[datetime, str] | None = None
        self._second: int | None = None  # the whole second the arrivals and weights were last worked out for
        self._effects: dict[tuple[str, str], Effects] = {}  # (country, device) -> the incidents' effects
        self._last_valid: Emission | None = None
        self.lost_orders: list[LostOrder] = []  # the ground truth of what payment incidents cost
        self._lone: list[LoneEvents] = []
        self._lone_share = 0.0  # of the events emitted: the lone ones (refunds, the incidents')

    def load(self, now: datetime) -> float:
        """How much busier than usual the store is at ``now`` (1.0 without a traffic incident or phenomenon;
        0 in a second the feed loses)."""
        self._refresh_if_stale(now)
        return self._load

    def next(self, now: datetime) -> Emission:
        """The next event, stamped ``now`` (or earlier, for late and out-of-order ones)."""
        roll = self.rng.random()
        if roll < self.bad.duplicates and self._last_valid is not None:
            self.tally.duplicates += 1
            return Emission(self._last_valid.key, self._last_valid.value, "duplicate",
                            country=self._last_valid.country, event_type=self._last_valid.event_type)
        step = None
        if self._lone_share and self.rng.random() < self._lone_share:
            session = self._lone_event()
            step = session.steps.pop()
        while step is None:
            session = self._session(now)
            step = apply_live_effects(self.rng, session, session.steps.pop(0), self._effects.get(
                (session.common["country"], session.common["device"]), NO_EFFECTS))
        if LOST_ORDER in step:
            step = dict(step)
            lost = load_rates().to_reporting(Decimal(step.pop(LOST_ORDER)), step["currency"])
            self.lost_orders.append(LostOrder(now, session.common["country"], step["order_id"], float(lost)))
        event = {**session.common, **step, "event_id": uuid4_text(self.rng.getrandbits(128)),
                 "event_time": self._event_time(now)}
        key = session.common["session_id"].encode()
        roll -= self.bad.duplicates
        if roll < self.bad.invalid:
            kind = pick_kind(self.rng, self._bad_serial)
            self._bad_serial += 1
            self.tally.invalid[kind] += 1
            return Emission(None if kind is Reason.MISSING_KEY else key, corrupt(event, kind, now), "invalid", kind)
        self.tally.valid += 1
        if self.record_pii and "user_id" in event:
            self.tally.pii |= {event["user_id"], event["email"], event["ip"]}
        emission = Emission(key, orjson.dumps(event), "valid", country=event["country"], event_type=event["event_type"])
        self._last_valid = emission
        return emission

    def _event_time(self, now: datetime) -> str:
        roll = self.rng.random()
        if roll < self.bad.late:
            self.tally.late += 1
            return _iso(now - timedelta(seconds=self.rng.uniform(LATE_MIN_S, LATE_MAX_S)))
        if roll < self.bad.late + self.bad.out_of_order:
            self.tally.out_of_order += 1
            return _iso(now - timedelta(seconds=self.rng.uniform(OUT_OF_ORDER_MIN_S, OUT_OF_ORDER_MAX_S)))
        if self._stamp is None or self._stamp[0] != now:  # a burst shares one timestamp: format it once
            self._stamp = (now, _iso(now))
        return self._stamp[1]

    def _session(self, now: datetime) -> Session:
        """A live session of a country drawn by its share of the live sessions, for its next step; it
        leaves the pool with its last step."""
        self._refresh_if_stale(now)
        country = self._countries[bisect.bisect(self._cumulative, self.rng.random() * self._cumulative[-1])]
        pool = self.pools[country]
        while pool:
            index = self.rng.randrange(len(pool))
            session = pool[index]
            if len(session.steps) <= 1:  # its last step now (or none left: an incident cut the visit short)
                pool[index] = pool[-1]
                pool.pop()
            if session.steps:
                return session
        session = self._new_session(country)  # its shoppers all left within this second: one arrives a bit early
        if len(session.steps) > 1:
            pool.append(session)
        return session

    def _lone_event(self) -> Session:
        """A visit of one lone event and nothing after it (a refund, a bot's click that never loads the page)."""
        chosen = self.rng.choices(self._lone, [lone.extra for lone in self._lone])[0]
        self._serial += 1
        device = DEVICES[bisect.bisect(DEVICE_CUMULATIVE, self.rng.random())]
        common = {"schema_version": 1, "session_id": f"s-{self._serial:x}-{self.rng.getrandbits(24):06x}",
                  "country": chosen.country, "device": device}
        return Session(common, [chosen.step(self.rng)])

    def _new_session(self, country: str) -> Session:
        self._serial += 1
        session = new_session(self.rng, MARKETS[country],
                              lambda device: self._effects.get((country, device), NO_EFFECTS), self._serial)
        if session.effects == NO_EFFECTS:  # an incident may lengthen or cut visits; shoppers arrive as usual
            planned = self._steps_planned[country]
            planned[0], planned[1] = planned[0] + len(session.steps), planned[1] + 1
        return session

    def _caught_mid_visit(self, country: str) -> Session:
        """A session as a look at a store in its steady state finds one: a visit picked by how long it lasts
        (a long one is more likely to be under way), at a uniformly random step of it."""
        while True:
            session = self._new_session(country)
            if self.rng.random() * LONG_VISIT_STEPS < len(session.steps):
                break
        if len(session.steps) > 1:
            del session.steps[: self.rng.randrange(len(session.steps))]
        return session

    def _arrive(self, wanted: dict[str, float], elapsed_s: float) -> None:
        """The shoppers who joined each country's pool over ``elapsed_s``: as many as keep its ``wanted`` live
        sessions at the usual pace per session. The first time, the pools start full, their shoppers caught
        mid-visit."""
        first = not any(self.pools.values())
        for country, sessions in wanted.items():
            if first:
                self.pools[country] = [self._caught_mid_visit(country) for _ in range(round(sessions))]
                continue
            steps, visits_planned = self._steps_planned[country]
            # a visit lasts its steps at rate / usual_pool_size steps per second
            self._arriving[country] += sessions * self.rate / self.usual_pool_size * visits_planned / steps * elapsed_s
            arrivals = int(self._arriving[country])
            self._arriving[country] -= arrivals
            self.pools[country] += [self._new_session(country) for _ in range(arrivals)]

    def _refresh_if_stale(self, now: datetime) -> None:
        second = int(now.timestamp())
        if second != self._second:  # incidents and phenomena start on the second, and bursts change with it
            elapsed = 0.0 if self._second is None else min(max(second - self._second, 0), MAX_ARRIVAL_GAP_S)
            previous, self._second = self._second, second
            if previous is not None and second > previous:
                self._bulk_orders(datetime.fromtimestamp(previous, UTC), now)
            self._refresh(now, elapsed)

    def _bulk_orders(self, after: datetime, now: datetime) -> None:
        """The outliers' bulk buyers whose visits begin in (``after``, ``now``] join their country's shoppers."""
        for phenomenon in self.phenomena:
            size = phenomenon.phenomenon.bulk_size
            for where in phenomenon.outliers_between(after, now):
                country = where or self.rng.choices(self._countries, cum_weights=self._cumulative)[0]
                self._serial += 1
                session = new_session(self.rng, MARKETS[country], functools.partial(self._effects_in, country),
                                      self._serial)
                session.steps = bulk_order(self.rng, MARKETS[country], session.effects, self._serial, size)
                self.pools[country].append(session)

    def _effects_in(self, country: str, device: str) -> Effects:
        return self._effects.get((country, device), NO_EFFECTS)

    def _refresh(self, now: datetime, elapsed_s: float) -> None:
        active: dict[str, list[ScriptedIncident]] = {}
        for incident in self.incidents:
            if incident.active(now):
                for country in incident.incident.countries:
                    active.setdefault(country, []).append(incident.incident)
        self._effects = {(c, device): effects_for([(i.kind, i.magnitude, i.gateway) for i in incidents
                                                   if i.devices is None or device in i.devices])
                         for c, incidents in active.items() for device in DEVICES}
        # a traffic incident hits every device (scenario.Incident allows no devices for one)
        boost: dict[str, float] = {c: e.traffic_boost for (c, device), e in self._effects.items()
                                   if device == DEVICES[0] and e.traffic_boost != 1.0}
        for phenomenon in self.phenomena:
            traffic = phenomenon.traffic(now)
            if traffic != 1.0:
                for moved in filter(phenomenon.moves, MARKETS):
                    boost[moved] = boost.get(moved, 1.0) * traffic
        week_time = now + self.traffic_shift
        usual = country_weights(week_time)
        scripted = [lone for country, incidents in active.items() for i in incidents
                    if (lone := lone_events(i, country, usual[country])) is not None]
        self._lone = [usual_refunds(country, share) for country, share in usual.items()] + scripted
        # a boosted country's shoppers come on top of the usual ones rather than taking other countries' share
        volume = self.usual_pool_size * (global_factor(week_time) if self.seasonal else 1.0)
        self._arrive({country: volume * share * boost.get(country, 1.0) for country, share in usual.items()},
                     elapsed_s)
        live = {country: float(len(pool)) for country, pool in self.pools.items()}
        self._countries = list(live)
        self._cumulative = list(itertools.accumulate(live.values()))
        # the usual refunds are a share of the usual events; the incidents' come on top of every country's visits
        self._load = sum(live.values()) / self.usual_pool_size + sum(lone.extra for lone in scripted)
        self._lone_share = sum(lone.extra for lone in self._lone) / max(self._load, 1e-9)
        if any(phenomenon.silent(now) for phenomenon in self.phenomena):
            self._load = 0.0
