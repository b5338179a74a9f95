"""Which countries drive a store-wide move (drivers.py), and the store-wide region joining their incident."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

from clickhouse_connect.driver.client import Client
from hypothesis import given
from hypothesis import strategies as st

from shoppulse.sidecar.app import Sidecar
from shoppulse.sidecar.detectors import Point
from shoppulse.sidecar.drivers import Usual, drive
from shoppulse.sidecar.regions import Region

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)


def conversion(orders: float, views: float) -> Point:
    return Point(orders / views, views, "ratio")


def test_a_mix_shift_is_driven_by_the_country_whose_traffic_surged() -> None:
    """US browsers triple and buy at their usual 2 %; DE and FR at their usual 5 %: the store's conversion
    falls from 3 % to 2.2 % with no country's own conversion moving."""
    usual = {"US": Usual(0.02, 1000), "DE": Usual(0.05, 1000), "FR": Usual(0.05, 1000)}
    now = {"US": conversion(60, 3000), "DE": conversion(50, 1000), "FR": conversion(50, 1000)}
    store = conversion(160, 5000)
    assert drive(store, 0.04, now, usual, ["US"])
    assert not drive(store, 0.04, now, usual, ["DE"])  # put back at its usual, DE changes nothing
    assert not drive(store, 0.04, now, {"DE": usual["DE"]}, ["US"])  # no usual known for the US yet


def test_a_move_in_the_rest_of_the_store_is_not_the_suspects() -> None:
    usual = {"US": Usual(0.02, 1000), "DE": Usual(0.05, 1000), "FR": Usual(0.05, 1000)}
    now = {"US": conversion(20, 1000), "DE": conversion(20, 1000), "FR": conversion(20, 1000)}  # DE and FR fell
    assert not drive(conversion(60, 3000), 0.04, now, usual, ["US"])
    assert drive(conversion(60, 3000), 0.04, now, usual, ["DE", "FR"])


def test_rates_add_up_and_quantiles_are_never_attributed() -> None:
    usual = {"US": Usual(10.0, 600), "DE": Usual(5.0, 300)}
    now = {"US": Point(30.0, 1800, "rate"), "DE": Point(5.2, 312, "rate")}
    assert drive(Point(35.2, 2112, "rate"), 15.0, now, usual, ["US"])
    assert not drive(Point(35.2, 2112, "rate"), 15.0, now, usual, ["DE"])
    p95 = {"US": Point(900.0, 100, "quantile"), "DE": Point(300.0, 100, "quantile")}
    assert not drive(Point(850.0, 200, "quantile"), 300.0, p95, {"US": Usual(300.0, 100)}, ["US"])


@given(st.lists(st.tuples(st.floats(0.01, 0.3), st.integers(50, 5000)), min_size=2, max_size=6),
       st.floats(0.2, 5.0), st.floats(0.5, 3.0), st.integers(0, 5))
def test_a_country_that_moved_alone_always_drives_the_store(countries: list[tuple[float, int]], value_factor: float,
                                                           traffic_factor: float, which: int) -> None:
    """Whatever the mix: every other country at exactly its usual, one country's conversion and traffic
    moved (and with them the store's): that country drives the store's move, and no other country does."""
    usual = {f"C{i}": Usual(rate, views) for i, (rate, views) in enumerate(countries)}
    mover = f"C{which % len(countries)}"
    now = {c: Point(min(1.0, u.value * value_factor), u.count * traffic_factor, "ratio") if c == mover
           else Point(u.value, u.count, "ratio") for c, u in usual.items()}
    trials = sum(p.count for p in now.values())
    store = Point(sum(p.value * p.count for p in now.values()) / trials, trials, "ratio")
    store_expected = sum(u.value * u.count for u in usual.values()) / sum(u.count for u in usual.values())
    if abs(store.value / store_expected - 1) < 1e-9:
        return  # the mover's move left the store where it was
    assert drive(store, store_expected, now, usual, [mover])
    for other in set(usual) - {mover}:
        assert not drive(store, store_expected, now, usual, [other])


USUAL_VIEWS = {"US": 1000.0, "DE": 1000.0, "FR": 1000.0}
CONVERSION = {"US": 0.01, "DE": 0.08, "FR": 0.08}


def sale_step(sidecar: Sidecar, rng: random.Random, index: int, surge: float) -> None:
    """One step of the store: US product views ``surge`` times their usual, every country at its usual conversion."""
    windows: dict[str, dict[str, Point]] = {}
    totals = [0.0, 0.0]
    for country, views_usual in USUAL_VIEWS.items():
        views = round(views_usual * (surge if country == "US" else 1.0) * rng.uniform(0.98, 1.02))
        orders = round(views * CONVERSION[country] * rng.uniform(0.98, 1.02))
        windows[country] = {"views_per_s": Point(views / 60, views, "rate"),
                            "orders_per_view": Point(orders / views, views, "ratio")}
        totals[0] += orders
        totals[1] += views
    windows["ALL"] = {"views_per_s": Point(totals[1] / 60, totals[1], "rate"),
                      "orders_per_view": Point(totals[0] / totals[1], totals[1], "ratio")}
    sidecar._score(T0 + STEP * index, windows, {})


def during_a_sale(rng: random.Random) -> Sidecar:
    """A sidecar after 300 usual steps and 40 of a US flash sale (views four times their usual)."""
    sidecar = Sidecar(cast(Client, None), replaying=True)
    for index in range(300):
        sale_step(sidecar, rng, index, 1.0)
    for index in range(300, 340):
        sale_step(sidecar, rng, index, 4.0)
    return sidecar


def test_the_store_wide_mix_shift_of_a_flash_sale_joins_the_sale_s_incident() -> None:
    """Through the sidecar: US product views quadruple at its usual 1 % conversion (its traffic surge opens
    an incident); the store's conversion falls by the mix alone (from 5.7 % to 3.3 %) and its region
    joins the US incident instead of opening a store-wide one."""
    rng = random.Random(5)
    sidecar = during_a_sale(rng)
    store_conversion = sidecar.series[("orders_per_view", "ALL")].tracker.region
    assert store_conversion is not None, "the store's conversion should have opened a region"
    assert store_conversion.driven_by == ["US"]
    [incident] = sidecar.incidents.incidents
    assert incident.countries == ["US"] and incident.kind == "traffic_surge"
    assert any(r is store_conversion for r in incident.regions)


def test_a_store_wide_move_as_the_sale_ends_joins_its_incident_after_its_regions_closed() -> None:
    """Once the sale is over its regions close, and its incident waits RESOLVE_AFTER before it resolves. A store-wide
    move the US still drives meanwhile (the US's share of the views falls below its usual while the sale's late
    orders still come in) is the sale's aftermath: it joins the sale's incident instead of opening a store-wide one
    no one can place (a real recording told three of them beside the flash sale)."""
    rng = random.Random(5)
    sidecar = during_a_sale(rng)
    [incident] = sidecar.incidents.incidents
    index = 340
    while incident.is_open:
        sale_step(sidecar, rng, index, 1.0)
        index += 1
        assert index < 400, "the sale's regions should close once its traffic is back"
    assert sidecar.incidents.incidents == [incident]  # closed, not yet resolved
    # the store's conversion up by the mix: US browsers at 30 % of their usual, each country at its usual conversion
    now = {"US": conversion(3, 300), "DE": conversion(80, 1000), "FR": conversion(80, 1000)}
    store = conversion(163, 2300)
    expected = sidecar.series[("orders_per_view", "ALL")].last
    assert expected is not None
    region = Region(uuid.uuid4(), "orders_per_view", "ALL", T0 + STEP * index, store.value, expected.expected,
                    0.0, 1.0, 0.9, 5.0)
    region.driven_by = sidecar._drivers(region, {c: {"orders_per_view": p} for c, p in [*now.items(), ("ALL", store)]})
    assert region.driven_by == ["US"]
    sidecar.incidents.step(region.opened_at, [region], {}, 10.0)
    assert sidecar.incidents.incidents == [incident] and incident.regions[-1] is region
    assert incident.is_open  # the aftermath keeps it from resolving while it lasts
