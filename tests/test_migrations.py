"""`shoppulse db migrate` applies the ordered files in clickhouse/ once each, and guards their history."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from checkout import ROOT
from conftest import TEST_PASSWORD, EndpointProcess
from shoppulse import clickhouse
from shoppulse.aggregate.app import aggregate_tables
from shoppulse.ingest.app import ingest_tables
from shoppulse.sink.clickhouse_sink import fence_query
from shoppulse.sink.migrations import (
    MigrationError,
    discover,
    ensure_reader_user,
    has_access_storage,
    is_access_statement,
    migrate,
)
from shoppulse.topics import HISTORY_DAYS

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> str:
    return f"mig_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "clickhouse"
    target.mkdir()
    (target / "0001_first.sql").write_text(
        "-- first: a table\n"
        "CREATE TABLE IF NOT EXISTS a (x UInt8, s String DEFAULT 'x;y') ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO a (x) VALUES (1);\n")
    (target / "0002_second.sql").write_text("CREATE TABLE IF NOT EXISTS b (y UInt8) ENGINE = MergeTree ORDER BY y;")
    return target


def run(endpoint: EndpointProcess, database: str, folder: Path) -> list[str]:
    settings = endpoint.settings()
    return [m.name for m in migrate(lambda db: clickhouse.connect(settings, db), database, folder)]


def test_migrations_apply_in_order_once_each(clickhouse_endpoint: EndpointProcess, database: str,
                                             folder: Path) -> None:
    assert run(clickhouse_endpoint, database, folder) == ["0001_first.sql", "0002_second.sql"]
    assert run(clickhouse_endpoint, database, folder) == []
    client = clickhouse.connect(clickhouse_endpoint.settings(), database=database)
    assert client.query("SELECT version, name FROM schema_migrations ORDER BY version").result_rows == [
        (1, "0001_first.sql"), (2, "0002_second.sql")]
    assert client.query("SELECT count(), any(s) FROM a").result_rows == [(1, "x;y")], "the insert ran exactly once"


def test_a_new_file_is_applied_after_the_others(clickhouse_endpoint: EndpointProcess, database: str,
                                                folder: Path) -> None:
    run(clickhouse_endpoint, database, folder)
    (folder / "0003_third.sql").write_text("ALTER TABLE b ADD COLUMN IF NOT EXISTS z String")
    assert run(clickhouse_endpoint, database, folder) == ["0003_third.sql"]


def test_editing_an_applied_migration_is_an_error(clickhouse_endpoint: EndpointProcess, database: str,
                                                  folder: Path) -> None:
    run(clickhouse_endpoint, database, folder)
    (folder / "0001_first.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt16) ENGINE = MergeTree ORDER BY x")
    with pytest.raises(MigrationError, match=re.escape("0001_first.sql was changed after it was applied")):
        run(clickhouse_endpoint, database, folder)


def test_deleting_an_applied_migration_is_an_error(clickhouse_endpoint: EndpointProcess, database: str,
                                                   folder: Path) -> None:
    run(clickhouse_endpoint, database, folder)
    (folder / "0002_second.sql").unlink()
    missing = re.escape("0002_second.sql is recorded as applied but its file is missing")
    with pytest.raises(MigrationError, match=missing):
        run(clickhouse_endpoint, database, folder)


def test_a_failing_statement_names_the_file_and_is_not_recorded(clickhouse_endpoint: EndpointProcess,
                                                                 database: str, folder: Path) -> None:
    (folder / "0003_broken.sql").write_text("CREATE TABLE c (x UInt8) ENGINE = MergeTree ORDER BY x;\nSELEC oops;")
    with pytest.raises(MigrationError, match=r"0003_broken.sql, statement 2 of 2 failed"):
        run(clickhouse_endpoint, database, folder)
    (folder / "0003_broken.sql").write_text("CREATE TABLE IF NOT EXISTS c (x UInt8) ENGINE = MergeTree ORDER BY x;")
    assert run(clickhouse_endpoint, database, folder) == ["0003_broken.sql"]


def test_badly_named_or_duplicate_files_are_refused(folder: Path) -> None:
    (folder / "3_bad.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=re.escape("is not named NNNN_description.sql")):
        discover(folder)
    (folder / "3_bad.sql").unlink()
    (folder / "0002_twin.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="share version 0002"):
        discover(folder)


def test_shipped_migrations_apply_through_the_cli(clickhouse_endpoint: EndpointProcess, database: str) -> None:
    env = {"CLICKHOUSE_URL": clickhouse_endpoint.url, "CLICKHOUSE_PASSWORD": TEST_PASSWORD,
           "SHOPPULSE_CLICKHOUSE_DATABASE": database, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "shoppulse", "db", "migrate"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    shipped = sorted(p.name for p in (ROOT / "clickhouse").glob("*.sql"))
    assert f"{len(shipped)} migration(s) applied" in first.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert "0 migration(s) applied" in again.stdout


def test_cli_reports_an_unreachable_clickhouse_in_one_line(tmp_path: Path) -> None:
    env = {"CLICKHOUSE_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "shoppulse", "db", "migrate"], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "cannot migrate ClickHouse at http://127.0.0.1:9" in result.stderr


def test_shipped_migration_files_are_documented_in_their_first_line() -> None:
    for migration in discover(ROOT / "clickhouse"):
        first = migration.path.read_text().splitlines()[0]
        assert first.startswith("-- ") and len(first) > 20, f"{migration.name} lacks its one-line description"


@pytest.mark.parametrize(("statement", "access"), [
    ("CREATE ROLE IF NOT EXISTS grafana_reader", True),
    ("-- a comment\nCREATE SETTINGS PROFILE IF NOT EXISTS p SETTINGS readonly = 1", True),
    ("GRANT SELECT ON * TO grafana_reader", True),
    ("revoke SELECT ON * FROM r", True),
    ("CREATE TABLE roles (x UInt8) ENGINE = Memory", False),
    ("CREATE VIEW user_grants AS SELECT 1", False),
])
def test_access_statements_are_told_from_schema(statement: str, access: bool) -> None:
    assert is_access_statement(statement) is access


def test_reader_role_is_skipped_on_the_embedded_engine(clickhouse_endpoint: EndpointProcess, database: str) -> None:
    client = clickhouse.connect(clickhouse_endpoint.settings(), database="default")
    assert has_access_storage(client) is False
    assert ensure_reader_user(client, "grafana", "secret") is False


TTL_COLUMNS = {"metrics_live": "ts", "dead_letters": "received_at", "events_sample": "event_time", "metrics_1s": "ts",
               "payment_latency_1s": "ts", "segment_metrics_1s": "ts", "late_events": "event_time",
               "sessions": "session_end"}


def test_every_sink_table_answers_the_fence_from_its_projection(clickhouse_endpoint: EndpointProcess,
                                                                database: str) -> None:
    """The fence query each checkpoint runs reads the ``sink_fence`` projection of every table a
    processor's sink writes, not the table: its cost must not grow with the table."""
    migrate(lambda db: clickhouse.connect(clickhouse_endpoint.settings(), db), database, ROOT / "clickhouse")
    client = clickhouse.connect(clickhouse_endpoint.settings(), database)
    names = [table.name for table in [*ingest_tables(), *aggregate_tables()]]
    for name in names:  # two parts, as two checkpoints would write, of rows within the table's TTL
        time = TTL_COLUMNS[name]
        client.command(f"INSERT INTO {name} ({time}, src_partition, src_offset) VALUES (now(), 0, 1), (now(), 1, 7)")
        client.command(f"INSERT INTO {name} ({time}, src_partition, src_offset) VALUES (now(), 0, 2)")
    plan = client.query("EXPLAIN " + fence_query(names), parameters={"ps": [0, 1]}).result_rows
    reads = [row[0].strip(" │└├─") for row in plan if "ReadFromMergeTree" in row[0]]
    assert reads == ["ReadFromMergeTree (sink_fence)"] * len(names), reads
    fences = client.query(fence_query(names), parameters={"ps": [0, 1]}).result_rows
    assert sorted(fences) == sorted((name, p, o) for name in names for p, o in ((0, 2), (1, 7)))


def test_the_freshness_watermark_is_read_from_projections(clickhouse_endpoint: EndpointProcess, database: str) -> None:
    """Every dashboard panel on metrics_now reads the watermark: it must not scan the tables it watches."""
    migrate(lambda db: clickhouse.connect(clickhouse_endpoint.settings(), db), database, ROOT / "clickhouse")
    client = clickhouse.connect(clickhouse_endpoint.settings(), database)
    for name in ("metrics_1s", "payment_latency_1s", "sessions"):
        time = TTL_COLUMNS[name]
        for country in ("DE", "BR"):  # two parts
            client.command(f"INSERT INTO {name} (country, {time}) VALUES ('{country}', now() - 5), "
                           f"('{country}', now())")
    plan = client.query("EXPLAIN SELECT source, country, watermark FROM freshness").result_rows
    reads = [row[0].strip(" │└├─") for row in plan if "ReadFromMergeTree" in row[0]]
    assert reads == ["ReadFromMergeTree (freshness_watermark)"] * 3, reads
    watermarks = client.query("SELECT source, count(), max(watermark) > now() - 10 FROM freshness GROUP BY source")
    assert sorted(watermarks.result_rows) == [("metrics_1s", 2, 1), ("payment_latency_1s", 2, 1), ("sessions", 2, 1)]


def test_the_per_second_tables_keep_the_two_weeks_a_backtest_replays(clickhouse_endpoint: EndpointProcess,
                                                                     database: str) -> None:
    """The sidecar replays metrics_1s, payment_latency_1s and segment_metrics_1s; a backfill of the whole
    history (``loadgen --replay 14``) must outlive their TTL, which ClickHouse applies as it merges."""
    migrate(lambda db: clickhouse.connect(clickhouse_endpoint.settings(), db), database, ROOT / "clickhouse")
    client = clickhouse.connect(clickhouse_endpoint.settings(), database)
    for name in ("metrics_1s", "payment_latency_1s", "segment_metrics_1s"):
        for days, country in ((HISTORY_DAYS, "IN"), (HISTORY_DAYS + 2, "BR")):
            client.command(f"INSERT INTO {name} (ts, country) VALUES (now() - INTERVAL {days} DAY, '{country}')")
        client.command(f"OPTIMIZE TABLE {name} FINAL")
        kept = client.query(f"SELECT country FROM {name}").result_rows
        assert kept == [("IN",)], (name, kept)
