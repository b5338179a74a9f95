"""``shoppulse dashboards lint``: static checks, then every query run against the schema and demo data."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from shoppulse import clickhouse
from shoppulse.ascode.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.ascode.dashboards.queries import Executed, QueryRunner
from shoppulse.ascode.dashboards.structure import check_dashboards
from shoppulse.grafana.model import DashboardFile, Datasource, Problem, load, provisioned_datasources
from shoppulse.grafana.promql import PromQLChecker
from shoppulse.settings import Settings
from shoppulse.sidecar.annotations import REGIONS_TAG, WALL_DASHBOARD
from shoppulse.sink.migrations import migrate


@dataclass
class LintReport:
    files: list[DashboardFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    datasources: dict[str, Datasource] = field(default_factory=dict)  # Grafana's provisioned ones, by uid
    executed: list[Executed] = field(default_factory=list)

    @property
    def panels(self) -> int:
        return sum(1 for f in self.files for _ in f.panels())


@contextlib.contextmanager
def throwaway_database(settings: Settings, progress: Callable[[str], None] = lambda _: None) -> Iterator[Client]:
    """A throwaway embedded ClickHouse with the migrations applied, empty (needs the ``local`` extra)."""
    from shoppulse.devstack.clickhouse_server import embedded_endpoint

    with tempfile.TemporaryDirectory(prefix="shoppulse-demo-") as folder, \
            embedded_endpoint(Path(folder) / "clickhouse") as url:
        local = settings.model_copy(update={"clickhouse_url": url, "clickhouse_user": "default",
                                            "clickhouse_password": ""})
        applied = migrate(lambda database: clickhouse.connect(local, database), local.clickhouse_database,
                          local.migrations_dir)
        progress(f"schema: {len(applied)} migrations applied")
        client = clickhouse.connect(local)
        try:
            yield client
        finally:
            client.close()


class NotEmptyError(RuntimeError):
    """Demo data was asked for in a database that already holds data."""


def load_demo_into(client: Client, now: datetime, progress: Callable[[str], None] = lambda _: None) -> None:
    """The demo data in ``client``'s database, which must be migrated and hold no metrics yet: the
    demo data never mixes with real data."""
    rows = client.command("SELECT count() FROM metrics_1m")
    if rows:
        raise NotEmptyError(f"database {client.database} already holds {rows} metric rows: load the demo data "
                            "into a scratch database (SHOPPULSE_CLICKHOUSE_DATABASE=lint_scratch shoppulse "
                            "db migrate), never beside real data")
    load_demo_data(client, DemoPlan(now=now), progress)


@contextlib.contextmanager
def demo_database(settings: Settings, now: datetime,
                  progress: Callable[[str], None] = lambda _: None) -> Iterator[Client]:
    """A throwaway embedded ClickHouse with the migrations applied and the demo data loaded."""
    with throwaway_database(settings, progress) as client:
        load_demo_into(client, now, progress)
        yield client


def annotation_target_problems(files: list[DashboardFile]) -> list[Problem]:
    """The sidecar draws incidents across the wall dashboard named in its code, and its anomaly
    regions organisation-wide for a tag query to show: linted with the others, the wall dashboard
    must have that query."""
    wall = next((f for f in files if f.uid == WALL_DASHBOARD), None)
    if wall is None:  # a lint of other files (or of a folder without the wall)
        return []
    queries = (wall.model.get("annotations") or {}).get("list") or []
    shows_regions = any(isinstance(q, dict) and isinstance(q.get("target"), dict)
                        and q["target"].get("type") == "tags"
                        and REGIONS_TAG in (q["target"].get("tags") or []) for q in queries)
    if shows_regions:
        return []
    return [Problem(wall.path, wall.line_of('"annotations"'), "annotations",
                    f"no annotation query shows the sidecar's anomaly regions: add one of the Grafana data "
                    f"source filtering by the tag {REGIONS_TAG!r} (disabled by default: the "
                    "incidents tell the story)")]


def check_files(paths: list[Path]) -> LintReport:
    """Everything but the queries: each file's JSON and model, uids, datasources, panel hygiene."""
    report = LintReport(datasources=provisioned_datasources())
    for path in paths:
        loaded = load(path)
        if isinstance(loaded, Problem):
            report.problems.append(loaded)
        else:
            report.files.append(loaded)
    report.problems += check_dashboards(report.files, report.datasources)
    report.problems += annotation_target_problems(report.files)
    return report


def run_queries(report: LintReport, client: Client, now: datetime | None = None,
                progress: Callable[[str], None] = lambda _: None) -> None:
    """Run every query of the report's loaded files on ``client`` and add what does not fit its panel."""
    runner = QueryRunner(client, report.datasources, PromQLChecker(), now or datetime.now(UTC))
    for file in report.files:
        report.problems += runner.check(file)
        progress(f"{file.path.name}: queries run")
    report.executed = list(runner.results())


def lint(paths: list[Path], client: Client, now: datetime | None = None,
         progress: Callable[[str], None] = lambda _: None) -> LintReport:
    report = check_files(paths)
    run_queries(report, client, now, progress)
    return report
