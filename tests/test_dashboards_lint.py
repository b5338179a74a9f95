"""`shoppulse dashboards lint` passes on the shipped dashboards and points precisely at broken ones."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout import ROOT
from shoppulse.ascode.dashboards.queries import panel_context
from shoppulse.grafana.interpolate import (
    InterpolationError,
    QueryContext,
    clickhouse_query,
    expand_variables,
    prometheus_query,
)
from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana.time_range import TimeRangeError

pytestmark = pytest.mark.integration
STORE_LIVE = ROOT / "grafana" / "dashboards" / "store-live.json"


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", "dashboards", "lint", *map(str, paths)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def store_live() -> dict[str, Any]:
    return json.loads(STORE_LIVE.read_text())


def panel(model: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in model["panels"] if p["title"] == title)


def write(folder: Path, name: str, model: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_the_shipped_dashboards_pass() -> None:
    done = lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok: {len(dashboard_paths())} dashboard(s)" in done.stdout
    assert "ClickHouse queries run" in done.stdout


def test_broken_dashboards_fail_with_file_line_and_panel(tmp_path: Path) -> None:
    broken_query = store_live()
    broken_query["uid"] = "broken-query"
    panel(broken_query, "Revenue ranking")["targets"][0]["rawSql"] = (
        "SELECT country, sum(revenu) AS revenue\nFROM metrics_now\nWHERE $__timeFilter(ts)\nGROUP BY country")

    missing_datasource = store_live()
    missing_datasource["uid"] = "missing-datasource"
    panel(missing_datasource, "Funnel by country")["datasource"] = {"type": "grafana-clickhouse-datasource",
                                                                    "uid": "clickhouse-prod"}

    misfit = store_live()
    misfit["uid"] = "misfit"
    orders = panel(misfit, "Orders/s and expected band")
    orders["targets"] = [orders["targets"][0] | {"rawSql": "SELECT country, sum(orders) AS orders FROM metrics_now "
                                                           "WHERE $__timeFilter(ts) GROUP BY country"}]
    geomap = panel(misfit, "Revenue by country")
    geomap["targets"][0]["rawSql"] = "SELECT 'Germany' AS country, 1.5 AS revenue"
    incidents = panel(misfit, "Incidents")  # a data link to a field its query stopped returning
    target = incidents["targets"][0]
    target["rawSql"] = target["rawSql"].replace(" AS link_country", " AS country_link")

    duplicate = copy.deepcopy(misfit)  # misfit's uid again, in a second file
    duplicate["title"] = "Store live (copy)"

    paths = {name: write(tmp_path, f"{name}.json", model) for name, model in (
        ("broken_query", broken_query), ("missing_datasource", missing_datasource), ("misfit", misfit),
        ("duplicate", duplicate))}
    done = lint(*paths.values())
    out = done.stdout
    assert done.returncode == 1, out + done.stderr

    query_line = line_of(paths["broken_query"], "sum(revenu)")
    assert (f"broken_query.json:{query_line}: panel 10 \"Revenue ranking\" query A: ClickHouse rejected the query: "
            "Code: 47.") in out
    assert "revenu" in out.split(f"broken_query.json:{query_line}:")[1].splitlines()[0]

    funnel_line = line_of(paths["missing_datasource"], '"id": 11,')
    assert (f"missing_datasource.json:{funnel_line}: panel 11 \"Funnel by country\": datasource uid "
            "'clickhouse-prod' is not provisioned") in out

    assert "misfit.json" in out and "panel 7 \"Orders/s and expected band\" query A: a timeseries panel needs a " \
                                     "time column" in out
    assert "panel 9 \"Revenue by country\" query A: country holds values that are not ISO 3166-1 alpha-2 codes: " \
           "Germany" in out

    assert "panel 13 \"Incidents\" query A: data link 'Open the incident" in out
    assert "uses field 'link_country', which the query does not return" in out
    assert "duplicate dashboard uid 'misfit'" in out
    assert "problem(s) in 4 dashboard(s)" in done.stderr


def test_structure_problems_are_reported_without_running_anything_twice(tmp_path: Path) -> None:
    model = store_live()
    model["uid"] = "Store Live!"
    model["id"] = 7
    kpi = panel(model, "Orders/s")
    del kpi["description"]
    kpi["fieldConfig"]["defaults"].pop("unit")
    kpi["gridPos"]["x"] = 22
    path = write(tmp_path, "structure.json", model)
    out = lint(path).stdout
    assert "uid 'Store Live!' is not a stable uid" in out
    assert "top-level id must be null" in out
    assert 'panel 1 "Orders/s": panel has no description' in out
    assert 'panel 1 "Orders/s": panel has no unit' in out
    assert 'panel 1 "Orders/s": gridPos x=22 w=4 does not fit the 24-column grid' in out


def test_invalid_json_points_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "uid": "bad",\n  "panels": [\n    {"id": 1,}\n  ]\n}\n')
    done = lint(path)
    assert done.returncode == 1
    assert "bad.json:4: file: not valid JSON" in done.stdout


CONTEXT = QueryContext(datetime(2026, 11, 25, 10, tzinfo=UTC), datetime(2026, 11, 25, 12, tzinfo=UTC),
                       interval_ms=30_000, variables={"country": ["DE", "FR"]})


def test_macros_expand_as_the_clickhouse_plugin_does() -> None:
    sql = clickhouse_query("SELECT $__timeInterval(ts) AS t FROM x WHERE $__timeFilter(ts) "
                           "AND country IN (${country:singlequote}) AND ts > $__fromTime - $__interval_s", CONTEXT)
    assert sql == ("SELECT toStartOfInterval(toDateTime(ts), INTERVAL 30 second) AS t FROM x WHERE "
                   "ts >= toDateTime(1795600800) AND ts <= toDateTime(1795608000) "
                   "AND country IN ('DE','FR') AND ts > toDateTime(1795600800) - 30")
    assert prometheus_query('rate(x{country=~"$country"}[$__rate_interval])', CONTEXT) == \
        'rate(x{country=~"(DE|FR)"}[1m])'


NOW = datetime(2026, 11, 25, 12, 0, 7, tzinfo=UTC)


@pytest.mark.parametrize(("dashboard_time", "panel", "interval"), [
    ({"from": "now-1h", "to": "now"}, {"gridPos": {"w": 24}}, "2s"),  # 3,600 s over 1,920 px: 1.875 s -> 2 s
    ({"from": "now-1h", "to": "now"}, {"gridPos": {"w": 6}}, "10s"),  # 480 px: 7.5 s -> 10 s
    ({"from": "now-24h", "to": "now"}, {"gridPos": {"w": 24}}, "1m"),  # 45 s is rounded up to 1 m
    ({"from": "now-7d", "to": "now"}, {"gridPos": {"w": 12}}, "10m"),  # 630 s -> 10 m, not "630s"
    ({"from": "now-1h", "to": "now"}, {"maxDataPoints": 100}, "30s"),  # 36 s -> 30 s
    ({"from": "now-1h", "to": "now"}, {"gridPos": {"w": 24}, "interval": "1m"}, "1m"),  # the panel's minimum
    ({"from": "now-5m", "to": "now"}, {"gridPos": {"w": 24}}, "200ms"),  # 156 ms -> 200 ms
])
def test_interval_is_grafanas_for_the_range_and_the_panel(dashboard_time: dict[str, str], panel: dict[str, Any],
                                                          interval: str) -> None:
    context = panel_context(dashboard_time, panel, NOW, {})
    assert clickhouse_query("SELECT '$__interval'", context) == f"SELECT '{interval}'"


def test_a_panel_runs_over_the_dashboards_range_its_relative_time_and_its_shift() -> None:
    hour = panel_context({"from": "now-1h", "to": "now"}, {}, NOW, {})
    assert (hour.time_from, hour.time_to) == (NOW - timedelta(hours=1), NOW)
    day = panel_context({"from": "now-1h", "to": "now"}, {"timeFrom": "24h"}, NOW, {})
    assert (day.time_from, day.time_to) == (NOW - timedelta(hours=24), NOW)
    shifted = panel_context({"from": "now-6h", "to": "now"}, {"timeShift": "1d"}, NOW, {})
    assert (shifted.time_from, shifted.time_to) == (NOW - timedelta(days=1, hours=6), NOW - timedelta(days=1))
    today = panel_context({"from": "now/d", "to": "now"}, {}, NOW, {})
    assert today.time_from == NOW.replace(hour=0, minute=0, second=0)
    with pytest.raises(TimeRangeError, match="not relative to now"):
        panel_context({"from": "2026-11-01T00:00:00Z", "to": "now"}, {}, NOW, {})


def test_the_shipped_dashboards_are_linted_over_their_own_ranges() -> None:
    ranges = {json.loads(p.read_text())["uid"]: json.loads(p.read_text())["time"]["from"] for p in dashboard_paths()}
    assert ranges["shoppulse-store-live"] == "now-1h" and ranges["shoppulse-ai-layer"] == "now-24h"
    context = panel_context({"from": ranges["shoppulse-ai-layer"], "to": "now"}, {"gridPos": {"w": 12}}, NOW, {})
    assert context.time_to - context.time_from == timedelta(hours=24)


@pytest.mark.parametrize("name", ["__range", "__range_s", "__range_ms", "__rate_interval"])
def test_prometheus_only_globals_are_not_filled_for_clickhouse(name: str) -> None:
    with pytest.raises(InterpolationError, match=r"Grafana fills .* for Prometheus queries, not for ClickHouse"):
        clickhouse_query(f"SELECT ${name}", CONTEXT)
    assert "$" not in prometheus_query(f"x[${name}]", CONTEXT)


@pytest.mark.parametrize("name", ["__from", "__to", "__dashboard", "__org", "__user", "__range", "__range_s",
                                  "__range_ms", "__rate_interval"])
def test_alert_queries_get_no_dashboard_globals(name: str) -> None:
    alerting = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, alerting=True)
    with pytest.raises(InterpolationError, match="Grafana's alerting never fills it"):
        clickhouse_query(f"SELECT ${name}", alerting)
    # the backend's own macros (the plugin's and the SDK's defaults) work in alert rules too
    assert clickhouse_query("SELECT $__fromTime, $__interval_s, '$__interval', $__interval_ms", alerting) == \
        "SELECT toDateTime(1795600800), 1, '1s', 1000"


@pytest.mark.parametrize(("text", "expanded"), [
    # parentheses nest inside an argument; commas split only at the top
    ("SELECT $__timeInterval(toDateTime(ts, 'UTC'))",
     "SELECT toStartOfInterval(toDateTime(toDateTime(ts, 'UTC')), INTERVAL 30 second)"),
    ("WHERE $__dateTimeFilter(toDate(ts), coalesce(ts, now()))",
     "WHERE (toDate(ts) >= toDate('2026-11-25') AND toDate(ts) <= toDate('2026-11-25')) AND "
     "(coalesce(ts, now()) >= toDateTime(1795600800) AND coalesce(ts, now()) <= toDateTime(1795608000))"),
    # empty parentheses are part of a macro without arguments
    ("SELECT $__fromTime(), $__toTime()", "SELECT toDateTime(1795600800), toDateTime(1795608000)"),
    # the SDK's defaults under the plugin's macros
    ("WHERE $__timeFrom(ts) AND $__timeTo(ts)", "WHERE ts >= '2026-11-25T10:00:00Z' AND ts <= '2026-11-25T12:00:00Z'"),
    ("GROUP BY $__timeGroup(ts, day)", "GROUP BY datepart(day, ts),datepart(month, ts),datepart(year, ts)"),
    ("SELECT '$__table$__column'", "SELECT ''"),
    # a longer name is never taken for a shorter one
    ("WHERE $__timeFilter_ms(ts)",
     "WHERE ts >= fromUnixTimestamp64Milli(1795600800000) AND ts <= fromUnixTimestamp64Milli(1795608000000)"),
])
def test_macro_calls_parse_as_the_plugins_backend_parses_them(text: str, expanded: str) -> None:
    assert clickhouse_query(text, CONTEXT) == expanded


def test_a_variable_without_a_format_is_the_plugins_format() -> None:
    multi = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {"c": ["DE", "O'Hare"], "one": ["FR"],
                                                                    "single": ["PL"]},
                         multi=frozenset({"c", "one"}))
    # quoted and joined, unescaped (as the plugin does), even with one value selected; a single value as is
    assert clickhouse_query("IN ($c) IN ($one) = $single", multi) == "IN ('DE','O'Hare') IN ('FR') = PL"


def test_conditional_all_is_the_condition_or_true_for_all() -> None:
    text = "WHERE $__conditionalAll(country IN (${country:singlequote}), $country) AND 1"
    picked = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {"country": ["DE"]})
    assert clickhouse_query(text, picked) == "WHERE country IN ('DE') AND 1"
    everything = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {"country": ["DE", "FR"]},
                              all_selected=frozenset({"country"}))
    assert clickhouse_query(text, everything) == "WHERE 1=1 AND 1"


FORMATS_CONTEXT = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000,
                               {"c": ["DE", "FR"], "one": ["a.b"], "q": ["O'Hare", 'x"y'], "s": ["a b"]},
                               multi=frozenset({"c", "one", "q"}))


@pytest.mark.parametrize(("text", "expanded"), [
    ("${one:regex}", "a\\.b"),  # one value selected: escaped, no group
    ("${c:regex}", "(DE|FR)"),
    ("${s:lucene}", "a\\ b"),
    ("${c:lucene}", '("DE" OR "FR")'),
    ("${s:percentencode}", "a%20b"),
    ("${c:percentencode}", "%7BDE%2CFR%7D"),
    ("${q:sqlstring}", "'O''Hare','x\\\"y'"),
    ("${q:singlequote}", "'O\\'Hare','x\"y'"),
    ("${c:queryparam}", "var-c=DE&var-c=FR"),
    ("${c:json}", '["DE","FR"]'),
    ("${s:json}", "a b"),
    ("${c:text}", "DE + FR"),
    ("${c:glob}", "{DE,FR}"),
    ("${one:glob}", "a.b"),
    ("${c:join:|}", "DE|FR"),
    ("${c:distributed}", "DE,c=FR"),
    ("${c:raw}", "DE,FR"),
    ("${__from:date}", "2026-11-25T10:00:00.000Z"),
    ("${__from:date:iso}", "2026-11-25T10:00:00.000Z"),
    ("${__from:date:seconds}", "1795600800"),
    ("${__to:date:ms}", "1795608000000"),
    ("${__from:date:YYYY-MM-DD}", "2026-11-25"),
])
def test_variable_formats_are_grafanas(text: str, expanded: str) -> None:
    assert expand_variables(text, FORMATS_CONTEXT, "grafana-clickhouse-datasource") == expanded


def test_an_unclosed_macro_bracket_is_refused() -> None:
    with pytest.raises(InterpolationError, match="missing close bracket"):
        clickhouse_query("WHERE $__timeFilter(ts", CONTEXT)


def test_sub_second_intervals_reach_the_millisecond_macros() -> None:
    context = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 200)
    assert clickhouse_query("SELECT $__timeInterval_ms(ts), $__interval_s, '$__interval'", context) == \
        "SELECT toStartOfInterval(toDateTime64(ts, 3), INTERVAL 200 millisecond), 1, '200ms'"


@pytest.mark.parametrize(("text", "message"), [
    ("SELECT $__timeFilter(a, b)", "$__timeFilter takes 1 argument(s), got 2"),
    ("SELECT $__timeFiltre(ts)", "unknown ClickHouse macro $__timeFiltre"),
    ("SELECT $region", "unknown template variable $region"),
    ("SELECT ${country:yaml}", "unknown variable format :yaml"),
    ("SELECT $__columns(ts, country, sum(orders)) FROM x", "a statement macro of the plugin's releases after 4.13.0"),
    ("SELECT $__lttb(500, ts, orders) FROM x", "a statement macro of the plugin's releases after 4.13.0"),
])
def test_unknown_macros_and_variables_are_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        clickhouse_query(text, CONTEXT)


# Grafana's formats do not escape backslashes, which ClickHouse string literals treat as escapes:
# values with a backslash would not arrive intact (ours, country codes and model names, have none).
VALUES = st.lists(st.text(st.characters(exclude_characters="\\", exclude_categories=("Cs",)), max_size=12),
                  min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(VALUES)
def test_quoted_variable_values_reach_clickhouse_unchanged(ch: Any, values: list[str]) -> None:
    context = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {"v": values})
    for fmt in ("singlequote", "sqlstring"):
        sql = clickhouse_query(f"SELECT [${{v:{fmt}}}]", context)
        assert ch.query(sql).result_rows[0][0] == values


def test_preview_renders_every_dashboard_from_query_results(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "shoppulse", "dashboards", "preview", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "lint:" not in done.stderr
    for path in dashboard_paths():
        png = tmp_path / path.with_suffix(".png").name
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
        assert width == 1920 and height > 600


def test_the_wall_dashboard_shows_incidents_and_its_regions_behind_a_tag_filter(tmp_path: Path) -> None:
    from shoppulse.ascode.dashboards.lint import annotation_target_problems
    from shoppulse.grafana.model import load

    shipped = [load(p) for p in dashboard_paths()]
    assert annotation_target_problems(shipped) == []  # type: ignore[arg-type]
    [regions] = [q for q in store_live()["annotations"]["list"] if q["name"] == "Anomaly regions"]
    assert regions["enable"] is False and regions["target"] == {"limit": 100, "matchAny": False,
                                                                "tags": ["anomaly"], "type": "tags"}
    model = store_live()
    model["annotations"]["list"] = [q for q in model["annotations"]["list"] if q["name"] != "Anomaly regions"]
    broken = load(write(tmp_path, "store-live.json", model))
    [problem] = annotation_target_problems([broken])  # type: ignore[list-item]
    assert "no annotation query shows the sidecar's anomaly regions" in str(problem)
    assert annotation_target_problems([f for f in shipped if f.uid != "shoppulse-store-live"]) == []  # type: ignore[arg-type]


def test_the_text_of_all_field_paths_and_comments_are_grafanas_and_the_plugins() -> None:
    """${var:text} of All is "All"; ${__dashboard.uid}, ${__user.login}, ${__org.name} are Grafana's global
    fields (an unknown field is refused); plugin 4.13.0 expands macros with the plugin SDK's
    sqlutil.Interpolate, which does not skip comments (the comment-blanking macropro came later), so a
    macro inside a comment is expanded, and one it cannot expand fails there too."""
    everything = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {"country": ["DE", "FR"]},
                              multi=frozenset({"country"}), all_selected=frozenset({"country"}))
    assert clickhouse_query("SELECT '${country:text}', '${country:csv}'", everything) == "SELECT 'All', 'DE,FR'"
    assert clickhouse_query("SELECT '${country:text}'", CONTEXT) == "SELECT 'DE + FR'"
    assert clickhouse_query("SELECT '${__dashboard.uid}', '${__user.login}', '${__org.name}'", CONTEXT) == (
        "SELECT 'dashboard-uid', 'lint', 'Main Org.'")
    with pytest.raises(InterpolationError, match="no field path 'nickname'"):
        clickhouse_query("SELECT '${__user.nickname}'", CONTEXT)
    assert clickhouse_query("SELECT 1 -- $__timeFilter(ts)\n/* $__interval_s */", CONTEXT) == (
        "SELECT 1 -- ts >= toDateTime(1795600800) AND ts <= toDateTime(1795608000)\n/* 30 */")
    with pytest.raises(InterpolationError):
        clickhouse_query("SELECT 1 -- $__timeFilter(", CONTEXT)


def test_ad_hoc_filters_expand_as_the_plugin_frontend_expands_them() -> None:
    """$__adHocFilters('t') becomes the additional_table_filters setting of the active ad hoc filters
    (none while linting); an alert rule has no frontend, so there it is an unknown backend macro."""
    sql = "SELECT count() FROM t WHERE $__timeFilter(ts) SETTINGS $__adHocFilters( \"t\" )"
    assert clickhouse_query(sql, CONTEXT).endswith(" SETTINGS additional_table_filters={}")
    alerting = QueryContext(CONTEXT.time_from, CONTEXT.time_to, 1000, {}, alerting=True)
    with pytest.raises(InterpolationError, match=r"\$__adHocFilters"):
        clickhouse_query(sql, alerting)
