"""``shoppulse dashboards …``: the dashboards-as-code commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from clickhouse_connect.driver.client import Client

from shoppulse.cli.common import console, err, fail
from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana_api import GrafanaClient, can_authenticate
from shoppulse.logs import setup_logging
from shoppulse.settings import Settings, SettingsError, load_settings

dashboards_app = typer.Typer(help="Grafana dashboards as code (grafana/dashboards/).", no_args_is_help=True)


def dashboard_files_and_settings(paths: list[Path] | None) -> tuple[list[Path], Settings]:
    """The dashboard files asked for (all by default), checked to exist, and the settings."""
    setup_logging("WARNING")
    files = paths or dashboard_paths()
    missing = [p for p in files if not p.is_file()]
    if missing:
        fail(f"no such dashboard file: {', '.join(map(str, missing))}", 2)
    if not files:
        fail("no dashboard files (grafana/dashboards/*.json)", 2)
    try:
        return files, load_settings()
    except SettingsError as exc:
        fail(str(exc), 2)


@dashboards_app.command("lint")
def lint_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Dashboard JSON files (default: every file in grafana/dashboards/).")] = None,
    clickhouse_url: Annotated[str | None, typer.Option(
        help="Run the queries on this ClickHouse's database (SHOPPULSE_CLICKHOUSE_DATABASE, migrated) "
             "instead of a throwaway embedded one with demo data.")] = None,
    demo_data: Annotated[bool, typer.Option(
        help="With --clickhouse-url: first load the demo data into that database, which must hold no "
             "data yet (a scratch database).")] = False,
) -> None:
    """Check dashboards: JSON model, uids, datasource references, panel hygiene, and every query run
    against the real ClickHouse schema (PromQL through promtool), its result fitting its panel."""
    from shoppulse import clickhouse
    from shoppulse.ascode.dashboards.lint import NotEmptyError, check_files, demo_database, load_demo_into, run_queries

    if demo_data and not clickhouse_url:
        fail("--demo-data loads the demo data into the ClickHouse of --clickhouse-url; without it the lint "
             "already uses a throwaway one with demo data", 2)

    files, settings = dashboard_files_and_settings(paths)
    now = datetime.now(UTC).replace(microsecond=0)
    report = check_files(files)
    if report.files:  # when no file loads there is no query to run and no database to prepare
        with console.status("preparing ClickHouse…") as status:
            def progress(line: str) -> None:
                status.update(line)

            if clickhouse_url:
                client = clickhouse.connect(settings.model_copy(update={"clickhouse_url": clickhouse_url}))
                if demo_data:
                    try:
                        load_demo_into(client, now, progress)
                    except NotEmptyError as exc:
                        fail(str(exc), 2)
                run_queries(report, client, now, progress)
            else:
                with demo_database(settings, now, progress) as client:
                    run_queries(report, client, now, progress)
    for problem in report.problems:
        console.print(str(problem), highlight=False, markup=False)
    queries = len(report.executed)
    summary = f"{len(report.files)} dashboard(s), {report.panels} panels, {queries} ClickHouse queries run"
    if report.problems:
        fail(f"{len(report.problems)} problem(s) in {summary}")
    console.print(f"[green]ok[/]: {summary}", highlight=False)


def _grafana() -> tuple[GrafanaClient, str]:
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc), 2)
    if not settings.grafana_url:
        fail("GRAFANA_URL is not set: point it at Grafana, e.g. GRAFANA_URL=http://localhost:3000", 2)
    if not can_authenticate(settings.grafana_url, settings.grafana_token):
        fail("GRAFANA_TOKEN is not set: create a service-account token (Editor) in Grafana and export it", 2)
    return (GrafanaClient(settings.grafana_url, settings.grafana_token, settings.grafana_timeout_s),
            settings.grafana_folder)


@dashboards_app.command("export")
def export_command(
    folder: Annotated[Path, typer.Option(help="Where the dashboard files go.")] = Path("grafana/dashboards"),
    all_folders: Annotated[bool, typer.Option("--all-folders", help="Every dashboard, not only our folder's.")] = False,
) -> None:
    """Pull dashboards from Grafana (GRAFANA_URL, GRAFANA_TOKEN) into Git, normalised for diffs."""
    from shoppulse.ascode.dashboards.sync import export
    from shoppulse.grafana_api import GrafanaError

    client, folder_uid = _grafana()
    if not folder.is_dir():
        fail(f"{folder} is not a folder: pass --folder grafana/dashboards", 2)
    try:
        done = export(client, folder, None if all_folders else folder_uid)
    except GrafanaError as exc:
        fail(str(exc))
    for item in done:
        if item.skipped:
            err.print(f"skipped  {item.uid}: {item.skipped}", highlight=False, markup=False)
        else:
            console.print(f"{'written ' if item.changed else 'same    '} {item.path}  ({item.uid})", highlight=False)
    exported = [item for item in done if not item.skipped]
    console.print(f"{len(exported)} dashboard(s) exported, {sum(i.changed for i in exported)} changed", highlight=False)


@dashboards_app.command("push")
def push_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Dashboard JSON files (default: every file in grafana/dashboards/).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite even if the dashboard changed in Grafana meanwhile.")] = False,
) -> None:
    """Push the Git dashboards to a Grafana that does not provision them (GRAFANA_URL, GRAFANA_TOKEN), into
    the folder SHOPPULSE_GRAFANA_FOLDER. Edits made in Grafana since the last export are never overwritten
    without --force; a dashboard that Grafana provisions from files stops the push."""
    from shoppulse.ascode.dashboards.sync import push
    from shoppulse.grafana_api import GrafanaError

    files = paths or dashboard_paths()
    missing = [p for p in files if not p.is_file()]
    if missing:
        fail(f"no such dashboard file: {', '.join(map(str, missing))}", 2)
    client, folder_uid = _grafana()
    try:
        done = push(client, files, folder_uid, "shoppulse", force)
    except (GrafanaError, ValueError) as exc:
        fail(str(exc))
    for item in done:
        console.print(f"{item.outcome:9} {item.path.name}  ({item.uid}, version {item.version})", highlight=False)


@dashboards_app.command("preview")
def preview_command(
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("docs/previews"),
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Dashboard JSON files (default: every file in grafana/dashboards/).")] = None,
    clickhouse_url: Annotated[str | None, typer.Option(
        help="Render from this ClickHouse (e.g. a running `shoppulse up`) instead of the demo data.")] = None,
    prometheus_url: Annotated[str | None, typer.Option(
        help="Draw Prometheus panels from this Prometheus (e.g. a running `shoppulse up`'s); without it they "
             "show their PromQL.")] = None,
) -> None:
    """Render each dashboard to a PNG from its real query results (demo data with an incident by default)."""
    from shoppulse import clickhouse
    from shoppulse.ascode.dashboards.lint import demo_database

    files, settings = dashboard_files_and_settings(paths)
    now = datetime.now(UTC).replace(microsecond=0)
    with console.status("preparing ClickHouse…") as status:
        if clickhouse_url:
            client = clickhouse.connect(settings.model_copy(update={"clickhouse_url": clickhouse_url}))
            _render_previews(files, client, now, out, status.update, prometheus_url)
        else:
            with demo_database(settings, now, status.update) as client:
                _render_previews(files, client, now, out, status.update, prometheus_url)


def _render_previews(files: list[Path], client: Client, now: datetime, out: Path,
                     progress: Callable[[str], None], prometheus_url: str | None = None) -> None:
    from shoppulse.ascode.dashboards.lint import lint
    from shoppulse.ascode.dashboards.preview import render_dashboard
    from shoppulse.ascode.dashboards.prometheus_data import PrometheusError, prometheus_results

    report = lint(files, client, now, progress)
    anomalies = client.query("SELECT opened_at, coalesce(closed_at, now64(3)) FROM anomalies FINAL").result_rows
    for problem in report.problems:
        err.print(f"[yellow]lint:[/] {problem}", highlight=False, markup=False)
    for file in report.files:
        executed = list(report.executed)
        if prometheus_url:
            try:
                executed += prometheus_results(file, prometheus_url, now)
            except PrometheusError as exc:
                fail(str(exc))
        progress(f"rendering {file.path.name}")
        target = render_dashboard(file, executed, anomalies, out / file.path.with_suffix(".png").name)
        console.print(f"wrote {target}", highlight=False)
