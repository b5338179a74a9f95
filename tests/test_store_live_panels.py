"""Store live's KPI, payments and incident panels on the demo data, run as Grafana's ClickHouse plugin
expands them. One reading of each KPI: "Payments by gateway" gives each gateway's failure rate and
latency percentiles exactly as the sidecar reads the same histograms (``events.histogram.quantile``),
so a story that names a gateway's p99 agrees with the table beside it; the alert rules, the tiles
and the sidecar compute a KPI with one definition (the KPI functions of the ClickHouse schema). The
incident and insight rows link to their own time and country."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from shoppulse.ascode.alerting.files import alerting_paths, load
from shoppulse.ascode.dashboards.lint import demo_database
from shoppulse.events.histogram import quantile
from shoppulse.grafana.interpolate import QueryContext, clickhouse_query
from shoppulse.settings import load_settings
from shoppulse.sidecar.signals import read_windows

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)
COUNTRIES = ["DE", "FR", "JP"]


@pytest.fixture(scope="module")
def demo() -> Iterator[Client]:
    with demo_database(load_settings(), NOW) as client:
        yield client


def panel_sql(title: str) -> str:
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["title"] == title)
    return panel["targets"][0]["rawSql"]


def test_the_gateway_table_reads_failures_and_percentiles_as_the_sidecar_does(demo: Client) -> None:
    start = NOW - timedelta(hours=3)  # the panel's own time range
    context = QueryContext(start, NOW, 60_000, {"country": COUNTRIES}, multi=frozenset({"country"}))
    shown = {row[0]: row[1:] for row in demo.query(clickhouse_query(panel_sql("Payments by gateway"),
                                                                  context)).result_rows}
    attempts: dict[str, int] = defaultdict(int)
    failures: dict[str, int] = defaultdict(int)
    histograms: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    rows = demo.query("SELECT gateway, attempts, failures, bucket_keys, bucket_counts FROM payment_latency_1s "
                      "WHERE ts >= %(start)s AND ts <= %(end)s AND country IN %(countries)s",
                      parameters={"start": start, "end": NOW, "countries": COUNTRIES}).result_rows
    for gateway, tried, failed, keys, counts in rows:
        attempts[gateway] += tried
        failures[gateway] += failed
        for key, count in zip(keys, counts, strict=True):
            histograms[gateway][key] += count
    assert len(attempts) >= 3 and shown.keys() == attempts.keys()
    for gateway, (tried, failure_rate, p50, p90, p99) in shown.items():
        assert tried == attempts[gateway]
        assert failure_rate == round(failures[gateway] / attempts[gateway], 4)
        for shown_p, q in ((p50, 0.5), (p90, 0.9), (p99, 0.99)):
            assert shown_p == round(quantile(histograms[gateway], q)), (gateway, q)
    # The table ranks the worst gateway first.
    assert [r[1] for r in shown.values()] == sorted((r[1] for r in shown.values()), reverse=True)


def rule_sql(uid: str, ref_id: str = "A") -> str:
    rule = next(r.item for r in load(alerting_paths()).rules() if r.item["uid"] == uid)
    return next(q["model"]["rawSql"] for q in rule["data"] if q["refId"] == ref_id)


def test_the_payment_kpis_are_one_number_in_the_rule_the_sidecar_and_the_kpi_functions(demo: Client) -> None:
    """Over the same five minutes of each country: the payment failure rate of the alert rule
    (``metrics_now``), of the sidecar and of the schema's ``failure_rate`` over the same sums
    (``metrics_1s``); the sidecar's p95 and ``latency_quantile``'s over the gateways' histograms the
    payment panels read (``payment_latency_1s``)."""
    end = NOW - timedelta(minutes=30, seconds=NOW.second % 10)  # a sidecar step; final data
    window = {"start": end - timedelta(seconds=300), "end": end}
    rule = {row[0]: row[2] for row in demo.query(clickhouse_query(
        rule_sql("shoppulse-payment-failure-rate"),
        QueryContext(end - timedelta(seconds=600), end + timedelta(seconds=10), alerting=True))).result_rows}
    sidecar = read_windows(demo, [end], 300, 10)[end]
    defined = dict(demo.query(
        "SELECT country, failure_rate(sum(payment_failures), sum(payment_attempts)) FROM metrics_1s "
        "WHERE ts >= %(start)s AND ts < %(end)s GROUP BY country WITH ROLLUP", parameters=window).result_rows)
    p95 = dict(demo.query(
        "SELECT country, latency_quantile(sumMap(bucket_keys, bucket_counts).1, sumMap(bucket_keys, bucket_counts).2, "
        "0.95) FROM payment_latency_1s WHERE ts >= %(start)s AND ts < %(end)s GROUP BY country WITH ROLLUP",
        parameters=window).result_rows)
    defined["ALL"], p95["ALL"] = defined.pop(""), p95.pop("")  # the rollup's row: the whole store's
    compared = [c for c in rule if "payment_failure_rate" in sidecar.get(c, {})]
    assert len(compared) >= 3, (rule, sidecar)
    for country in compared:
        assert rule[country] == pytest.approx(defined[country], abs=1e-12), country
    for country, points in sidecar.items():
        if "payment_failure_rate" in points:
            assert points["payment_failure_rate"].value == pytest.approx(defined[country], abs=1e-12), country
    for country, points in sidecar.items():
        if "payment_latency_p95" in points:
            assert points["payment_latency_p95"].value == pytest.approx(p95[country], rel=1e-9), country


def test_the_live_funnel_panel_shows_the_ratios_the_sidecar_judges(demo: Client) -> None:
    """Over one minute of each country and of the selection of all of them, the panel's orders per
    product view, carts without an order and checkouts per cart (the schema's functions over
    ``metrics_1m``) are the sidecar's points for its 60 s window ending at that minute's end."""
    end = (NOW - timedelta(minutes=30)).replace(second=0)
    sidecar = read_windows(demo, [end], 60, 10)[end]
    panel = panel_sql("Live funnel (what the anomaly sidecar watches)")
    columns = {"orders per product view": "orders_per_view", "carts without an order": "carts_without_order",
               "checkouts per cart": "checkouts_per_cart"}
    selections = {country: [country] for country in COUNTRIES} | {"ALL": sorted(set(sidecar) - {"ALL"})}
    compared = 0
    for scope, countries in selections.items():
        context = QueryContext(end - timedelta(minutes=10), end, 60_000, {"country": countries},
                               multi=frozenset({"country"}))
        result = demo.query(clickhouse_query(panel, context))
        rows = {row[0].replace(tzinfo=UTC) if row[0].tzinfo is None else row[0]: row for row in result.result_rows}
        minute = rows[end - timedelta(minutes=1)]
        for column, value in zip(result.column_names[1:], minute[1:], strict=True):
            point = sidecar[scope].get(columns[column])
            if point is not None:
                assert point.value == pytest.approx(value, abs=1e-12), (scope, column)
                compared += 1
    assert compared >= 3 * len(selections), compared  # every ratio of every selection had its evidence


def test_the_abandonment_tile_and_the_abandonment_rule_read_one_definition(demo: Client) -> None:
    """The tile's cart abandonment over the rule's fifteen minutes (three of its five-minute buckets,
    recombined from the sessions they count) is the rule's."""
    end = (NOW - timedelta(minutes=30)).replace(second=0)
    end -= timedelta(minutes=end.minute % 5)
    rule = {row[0]: row[2] for row in demo.query(clickhouse_query(
        rule_sql("shoppulse-abandonment-spike"),
        QueryContext(end - timedelta(minutes=20), end, alerting=True))).result_rows}
    assert len(rule) >= 2, rule
    tile = panel_sql("Cart abandonment")
    assert "abandonment_rate(sum(abandoned), sum(with_cart))" in tile
    for country, abandonment in rule.items():
        context = QueryContext(end - timedelta(minutes=15), end - timedelta(seconds=1), 300_000,
                               {"country": [country]}, multi=frozenset({"country"}))
        shown = demo.query(clickhouse_query(tile, context)).result_rows
        counted = demo.query("SELECT toStartOfFiveMinutes(ts), sum(with_cart) FROM sessions_1m "
                             "WHERE ts >= %(start)s AND ts < %(end)s AND country = %(country)s GROUP BY 1",
                             parameters={"start": end - timedelta(minutes=15), "end": end,
                                         "country": country}).result_rows
        carts = dict(counted)
        assert len(shown) == 3 and {t for t, _ in shown} == carts.keys()
        recombined = sum(rate * carts[t] for t, rate in shown) / sum(carts.values())
        assert recombined == pytest.approx(abandonment, rel=1e-9), country


def test_the_incident_and_insight_rows_link_to_their_time_and_country(demo: Client) -> None:
    """Each row's data link opens Store live at the row's time range with its country; the fields the
    link reads are returned by the query and hidden from the table (and from the preview)."""
    from shoppulse.ascode.dashboards.preview import hidden_fields
    from shoppulse.grafana.shapes import data_links

    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text())
    context = QueryContext(NOW - timedelta(hours=24), NOW, 60_000, {"country": [*COUNTRIES, "BR"]},
                           multi=frozenset({"country"}))
    for title in ("Incidents", "Insights"):
        panel = next(p for p in dashboard["panels"] if p["title"] == title)
        assert hidden_fields(panel) == {"from_ms", "to_ms", "link_country"}
        [link] = data_links(panel)
        assert link["url"].startswith(f"/d/{dashboard['uid']}/")
        answer = demo.query(clickhouse_query(panel["targets"][0]["rawSql"], context))
        rows = [dict(zip(answer.column_names, row, strict=True)) for row in answer.result_rows]
        assert rows, title
        for row in rows:
            url = link["url"]
            for field in ("from_ms", "to_ms", "link_country"):
                url = url.replace(f"${{__data.fields.{field}}}", str(row[field]))
            start = datetime.fromtimestamp(int(row["from_ms"]) / 1000, UTC)
            assert start < row["time"].replace(tzinfo=UTC) and "${" not in url
            assert row["to_ms"] == "now" or int(row["to_ms"]) > int(row["from_ms"])
            assert row["link_country"] == "$__all" or row["link_country"] in row["country"]


KPI_TILES = {"Orders/s": "orders_per_s", "GMV / min": "revenue_per_s", "Conversion": "orders_per_view",
             "Cart abandonment": "carts_without_order"}


def test_a_kpi_tile_turns_red_while_an_incident_on_its_kpi_is_open(demo: Client) -> None:
    """Each KPI tile's config query (B), as Grafana's Config from query results transformation applies it:
    with no open incident on the tile's KPI in the selected countries it gives back the tile's own
    thresholds; with one (the demo's open cart abandonment incident in BR) the abandonment tile is red
    whatever its value, and the other tiles keep their thresholds."""
    from shoppulse.grafana.shapes import Result
    from shoppulse.grafana.transformations import active_colour, config_thresholds

    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text())

    def steps_for(panel: dict, countries: list[str]) -> list[dict] | None:
        target = next(t for t in panel["targets"] if t["refId"] == "B")
        context = QueryContext(NOW - timedelta(hours=1), NOW, 60_000, {"country": countries},
                               multi=frozenset({"country"}))
        answer = demo.query(clickhouse_query(target["rawSql"], context))
        result = Result(list(answer.column_names), [t.name for t in answer.column_types], answer.result_rows)
        return config_thresholds(panel, {"B": result})

    for title, metric in KPI_TILES.items():
        panel = next(p for p in dashboard["panels"] if p["title"] == title)
        own = [{"value": -math.inf if step["value"] is None else float(step["value"]), "color": step["color"]}
               for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert steps_for(panel, COUNTRIES) == own, title
        in_br = steps_for(panel, ["BR"])
        if metric == "carts_without_order":
            assert in_br == [{"value": -math.inf, "color": "red"}]
            assert active_colour(in_br, 0.0) == active_colour(in_br, 0.99) == "red"
            assert active_colour(own, 0.0) == "green"  # the same value, with no incident open
        else:
            assert in_br == own, title
