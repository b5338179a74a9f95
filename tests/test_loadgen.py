"""The load generator: realistic sessions and seasonality, incidents that move the right metrics,
bad input of every kind, scenario files checked like config, and replay of past days."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout import ROOT
from shoppulse.events.currency import load_rates
from shoppulse.events.schema import EventBase
from shoppulse.events.validate import validate
from shoppulse.loadgen.generator import BadInput, EventStream, revenue_lost, uuid4_text
from shoppulse.loadgen.markets import MARKETS, country_weights, global_factor, seasonal_factor
from shoppulse.loadgen.phenomena import announced_calendar, schedule_phenomena
from shoppulse.loadgen.run import new_stream, run_replay
from shoppulse.loadgen.scenario import ActiveIncident, ScenarioError, load_scenario, schedule, write_ground_truth
from shoppulse.loadgen.shoppers import LOST_ORDER, Effects, effects_for, plan_steps
from shoppulse.sidecar.event_calendar import parse_calendar

NOON_UTC = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def events(stream: EventStream, n: int, when: datetime) -> list[dict]:
    return [json.loads(stream.next(when).value) for _ in range(n)]


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_event_ids_are_the_random_uuids_the_uuid_module_makes_of_the_same_bits(bits: int) -> None:
    assert uuid4_text(bits) == str(uuid.UUID(int=bits, version=4))


def test_every_generated_event_is_valid_and_sessions_walk_the_funnel() -> None:
    stream = EventStream(rate=200, seed=1)
    sample = [stream.next(NOON_UTC + timedelta(seconds=i / 200)) for i in range(20_000)]  # as the senders emit
    assert all(isinstance(validate(e.value, NOON_UTC), EventBase) for e in sample)
    kinds = Counter(json.loads(e.value)["event_type"] for e in sample)
    assert kinds["product_view"] > kinds["add_to_cart"] > kinds["checkout_start"] > kinds["purchase"] > 0
    assert kinds["remove_from_cart"] > 0 and kinds["payment_attempt"] >= kinds["purchase"]
    logged_in = sum("user_id" in json.loads(e.value) for e in sample)
    assert 0.25 < logged_in / len(sample) < 0.55


def test_prices_are_in_each_country_currency() -> None:
    stream = EventStream(rate=200, seed=2)
    for event in events(stream, 5000, NOON_UTC):
        if "currency" in event:
            assert event["currency"] == MARKETS[event["country"]].currency


def test_traffic_follows_each_country_local_time() -> None:
    us_evening = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 20:00 in New York, 10:00 in Tokyo
    us_night = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 04:00 in New York, 18:00 in Tokyo
    assert country_weights(us_evening)["US"] > 2 * country_weights(us_night)["US"]
    assert seasonal_factor(MARKETS["JP"], us_night) > seasonal_factor(MARKETS["JP"], us_evening)
    week = [global_factor(NOON_UTC + timedelta(hours=h)) for h in range(24 * 7)]
    assert 0.9 < sum(week) / len(week) < 1.1
    assert max(week) / min(week) > 1.5


def test_a_stream_stamped_today_plays_the_traffic_of_the_week_time_it_is_shifted_to() -> None:
    """A recording stamped in the last hours (inside every retention) plays a fixed hour of the week."""
    week_time = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # a Tuesday: Europe's lunch, Tokyo's evening
    today = datetime(2027, 3, 4, 2, 30, tzinfo=UTC)  # another weekday, at night in Europe
    played = EventStream(200, seed=4)
    shifted = EventStream(200, seed=4, traffic_shift=week_time - today)
    unshifted = EventStream(200, seed=4)

    def countries(stream: EventStream, start: datetime) -> Counter[str]:
        return Counter(json.loads(stream.next(start + timedelta(seconds=i / 200)).value)["country"]
                       for i in range(4000))

    assert countries(shifted, today) == countries(played, week_time)  # the same shoppers, event for event
    assert countries(unshifted, today) != countries(played, week_time)
    event = json.loads(shifted.next(today + timedelta(seconds=30)).value)
    assert event["event_time"].startswith("2027-03-04T02:30:")  # stamped in its own time


def test_a_recording_is_stamped_in_the_last_hours_whatever_the_day() -> None:
    from shoppulse.devstack.recording import PAST_THE_END, recent_start

    scenario = load_scenario(ROOT / "scenarios" / "all-incidents.yaml")
    now = datetime(2026, 12, 9, 10, 59, 30, tzinfo=UTC)  # Wednesday morning: the last Tuesday 11:00 is 8 days old
    start = recent_start(scenario, timedelta(minutes=12), now)
    last_event = max(i.end for i in schedule(scenario, start)) + timedelta(minutes=12) + PAST_THE_END
    assert now - timedelta(minutes=2) <= last_event <= now and start.second == 0
    assert recent_start(None, timedelta(hours=6), now) == datetime(2026, 12, 9, 4, 56, tzinfo=UTC)


def br_outage(tmp_path: Path, gateway: str = "", devices: str = "") -> tuple[list[ActiveIncident], EventStream]:
    """A payment outage in BR from 60 s to 180 s after noon (of one gateway, on some devices, if named)."""
    scenario_file = tmp_path / "outage.yaml"
    scenario_file.write_text("name: t\nincidents:\n  - {kind: payment_outage, countries: [BR], "
                             f"{f'gateway: {gateway}, ' if gateway else ''}{f'devices: {devices}, ' if devices else ''}"
                             "start_after_s: 60, duration_s: 120}\n")
    incidents = schedule(load_scenario(scenario_file), NOON_UTC)
    return incidents, EventStream(rate=50, incidents=incidents, seed=3)


def br_payment_attempts(stream: EventStream, when: datetime) -> list[dict[str, Any]]:
    return [e for e in events(stream, 40_000, when) if e["event_type"] == "payment_attempt" and e["country"] == "BR"]


def test_a_payment_outage_fails_payments_in_its_country_only_while_it_lasts(tmp_path: Path) -> None:
    incidents, stream = br_outage(tmp_path)

    def br_failure_share(when: datetime) -> float:
        attempts = br_payment_attempts(stream, when)
        return sum(a["result"] == "failure" for a in attempts) / max(len(attempts), 1)

    before = br_failure_share(NOON_UTC + timedelta(seconds=10))
    during = br_failure_share(NOON_UTC + timedelta(seconds=120))
    assert before < 0.2
    assert during > 0.6
    write_ground_truth(tmp_path / "truth.jsonl", incidents)
    truth = json.loads((tmp_path / "truth.jsonl").read_text())
    assert truth["kind"] == "payment_outage" and truth["countries"] == ["BR"]
    assert "payment_failure_rate" in truth["metrics"]
    assert truth["start"] == (NOON_UTC + timedelta(seconds=60)).isoformat()


def test_a_gateway_outage_fails_that_gateway_only_and_names_it_in_the_ground_truth(tmp_path: Path) -> None:
    incidents, stream = br_outage(tmp_path, gateway="pix")
    attempts = br_payment_attempts(stream, NOON_UTC + timedelta(seconds=120))
    share = {gateway: sum(a["result"] == "failure" for a in mine) / len(mine)
             for gateway in ("pix", "adyen") if (mine := [a for a in attempts if a["gateway"] == gateway])}
    assert share["pix"] > 0.6 and share["adyen"] < 0.2, share
    write_ground_truth(tmp_path / "truth.jsonl", incidents)
    assert json.loads((tmp_path / "truth.jsonl").read_text())["gateway"] == "pix"


def test_an_outage_on_some_devices_fails_their_shoppers_payments_only(tmp_path: Path) -> None:
    incidents, stream = br_outage(tmp_path, devices="[app, tablet]")
    attempts = br_payment_attempts(stream, NOON_UTC + timedelta(seconds=120))
    share = {device: sum(a["result"] == "failure" for a in mine) / len(mine)
             for device in ("app", "tablet", "mobile", "desktop")
             if (mine := [a for a in attempts if a["device"] == device])}
    assert share["app"] > 0.6 and share["tablet"] > 0.6, share
    assert share["mobile"] < 0.2 and share["desktop"] < 0.2, share
    write_ground_truth(tmp_path / "truth.jsonl", incidents)
    assert json.loads((tmp_path / "truth.jsonl").read_text())["devices"] == ["app", "tablet"]


@given(st.integers(min_value=0, max_value=2**32))
def test_an_order_is_booked_lost_exactly_when_the_same_shopper_would_have_paid_without_the_outage(seed: int) -> None:
    """The counterfactual with the same random draws: the visit planned at the usual failure rate pays
    exactly when the outage's visit is booked as a lost order (or paid anyway), for the same amount."""
    market = MARKETS["BR"]
    outage = effects_for([("payment_outage", 1.0, None)])
    during = plan_steps(random.Random(seed), market, outage, 1)
    usual = plan_steps(random.Random(seed), market, Effects(), 1)
    lost = [step[LOST_ORDER] for step in during if LOST_ORDER in step]
    paid = [step["amount"] for step in during if step["event_type"] == "purchase"]
    paid_usually = [step["amount"] for step in usual if step["event_type"] == "purchase"]
    assert len(lost) <= 1 and not (lost and paid)
    assert paid_usually == (lost or paid)


def test_the_stream_books_what_a_payment_outage_cost_in_its_country_and_window(tmp_path: Path) -> None:
    incidents, stream = br_outage(tmp_path, gateway="pix")
    emitted = [e for second in range(30, 360) for e in events(stream, 60, NOON_UTC + timedelta(seconds=second))]
    assert stream.lost_orders and {o.country for o in stream.lost_orders} == {"BR"}
    paid = {e["order_id"] for e in emitted if e["event_type"] == "purchase"}
    failed = {e["order_id"]: e for e in emitted if e["event_type"] == "payment_attempt" and e["result"] == "failure"}
    assert all(o.order_id in failed and o.order_id not in paid for o in stream.lost_orders)
    assert {failed[o.order_id]["gateway"] for o in stream.lost_orders} == {"pix"}  # adyen kept working
    usd = {o.order_id: float(load_rates().to_reporting(Decimal(failed[o.order_id]["amount"]), "BRL"))
           for o in stream.lost_orders}
    assert revenue_lost(stream.lost_orders, incidents[0], timedelta(minutes=3)) == pytest.approx(sum(usd.values()))
    assert revenue_lost(stream.lost_orders, incidents[0], timedelta(0)) <= sum(usd.values())


@pytest.mark.parametrize(("line", "says"), [
    ("{kind: payment_outage, countries: [BR], gateway: klarna, start_after_s: 1, duration_s: 1}",
     "BR pays through pix, adyen, not klarna"),
    ("{kind: flash_sale, countries: [BR], gateway: pix, start_after_s: 1, duration_s: 1}",
     "gateway is for payment_outage and checkout_latency incidents, not flash_sale"),
    ("{kind: flash_sale, countries: [US], devices: [app], start_after_s: 1, duration_s: 1}",
     "a flash sale brings shoppers on every device"),
    ("{kind: abandonment_surge, countries: [US], devices: [fridge], start_after_s: 1, duration_s: 1}",
     "devices"),
    ("{kind: ad_click_flood, countries: [US], devices: [app], start_after_s: 1, duration_s: 1}",
     "an ad click flood comes from every device"),
    ("{kind: flash_sale, countries: [US], campaign: search, start_after_s: 1, duration_s: 1}",
     "campaign is for ad_click_flood incidents, not flash_sale"),
    ("{kind: ad_click_flood, countries: [US], campaign: tv, start_after_s: 1, duration_s: 1}", "campaign"),
    ("{kind: chargeback_wave, countries: [US], devices: [app], start_after_s: 1, duration_s: 1}",
     "a chargeback wave comes from every device"),
])
def test_a_gateway_the_country_does_not_use_or_an_incident_without_payments_is_refused(
        tmp_path: Path, line: str, says: str) -> None:
    scenario_file = tmp_path / "bad.yaml"
    scenario_file.write_text(f"name: t\nincidents:\n  - {line}\n")
    with pytest.raises(ScenarioError, match=says):
        load_scenario(scenario_file)


def traffic(stream: EventStream, rate: float, start: datetime, seconds: int, skip_s: int) -> Counter[str]:
    """Events per country, emitted as the senders do (rate times the stream's load each second)."""
    counted: Counter[str] = Counter()
    for offset in range(seconds):
        now = start + timedelta(seconds=offset)
        for _ in range(int(rate * stream.load(now))):
            event = json.loads(stream.next(now).value)
            if offset >= skip_s:
                counted[event["country"]] += 1
    return counted


def test_a_flash_sale_adds_its_country_traffic_and_leaves_the_others_alone(tmp_path: Path) -> None:
    scenario_file = tmp_path / "sale.yaml"
    scenario_file.write_text("name: t\nincidents:\n  - {kind: flash_sale, countries: [NL], "
                             "start_after_s: 0, duration_s: 900}\n")
    quiet = traffic(EventStream(rate=60, seed=4), 60, NOON_UTC, 600, skip_s=180)
    sale_stream = EventStream(rate=60, incidents=schedule(load_scenario(scenario_file), NOON_UTC), seed=4)
    assert sale_stream.load(NOON_UTC) > 1.05
    sale = traffic(sale_stream, 60, NOON_UTC, 600, skip_s=180)  # once the first sessions have turned over
    assert sale["NL"] > 2.5 * quiet["NL"]
    others, others_quiet = sum(sale.values()) - sale["NL"], sum(quiet.values()) - quiet["NL"]
    assert abs(others / others_quiet - 1) < 0.05, (others, others_quiet)
    assert EventStream(rate=60, seed=4).load(NOON_UTC) == pytest.approx(1.0, abs=0.01)


def test_an_ad_click_flood_multiplies_its_campaign_s_billed_clicks_and_brings_no_visit(tmp_path: Path) -> None:
    """A quarter of the visits start with a paid click of the country's campaigns, and their orders carry the
    campaign; a flood adds about four clicks per usual click of its campaign that nothing follows (no view,
    no order), on top of every country's usual traffic; the ground truth names the campaign."""
    scenario_file = tmp_path / "flood.yaml"
    scenario_file.write_text("name: t\nincidents:\n  - {kind: ad_click_flood, countries: [DE], campaign: search, "
                             "start_after_s: 0, duration_s: 900}\n")

    def counted(stream: EventStream) -> tuple[Counter[tuple[str, str, str | None]], Counter[str]]:
        kinds: Counter[tuple[str, str, str | None]] = Counter()
        sessions: Counter[str] = Counter()
        for offset in range(600):
            now = NOON_UTC + timedelta(seconds=offset)
            for _ in range(int(60 * stream.load(now))):
                event = json.loads(stream.next(now).value)
                if offset >= 180:
                    kinds[(event["country"], event["event_type"], event.get("campaign_id"))] += 1
                    sessions[event["session_id"]] += 1
        return kinds, sessions

    quiet, _ = counted(EventStream(rate=60, seed=4))
    incidents = schedule(load_scenario(scenario_file), NOON_UTC)
    flood, sessions = counted(EventStream(rate=60, incidents=incidents, seed=4))
    clicks = {k: n for k, n in quiet.items() if k[1] == "ad_click"}
    assert set(clicks) == {(c, "ad_click", f"{c.lower()}-{channel}") for c in MARKETS for channel in
                           ("search", "social")}
    ads = sum(clicks.values())
    assert 0.15 < ads / (sum(n for k, n in quiet.items() if k[1] == "product_view") / 3.5) < 0.35  # ~1 visit in 4
    assert sum(n for k, n in quiet.items() if k[1] == "purchase" and k[2] is not None) > 0
    flooded = ("DE", "ad_click", "de-search")
    assert 3.5 < flood[flooded] / quiet[flooded] < 6.5
    assert abs(flood[("DE", "ad_click", "de-social")] / quiet[("DE", "ad_click", "de-social")] - 1) < 0.35
    views = lambda counts: sum(n for k, n in counts.items() if k[1] == "product_view")  # noqa: E731
    assert abs(views(flood) / views(quiet) - 1) < 0.05  # the flood brings no visits: every country's stay as they were
    orders = lambda counts: sum(n for k, n in counts.items() if k[:3] == ("DE", "purchase", "de-search"))  # noqa: E731
    assert orders(flood) < 1.5 * orders(quiet) + 5
    assert sum(1 for n in sessions.values() if n == 1) > flood[flooded] - 2 * quiet[flooded]  # lone clicks
    assert incidents[0].ground_truth()["campaigns"] == ["de-search"]


def test_a_chargeback_wave_adds_unauthorized_refunds_in_its_country_only(tmp_path: Path) -> None:
    """The back office refunds earlier orders at about one per hundred usual visits, most for damaged or unwanted
    goods; a wave adds about ten chargebacks ("unauthorized") per usual refund of its country, on top of its
    traffic, and leaves the other countries' refunds as they were."""
    scenario_file = tmp_path / "wave.yaml"
    scenario_file.write_text("name: t\nincidents:\n  - {kind: chargeback_wave, countries: [US], start_after_s: 0, "
                             "duration_s: 900}\n")

    def refunds(stream: EventStream) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for offset in range(600):
            now = NOON_UTC + timedelta(seconds=offset)
            for _ in range(int(150 * stream.load(now))):
                event = json.loads(stream.next(now).value)
                if event["event_type"] == "refund":
                    assert isinstance(validate(json.dumps(event).encode(), now), EventBase), event
                    found[(event["country"], event["reason"])] += 1
        return found

    seeds = (5, 6, 7)
    quiet = sum((refunds(EventStream(rate=150, seed=seed)) for seed in seeds), Counter())
    wave = sum((refunds(EventStream(rate=150, incidents=schedule(load_scenario(scenario_file), NOON_UTC), seed=seed))
                for seed in seeds), Counter())
    usual_us = sum(n for (country, _), n in quiet.items() if country == "US")
    assert usual_us > 60 and quiet[("US", "unauthorized")] < 0.2 * usual_us
    assert 5 * usual_us < wave[("US", "unauthorized")] < 20 * usual_us
    others = lambda counts: sum(n for (country, _), n in counts.items() if country != "US")  # noqa: E731
    assert abs(others(wave) / others(quiet) - 1) < 0.2  # ~450 refunds: counting varies their ratio by ~7 %


def test_when_a_flash_sale_ends_its_lingering_shoppers_take_no_events_from_other_countries(tmp_path: Path) -> None:
    scenario_file = tmp_path / "sale.yaml"
    scenario_file.write_text("name: t\nincidents:\n  - {kind: flash_sale, countries: [US], magnitude: 2, "
                             "start_after_s: 0, duration_s: 300}\n")
    sale_stream = EventStream(rate=100, incidents=schedule(load_scenario(scenario_file), NOON_UTC), seed=4)
    sale = traffic(sale_stream, 100, NOON_UTC, 400, skip_s=300)  # the 100 s after it
    quiet = traffic(EventStream(rate=100, seed=4), 100, NOON_UTC, 400, skip_s=300)
    others, others_quiet = sum(sale.values()) - sale["US"], sum(quiet.values()) - quiet["US"]
    assert abs(others / others_quiet - 1) < 0.05, (others, others_quiet)


def phenomenon_stream(tmp_path: Path, line: str, rate: float = 60, seed: int = 4) -> EventStream:
    """The stream of a scenario of one phenomenon (written as a user writes one), started at noon."""
    scenario_file = tmp_path / "phenomenon.yaml"
    scenario_file.write_text(f"name: t\nphenomena:\n  - {line}\n")
    scenario = load_scenario(scenario_file)
    return EventStream(rate, seed=seed, phenomena=schedule_phenomena(scenario.phenomena, NOON_UTC))


@pytest.mark.parametrize(("line", "country", "share"), [
    ("{kind: level_shift, countries: [FR], start_after_s: 0, level: 0.6}", "FR", 0.6),
    ("{kind: holiday, countries: [JP], start_after_s: 0, duration_s: 7200, level: 0.5}", "JP", None),
    ("{kind: drift, countries: [GB], start_after_s: 0, duration_s: 300, level: 0.75}", "GB", 0.75),
    ("{kind: campaign, countries: [IT], start_after_s: 0, duration_s: 3600, level: 1.6}", "IT", 1.6),
])
def test_a_traffic_phenomenon_scales_its_countries_shoppers_and_leaves_the_others_alone(
        tmp_path: Path, line: str, country: str, share: float | None) -> None:
    quiet = traffic(EventStream(rate=60, seed=4), 60, NOON_UTC, 600, skip_s=300)
    stream = phenomenon_stream(tmp_path, line)
    moved = traffic(stream, 60, NOON_UTC, 600, skip_s=300)  # once the sessions of before have turned over
    ratio = moved[country] / quiet[country]
    if share is None:  # a holiday eases in over the first half hour: 5 to 10 minutes in, about 0.88 of the usual
        assert 0.75 < ratio < 0.97, ratio
        later = phenomenon_stream(tmp_path, line)
        assert traffic(later, 60, NOON_UTC + timedelta(hours=1), 600, skip_s=300)[country] < 0.7 * quiet[country]
    else:
        assert abs(ratio - share) < 0.12, ratio
    others, others_quiet = sum(moved.values()) - moved[country], sum(quiet.values()) - quiet[country]
    assert abs(others / others_quiet - 1) < 0.05, (others, others_quiet)
    assert (stream.load(NOON_UTC + timedelta(minutes=9)) - 1) * ((share or 0.5) - 1) > 0  # moved its way


def test_bursts_vary_the_arrivals_around_the_usual_rate_and_only_in_their_countries(tmp_path: Path) -> None:
    scenario_file = tmp_path / "bursts.yaml"
    scenario_file.write_text("name: t\nphenomena:\n  - {kind: bursts, start_after_s: 0, duration_s: 1200, "
                             "spread: 0.5}\n")
    bursts = schedule_phenomena(load_scenario(scenario_file).phenomena, NOON_UTC)[0]
    arrivals = [bursts.traffic(NOON_UTC + timedelta(seconds=s)) for s in range(1200)]
    mean = sum(arrivals) / len(arrivals)
    spread = (sum((x - mean) ** 2 for x in arrivals) / len(arrivals)) ** 0.5 / mean
    assert 0.8 < mean < 1.2 and 0.3 < spread < 0.7, (mean, spread)
    neighbours = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(arrivals)) / sum(
        (x - mean) ** 2 for x in arrivals)
    assert neighbours > 0.9  # a burst of arrivals lasts tens of seconds
    assert bursts.traffic(NOON_UTC + timedelta(seconds=1200)) == 1.0

    def per_ten_seconds(stream: EventStream) -> list[Counter[str]]:
        counted: list[Counter[str]] = [Counter() for _ in range(90)]
        for offset in range(900):
            now = NOON_UTC + timedelta(seconds=offset)
            for _ in range(int(100 * stream.load(now))):
                counted[offset // 10][json.loads(stream.next(now).value)["country"]] += 1
        return counted[12:]  # once the first shoppers have left

    def variance(values: list[int]) -> float:
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / len(values)

    calm = per_ten_seconds(EventStream(rate=100, seed=4))
    bursting = per_ten_seconds(phenomenon_stream(tmp_path, "{kind: bursts, countries: [US], start_after_s: 0, "
                                                           "duration_s: 900, spread: 0.8}", rate=100))
    us, us_calm = [c["US"] for c in bursting], [c["US"] for c in calm]
    assert variance(us) > 2 * variance(us_calm)
    assert abs(sum(us) / sum(us_calm) - 1) < 0.2
    others = [sum(c.values()) - c["US"] for c in bursting]
    others_calm = [sum(c.values()) - c["US"] for c in calm]
    assert abs(sum(others) / sum(others_calm) - 1) < 0.05  # the US's bursts are the US's alone


def test_the_seconds_the_feed_loses_carry_no_event_and_the_others_all_of_theirs(tmp_path: Path) -> None:
    stream = phenomenon_stream(tmp_path, "{kind: missing_seconds, start_after_s: 60, duration_s: 600, share: 0.1}",
                               rate=40)
    sent: Counter[int] = Counter()

    class Collecting:
        def produce(self, topic: str, value: bytes, key: bytes | None, timestamp: int) -> None:
            sent[timestamp // 1000 - int(NOON_UTC.timestamp())] += 1

        def poll(self, timeout: float) -> None:
            pass

        def flush(self) -> None:
            pass

    run_replay(Collecting(), stream, 40, NOON_UTC, NOON_UTC + timedelta(seconds=720))  # type: ignore[arg-type]
    lost = [second for second in range(720) if sent[second] == 0]
    assert lost and all(60 <= second < 660 for second in lost)
    assert 0.05 < len(lost) / 600 < 0.15
    again = phenomenon_stream(tmp_path, "{kind: missing_seconds, start_after_s: 60, duration_s: 600, share: 0.1}")
    assert [s for s in range(720) if again.load(NOON_UTC + timedelta(seconds=s)) == 0] == lost  # seeded: every run


def test_outliers_are_bulk_orders_in_their_countries_at_the_times_the_ground_truth_tells(tmp_path: Path) -> None:
    line = "{kind: outliers, countries: [DE, JP], start_after_s: 60, duration_s: 600, count: 4, size: 50}"
    truth = tmp_path / "truth.jsonl"
    scenario_file = tmp_path / "outliers.yaml"
    scenario_file.write_text(f"name: t\nphenomena:\n  - {line}\n")
    stream = new_stream(60, load_scenario(scenario_file), NOON_UTC, truth, BadInput(), seed=4)
    [told] = [json.loads(text) for text in truth.read_text().splitlines()]
    assert (told["phenomenon"], told["alerting"], told["count"], told["size"]) == ("outliers", "never", 4, 50)
    planned = [(datetime.fromisoformat(o["at"]), o["country"]) for o in told["outliers"]]
    assert len(planned) == 4 and all(c in ("DE", "JP") for _, c in planned)
    assert all(NOON_UTC + timedelta(seconds=60 + 150 * i) <= at < NOON_UTC + timedelta(seconds=60 + 150 * (i + 1))
               for i, (at, _) in enumerate(planned))  # one in each quarter of its ten minutes
    bulk: list[tuple[datetime, str, dict[str, object]]] = []
    usual_largest = 0
    for offset in range(60 + 600 + 900):  # its ten minutes, and a quarter of an hour for the last visit to end
        now = NOON_UTC + timedelta(seconds=offset)
        for _ in range(int(60 * stream.load(now))):
            event = json.loads(stream.next(now).value)
            if event["event_type"] == "purchase":
                quantity = max(item["quantity"] for item in event["items"])
                if quantity == 50:
                    bulk.append((now, event["country"], event))
                else:
                    usual_largest = max(usual_largest, sum(item["quantity"] for item in event["items"]))
    assert sorted(c for _, c, _ in bulk) == sorted(c for _, c in planned)  # each paid for, where planned
    for (paid_at, country, event), (began, planned_country) in zip(sorted(bulk), sorted(planned), strict=True):
        assert country == planned_country and began <= paid_at < began + timedelta(minutes=15)
        assert float(event["amount"]) == pytest.approx(50 * float(event["items"][0]["unit_price"]), rel=1e-6)
    assert usual_largest < 50
    # the bulk buyers come on top of the usual shoppers, whose arrivals it leaves alone (no burst, no level)
    [outliers] = schedule_phenomena(load_scenario(scenario_file).phenomena, NOON_UTC)
    assert {outliers.traffic(NOON_UTC + timedelta(seconds=s)) for s in range(0, 700, 3)} == {1.0}


def test_the_ground_truth_tells_each_phenomenon_and_whether_an_alert_is_wanted(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "real-world.yaml")
    truth = tmp_path / "truth.jsonl"
    new_stream(100, scenario, NOON_UTC, truth, BadInput(), seed=1)
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    told = {(line.get("phenomenon") or line["kind"]): line for line in lines}
    assert told["level_shift"]["alerting"] == "wanted at onset" and told["level_shift"]["end"] is None
    assert told["bursts"]["alerting"] == "never" and told["holiday"]["alerting"] == "tolerated at onset"
    assert told["missing_seconds"]["countries"] == "ALL" and told["payment_outage"]["countries"] == ["DE"]
    assert scenario.length == timedelta(seconds=600 + 10800)  # the drift ends last


def test_a_campaign_lands_within_minutes_and_an_announced_one_is_in_the_sidecars_calendar(tmp_path: Path) -> None:
    scenario_file = tmp_path / "campaigns.yaml"
    scenario_file.write_text("name: t\nphenomena:\n"
                             "  - {kind: campaign, countries: [GB], start_after_s: 600, duration_s: 3600, level: 1.5,"
                             " announced: true}\n"
                             "  - {kind: campaign, countries: [FR], start_after_s: 0, duration_s: 3600}\n"
                             "  - {kind: holiday, countries: [JP, IN], start_after_s: 0, duration_s: 7200, "
                             "announced: true, announced_level: 0.3}\n")
    announced, unannounced, holiday = schedule_phenomena(load_scenario(scenario_file).phenomena, NOON_UTC)
    start = NOON_UTC + timedelta(minutes=10)
    assert announced.traffic(start + timedelta(minutes=5)) == pytest.approx(1.5)  # the e-mail has landed
    assert announced.traffic(start + timedelta(minutes=2, seconds=30)) == pytest.approx(1.25)
    assert announced.traffic(start + timedelta(minutes=65)) == 1.0 == announced.traffic(start - timedelta(seconds=1))
    assert unannounced.traffic(NOON_UTC + timedelta(minutes=30)) == pytest.approx(1.5)  # its default level
    assert announced.phenomenon.alerting == "never" and unannounced.phenomenon.alerting == "tolerated at onset"
    assert unannounced.onsets() == [NOON_UTC, NOON_UTC + timedelta(hours=1)] and announced.onsets() == []
    calendar = announced_calendar([announced, unannounced, holiday])
    assert [(e.name, e.kind, e.countries, e.start, e.end, e.level) for e in calendar.events] == [
        ("campaign in GB", "campaign", ["GB"], start, start + timedelta(hours=1), None),
        ("holiday in JP, IN", "holiday", ["JP", "IN"], NOON_UTC, NOON_UTC + timedelta(hours=2), 0.3)]
    assert parse_calendar(calendar.as_yaml(), "written") == calendar  # the file the sidecar under test reads
    assert (holiday.ground_truth()["announced"], holiday.ground_truth()["announced_level"]) == (True, 0.3)


def test_shipped_scenarios_load() -> None:
    for path in (ROOT / "scenarios").glob("*.yaml"):
        assert load_scenario(path).incidents, path


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nincidents:\n  - {kind: meteor, countries: [US], start_after_s: 0, duration_s: 1}", "incidents.0.kind"),
    ("name: x\nincidents:\n  - {kind: flash_sale, countries: [XX], start_after_s: 0, duration_s: 1}", "countries"),
    ("name: x\nincidents:\n  - {kind: flash_sale, countries: [US], start_after_s: 0, duration_s: -5}", "duration_s"),
    ("name: [unclosed", "not valid YAML"),
    # a phenomenon with fields of another kind
    ("name: x\nphenomena:\n  - {kind: bursts, start_after_s: 0, duration_s: 60, level: 2}",
     "level is for drift, level_shift, holiday and campaign"),
    ("name: x\nphenomena:\n  - {kind: drift, start_after_s: 0, duration_s: 60, announced: true}",
     "only a holiday or a campaign can be announced, not a drift"),
    ("name: x\nphenomena:\n  - {kind: campaign, start_after_s: 0, duration_s: 60, announced_level: 3}",
     "announced_level is the calendar's level of an announced holiday or campaign: add announced: true"),
    ("name: x\nphenomena:\n  - {kind: holiday, start_after_s: 0, duration_s: 3000000, announced: true}",
     "an announced holiday lasts at most 31 days"),
    ("name: x\nphenomena:\n  - {kind: campaign, start_after_s: 0, duration_s: 60, level: 20}", "level"),
    ("name: x\nphenomena:\n  - {kind: level_shift, countries: [FR], start_after_s: 0, duration_s: 60}",
     "lasts for good"),
    ("name: x\nphenomena:\n  - {kind: holiday, countries: [JP], start_after_s: 0}", "needs a duration_s"),
    ("name: x\nphenomena:\n  - {kind: missing_seconds, countries: [US], start_after_s: 0, duration_s: 60}",
     "whole store"),
    ("name: x\nphenomena:\n  - {kind: drift, start_after_s: 0, duration_s: 60, share: 0.1}",
     "share is for missing_seconds"),
    ("name: x\nphenomena:\n  - {kind: tsunami, start_after_s: 0, duration_s: 60}", "phenomena.0.kind"),
    ("name: x\nphenomena:\n  - {kind: bursts, start_after_s: 0, duration_s: 60, size: 40}", "size is for outliers"),
    ("name: x\nphenomena:\n  - {kind: outliers, start_after_s: 0, duration_s: 60, size: 5000}", "size"),
    ("name: x\nphenomena:\n  - {kind: outliers, start_after_s: 0}", "needs a duration_s"),
    ("name: x\nphenomena:\n  - {kind: holiday, countries: [JP], start_after_s: 0, duration_s: 60, level: 0}",
     "level"),
])
def test_bad_scenario_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


@given(st.floats(min_value=0, max_value=0.4), st.floats(min_value=0, max_value=0.4), st.integers(0, 2**32))
def test_the_tally_accounts_for_every_emission(invalid: float, duplicates: float, seed: int) -> None:
    stream = EventStream(rate=20, bad=BadInput(invalid=invalid, duplicates=duplicates), seed=seed)
    kinds = Counter(stream.next(NOON_UTC).kind for _ in range(300))
    assert kinds["valid"] == stream.tally.valid
    assert kinds["invalid"] == stream.tally.invalid_total
    assert kinds["duplicate"] == stream.tally.duplicates
    assert sum(kinds.values()) == 300


def test_late_and_out_of_order_events_are_stamped_in_the_past() -> None:
    stream = EventStream(rate=20, bad=BadInput(late=0.1, out_of_order=0.2), seed=5)
    lags = [(NOON_UTC - datetime.fromisoformat(e["event_time"])).total_seconds() for e in events(stream, 3000,
                                                                                                   NOON_UTC)]
    assert sum(1 for lag in lags if lag >= 120) == stream.tally.late > 0
    assert sum(1 for lag in lags if 0 < lag < 120) == stream.tally.out_of_order > 0


def test_cli_refuses_bad_flags_with_one_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shoppulse", "loadgen", *args], capture_output=True, text=True,
                              timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "x:1"})

    assert run("--rate", "5").returncode == 2
    result = run("--scenario", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read scenario" in result.stderr
    result = run("--invalid-ratio", "0.7", "--duplicate-ratio", "0.7")
    assert result.returncode == 2 and "add up to 1" in result.stderr


@pytest.mark.integration
def test_a_replayed_history_follows_the_week_and_a_live_stream_holds_its_rate() -> None:
    busy, quiet = NOON_UTC + timedelta(hours=6), NOON_UTC + timedelta(hours=16)  # 18:00 and 04:00 UTC

    def sent(stream: EventStream, start: datetime) -> int:
        return sum(traffic(stream, 40, start, 600, skip_s=0).values())

    for week_time in (busy, quiet):
        seasonal = EventStream(40, seed=2, seasonal=True)
        sent(seasonal, week_time - timedelta(minutes=10))  # settled at that time of the week
        assert sent(seasonal, week_time) == pytest.approx(40 * 600 * global_factor(week_time), rel=0.08)
        held = EventStream(40, seed=2)
        assert sent(held, week_time) == pytest.approx(40 * 600, rel=0.05)
    assert global_factor(busy) > 1.5 * global_factor(quiet)


def test_a_replay_longer_than_the_topics_keep_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "shoppulse", "loadgen", "--replay", "14.5"], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert result.returncode == 2
    assert "the raw and clean topics keep 15 days" in result.stderr and "replay at most 14 days" in result.stderr


def test_replay_backfills_past_days_through_the_broker(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer

    from shoppulse.topics import create_topics

    create_topics(kafka_bootstrap, 3)
    started = datetime.now(UTC)
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = subprocess.run([sys.executable, "-m", "shoppulse", "loadgen", "--replay", "0.02", "--rate", "10",
                             "--seed", "9"], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stderr
    sent = int(result.stdout.split("replayed ")[1].split(" ")[0].replace(",", ""))
    assert 0.02 * 86400 * 10 * 0.3 < sent < 0.02 * 86400 * 10 * 3
    consumer = KafkaConsumer("shop.events.raw", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             group_id="replay-check", consumer_timeout_ms=5000)
    times = [datetime.fromisoformat(json.loads(m.value)["event_time"]) for m in consumer
             if m.value.startswith(b"{") and m.timestamp < started.timestamp() * 1000 - 60_000]
    consumer.close()
    assert len(times) >= sent * 0.9
    assert started - min(times) > timedelta(days=0.019)
    assert all(t < started for t in times)
