"""The sidecar over real ClickHouse data: finds the demo's outage, writes anomalies and insights, and
mirrors them into Grafana (a server enforcing the annotations API contract) exactly once."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from conftest import EndpointProcess, last_tuesday_1500
from shoppulse.ascode.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.devstack.grafana_standin import grafana_standin
from shoppulse.grafana_api import GrafanaClient
from shoppulse.sidecar.annotations import PARK_BACKOFF_S, AnnotationSync, missing_permissions, sync
from shoppulse.sidecar.app import ANOMALY_COLUMNS, INCIDENT_COLUMNS, Sidecar
from shoppulse.sidecar.signals import read_windows, watermark

pytestmark = pytest.mark.integration
TOKEN = "glsa_sidecar_token"


NOW = last_tuesday_1500()
PLAN = DemoPlan(now=NOW, seconds_history=timedelta(hours=2, minutes=10), minutes_history=timedelta(hours=3))


@pytest.fixture(scope="module")
def demo(clickhouse_endpoint: EndpointProcess) -> Iterator[Client]:
    """A database with the schema and the demo data: three quiet hours around a DE payment outage."""
    _settings, client = clickhouse_endpoint.migrated("sidecar")
    load_demo_data(client, PLAN)
    for table in ("anomalies", "insights", "incidents"):  # the demo's sidecar outputs: the real sidecar writes these
        client.command(f"TRUNCATE TABLE {table}")
    yield client
    client.close()


def run_sidecar(client: Client, until: datetime | None = None) -> Sidecar:
    """Score every step from two hours back until ``until``, writing as it goes; without ``until``,
    start as a restarted sidecar does (replay without writing, then take over open regions)."""
    sidecar = Sidecar(client)
    if until is None:
        sidecar.start(timedelta(hours=2))
    else:
        sidecar.last_step = NOW - timedelta(hours=2) - timedelta(seconds=NOW.timestamp() % 10)
        advance(sidecar, until)
    return sidecar


def advance(sidecar: Sidecar, until: datetime) -> None:
    """Score the steps after the sidecar's last one until ``until``, writing as it goes — no further than
    the final data reaches (the freshness watermark), as the running sidecar does."""
    final = watermark(sidecar.client)
    sidecar.score_until(min(until, final) if final is not None else until)


def anomalies(client: Client) -> list[tuple]:
    return client.query("SELECT metric, country, opened_at, closed_at, anomaly_id FROM anomalies FINAL "
                        "ORDER BY opened_at, metric, country").result_rows


def test_the_outage_is_found_within_a_minute_with_no_false_alert(demo: Client) -> None:
    run_sidecar(demo, until=NOW)
    incident = PLAN.incident
    found = anomalies(demo)
    assert found, "no anomaly found"
    for metric, country, opened_at, closed, _ in found:
        opened = opened_at.replace(tzinfo=UTC)
        assert incident.start <= opened <= incident.end, (metric, country, opened)  # nothing outside it
        assert country in ("DE", "ALL")
        assert closed is not None, (metric, country)  # every region ends
        if country == "DE":  # DE's own signals stay anomalous as long as the outage (the store total may not)
            assert closed.replace(tzinfo=UTC) >= incident.end, (metric, country, closed)
    first = {(m, c): o.replace(tzinfo=UTC) for m, c, o, *_ in found}
    assert first[("payment_failure_rate", "DE")] <= incident.start + timedelta(seconds=60)
    assert first[("orders_per_s", "DE")] <= incident.start + timedelta(seconds=60)
    # One insight for the outage: its incident's, led by its first region, naming the others and the gateway.
    insights = demo.query("SELECT text, payload, incident_id FROM insights FINAL").result_rows
    incidents = demo.query("SELECT incident_id, anomaly_ids FROM incidents FINAL").result_rows
    assert len(insights) == 1 and len(incidents) == 1, (insights, incidents)
    text, payload, incident_id = insights[0]
    assert incident_id == incidents[0][0]
    data = json.loads(payload)
    assert data["incident"] == "payment_failures" and data["country"] in ("DE", "ALL")
    assert {"metric", "country", "observed", "baseline", "delta_pct", "window", "correlated_signals"} <= set(data)
    grouped = {(r["metric"], r["country"]) for r in data["incident_regions"]} | {(data["metric"], data["country"])}
    assert {("payment_failure_rate", "DE"), ("orders_per_s", "DE")} <= grouped
    assert len(data["incident_regions"]) + 1 == len(incidents[0][1])  # every region of the incident, once
    assert " One incident with: " in text and " Top contributor: gateway " in text, text
    if data["metric"] == "payment_failure_rate" and data["country"] == "DE":
        assert "Payment failure rate in DE rose to" in text and "a problem local to DE" in text
        assert data["scope"] == "local" and data["baseline"] < 0.1 < data["observed"]


def lost_revenue_truth(client: Client) -> float:
    """What the demo's outage cost DE: every payment attempt would have paid (3 % fail normally) at the
    demo's mean order value of 65, against the revenue that came in."""
    incident = PLAN.incident
    attempts, revenue = client.query(
        "SELECT sum(payment_attempts), sum(revenue) FROM metrics_1s WHERE country = 'DE' "
        "AND ts >= {start:DateTime} AND ts < {end:DateTime}",
        parameters={"start": incident.start.replace(tzinfo=None), "end": incident.end.replace(tzinfo=None)},
    ).result_rows[0]
    return float(attempts) * 0.97 * 65 - float(revenue)


def incidents(client: Client) -> list[tuple]:
    return client.query("SELECT incident_id, kind, countries, anomaly_ids, opened_at, resolved_at, revenue_at_risk, "
                        "story FROM incidents FINAL ORDER BY opened_at").result_rows


def test_the_outage_is_one_incident_with_its_revenue_at_risk_and_keeps_its_id_across_a_restart(demo: Client) -> None:
    """Every region of the DE outage (DE's and the store's) is one incident: payment failures in DE,
    with the revenue the failed payments cost, resolved once they are over. A sidecar that dies in the
    middle and replays keeps the incident's id and adds to its stored revenue at risk."""
    _fresh(demo)
    outage = PLAN.incident
    run_sidecar(demo, until=NOW)
    [(incident_id, kind, countries, members, opened_at, resolved_at, at_risk, story)] = incidents(demo)
    assert (kind, countries) == ("payment_failures", ["DE"])
    regions = anomalies(demo)
    assert sorted(map(str, members)) == sorted(str(r[4]) for r in regions)
    assert {str(i) for (i,) in demo.query("SELECT incident_id FROM anomalies FINAL").result_rows} == {str(incident_id)}
    assert outage.start <= opened_at.replace(tzinfo=UTC) <= outage.start + timedelta(seconds=60)
    assert resolved_at is not None and resolved_at.replace(tzinfo=UTC) >= outage.end
    truth = lost_revenue_truth(demo)
    assert abs(at_risk - truth) <= 0.1 * truth, (at_risk, truth)
    assert story.startswith(f"Payment failures in DE since {opened_at:%H:%M} UTC (resolved at") and "$" in story
    assert "Top contributor: gateway " in story and "of the extra failures (failure rate" in story
    [(dimensions, values, shares, described)] = demo.query(
        "SELECT contributor_dimensions, contributor_values, contributor_shares, contributors FROM incidents FINAL"
    ).result_rows
    assert dimensions[0] == "gateway" and described[0].startswith(f"gateway {values[0]}: ")  # as data, for actions
    assert f"{100 * shares[0]:.0f} % of the extra failures" in described[0]

    _fresh(demo)  # again, dying five minutes into the outage and restarting after it is over
    run_sidecar(demo, until=outage.start + timedelta(minutes=5))
    [(first_id, _, _, _, _, unresolved, partial, _)] = incidents(demo)
    assert first_id == incident_id and unresolved is None and 0 < partial < 0.5 * at_risk
    run_sidecar(demo)
    [(again_id, _, _, members_after, _, resolved_after, at_risk_after, _)] = incidents(demo)
    assert again_id == incident_id and resolved_after == resolved_at
    assert sorted(map(str, members_after)) == sorted(map(str, members))
    assert abs(at_risk_after - at_risk) <= 0.01 * at_risk, (at_risk_after, at_risk)


def test_a_stored_region_the_replay_never_saw_open_stays_a_member_of_its_incident(demo: Client) -> None:
    """The sidecar dies five minutes into the outage; one region of its open incident (FR's product
    views, as the dead sidecar left it) is on a series that the restarted sidecar's replay finds calm
    throughout. The restart closes that region and keeps it among the incident's members, beside the
    regions the replay rebuilt, under the incident's stored id."""
    _fresh(demo)
    outage = PLAN.incident
    run_sidecar(demo, until=outage.start + timedelta(minutes=5))
    [stored] = demo.query(f"SELECT {', '.join(INCIDENT_COLUMNS)} FROM incidents FINAL").result_rows
    incident = dict(zip(INCIDENT_COLUMNS, stored, strict=True))
    stray = uuid.uuid4()
    written = datetime.now(UTC)
    demo.insert("anomalies", [[stray, "views_per_s", "FR", incident["opened_at"], None, "low", 130.0, 100.0, 90.0,
                               110.0, 0.5, ["robust_z"], written, written, incident["incident_id"], "final"]],
                column_names=ANOMALY_COLUMNS)
    demo.insert("incidents", [[*(incident[c] for c in INCIDENT_COLUMNS[:4]), [*incident["anomaly_ids"], stray],
                               *(written if c == "updated_at" else incident[c] for c in INCIDENT_COLUMNS[5:])]],
                column_names=INCIDENT_COLUMNS)

    run_sidecar(demo)
    [(incident_id, kind, countries, members, _, resolved_at, _, _)] = incidents(demo)
    assert incident_id == incident["incident_id"] and (kind, countries) == ("payment_failures", ["DE", "FR"])
    assert resolved_at is not None
    assert stray in members and {str(a) for a in incident["anomaly_ids"]} <= {str(a) for a in members}
    [(closed_at, member_of)] = demo.query(
        "SELECT closed_at, incident_id FROM anomalies FINAL WHERE anomaly_id = {id:UUID}",
        parameters={"id": stray}).result_rows
    assert closed_at is not None and member_of == incident_id


def test_the_gateways_behind_a_payments_incident_are_ranked(demo: Client) -> None:
    """In a market of three gateways, one fails (or slows down) from some moment on: it comes first,
    with its share of the extra failures (or slow payments) and its rate during and before."""
    from shoppulse.events.histogram import bucket
    from shoppulse.sidecar.contributors import payment_contributors

    start = NOW + timedelta(days=1)  # far from the hours the other tests score
    rows = []
    for second in range(-3600, 600, 5):
        when = start + timedelta(seconds=second)
        for gateway in ("adyen", "klarna", "paypal"):
            failing = gateway == "klarna" and second >= 0
            slow = gateway == "paypal" and second >= 0
            latency = bucket(2400 if slow else 300)
            rows.append([when, "XQ", gateway, 10, 9 if failing else (1 if second % 50 == 0 else 0), [latency], [10],
                         0, 0])
    demo.insert("payment_latency_1s", rows, column_names=["ts", "country", "gateway", "attempts", "failures",
                                                          "bucket_keys", "bucket_counts", "src_partition",
                                                          "src_offset"])
    end = start + timedelta(minutes=10)
    failures = payment_contributors(demo, "payment_failures", ["XQ"], start, end)
    assert [c.value for c in failures] == ["klarna"] and failures[0].share == 1.0
    assert failures[0].during == 0.9 and failures[0].before == pytest.approx(0.01)
    assert failures[0].describe("payment_failures") == ("gateway klarna: 100 % of the extra failures "
                                                        "(failure rate 90 % against 1 %)")
    slow = payment_contributors(demo, "checkout_latency", ["XQ"], start, end)
    assert slow[0].value == "paypal" and slow[0].share == 1.0 and slow[0].during > 5 * slow[0].before
    assert payment_contributors(demo, "sales_drop", ["XQ"], start, end) == []  # no dimension kept for it yet
    store_wide = payment_contributors(demo, "payment_failures", ["ALL"], start, end)
    assert store_wide[0].value == "klarna"


def test_a_reason_every_gateway_fails_for_leads_and_one_failing_gateway_leads_its_reasons(demo: Client) -> None:
    """Failures are ranked by reason too: when every gateway of a market times out alike, the reason
    explains the incident and no gateway does; when one gateway fails, it comes before its reasons."""
    from shoppulse.events.histogram import bucket
    from shoppulse.sidecar.contributors import payment_contributors

    def row(when: datetime, country: str, gateway: str, failed: dict[str, int]) -> list[object]:
        reasons = sorted((reason, n) for reason, n in failed.items() if n)
        return [when, country, gateway, 10, sum(failed.values()), [bucket(300)], [10], [r for r, _ in reasons],
                [n for _, n in reasons], 0, 0]

    start = NOW + timedelta(days=2)  # far from the hours the other tests score
    rows = []
    for second in range(-3600, 600, 5):
        when = start + timedelta(seconds=second)
        usual = 1 if second % 50 == 0 else 0  # 1 % declined, before and during
        during = second >= 0
        for gateway in ("adyen", "klarna", "paypal"):
            rows.append(row(when, "XR", gateway, {"declined": usual, "gateway_timeout": 6 * during}))
            down = gateway == "adyen" and during
            rows.append(row(when, "XS", gateway, {"declined": usual, "gateway_error": 9 * down}))
    demo.insert("payment_latency_1s", rows, column_names=["ts", "country", "gateway", "attempts", "failures",
                                                          "bucket_keys", "bucket_counts", "failure_reasons",
                                                          "reason_counts", "src_partition", "src_offset"])
    end = start + timedelta(minutes=10)
    everywhere = payment_contributors(demo, "payment_failures", ["XR"], start, end)
    assert (everywhere[0].dimension, everywhere[0].value) == ("failure reason", "gateway_timeout")
    assert everywhere[0].share == pytest.approx(1.0)
    assert everywhere[0].describe("payment_failures") == ("failure reason gateway_timeout: 100 % of the extra "
                                                          "failures (60 % of payments against 0 %)")
    assert sorted((c.value, round(c.share, 2)) for c in everywhere[1:]) == [
        ("adyen", 0.33), ("klarna", 0.33), ("paypal", 0.33)]
    one = payment_contributors(demo, "payment_failures", ["XS"], start, end)
    assert [(c.dimension, c.value) for c in one] == [("gateway", "adyen"), ("failure reason", "gateway_error")]
    assert [c.share for c in one] == pytest.approx([1.0, 1.0])


def test_the_device_or_category_behind_an_incident_is_named_only_when_it_stands_out(demo: Client) -> None:
    """Segments (devices, product categories) are compared with their own rate in the hour before: a
    checkout broken on mobile names mobile; the same drop on every device names none; a flash sale of
    one category names that category and no device."""
    from shoppulse.sidecar.contributors import incident_contributors, segment_contributors

    devices = {"mobile": 12, "desktop": 6, "app": 4, "tablet": 2}  # cart adds per 5 s
    categories = ("shoes", "apparel", "electronics", "home")
    start = NOW + timedelta(days=3)  # far from the hours the other tests score
    rows = []
    for second in range(-3600, 600, 5):
        when, during = start + timedelta(seconds=second), second >= 0
        for device, carts in devices.items():
            views = 4 * carts * (3 if during else 1)
            broken = during and device == "mobile"
            rows.append([when, "XT", "device", device, views, carts, carts, carts, 0,
                         0 if broken else carts // 2, Decimal(0)])  # mobile's orders stop
            rows.append([when, "XU", "device", device, views, carts, carts, carts, 0,
                         0 if during else carts // 2, Decimal(0)])  # every device's orders stop
        for category in categories:
            rows.append([when, "XT", "category", category, 20 * (12 if during and category == "electronics" else 1),
                         0, 0, 0, 0, 0, Decimal(0)])
    demo.insert("segment_metrics_1s", rows, column_names=["ts", "country", "dimension", "segment", "product_views",
                                                          "cart_adds", "checkouts", "payment_attempts",
                                                          "payment_failures", "orders", "revenue"])
    end = start + timedelta(minutes=10)
    [mobile] = segment_contributors(demo, "cart_abandonment", ["XT"], start, end)
    assert (mobile.dimension, mobile.value, mobile.share) == ("device", "mobile", 1.0)
    assert mobile.usual_share == pytest.approx(0.5) and mobile.during == 0.0 and mobile.before == 0.5
    assert mobile.describe("cart_abandonment") == ("device mobile: 100 % of the missing orders from carts "
                                                   "(50 % of the cart adds before)")
    assert segment_contributors(demo, "cart_abandonment", ["XU"], start, end) == []  # every device alike
    [electronics] = incident_contributors(demo, "traffic_surge", ["XT"], start, end)
    assert (electronics.dimension, electronics.value) == ("category", "electronics")
    assert electronics.describe("traffic_surge").startswith("category electronics: ")
    assert electronics.usual_share == pytest.approx(0.25) and electronics.share > 0.8
    assert segment_contributors(demo, "checkout_latency", ["XT"], start, end) == []  # no measure for it


def test_generated_shoppers_on_one_device_name_it_and_a_surge_on_every_device_names_none(
        demo: Client, tmp_path) -> None:
    """The load generator's shoppers, cleaned and aggregated as the processors do, into
    ``segment_metrics_1s``: an abandonment surge among app users in US names the app; the same surge on
    every device in GB names no device — the thresholds hold against the counting noise of real traffic."""
    from shoppulse.aggregate.app import segment_rows
    from shoppulse.events.clean import to_clean
    from shoppulse.events.currency import load_rates
    from shoppulse.events.pii import PiiHasher
    from shoppulse.events.store_metrics import SEGMENT_COLUMNS, StoreMetrics
    from shoppulse.events.validate import validate
    from shoppulse.loadgen.generator import EventStream
    from shoppulse.loadgen.scenario import load_scenario, schedule
    from shoppulse.sidecar.contributors import segment_contributors

    start = NOW + timedelta(days=4)  # far from the hours the other tests score
    before_s = 1800
    scenario = tmp_path / "surges.yaml"
    scenario.write_text(
        "name: t\nincidents:\n"
        f"  - {{kind: abandonment_surge, countries: [US], devices: [app], start_after_s: {before_s}, "
        "duration_s: 300}\n"
        f"  - {{kind: abandonment_surge, countries: [GB], start_after_s: {before_s}, duration_s: 300}}\n")
    begin = start - timedelta(seconds=before_s)
    stream = EventStream(rate=100, incidents=schedule(load_scenario(scenario), begin), seed=11)
    hasher, rates, aggregator = PiiHasher(b"k" * 32), load_rates(), StoreMetrics()
    windows: dict[tuple[str, int], dict] = {}
    for second in range(before_s + 300):
        now = begin + timedelta(seconds=second)
        for _ in range(100):
            event = validate(stream.next(now).value, now)
            clean = to_clean(event, hasher, rates)  # type: ignore[arg-type]
            key = (clean["country"], clean["event_time_ms"] // 1000 * 1000)
            windows[key] = aggregator.agg(windows.get(key) or aggregator.initialize(), clean, clean["event_time_ms"])
    rows = [row for (country, ms), metrics in windows.items()
            for row in segment_rows({"start": ms, "country": country, "metrics": metrics})]
    demo.insert("segment_metrics_1s", rows, column_names=SEGMENT_COLUMNS)
    end = start + timedelta(seconds=300)
    us = segment_contributors(demo, "cart_abandonment", ["US"], start, end)
    assert [(c.dimension, c.value) for c in us] == [("device", "app")], [c.describe("cart_abandonment") for c in us]
    assert us[0].usual_share < 0.2 and us[0].share > 0.5
    gb = segment_contributors(demo, "cart_abandonment", ["GB"], start, end)
    assert gb == [], [c.describe("cart_abandonment") for c in gb]


def test_steps_read_in_one_batch_are_the_steps_read_one_by_one(demo: Client) -> None:
    """A restart's replay reads an hour of steps in two queries; each step's points must be those of
    that step's own window, at the slice boundaries too (the latency histograms merged the same way)."""
    first = PLAN.incident.start - timedelta(minutes=3, seconds=PLAN.incident.start.timestamp() % 10)
    ends = [first + timedelta(seconds=10 * i) for i in range(40)]
    batched = read_windows(demo, ends, 60, 10)
    assert list(batched) == ends
    for end in ends:
        alone = read_windows(demo, [end], 60, 10)[end]
        assert batched[end] == alone, end
    assert any(p["payment_failure_rate"].value > 0.2 for p in (batched[e]["DE"] for e in ends))  # the outage
    assert "payment_latency_p95" in batched[ends[0]]["ALL"]
    with pytest.raises(ValueError, match="whole number of steps"):
        read_windows(demo, ends, 45, 10)


def test_annotations_exactly_once_through_an_outage_a_crash_and_a_restart(demo: Client) -> None:
    _fresh(demo)
    incident = PLAN.incident
    with grafana_standin(TOKEN) as (url, grafana_state):
        grafana_state.provision(json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text()))
        grafana = GrafanaClient(url, TOKEN)
        # The sidecar runs into the middle of the outage while Grafana is down: nothing is lost.
        grafana_state.down = True
        run_sidecar(demo, until=incident.start + timedelta(minutes=5))
        waiting = sync(demo, grafana)
        assert waiting > 0 and grafana_state.annotations == {}
        # Grafana is back: one open annotation per anomaly and per incident (end = start), with the documented
        # fields and tags: the incident across the wall dashboard, its regions organisation-wide (a tag filter)
        grafana_state.down = False
        assert sync(demo, grafana) == 0
        drawn = {a["id"]: a for a in grafana_state.annotations.values()}
        regions = [a for a in drawn.values() if "anomaly" in a["tags"]]
        [told] = [a for a in drawn.values() if "incident" in a["tags"]]
        assert len(drawn) == len(regions) + 1 and told["timeEnd"] == told["time"]
        ends = {str(r[4]): r[3] for r in anomalies(demo)}  # a region that already closed is drawn with its end
        for region in regions:
            end = ends[next(t.split(":", 1)[1] for t in region["tags"] if t.startswith("anomaly_id:"))]
            expected_end = region["time"] if end is None else int(end.replace(tzinfo=UTC).timestamp() * 1000)
            assert region["timeEnd"] == expected_end
        assert told["dashboardUID"] == "shoppulse-store-live" and told["panelId"] == 0
        assert {"kind:payment_failures", "country:DE"} <= set(told["tags"])
        assert told["text"].startswith("Payment failures in DE since")
        incident_tag = next(t for t in told["tags"] if t.startswith("incident_id:"))
        assert all(a["dashboardUID"] == "" and incident_tag in a["tags"] for a in regions)
        assert all(any(t.startswith("severity:") for t in a["tags"]) for a in drawn.values())
        # A crash after Grafana saved an annotation but before we recorded it: the record is lost.
        demo.command("TRUNCATE TABLE grafana_annotations")
        # The restarted sidecar replays the history, finds the same regions and incident, and sees them end.
        run_sidecar(demo)
        assert sync(demo, grafana) == 0
        assert sync(demo, grafana) == 0  # nothing left to do the second time
        assert set(grafana_state.annotations) == set(drawn), "an annotation was duplicated"
        closed = {str(r[4]): r[3] for r in anomalies(demo)}
        for annotation in grafana_state.annotations.values():
            if annotation["id"] == told["id"]:
                continue
            anomaly_id = next(t.split(":", 1)[1] for t in annotation["tags"] if t.startswith("anomaly_id:"))
            end = closed[anomaly_id].replace(tzinfo=UTC)
            assert annotation["timeEnd"] == int(end.timestamp() * 1000) > annotation["time"]
        [(_, _, _, _, _, resolved_at, _, story)] = incidents(demo)
        ended = grafana_state.annotations[told["id"]]
        assert ended["timeEnd"] == int(resolved_at.replace(tzinfo=UTC).timestamp() * 1000) > ended["time"]
        assert ended["text"] == story and "resolved at" in story
        posts = [r for r in grafana_state.requests if r[0] == "POST" and r[1] == "/api/annotations"]
        assert len(posts) == len(drawn)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _posts(state: object) -> int:
    return len([r for r in state.requests if r[0] == "POST" and r[1] == "/api/annotations"])  # type: ignore[attr-defined]


def _fresh(demo: Client) -> None:
    for table in ("anomalies", "insights", "incidents", "grafana_annotations"):
        demo.command(f"TRUNCATE TABLE {table}")


# The token's grants: an Editor's wildcard (Grafana answers a PATCH of a missing annotation 404), or grants scoped
# to annotation types, as a least-privilege custom role gives them (Grafana cannot resolve a missing annotation's
# type, and answers 403).
GRANTS = {"wildcard": ["annotations:*"], "typed": ["annotations:type:dashboard", "annotations:type:organization"]}


@pytest.mark.parametrize("grant", sorted(GRANTS))
def test_a_region_deleted_in_grafana_is_drawn_again_once_and_a_refused_one_blocks_no_other(demo: Client,
                                                                                          grant: str) -> None:
    _fresh(demo)
    incident = PLAN.incident
    with grafana_standin(TOKEN) as (url, state):
        state.permissions.update({action: GRANTS[grant] for action in ("annotations:write", "annotations:delete")})
        state.provision(json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text()))
        clock = Clock()
        syncer = AnnotationSync(demo, GrafanaClient(url, TOKEN), clock)
        sidecar = run_sidecar(demo, until=incident.start + timedelta(minutes=5))
        assert syncer.run_pass() == 0
        regions = sorted((a for a in state.annotations.values() if "anomaly" in a["tags"]), key=lambda a: a["time"])
        assert len(regions) >= 3
        created = _posts(state)
        known = {r[4] for r in anomalies(demo)}
        deleted, refused = regions[0], regions[1]
        state.delete_annotation(deleted["id"])  # someone removes the region in Grafana
        state.fail("PATCH", f"/api/annotations/{refused['id']}", 403, "You'll need additional permissions to "
                   "perform this action. Permissions needed: annotations:write", times=10_000)
        advance(sidecar, NOW)  # every region closes
        assert syncer.run_pass() == 1  # only the refused one waits; every other region is closed
        assert syncer.run_pass() == 1  # parked: not retried at once, and nothing else repeats
        opened_since = len({r[4] for r in anomalies(demo)} - known)  # regions of the outage's later minutes
        assert _posts(state) == created + 1 + opened_since  # the deleted region, drawn again exactly once
        tags = lambda a: next((t for t in a["tags"] if t.startswith("anomaly_id:")), None)  # noqa: E731
        redrawn = [a for a in state.annotations.values() if tags(a) == tags(deleted)]
        assert len(redrawn) == 1 and redrawn[0]["timeEnd"] > redrawn[0]["time"]
        others = [a for a in state.annotations.values() if a["id"] != refused["id"]]
        assert all(a["timeEnd"] > a["time"] for a in others)
        assert state.annotations[refused["id"]]["timeEnd"] == refused["time"]  # still open in Grafana
        # Grafana lets it through again: after its back-off the parked one closes too.
        state.failures.clear()
        clock.now += PARK_BACKOFF_S[1]
        assert syncer.run_pass() == 0
        assert state.annotations[refused["id"]]["timeEnd"] > refused["time"]
        assert _posts(state) == created + 1 + opened_since


def test_without_the_dashboard_in_grafana_regions_go_organisation_wide_once_across_restarts(demo: Client) -> None:
    """The wall dashboard is not in this Grafana (or the token may not read it): Grafana answers a
    lookup by that dashboard with 400, and would store a region naming it organisation-wide anyway."""
    _fresh(demo)
    with grafana_standin(TOKEN) as (url, state):
        grafana = GrafanaClient(url, TOKEN)
        with pytest.raises(Exception, match="400 Invalid dashboard UID in annotation request"):
            grafana.find_annotations(["anomaly"], "shoppulse-store-live")
        run_sidecar(demo, until=NOW)
        assert sync(demo, grafana) == 0
        regions = list(state.annotations.values())
        assert regions and all(a["dashboardUID"] == "" and a["dashboardId"] == 0 for a in regions)
        # a crash lost our records; the restarted syncer finds each region by its tag, wherever it is
        demo.command("TRUNCATE TABLE grafana_annotations")
        assert sync(demo, grafana) == 0
        assert len(state.annotations) == len(regions) == _posts(state)


def test_the_tokens_missing_permissions_are_named(demo: Client) -> None:
    with grafana_standin(TOKEN) as (url, state):
        grafana = GrafanaClient(url, TOKEN)
        assert missing_permissions(grafana) == []
        del state.permissions["annotations:create"], state.permissions["dashboards:read"]
        assert missing_permissions(grafana) == ["annotations:create", "dashboards:read"]


def test_seasonal_bands_are_written_only_for_series_with_enough_history(demo: Client) -> None:
    from shoppulse.sidecar.seasonal import refit
    from shoppulse.sidecar.signals import read_seasonal_bands, seasonal_bucket

    start = (NOW - timedelta(days=3)).replace(second=0)
    history = [[start + timedelta(minutes=m), "SE", 40, 10, 0, 5, 4, 0,
                round(3 + 2 * math.sin(2 * math.pi * m / 1440)), 3, Decimal(120)] for m in range(3 * 1440 - 200)]
    demo.insert("metrics_1m", history, column_names=["ts", "country", "product_views", "cart_adds", "cart_removes",
                                                     "checkouts", "payment_attempts", "payment_failures", "orders",
                                                     "items", "revenue"])
    fitted_at = NOW + timedelta(minutes=1)
    assert refit(demo, fitted_at) >= 2  # SE's orders/s and revenue/s at least
    rows = demo.query("SELECT country, metric, kind, count(), min(ts), max(ts), max(upper - lower) FROM expected_band "
                      "WHERE fitted_at = {at:DateTime} GROUP BY country, metric, kind ORDER BY country, metric, kind",
                      parameters={"at": fitted_at.replace(tzinfo=None)}).result_rows
    by_key = {(c, m, k): (n, first, last, width) for c, m, k, n, first, last, width in rows}
    assert ("SE", "orders_per_s", "seasonal") in by_key and ("SE", "orders_per_s", "forecast") in by_key
    assert not any(country == "DE" for country, *_ in rows)  # three hours of history: no season seen
    n, _, last, _ = by_key[("SE", "orders_per_s", "forecast")]
    assert n == 3 and last.replace(tzinfo=UTC) > NOW
    # What the sidecar's combination rule reads at a step: the band of the bucket holding it.
    at = fitted_at + timedelta(minutes=5)
    bands = read_seasonal_bands(demo, at)[seasonal_bucket(at)]
    assert bands[("orders_per_s", "SE")].lower < bands[("orders_per_s", "SE")].upper
    assert ("payment_failure_rate", "SE") not in bands  # the seasonal baseline covers orders and revenue only
