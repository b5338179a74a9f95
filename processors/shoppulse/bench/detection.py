"""``shoppulse score``: how well the sidecar catches the load generator's scripted incidents.

Each scenario (and a stretch of incident-free traffic) is recorded through a throwaway pipeline —
the load generator's events into a Kafka broker, ``shoppulse ingest``, ``shoppulse aggregate`` and
``shoppulse sidecar`` as processes, ClickHouse — and scored on the anomaly regions the sidecar wrote:
per incident, was a region opened on an affected metric in an affected country during the incident,
and how long after its start; on the incident-free run, false alerts per country-day. And on the
incidents it wrote: each scripted incident should be exactly one, of the kind the generator played,
and the incident-free run should have none (an incident in another country, even during a scripted
one, is a false one). A scenario's phenomena (bursts, drifts, holidays, campaigns, level shifts, missing
seconds, bulk orders) are how healthy traffic moves: a region they cause is a false alert, except at the
onset of a level shift (where one is wanted: it is scored as detected or missed) or at the start and end
of a holiday or campaign nobody announced (where one is tolerated). The announced ones are in the
calendar of known events the sidecar under test reads: no alert is wanted on them at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from shoppulse.actions.dry_run import dry_run_report
from shoppulse.actions.policy import Policy
from shoppulse.devstack.recording import recorded_run
from shoppulse.loadgen.generator import LostOrder, revenue_lost
from shoppulse.loadgen.phenomena import ONSET, ActivePhenomenon
from shoppulse.loadgen.scenario import AFFECTED_METRICS, ActiveIncident, Scenario
from shoppulse.settings import Settings
from shoppulse.sidecar.incidents import TITLES
from shoppulse.sidecar.signals import as_utc

WARM_UP = timedelta(minutes=20)  # traffic before the scenario's clock starts, for the baselines
MARGIN = timedelta(minutes=2)  # a region this close to an incident is not a false alert
LOST_ORDERS_AFTER = timedelta(minutes=10)  # a shopper who began paying during an outage may fail after it
PLAYS = datetime(2026, 11, 23, 12, tzinfo=UTC)  # a Monday noon: every run plays the same hours of the week
COUNTRIES = 12  # the store's
STORE_WIDE = "ALL"  # the sidecar's name for the store-wide series
# What a change in the number of shoppers moves: a level shift's onset is told by a region on one of these.
VOLUMES = ("views_per_s", "orders_per_s", "revenue_per_s", "ad_spend_per_s", "carts_without_order")
# the sidecar's incident kind for each of the generator's
EXPECTED_KIND = {"payment_outage": "payment_failures", "flash_sale": "traffic_surge",
                 "checkout_latency": "checkout_latency", "abandonment_surge": "cart_abandonment",
                 "ad_click_flood": "campaign_spend_without_orders", "chargeback_wave": "refund_surge"}


@dataclass(frozen=True)
class OpenedRegion:
    metric: str
    country: str
    opened_at: datetime
    delta_pct: float


@dataclass(frozen=True)
class OpenedIncident:
    kind: str
    countries: list[str]
    opened_at: datetime
    revenue_at_risk: float
    story: str
    contributors: list[str] = field(default_factory=list)  # ranked, "gateway pix: ..." first

    @property
    def pages(self) -> bool:
        """Whether the incident rule pages on-call for it: a kind the sidecar names (one that hurts the
        store), not a fallback such as carts_without_order_down."""
        return self.kind in TITLES


@dataclass(frozen=True)
class IncidentScore:
    kind: str
    countries: list[str]
    detected: bool
    delay_s: float | None
    regions: list[OpenedRegion]
    told_as: list[OpenedIncident] = field(default_factory=list)  # the sidecar's incidents for it: one is right
    gateway: str | None = None  # the one payment gateway the generator made fail or slow
    revenue_lost: float | None = None  # payment incidents: the orders the generator made fail, USD

    @property
    def told_once_rightly(self) -> bool:
        return len(self.told_as) == 1 and self.told_as[0].kind == EXPECTED_KIND.get(self.kind)

    @property
    def pages_once_rightly(self) -> bool:
        """On-call is paged once, for the right cause: of its incidents, exactly one is of a kind that
        pages, and that one is its kind (a store-wide fall in abandonment beside a sale pages no one)."""
        paging = [i for i in self.told_as if i.pages]
        return len(paging) == 1 and paging[0].kind == EXPECTED_KIND.get(self.kind)

    @property
    def revenue_at_risk(self) -> float:
        """What the incidents that page for it put at risk (the sidecar's figure, to set against revenue_lost)."""
        return sum(i.revenue_at_risk for i in self.told_as if i.pages)

    @property
    def names_its_gateway(self) -> bool | None:
        """Whether the incident's top contributor is the scripted gateway (None: no gateway scripted)."""
        if self.gateway is None:
            return None
        return any(i.contributors and i.contributors[0].startswith(f"gateway {self.gateway}:")
                   for i in self.told_as)


@dataclass(frozen=True)
class PhenomenonScore:
    kind: str
    countries: list[str] | None  # None: every country
    alerting: str  # its ground truth: "wanted at onset", "tolerated at onset" or "never"
    delay_s: float | None  # a wanted onset: how long after the start a region told of it (None: missed)
    false_alerts: list[OpenedRegion]  # the run's false alerts in its countries while it was on
    tolerated: list[OpenedRegion] = field(default_factory=list)  # alerts at a start or end where they are no false

    @property
    def detected(self) -> bool | None:
        return None if self.alerting != "wanted at onset" else self.delay_s is not None


@dataclass(frozen=True)
class RunScore:
    incidents: list[IncidentScore]
    false_alerts: list[OpenedRegion]
    country_days: float
    false_incidents: list[OpenedIncident] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # what the action policies would have done (a dry run)
    phenomena: list[PhenomenonScore] = field(default_factory=list)

    @property
    def false_per_country_day(self) -> float:
        return len(self.false_alerts) / self.country_days if self.country_days else 0.0


def run(settings: Settings, scenario: Scenario | None, rate: float, tail: timedelta, seed: int = 7,
        progress: Callable[[str], None] = lambda _: None, policies: Sequence[Policy] = (),
        plays: datetime = PLAYS) -> RunScore:
    """Record ``scenario``'s incidents after a warm-up and ``tail`` of traffic after the last one (all
    of the traffic scored, without a scenario), the shop's hours of the week from ``plays`` on, score
    the regions the sidecar opened, and dry-run the action ``policies`` over its incidents."""
    with recorded_run(settings, scenario, rate, WARM_UP, tail, plays, seed, progress) as (recorded, client):
        rows = client.query(
            "SELECT metric, country, opened_at, if(expected = 0, 0, 100 * (observed - expected) / expected) "
            "FROM anomalies FINAL WHERE opened_at >= {start:DateTime64(3)} AND status != 'withdrawn' "
            "ORDER BY opened_at",
            parameters={"start": recorded.start.replace(tzinfo=None)}).result_rows
        told = client.query(
            "SELECT kind, countries, opened_at, revenue_at_risk, story, contributors FROM incidents FINAL "
            "WHERE opened_at >= {start:DateTime64(3)} ORDER BY opened_at",
            parameters={"start": recorded.start.replace(tzinfo=None)}).result_rows
        actions = dry_run_report(client, policies, recorded.start, recorded.end, recorded.start)
    opened = [OpenedRegion(str(metric), str(country), as_utc(at), float(delta)) for metric, country, at, delta in rows]
    stories = [OpenedIncident(str(kind), [str(c) for c in countries], as_utc(at), float(at_risk), str(story),
                              [str(c) for c in contributors])
               for kind, countries, at, at_risk, story, contributors in told]
    return replace(score(recorded.incidents, opened, recorded.end - recorded.start, stories, recorded.lost_orders,
                         recorded.phenomena), actions=actions)


def _in_its_countries(country: str, phenomenon: ActivePhenomenon) -> bool:
    return country == STORE_WIDE or phenomenon.moves(country)


def _at_onset(country: str, at: datetime, phenomenon: ActivePhenomenon) -> bool:
    """Whether an alert in ``country`` at ``at`` tells of the phenomenon's onset (wanted or tolerated)."""
    return _in_its_countries(country, phenomenon) and any(
        onset - MARGIN <= at <= onset + ONSET for onset in phenomenon.onsets())


def score_phenomenon(phenomenon: ActivePhenomenon, opened: Sequence[OpenedRegion],
                     false_alerts: Sequence[OpenedRegion]) -> PhenomenonScore:
    """A wanted onset told by a region on a volume of its countries (or the store's), and the run's false alerts
    in its countries from its start to its end (a drift's new level and a level shift last to the run's end)."""
    p = phenomenon.phenomenon
    delay = None
    if p.alerting == "wanted at onset":
        delays = [(r.opened_at - phenomenon.start).total_seconds() for r in opened
                  if r.metric in VOLUMES and _at_onset(r.country, r.opened_at, phenomenon)
                  and r.opened_at >= phenomenon.start]
        delay = min(delays, default=None)
    lasting = p.kind in ("drift", "level_shift") or phenomenon.end is None
    during = [r for r in false_alerts if _in_its_countries(r.country, phenomenon) and phenomenon.start <= r.opened_at
              and (lasting or (phenomenon.end is not None and r.opened_at <= phenomenon.end + MARGIN))]
    tolerated = [r for r in opened if _at_onset(r.country, r.opened_at, phenomenon)] \
        if p.alerting == "tolerated at onset" else []
    return PhenomenonScore(p.kind, list(p.countries) if p.countries else None, p.alerting, delay, during, tolerated)


def score(incidents: list[ActiveIncident], opened: list[OpenedRegion], duration: timedelta,
          told: Sequence[OpenedIncident] = (), lost_orders: Sequence[LostOrder] = (),
          phenomena: Sequence[ActivePhenomenon] = ()) -> RunScore:
    scores, explained, told_of = [], set(), set()
    for incident in incidents:
        countries: list[str] = list(incident.incident.countries)
        metrics = AFFECTED_METRICS[incident.incident.kind]
        hits = [r for r in opened if r.metric in metrics and r.country in countries
                and incident.start <= r.opened_at <= incident.end]
        delay = min((r.opened_at - incident.start).total_seconds() for r in hits) if hits else None
        near = [i for i in told if incident.start - MARGIN <= i.opened_at <= incident.end + MARGIN
                and set(i.countries) & {*countries, "ALL"}]
        told_of |= {id(i) for i in near}
        lost = (revenue_lost(lost_orders, incident, LOST_ORDERS_AFTER)
                if incident.incident.kind == "payment_outage" else None)
        scores.append(IncidentScore(incident.incident.kind, countries, bool(hits), delay, hits, near,
                                    incident.incident.gateway, lost))
        explained |= {id(r) for r in opened if incident.start - MARGIN <= r.opened_at <= incident.end + MARGIN}
    explained |= {id(r) for r in opened for p in phenomena if _at_onset(r.country, r.opened_at, p)}
    told_of |= {id(i) for i in told for p in phenomena if any(_at_onset(c, i.opened_at, p) for c in i.countries)}
    false_alerts = [r for r in opened if id(r) not in explained]
    return RunScore(scores, false_alerts, COUNTRIES * duration.total_seconds() / 86400,
                    [i for i in told if id(i) not in told_of],
                    phenomena=[score_phenomenon(p, opened, false_alerts) for p in phenomena])


def _region_line(region: OpenedRegion) -> str:
    return f"{region.opened_at:%H:%M:%S} {region.metric} {region.country} ({region.delta_pct:+.0f}%)"


def phenomena_lines(name: str, result: RunScore) -> list[str]:
    """Per phenomenon: a wanted onset told or missed, and the false alerts while it lasted; then the run's
    false alerts per country-day and its false incidents."""
    lines = []
    for p in result.phenomena:
        if p.alerting == "wanted at onset":
            verdict = f"onset told after {p.delay_s:.0f} s" if p.delay_s is not None else "onset MISSED"
        else:
            verdict = (f"{len(p.tolerated)} alert(s) as it began or ended, tolerated"
                       if p.alerting == "tolerated at onset" else "no alert wanted")
        lines.append(f"{name:14} {p.kind:18} {','.join(p.countries or ['ALL']):6} {verdict}; "
                     f"{len(p.false_alerts)} false alert(s) while it lasted")
        lines += [f"{'':16}{_region_line(region)}" for region in p.false_alerts[:5]]
    during = {id(region) for p in result.phenomena for region in p.false_alerts}
    beside = [region for region in result.false_alerts if id(region) not in during]
    if result.phenomena and beside:
        lines.append(f"{name:14} {len(beside)} false alert(s) beside the phenomena")
        lines += [f"{'':16}{_region_line(region)}" for region in beside[:5]]
    if result.phenomena:
        lines.append(f"{name:14} false alerts: {len(result.false_alerts)} = {result.false_per_country_day:.2f} per "
                     f"country-day (target <= 1); false incidents: {len(result.false_incidents)} "
                     f"({sum(told.pages for told in result.false_incidents)} of a kind that pages)")
    return lines


def scenario_lines(name: str, result: RunScore) -> list[str]:
    """A scenario's score as ``shoppulse score`` prints it: per scripted incident whether and when it
    was detected, the incidents it was told as, revenue at risk and top contributor; the phenomena; then
    the actions."""
    lines = []
    for incident in result.incidents:
        delay = f"after {incident.delay_s:.0f} s" if incident.delay_s is not None else "-"
        first = min(incident.regions, key=lambda r: r.opened_at) if incident.regions else None
        how = f" ({first.metric} {first.country})" if first else ""
        lines.append(f"{name:14} {incident.kind:18} {','.join(incident.countries):6} "
                     f"{'detected' if incident.detected else 'MISSED':9} {delay}{how}")
        told = "; ".join(f"{i.kind} {','.join(i.countries)} ${i.revenue_at_risk:,.0f} at risk"
                         for i in incident.told_as) or "none"
        verdict = "one, of its kind" if incident.told_once_rightly else "NOT one of its kind"
        paged = "pages once, for its kind" if incident.pages_once_rightly else "does NOT page once rightly"
        lines.append(f"{'':14} incidents: {len(incident.told_as)} ({verdict}; {paged}): {told}")
        if incident.revenue_lost is not None and incident.told_as:
            at_risk, lost = incident.revenue_at_risk, incident.revenue_lost
            ratio = f" ({at_risk / lost:.0%} of it)" if lost else ""
            lines.append(f"{'':14} revenue at risk ${at_risk:,.0f} against ${lost:,.0f} "
                         f"of orders the generator made fail{ratio}")
        if incident.names_its_gateway is not None:
            top = next((i.contributors[0] for i in incident.told_as if i.contributors), "none")
            lines.append(f"{'':14} top contributor: {top} (the scripted gateway {incident.gateway}: "
                         f"{'named' if incident.names_its_gateway else 'NOT named'})")
    return lines + phenomena_lines(name, result) + [f"{name:14} {line.strip()}" for line in result.actions]


def quiet_lines(quiet: RunScore, hours: float) -> list[str]:
    """The incident-free run's score: false alerts per country-day, false incidents, actions (target: none)."""
    lines = [f"false alerts on incident-free traffic: {len(quiet.false_alerts)} in {hours:g} h over 12 "
             f"countries = {quiet.false_per_country_day:.2f} per country-day (target <= 1)"]
    lines += [f"  {_region_line(region)}" for region in quiet.false_alerts[:10]]
    paging = sum(told.pages for told in quiet.false_incidents)
    lines.append(f"incidents on incident-free traffic: {len(quiet.false_incidents)} (target 0), {paging} of a kind "
                 "that pages on-call")
    lines += [f"  {told.opened_at:%H:%M:%S} {told.story}" for told in quiet.false_incidents[:10]]
    return lines + [f"incident-free: {line.strip()}" for line in quiet.actions]
