"""Incidents from anomaly regions: grouping by root cause, kind, lifecycle, ids and revenue at risk (unit tests)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from clickhouse_connect.driver.client import Client

from shoppulse.ascode.dashboards.demo_data import poisson
from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.detectors import ADOPT_AFTER_STEPS, Opinion, Point, SeasonalBand, Verdict
from shoppulse.sidecar.incidents import CONFIRM_AFTER, CONFIRM_Z, JOIN_WITHIN, RESOLVE_AFTER, IncidentTracker, kind_of
from shoppulse.sidecar.regions import Region, RegionTracker, region_id
from shoppulse.sidecar.revenue import Shortfall, UsualRevenue

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)


def region(metric: str, country: str, at: datetime, up: bool) -> Region:
    expected = 10.0
    observed = 20.0 if up else 4.0
    found = Region(region_id(metric, country, at), metric, country, at, observed, expected, 8.0, 12.0, 0.9,
                   9.0 if up else -9.0)
    found.peak_delta_pct, found.peak_z = found.delta_pct, 9.0  # a large move on overwhelming evidence
    return found


def level(lost: dict[str, float]) -> dict[str, Shortfall]:
    """Revenue lost per second by country, against the level (the yardstick of every kind when no flow is known)."""
    return {country: Shortfall(per_s) for country, per_s in lost.items()}


def play(tracker: IncidentTracker, script: dict[int, list[Region]], closes: dict[int, list[Region]], steps: int,
         lost: dict[str, float] | None = None) -> list[tuple[int, str, str]]:
    """Step the tracker; ``script`` opens regions at a step, ``closes`` closes them. Returns the changes."""
    seen = []
    for index in range(steps):
        at = T0 + STEP * index
        for closing in closes.get(index, []):
            closing.closed_at = at
        for change in tracker.step(at, script.get(index, []), level(lost or {}), STEP.total_seconds()):
            seen.append((index, change.kind, change.incident.kind))
    return seen


def test_a_payment_outage_is_one_incident_whatever_it_moves() -> None:
    """The failure rate, orders, abandonment of DE and the store-wide failure rate: one story, named
    by the most specific cause, in the country that has it."""
    failures = region("payment_failure_rate", "DE", T0 + STEP, up=True)
    store = region("payment_failure_rate", "ALL", T0 + 2 * STEP, up=True)
    orders = region("orders_per_s", "DE", T0 + 3 * STEP, up=False)
    abandonment = region("carts_without_order", "DE", T0 + 4 * STEP, up=True)
    tracker = IncidentTracker()
    changes = play(tracker, {1: [failures], 2: [store], 3: [orders], 4: [abandonment]}, {}, 10)
    assert [c[:2] for c in changes] == [(1, "opened"), (2, "updated"), (3, "updated"), (4, "updated")]
    [incident] = tracker.incidents
    assert incident.kind == "payment_failures" and incident.countries == ["DE"]
    assert incident.metrics == ["carts_without_order", "orders_per_s", "payment_failure_rate"]
    assert all(tracker.incident_of(r) is incident for r in (failures, store, orders, abandonment))
    story = incident.story(T0 + 10 * STEP)
    assert story.startswith("Payment failures in DE since 14:00 UTC (ongoing,")
    assert "payment failure rate DE +100 %" in story


def test_one_cause_in_two_countries_is_one_incident_and_unrelated_ones_are_apart() -> None:
    gb, fr = region("carts_without_order", "GB", T0, up=True), region("carts_without_order", "FR", T0 + STEP, up=True)
    surge, latency = region("views_per_s", "US", T0 + STEP, up=True), region("payment_latency_p95", "JP", T0, up=True)
    tracker = IncidentTracker()
    play(tracker, {0: [gb, latency], 1: [fr, surge]}, {}, 3)
    kinds = {i.kind: i.countries for i in tracker.incidents}
    assert kinds == {"cart_abandonment": ["FR", "GB"], "checkout_latency": ["JP"], "traffic_surge": ["US"]}


def test_a_later_move_elsewhere_is_its_own_incident_even_while_a_long_one_is_open() -> None:
    """A store-wide latency rise during a US flash sale, joined by GB's within JOIN_WITHIN; a JP latency
    regression 15 minutes later, with that incident still open, is another cause."""
    surge = region("views_per_s", "US", T0, up=True)
    store_latency = region("payment_latency_p95", "ALL", T0 + STEP, up=True)
    soon = region("payment_latency_p95", "GB", T0 + STEP + JOIN_WITHIN - STEP, up=True)
    later = region("payment_latency_p95", "JP", T0 + 90 * STEP, up=True)
    tracker = IncidentTracker()
    play(tracker, {0: [surge], 1: [store_latency], 30: [soon], 90: [later]}, {}, 95)
    assert [(i.kind, i.countries) for i in tracker.incidents] == [
        ("traffic_surge", ["US"]), ("checkout_latency", ["GB"]), ("checkout_latency", ["JP"])]
    store = IncidentTracker()
    play(store, {0: [region("orders_per_s", "ALL", T0, up=False)],
                 40: [region("checkouts_per_cart", "BR", T0, up=False)]}, {}, 42)
    assert [i.countries for i in store.incidents] == [["BR"]]  # opened within JOIN_WITHIN of the store's
    stale = IncidentTracker()
    play(stale, {0: [region("orders_per_s", "ALL", T0, up=False)],
                 40: [region("checkouts_per_cart", "BR", T0 + 40 * STEP, up=False)]}, {}, 42)
    assert [i.countries for i in stale.incidents] == [["ALL"], ["BR"]]


def test_a_store_wide_incident_is_joined_by_the_first_country_that_moves() -> None:
    store = region("orders_per_s", "ALL", T0, up=False)
    country = region("checkouts_per_cart", "BR", T0 + STEP, up=False)
    tracker = IncidentTracker()
    play(tracker, {0: [store], 1: [country]}, {}, 3)
    [incident] = tracker.incidents
    assert incident.countries == ["BR"] and incident.kind == "checkout_drop"
    alone = IncidentTracker()
    play(alone, {0: [region("orders_per_s", "ALL", T0, up=False)]}, {}, 2)
    assert alone.incidents[0].countries == ["ALL"] and "the whole store" in alone.incidents[0].story(T0)


def test_it_resolves_after_a_quiet_spell_and_a_later_region_is_a_new_incident() -> None:
    first = region("payment_failure_rate", "DE", T0, up=True)
    again = region("orders_per_s", "DE", T0 + 20 * STEP, up=False)
    quiet = int(RESOLVE_AFTER / STEP)
    later = region("payment_failure_rate", "DE", T0 + (40 + quiet) * STEP, up=True)
    tracker = IncidentTracker()
    changes = play(tracker, {0: [first], 20: [again], 40 + quiet: [later]}, {10: [first], 30: [again]},
                   45 + quiet)
    # closed at step 10, but a region joined within the quiet spell; resolved RESOLVE_AFTER after step 30
    assert [(i, kind) for i, kind, _ in changes] == [(0, "opened"), (20, "updated"), (30 + quiet, "resolved"),
                                                    (40 + quiet, "opened")]
    resolved = tracker.resolved[-1]
    assert resolved.resolved_at == T0 + 30 * STEP and "resolved at 14:05 UTC" in resolved.story(T0)
    assert tracker.incidents[0].incident_id != resolved.incident_id
    assert tracker.incident_of(first) is None  # a resolved incident's regions are let go


def test_the_id_follows_the_first_region_and_revenue_at_risk_adds_up_while_open() -> None:
    def run() -> IncidentTracker:
        tracker = IncidentTracker()
        failures = region("payment_failure_rate", "DE", T0, up=True)
        play(tracker, {0: [failures]}, {6: [failures]}, 30, lost={"DE": 40.0, "FR": 25.0, "ALL": 70.0})
        return tracker

    first, second = run(), run()
    assert first.resolved[-1].incident_id == second.resolved[-1].incident_id
    # open for steps 0..5 (closed at 6): six steps of 10 s at $40/s lost in DE; FR and the store total not its own
    assert first.resolved[-1].revenue_at_risk == 6 * 10 * 40.0
    assert [lost for _, lost in first.resolved[-1].risk_steps] == [400.0] * 6


def test_the_kind_falls_back_to_the_metric_and_its_direction() -> None:
    assert kind_of([region("unknown_metric", "DE", T0, up=False)]) == "unknown_metric_down"
    assert kind_of([region("orders_per_s", "DE", T0, up=False), region("views_per_s", "DE", T0, up=True)]) \
        == "traffic_surge"


def test_ad_spend_running_higher_is_a_campaign_s_story_only_while_its_orders_do_not_follow() -> None:
    """Paid clicks that multiply and buy nothing (a bot flood, a runaway bid) tell the campaign's story, with
    or without the fall in orders per paid click beside it; a campaign whose orders rise with its spend is
    a sales surge, one that brings shoppers a traffic surge; fewer orders per paid click with spend as
    usual is the funnel's drop."""
    spend = region("ad_spend_per_s", "DE", T0, up=True)
    assert kind_of([spend]) == "campaign_spend_without_orders"
    assert kind_of([spend, region("orders_per_ad_click", "DE", T0, up=False),
                    region("orders_per_view", "DE", T0, up=False)]) == "campaign_spend_without_orders"
    assert kind_of([spend, region("orders_per_s", "DE", T0, up=True)]) == "sales_surge"
    # the flood's end: the clicks fall back while the orders of the clicks before still come in
    assert kind_of([spend, region("orders_per_ad_click", "DE", T0, up=True)]) == "campaign_spend_without_orders"
    assert kind_of([region("views_per_s", "US", T0, up=True), spend]) == "traffic_surge"
    funnel = [region("orders_per_ad_click", "DE", T0, up=False), region("carts_without_order", "DE", T0, up=True)]
    assert kind_of(funnel) == "cart_abandonment"


def test_more_refunds_is_a_refund_surge_whatever_else_moved_beside_it() -> None:
    refunds = region("refunds_per_s", "US", T0, up=True)
    assert kind_of([refunds]) == "refund_surge"
    assert kind_of([region("orders_per_s", "US", T0, up=False), refunds]) == "refund_surge"
    assert kind_of([region("payment_failure_rate", "US", T0, up=True), refunds]) == "payment_failures"


def test_a_country_in_an_open_incident_keeps_its_expected_revenue_and_counts_what_it_loses() -> None:
    """DE's payment failures open an incident and its revenue sinks a fifth: too little for a region of
    its own, so without the incident its baseline would learn the dip (as FR's, sinking alike with no
    incident, does) and the revenue at risk measured against it would shrink."""
    rng = random.Random(3)
    sidecar = Sidecar(cast(Client, None), replaying=True)  # replaying: scores without writing

    def step(index: int, failure_rate: dict[str, float], revenue: float) -> None:
        windows = {country: {"revenue_per_s": Point(revenue * rng.uniform(0.97, 1.03), 60, "rate"),
                             "payment_failure_rate": Point(failure_rate[country], 400, "ratio")}
                   for country in ("DE", "FR")}
        sidecar._score(T0 + STEP * index, windows, {})

    quiet = {"DE": 0.05, "FR": 0.05}
    for index in range(400):
        step(index, quiet, 100.0)
    for index in range(400, 460):
        step(index, {"DE": 0.9, "FR": 0.05}, 80.0)
    [incident] = sidecar.incidents.incidents
    assert incident.countries == ["DE"] and incident.is_open
    expected = {c: sidecar.series[("revenue_per_s", c)].last.expected for c in ("DE", "FR")}  # type: ignore[union-attr]
    assert expected["DE"] == pytest.approx(100.0, rel=0.03) and expected["FR"] < 90.0, expected
    open_steps = 460 - (incident.opened_at - T0) // STEP
    assert incident.revenue_at_risk == pytest.approx(open_steps * 10 * 20.0, rel=0.1)


def test_fewer_shoppers_for_good_become_the_usual_but_a_lasting_payment_outage_stays_told() -> None:
    """FR keeps 60 % of its shoppers from step 400 on, every ratio as usual: its incident opens at the onset,
    its rates take the new level after ADOPT_AFTER_STEPS, the incident resolves and nothing opens again in
    the hours after. DE's payments fail for an hour from the same step: its rates drop as far, but while
    its shoppers meet the failure they keep their usual level — one incident for the whole hour, resolved
    once payments recover, and no region for the revenue coming back."""
    rng = random.Random(5)
    sidecar = Sidecar(cast(Client, None), replaying=True)  # replaying: scores without writing
    opened: list[tuple[int, str, str]] = []

    def points(shoppers: float, paid_share: float) -> dict[str, Point]:
        views, checkouts = poisson(rng, 900 * shoppers), poisson(rng, 60 * shoppers)
        orders = sum(rng.random() < paid_share for _ in range(checkouts))
        return {"views_per_s": Point(views / 60, views, "rate"), "orders_per_s": Point(orders / 60, orders, "rate"),
                "revenue_per_s": Point(orders * 50 / 60, orders, "rate"),
                "orders_per_view": Point(orders / max(views, 1), views, "ratio"),
                "payment_failure_rate": Point(1 - orders / max(checkouts, 1), checkouts, "ratio")}

    outage = range(400, 400 + 360)
    for index in range(400 + 6 * 180):
        windows = {"FR": points(1.0 if index < 400 else 0.6, 0.95),
                   "DE": points(1.0, 0.2 if index in outage else 0.95)}
        changes = sidecar._score(T0 + STEP * index, windows, {})
        opened += [(index, c.region.country, c.region.metric) for c in changes if c.kind == "opened"]
    incidents = [*sidecar.incidents.resolved, *sidecar.incidents.incidents]
    fr = [i for i in incidents if i.countries == ["FR"]]
    de = [i for i in incidents if i.countries == ["DE"]]
    assert len(fr) == 1 and len(de) == 1, [(i.kind, i.countries) for i in incidents]
    assert fr[0].kind == "traffic_drop" and de[0].kind == "payment_failures"
    assert all(index < 400 + 12 for index, country, _ in opened if country == "FR"), opened
    assert fr[0].resolved_at is not None and fr[0].resolved_at <= T0 + STEP * (400 + ADOPT_AFTER_STEPS + 30)
    assert sidecar.series[("orders_per_s", "FR")].last.expected == pytest.approx(0.6 * 57 / 60, rel=0.1)  # type: ignore[union-attr]
    assert all(index < 400 + 12 for index, country, _ in opened if country == "DE"), opened
    assert de[0].resolved_at is not None and de[0].resolved_at >= T0 + STEP * outage[-1]


def test_revenue_above_the_expected_while_open_offsets_what_was_lost_and_never_goes_below_zero() -> None:
    def at_risk(lost_per_step: list[float]) -> float:
        tracker = IncidentTracker()
        failures = region("payment_failure_rate", "DE", T0, up=True)
        tracker.step(T0, [failures], {}, 10.0)
        for index, lost in enumerate(lost_per_step, start=1):
            tracker.step(T0 + STEP * index, [], level({"DE": lost}), 10.0)
        [incident] = tracker.incidents
        return incident.revenue_at_risk

    assert at_risk([40.0, -10.0, 40.0, -10.0]) == 10 * 60.0  # not 800: the steps above expected count too
    assert at_risk([-5.0, -5.0]) == 0.0


def test_the_usual_revenue_is_the_seasonal_band_s_middle_else_the_last_half_hour_s_mean() -> None:
    usual = UsualRevenue()
    assert usual.expected(None, 42.0) == 42.0  # nothing learned yet: the detectors' baseline
    for value in [500.0] * 100 + [90.0, 110.0] * 90:  # the first 100 are older than half an hour
        usual.learn_one(value)
    assert usual.expected(None, 42.0) == pytest.approx(100.0)
    assert usual.expected(SeasonalBand(80.0, 160.0), 42.0) == 120.0


def test_a_region_remembers_when_its_series_left_the_usual_range() -> None:
    """The onset is the first step of the run beyond close_z the same way, not the step that opened it;
    a run that turned the other way or fell back starts again."""
    tracker = RegionTracker("orders_per_s", "DE")
    zs = [-2.5, 0.5, 2.5, -3.0, -3.5, -3.8, -5.0, -5.0]
    opened = None
    for index, z in enumerate(zs):
        baseline = Opinion("robust_z", 0.9, True if abs(z) >= 3 else None)
        change = tracker.step(T0 + STEP * index, 10.0 + z, Verdict(z, 0.9, 10.0, True, (baseline,)))
        opened = opened or (change.region if change is not None and change.kind == "opened" else None)
    assert opened is not None and opened.opened_at == T0 + 7 * STEP
    assert opened.onset == T0 + 3 * STEP and opened.peak_z == 5.0


def test_revenue_at_risk_counts_from_the_onset_less_a_window_not_from_when_it_was_detected() -> None:
    """An outage whose failure rate took a minute to show: what DE lost in the steps before the incident
    opened counts from its region's onset less one aggregation window; what it lost before that, and
    what another country lost meanwhile, does not."""
    tracker = IncidentTracker(onset_margin=timedelta(seconds=60))
    failures = region("payment_failure_rate", "DE", T0 + 20 * STEP, up=True)
    failures.onset = T0 + 14 * STEP
    for index in range(20):
        tracker.step(T0 + STEP * index, [], level({"DE": 5.0 if index < 8 else 40.0, "FR": 25.0}), 10.0)
    tracker.step(T0 + 20 * STEP, [failures], level({"DE": 40.0}), 10.0)
    [incident] = tracker.incidents
    # steps 9..19 before it opened (after onset - 60 s = step 8), and step 20 itself
    assert incident.revenue_at_risk == pytest.approx(12 * 10 * 40.0)
    assert [lost for _, lost in incident.risk_steps] == [11 * 400.0, 400.0]  # booked when it opened


def test_a_country_joining_an_incident_brings_what_it_lost_since_its_own_onset() -> None:
    tracker = IncidentTracker(onset_margin=timedelta(seconds=60))
    first = region("payment_failure_rate", "DE", T0 + 20 * STEP, up=True)
    second = region("payment_failure_rate", "AT", T0 + 25 * STEP, up=True)  # one cause: same metric, same way
    second.onset = T0 + 23 * STEP
    for index in range(26):
        opened = {20: [first], 25: [second]}.get(index, [])
        tracker.step(T0 + STEP * index, opened, level({"DE": 0.0, "AT": 10.0}), 10.0)
    [incident] = tracker.incidents
    assert incident.countries == ["AT", "DE"]
    # AT: steps 18..24 (onset 23 less 60 s = step 17, exclusive) booked when it joined, then step 25
    assert incident.revenue_at_risk == pytest.approx(8 * 10 * 10.0)


def test_a_segment_that_is_usually_most_of_the_volume_can_still_stand_out() -> None:
    from shoppulse.sidecar.contributors import stands_out_from
    assert stands_out_from(0.1) == pytest.approx(0.15)  # 1.5 times a small usual share
    assert stands_out_from(0.65) == pytest.approx(0.825)  # a search campaign's: 97 % of a flood's extra clicks is
    assert stands_out_from(0.65) <= 0.97 and stands_out_from(0.65) > 0.8


def blip(metric: str, country: str, at: datetime, delta_pct: float, z: float = 5.0) -> Region:
    found = region(metric, country, at, up=True)
    found.observed = found.expected * (1 + delta_pct / 100)
    found.peak_delta_pct, found.z, found.peak_z = found.delta_pct, z, z
    return found


def test_a_short_modest_blip_is_never_told_and_a_lasting_one_is_told_once_confirmed() -> None:
    """Product views +15 % for a minute, or a thin failure rate tripling on a handful of payments: regions, never an
    incident anyone is told of. +30 % that lasts is told CONFIRM_AFTER after it opened, with the revenue it put at
    risk from its onset; +100 % on overwhelming evidence is told at once."""
    quiet = int(RESOLVE_AFTER / STEP)
    for short in (blip("views_per_s", "ES", T0, 15.0), blip("payment_failure_rate", "GB", T0, 300.0, z=4.5)):
        tracker = IncidentTracker()
        assert play(tracker, {0: [short]}, {6: [short]}, 10 + quiet) == []
        assert tracker.incidents == [] and not tracker.resolved[-1].confirmed

    lasting, joining = blip("views_per_s", "ES", T0, 30.0), blip("orders_per_s", "ES", T0 + 3 * STEP, 20.0)
    tracker = IncidentTracker()
    changes = play(tracker, {0: [lasting], 3: [joining]}, {}, 20, lost={"ES": -2.0})
    assert changes == [(int(CONFIRM_AFTER / STEP), "opened", "traffic_surge")]
    assert tracker.incidents[0].shortfall == 20 * 10 * -2.0  # booked from its first step on, told or not

    tracker = IncidentTracker()
    assert play(tracker, {0: [blip("views_per_s", "ES", T0, 100.0, z=CONFIRM_Z)]}, {}, 2) == [
        (0, "opened", "traffic_surge")]


def test_an_incident_told_late_writes_its_regions_again_with_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A region that closed before its incident was confirmed carries the incident's id once it is told."""
    inserted: dict[str, list[dict[str, object]]] = {}

    class Recorder:
        def insert(self, table: str, rows: list[list[object]], column_names: list[str]) -> None:
            inserted.setdefault(table, []).extend(dict(zip(column_names, row, strict=True)) for row in rows)

    monkeypatch.setattr("shoppulse.sidecar.app.incident_contributors", lambda *args: [])
    sidecar = Sidecar(cast(Client, Recorder()))
    short, lasting = blip("orders_per_s", "ES", T0, 20.0), blip("views_per_s", "ES", T0 + STEP, 30.0)
    incidents = sidecar.incidents
    for found in (short, lasting):
        sidecar._series(found.metric, found.country)  # the insight reads what moved beside them
    for index in range(int(CONFIRM_AFTER / STEP) + 2):
        at = T0 + STEP * index
        if index == 4:
            short.closed_at = at
        told = incidents.step(at, {0: [short], 1: [lasting]}.get(index, []), {}, STEP.total_seconds())
        sidecar._write(at, [], told)
    [incident] = incidents.incidents
    assert [row["incident_id"] for row in inserted["incidents"]] == [incident.incident_id]
    assert {row["anomaly_id"]: row["incident_id"] for row in inserted["anomalies"]} == {
        short.anomaly_id: incident.incident_id, lasting.anomaly_id: incident.incident_id}


def test_the_usual_revenue_per_shopper_of_a_flow_follows_the_traffic_of_the_moment() -> None:
    usual = UsualRevenue()
    for index in range(200):
        checkouts = 2.0 + index / 100  # traffic rising through the half hour
        usual.learn_one(checkouts * 40.0, {"checkouts": checkouts})
    assert usual.expected_from("checkouts", 5.0) == pytest.approx(200.0)  # $40 per checkout started
    assert usual.expected_from("carts", 5.0) is None  # never seen
    lost = usual.shortfall(50.0, None, 0.0, {"checkouts": 5.0, "views": 100.0})
    assert lost.by_flow == {"checkouts": pytest.approx(150.0)}
    assert lost.level == pytest.approx(usual.expected(None, 0.0) - 50.0)
    assert lost.for_kind("payment_failures") == lost.by_flow["checkouts"]
    assert lost.for_kind("conversion_drop") == lost.level  # no views learned: the level
    assert lost.for_kind("traffic_drop") == lost.level


def test_a_payment_outage_on_rising_traffic_puts_at_risk_what_its_checkouts_would_have_paid() -> None:
    """Traffic rises 0.4 % a step (an afternoon's climb); DE's payments fail for five minutes. The revenue at risk
    is what the checkouts started meanwhile would usually have paid less what was paid: within 3 % of it, where a
    level learned over the last half hour lags the climb by about 14 % of what DE would have sold."""
    rng = random.Random(11)
    sidecar = Sidecar(cast(Client, None), replaying=True)
    truth = 0.0

    def step(index: int, paid_share: float) -> float:
        climb = 1 + 0.004 * index
        checkouts = 100 * climb * rng.uniform(0.98, 1.02)
        carts, views = 2 * checkouts, 10 * checkouts
        orders = checkouts * paid_share
        windows = {"DE": {"views_per_s": Point(views / 60, views, "rate"),
                          "checkouts_per_cart": Point(checkouts / carts, carts, "ratio", flow=True),
                          "orders_per_s": Point(orders / 60, orders, "rate"),
                          "revenue_per_s": Point(orders * 50 / 60, orders, "rate"),
                          "payment_failure_rate": Point(1 - paid_share, checkouts, "ratio")}}
        sidecar._score(T0 + STEP * index, windows, {})
        return (checkouts * 0.95 - orders) * 50 / 60 * STEP.total_seconds()  # lost in this step

    for index in range(400):
        step(index, 0.95)
    for index in range(400, 430):
        truth += step(index, 0.2)
    for index in range(430, 470):
        step(index, 0.95)
    [incident] = [*sidecar.incidents.incidents, *sidecar.incidents.resolved]
    assert incident.kind == "payment_failures" and not incident.is_open
    assert incident.revenue_at_risk == pytest.approx(truth, rel=0.03)


def test_one_cause_showing_under_two_names_in_two_countries_is_one_incident() -> None:
    """An abandonment surge in FR and GB: FR's checkouts per cart (or its orders) fall first, GB's carts without an
    order rise: one symptom (shoppers leave between cart and order), one incident; the same move elsewhere after
    JOIN_WITHIN is another cause."""
    fr = region("checkouts_per_cart", "FR", T0, up=False)
    gb = region("carts_without_order", "GB", T0 + 2 * STEP, up=True)
    late = region("checkouts_per_cart", "IT", T0 + JOIN_WITHIN + 3 * STEP, up=False)
    tracker = IncidentTracker()
    play(tracker, {0: [fr], 2: [gb], int((JOIN_WITHIN + 3 * STEP) / STEP): [late]}, {}, 40)
    assert [(i.kind, i.countries) for i in tracker.incidents] == [("cart_abandonment", ["FR", "GB"]),
                                                                 ("checkout_drop", ["IT"])]
    orders_first = IncidentTracker()
    play(orders_first, {0: [region("orders_per_s", "FR", T0, up=False)],
                        2: [region("carts_without_order", "GB", T0 + 2 * STEP, up=True)]}, {}, 4)
    assert [(i.kind, i.countries) for i in orders_first.incidents] == [("cart_abandonment", ["FR", "GB"])]
    apart = IncidentTracker()
    play(apart, {0: [fr], 2: [region("checkouts_per_cart", "GB", T0 + 2 * STEP, up=True),
                              region("payment_failure_rate", "IT", T0 + 2 * STEP, up=True)]}, {}, 4)
    assert len(apart.incidents) == 3  # more checkouts per cart in GB, failing payments in IT: not the same move


def test_a_metric_moving_the_harmless_way_is_never_told_until_a_cause_joins_it() -> None:
    """The store's conversion up as a flash sale settles, long and on strong evidence: a region, no incident told
    (its kind names no cause). A sales drop joining it makes it one, told at once."""
    settling = region("orders_per_view", "ALL", T0, up=True)
    tracker = IncidentTracker()
    assert play(tracker, {0: [settling]}, {}, int(CONFIRM_AFTER / STEP) + 5) == []
    [incident] = tracker.incidents
    assert incident.kind == "orders_per_view_up" and not incident.confirmed
    later = int(CONFIRM_AFTER / STEP) + 5
    tracker.step(T0 + STEP * later, [region("orders_per_s", "BR", T0 + STEP * later, up=False)], {}, 10.0)
    assert incident.kind == "sales_drop" and incident.confirmed


def test_ad_spend_without_orders_puts_at_risk_the_spend_above_its_usual() -> None:
    """A click flood in DE: what it costs is the ad spend above DE's usual, whatever its revenue does meanwhile."""
    usual = UsualRevenue()
    for _ in range(60):
        usual.learn_one(100.0, {})
        usual.learn_spend("ad_spend_per_s", 2.0)
    lost = usual.shortfall(104.0, None, 0.0, {}, {"ad_spend_per_s": 8.0})
    assert lost.for_kind("campaign_spend_without_orders") == pytest.approx(6.0)
    assert lost.for_kind("traffic_surge") == pytest.approx(-4.0)  # a sale's extra revenue offsets its loss
    assert UsualRevenue().shortfall(104.0, None, 0.0, {}, {"ad_spend_per_s": 8.0}).overspend == {}  # not learned

    tracker = IncidentTracker()
    flood = region("ad_spend_per_s", "DE", T0, up=True)
    for index in range(6):
        tracker.step(T0 + STEP * index, [flood] if index == 0 else [], {"DE": lost}, 10.0)
    [incident] = tracker.incidents
    assert incident.kind == "campaign_spend_without_orders" and incident.revenue_at_risk == pytest.approx(6 * 10 * 6.0)
    assert "Ad spend above its usual so far: $360." in incident.story(T0 + 6 * STEP)


def test_the_store_moving_a_step_before_the_country_driving_it_is_one_incident() -> None:
    """A US flash sale: the US's ad spend and the store's product views open at one step, the US's own views a step
    later. The store-wide incident waits to be told, however strong, and the US's views take it in: one incident,
    told once, in the US."""
    spend, store = region("ad_spend_per_s", "US", T0, up=True), region("views_per_s", "ALL", T0, up=True)
    views = region("views_per_s", "US", T0 + STEP, up=True)
    tracker = IncidentTracker()
    changes = play(tracker, {0: [spend, store], 1: [views]}, {}, int(CONFIRM_AFTER / STEP) + 3)
    assert changes == [(0, "opened", "campaign_spend_without_orders"), (1, "updated", "traffic_surge")]
    [incident] = tracker.incidents
    assert incident.countries == ["US"] and {r.country for r in incident.regions} == {"US", "ALL"}
    alone = IncidentTracker()  # no country behind it: told once it has lasted CONFIRM_AFTER
    assert play(alone, {0: [region("views_per_s", "ALL", T0, up=True)]}, {}, int(CONFIRM_AFTER / STEP) + 1) == [
        (int(CONFIRM_AFTER / STEP), "opened", "traffic_surge")]
