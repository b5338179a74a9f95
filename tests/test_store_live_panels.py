"""Store live's payments and incident panels on the demo data, run as Grafana's ClickHouse plugin
expands them. One reading of each payment KPI: "Payments by gateway" gives each gateway's failure
rate and latency percentiles exactly as the sidecar reads the same histograms
(``events.histogram.quantile``), so a story that names a gateway's p99 agrees with the table beside
it. The incident and insight rows link to their own time and country."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from shoppulse.ascode.dashboards.lint import demo_database
from shoppulse.events.histogram import quantile
from shoppulse.grafana.interpolate import QueryContext, clickhouse_query
from shoppulse.settings import load_settings

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
