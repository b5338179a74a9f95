"""Every shipped dashboard and alert query through clickhouse-go v2 — the driver Grafana's ClickHouse
plugin uses — over HTTP, with the plugin's options, as Grafana's read-only user, against
`shoppulse clickhouse serve`: each answers with the column types and row count clickhouse-connect sees.
The Go program is tests/plugin_driver (built by ./dev)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import yaml

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse.ascode.alerting.evaluate import RuleEvaluator
from shoppulse.ascode.alerting.files import alerting_paths
from shoppulse.ascode.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.ascode.dashboards.lint import check_files, run_queries
from shoppulse.grafana.model import provisioned_datasources

pytestmark = pytest.mark.integration
READER, READER_PASSWORD = "grafana", "reader-secret"
DRIVER = Path(os.environ.get("SHOPPULSE_PLUGIN_DRIVER") or ROOT / ".venv" / "bin" / "plugin-driver")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProcess]:
    endpoint = EndpointProcess(tmp_path_factory.mktemp("plugin-driver") / "db",
                               env={"CLICKHOUSE_GRAFANA_USER": READER, "CLICKHOUSE_GRAFANA_PASSWORD": READER_PASSWORD})
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def plugin_driver(endpoint: EndpointProcess, database: str, queries: dict[str, str]) -> dict[str, dict[str, Any]]:
    assert DRIVER.is_file(), f"{DRIVER} is missing: ./dev builds it from tests/plugin_driver (needs Go)"
    request = {"addr": endpoint.url.removeprefix("http://"), "user": READER, "password": READER_PASSWORD,
               "database": database, "queries": [{"id": k, "sql": v} for k, v in queries.items()]}
    done = subprocess.run([str(DRIVER)], input=json.dumps(request), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    return {r["id"]: r for r in json.loads(done.stdout)}


def shipped_queries(client: Any, now: datetime) -> dict[str, str]:
    """Every dashboard panel query and alert rule query as the plugin receives it, expanded."""
    report = check_files(sorted((ROOT / "grafana" / "dashboards").glob("*.json")))
    run_queries(report, client, now)
    assert report.problems == [], "\n".join(map(str, report.problems))
    queries = {f"{e.file.path.name} panel {e.panel.get('id')} {e.target.get('refId')}": e.sql
               for e in report.executed}
    evaluator = RuleEvaluator(client, provisioned_datasources())
    for path in alerting_paths():
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                for query in rule.get("data") or []:
                    if query.get("datasourceUid") == "shoppulse-clickhouse":
                        queries[f"rule {rule['uid']} {query['refId']}"] = evaluator.sql(query, now)
    return queries


def test_every_shipped_query_runs_through_the_plugins_driver(endpoint: EndpointProcess) -> None:
    settings, admin = endpoint.migrated("plugin")
    now = datetime.now(UTC)
    load_demo_data(admin, DemoPlan(now=now))
    queries = shipped_queries(admin, now)
    assert len(queries) >= 25
    python = clickhouse_connect.get_client(dsn=endpoint.url, username=READER, password=READER_PASSWORD,
                                           database=settings.clickhouse_database, autogenerate_session_id=False)
    try:
        before = {k: python.query(sql) for k, sql in queries.items()}
        through_go = plugin_driver(endpoint, settings.clickhouse_database, queries)
        after = {k: len(python.query(sql).result_rows) for k, sql in queries.items()}
    finally:
        python.close()
        admin.close()
    for key, result in through_go.items():
        assert not result.get("error"), f"{key}: {result['error']}"
        expected = before[key]
        assert result["columns"] == list(expected.column_names), key
        assert result["types"] == [t.name for t in expected.column_types], key
        # a query reading up to now() may gain a row between the two runs
        assert result["rows"] in (len(expected.result_rows), after[key]), key
    assert sum(r["rows"] for r in through_go.values()) > 0


def test_the_driver_reads_every_type_the_endpoint_reframes(endpoint: EndpointProcess) -> None:
    sql = ("SELECT number AS n, toDateTime64(number, 3, 'UTC') AS t, toString(number) AS s, [number, 1] AS a, "
           "if(number = 1, NULL, number / 2) AS maybe, toDecimal128(number, 4) AS d, toLowCardinality(toString("
           "number % 2)) AS lc, (number, 'x') AS tup, map('k', number) AS m, toFixedString('ab', 2) AS fs, "
           "toUUID('00000000-0000-0000-0000-000000000001') AS u, toIPv4('10.0.0.1') AS ip, "
           "CAST('b', 'Enum8(\\'a\\' = 1, \\'b\\' = 2)') AS e FROM numbers(1000)")
    empty = {"empty": "SELECT 1 AS x, 'a' AS s WHERE 0",
             "limit 0": "SELECT number AS n FROM numbers(10) /* c */ LIMIT 0 -- the end\n",
             "semicolon": "SELECT toDateTime64(0, 3, 'UTC') AS t LIMIT 0; -- and a comment"}
    result = plugin_driver(endpoint, "default", {"types": sql, **empty})
    assert not result["types"].get("error"), result["types"]
    assert result["types"]["rows"] == 1000
    assert result["types"]["types"][-1].startswith("Enum8(")
    # an empty result still names its columns, as a ClickHouse server's header block does
    assert [(r["columns"], r["types"], r["rows"]) for r in (result[k] for k in empty)] == [
        (["x", "s"], ["UInt8", "String"], 0), (["n"], ["UInt64"], 0), (["t"], ["DateTime64(3, 'UTC')"], 0)]



def test_an_error_after_the_result_started_reaches_the_driver_as_the_server_s_exception(
        endpoint: EndpointProcess) -> None:
    """clickhouse-go finds an error in the middle of a streamed result by its tagged frame (ClickHouse
    25.11+) and returns ClickHouse's exception, not a block decoding error."""
    result = plugin_driver(endpoint, "default", {
        "late": "SELECT throwIf(number = 1500000, 'late boom') AS x FROM numbers(3000000)"})
    error = result["late"].get("error", "")
    assert "395" in error and "late boom" in error and "block decode" not in error, error
