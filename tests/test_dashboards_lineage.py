"""Lineage: a panel's description names the tables and metrics it reads and the process behind
each; the lint's map of who writes what agrees with the processors' sinks and the migrations."""

from __future__ import annotations

import re
from pathlib import Path

from checkout import ROOT
from shoppulse.aggregate.app import aggregate_tables
from shoppulse.ascode.dashboards.lineage import (
    AGGREGATION,
    INGESTION,
    TABLE_WRITERS,
    lineage_problems,
    tables_read,
)
from shoppulse.ascode.dashboards.structure import check_dashboards
from shoppulse.grafana.model import load, provisioned_datasources
from shoppulse.grafana.promql import metric_names
from shoppulse.ingest.app import ingest_tables

CREATED = re.compile(r"CREATE (?:TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS (\w+)")


def test_tables_read_skips_with_names_subqueries_and_table_functions() -> None:
    sql = """WITH hourly AS (SELECT country, sum(orders) AS o FROM metrics_1h GROUP BY country),
                  baseline AS (SELECT country FROM shoppulse.sessions_1m)
             SELECT * FROM hourly JOIN baseline USING country
             LEFT JOIN (SELECT 1 AS x FROM numbers(3)) AS n ON 1
             WHERE country IN (SELECT country FROM `freshness`) -- FROM not_a_table
             AND 'FROM nor_this' != ''"""
    assert tables_read(sql) == ["metrics_1h", "sessions_1m", "freshness"]


def test_the_metrics_a_panel_graphs_are_the_shoppulse_and_process_series() -> None:
    expr = ("histogram_quantile(0.95, sum by (le, table) (rate(shoppulse_sink_write_seconds_bucket[5m])))"
            " / on() rate(process_cpu_seconds_total[1m])")
    assert metric_names(expr) == ["shoppulse_sink_write_seconds_bucket", "process_cpu_seconds_total"]


def test_a_description_must_name_the_table_and_the_process_behind_it() -> None:
    sql = ["SELECT sum(orders) FROM metrics_now"]
    assert lineage_problems("Orders from metrics_now, by ingestion and aggregation.", sql, []) == []
    problems = lineage_problems("Orders per second.", sql, [])
    assert problems == ["the description does not name the table it reads: metrics_now",
                        "the description does not name ingestion, the process behind metrics_now",
                        "the description does not name aggregation, the process behind metrics_now"]
    assert lineage_problems("Orders from metrics_now (aggregation).", sql, []) == [
        "the description does not name ingestion, the process behind metrics_now"]


def test_an_unknown_source_is_a_problem_that_says_where_to_declare_it() -> None:
    [table] = lineage_problems("From orders_raw.", ["SELECT 1 FROM orders_raw"], [])
    assert "orders_raw" in table and "TABLE_WRITERS" in table
    assert lineage_problems("Broker bytes.", [], ["rate(kafka_server_bytes_total[1m])"]) == []  # not ours to map
    [series] = lineage_problems("By ingestion.", [], ["rate(shoppulse_mystery_total[1m])"])
    assert "shoppulse_mystery_total" in series and "METRIC_WRITERS" in series
    assert lineage_problems("Sink rows, from ingestion.", [], ["shoppulse_sink_rows_total"]) == [
        "the description does not name aggregation, the process behind shoppulse_sink_rows_total"]


def test_the_map_agrees_with_what_the_sinks_write_and_what_the_migrations_create() -> None:
    for table in ingest_tables():
        assert INGESTION in TABLE_WRITERS[table.name], table.name
    for table in aggregate_tables():
        assert AGGREGATION in TABLE_WRITERS[table.name], table.name
    migrations = (ROOT / "clickhouse").glob("*.sql")
    created = {name for path in migrations for name in CREATED.findall(path.read_text())}
    assert set(TABLE_WRITERS) <= created


def test_every_shipped_panel_says_where_its_numbers_come_from() -> None:
    files = [load(path) for path in sorted(Path(ROOT / "grafana" / "dashboards").glob("*.json"))]
    assert not [str(problem) for problem in check_dashboards(files, provisioned_datasources())]  # type: ignore[arg-type]
