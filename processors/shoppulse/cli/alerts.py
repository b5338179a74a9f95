"""``shoppulse alerts …``: the alerting-as-code commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shoppulse.actions.dry_run import dry_run_report
from shoppulse.actions.policy import Policy
from shoppulse.ascode.alerting.files import alerting_paths
from shoppulse.ascode.alerting.replay import REPLAY_AFTER_MINUTES, fixed_week_time, parse_moment
from shoppulse.cli.actions import action_policies_or_fail
from shoppulse.cli.common import clickhouse_failed, console, fail
from shoppulse.cli.dashboards import dashboard_files_and_settings
from shoppulse.project_files import alerting_dir, scenarios_dir
from shoppulse.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from shoppulse.ascode.alerting.files import AlertingFiles
    from shoppulse.ascode.alerting.replay import RuleReplay

alerts_app = typer.Typer(help="Grafana alerting as code (alerting/).", no_args_is_help=True)


def _alerting_files(paths: list[Path] | None) -> list[Path]:
    files = paths or alerting_paths()
    missing = [p for p in files if not p.is_file()]
    if missing:
        fail(f"no such alerting file: {', '.join(map(str, missing))}", 2)
    if not files:
        fail(f"no alerting files (*.yaml in {alerting_dir()})", 2)
    return files


@alerts_app.command("lint")
def lint_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Alerting provisioning files (default: every *.yaml in alerting/).")] = None,
) -> None:
    """Check the alerting files: Grafana's file-provisioning format, every reference (contact points,
    policies, templates, mute timings, datasources, dashboards, panels, runbooks), every ClickHouse
    rule query run against the real schema with demo data, PromQL through promtool, template fields."""
    from shoppulse.ascode.alerting.lint import lint
    from shoppulse.ascode.dashboards.lint import demo_database

    files = _alerting_files(paths)
    _dashboards, settings = dashboard_files_and_settings(None)
    now = datetime.now(UTC).replace(microsecond=0)
    with console.status("preparing ClickHouse with demo data…") as status, \
            demo_database(settings, now, status.update) as client:
        status.update("running the rules")
        report = lint(files, client, now)
    for problem in report.problems:
        console.print(str(problem), highlight=False, markup=False)
    summary = (f"{len(report.files.documents)} file(s), {report.rules} rules, "
               f"{report.queries_run} ClickHouse queries run")
    if report.problems:
        fail(f"{len(report.problems)} problem(s) in {summary}")
    console.print(f"[green]ok[/]: {summary}", highlight=False)


@alerts_app.command("replay")
def replay_command(
    scenario: Annotated[Path | None, typer.Option(help="The load generator's scenario to record and replay "
                                                  "(default: the shipped scenarios/all-incidents.yaml).")] = None,
    rate: Annotated[float, typer.Option(min=20, max=2000, help="Events/s of the recorded run.")] = 100.0,
    warm_up_minutes: Annotated[int, typer.Option(min=0, max=600, help="Quiet traffic before the scenario "
                                                 "starts (the rules' baselines need history).")] = 60,
    tail_minutes: Annotated[int, typer.Option(min=1, max=600, help="Traffic after the last incident ends.")] = 15,
    seed: Annotated[int, typer.Option(help="The load generator's seed.")] = 11,
    clickhouse_url: Annotated[str | None, typer.Option(
        help="Replay over the data already in this ClickHouse (e.g. a running `shoppulse up`'s, password from "
             "CLICKHOUSE_PASSWORD) instead of recording a run.")] = None,
    from_: Annotated[str, typer.Option("--from", help="With --clickhouse-url: where the replay starts "
                                       "(now-2h, or an ISO 8601 time).")] = "now-1h",
    to: Annotated[str, typer.Option(help="With --clickhouse-url: where it ends.")] = "now",
) -> None:
    """Evaluate every rule as Grafana would over a recorded run and print, per rule, when each alert
    instance would have fired and resolved. The run is recorded first: the load generator's events
    with a scenario's incidents, through a throwaway pipeline (Kafka broker, ingest, aggregate, the
    sidecar, ClickHouse). With --clickhouse-url, over a database that already holds a run."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from shoppulse import clickhouse
    from shoppulse.ascode.alerting.files import load

    files = load(_alerting_files(None))
    if files.problems:
        fail("\n".join(map(str, files.problems)) + "\nfix these first (shoppulse alerts lint)")
    policies = action_policies_or_fail()
    _dashboards, settings = dashboard_files_and_settings(None)
    if clickhouse_url is None:
        _replay_a_recorded_run(files, policies, settings, scenario, rate, warm_up_minutes, tail_minutes, seed)
        return
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        begin, end = parse_moment(from_, now), parse_moment(to, now)
    except ValueError as exc:
        fail(str(exc), 2)
    if begin >= end:
        fail(f"--from ({begin:%Y-%m-%d %H:%M:%S}) must be before --to ({end:%Y-%m-%d %H:%M:%S})", 2)
    try:
        client = clickhouse.connect(settings.model_copy(update={"clickhouse_url": clickhouse_url}))
        with console.status("replaying…") as status:
            results = _replay(files, client, begin, end, status.update)
            actions = dry_run_report(client, policies, begin, end, begin)
    except ClickHouseError as exc:
        clickhouse_failed(clickhouse_url, exc)
    console.print(f"replayed {clickhouse_url} from {begin:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC "
                  "(times below are from its start)", highlight=False)
    _print(files, results, begin, end, actions)


def _replay(files: AlertingFiles, client: Client, begin: datetime, end: datetime,
            progress: Callable[[str], None]) -> list[RuleReplay]:
    from shoppulse.ascode.alerting.evaluate import RuleEvaluator
    from shoppulse.ascode.alerting.replay import replay
    from shoppulse.grafana.model import provisioned_datasources

    return replay(files, RuleEvaluator(client, provisioned_datasources()), begin, end, progress)


def _print(files: AlertingFiles, results: list[RuleReplay], origin: datetime, end: datetime,
           actions: list[str]) -> None:
    """Per rule when each instance fired and resolved, what the policy tree would have sent, and what
    the action policies would have done (a dry run)."""
    from shoppulse.ascode.alerting.notify import (
        dispatch,
        notification_lines,
        policy_tree,
        replay_alerts,
        without_resolved_messages,
    )
    from shoppulse.ascode.alerting.replay import report_lines

    tree = policy_tree(files)
    notifications = dispatch(tree, replay_alerts(files, results), end, without_resolved_messages(files)) if tree else []
    told = notification_lines(notifications, origin) if tree else ["No notification policy tree: nothing is sent"]
    for line in [*report_lines(results, origin), *told, *actions]:
        console.print(line, highlight=False, markup=False)


def _replay_a_recorded_run(files: AlertingFiles, policies: list[Policy], settings: Settings, scenario: Path | None,
                           rate: float, warm_up_minutes: int, tail_minutes: int, seed: int) -> None:
    from shoppulse.devstack.process import StartupError
    from shoppulse.devstack.recording import RecordingError, recorded_run
    from shoppulse.devstack.scratch import ProcessorDiedError
    from shoppulse.loadgen.scenario import ScenarioError, load_scenario

    scenario = scenario or scenarios_dir() / "all-incidents.yaml"
    try:
        plan = load_scenario(scenario)
    except (ScenarioError, OSError) as exc:
        fail(f"{scenario}: {exc}", 2)
    from shoppulse.cli.common import Shutdown, on_signal_raise_shutdown

    on_signal_raise_shutdown()  # SIGTERM unwinds through the recording, which stops what it started
    plays = fixed_week_time(datetime.now(UTC))
    try:
        with console.status("recording…") as status, \
                recorded_run(settings, plan, rate, timedelta(minutes=warm_up_minutes), timedelta(minutes=tail_minutes),
                             plays, seed, status.update) as (run, client):
            # The rules look back up to 15 minutes: evaluate from when the run has that much history.
            results = _replay(files, client, run.begin + timedelta(minutes=REPLAY_AFTER_MINUTES), run.end,
                              status.update)
            actions = dry_run_report(client, policies, run.begin, run.end, run.start)
    except (RecordingError, ProcessorDiedError, StartupError) as exc:
        fail(f"recording the run failed: {exc}")
    except Shutdown as stop:
        fail(f"stopped ({stop}); everything the recording started is stopped", 130)
    console.print(f"recorded run through the pipeline: {run.events:,} events at {rate:g}/s (times the store's "
                  f"time of day), {warm_up_minutes} min quiet, then {plan.name} (times below are from its start)",
                  highlight=False)
    for incident in run.incidents:
        console.print(f"  incident {incident.incident.kind} in {', '.join(incident.incident.countries)}: "
                      f"+{int((incident.start - run.start).total_seconds()) // 60}m to "
                      f"+{int((incident.end - run.start).total_seconds()) // 60}m", highlight=False)
    _print(files, results, run.start, run.end, actions)


@alerts_app.command("render")
def render_command(
    out: Annotated[Path, typer.Argument(help="The folder Grafana provisions alerting from "
                                             "(/etc/grafana/provisioning/alerting).")],
) -> None:
    """Write the alerting files as Grafana should load them in this environment: PagerDuty only with
    PAGERDUTY_ROUTING_KEY, Slack as a bot or a webhook as configured. Secrets stay ${VAR} references."""
    from shoppulse.ascode.alerting.render import RenderError, render

    try:
        rendered = render(out)
    except (RenderError, OSError) as exc:
        fail(str(exc), 2)
    for note in rendered.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"[green]ok[/]: {len(rendered.files)} file(s) in {out}", highlight=False)
