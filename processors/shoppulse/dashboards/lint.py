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
from shoppulse.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.dashboards.model import DashboardFile, Problem, load, provisioned_datasources
from shoppulse.dashboards.promql import PromQLChecker
from shoppulse.dashboards.queries import Executed, QueryRunner
from shoppulse.dashboards.structure import check_dashboards
from shoppulse.local.clickhouse_server import embedded_endpoint
from shoppulse.settings import Settings
from shoppulse.sink.migrations import migrate


@dataclass
class LintReport:
    files: list[DashboardFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    executed: list[Executed] = field(default_factory=list)

    @property
    def panels(self) -> int:
        return sum(1 for f in self.files for _ in f.panels())


@contextlib.contextmanager
def demo_database(settings: Settings, now: datetime,
                  progress: Callable[[str], None] = lambda _: None) -> Iterator[Client]:
    """A throwaway embedded ClickHouse with the migrations applied and the demo data loaded."""
    with tempfile.TemporaryDirectory(prefix="shoppulse-demo-") as folder, \
            embedded_endpoint(Path(folder) / "clickhouse") as url:
        local = settings.model_copy(update={"clickhouse_url": url, "clickhouse_user": "default",
                                            "clickhouse_password": ""})
        applied = migrate(lambda database: clickhouse.connect(local, database), local.clickhouse_database,
                          local.migrations_dir)
        progress(f"schema: {len(applied)} migrations applied")
        client = clickhouse.connect(local)
        try:
            load_demo_data(client, DemoPlan(now=now), progress)
            yield client
        finally:
            client.close()


def lint(paths: list[Path], client: Client, now: datetime | None = None,
         progress: Callable[[str], None] = lambda _: None) -> LintReport:
    report = LintReport()
    for path in paths:
        loaded = load(path)
        if isinstance(loaded, Problem):
            report.problems.append(loaded)
        else:
            report.files.append(loaded)
    datasources = provisioned_datasources()
    report.problems += check_dashboards(report.files, datasources)
    runner = QueryRunner(client, datasources, PromQLChecker(), now or datetime.now(UTC))
    for file in report.files:
        report.problems += runner.check(file)
        progress(f"{file.path.name}: queries run")
    report.executed = list(runner.results())
    return report
