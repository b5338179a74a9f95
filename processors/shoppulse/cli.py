"""The `shoppulse` command tree; each command calls one function elsewhere."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from shoppulse.alerting.cli import alerts_app
from shoppulse.dashboards.cli import dashboards_app
from shoppulse.logs import setup_logging
from shoppulse.redact import env_secrets, redact
from shoppulse.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from shoppulse.bench.drain import DrainResult

# quixstreams imports authlib's httpx integration, which warns about itself at import time; authlib
# installs an "always" filter for its warnings when imported, so ours has to be added after it.
with contextlib.suppress(ImportError):
    import authlib.deprecate  # noqa: F401
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

app = typer.Typer(help="shoppulse: real-time e-commerce observability on Kafka, ClickHouse and Grafana.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="ClickHouse schema.", no_args_is_help=True)
clickhouse_app = typer.Typer(help="The local ClickHouse endpoint (embedded engine).", no_args_is_help=True)
kafka_app = typer.Typer(help="The local Kafka broker and topics.", no_args_is_help=True)
events_app = typer.Typer(help="The event contract.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (measured, never asserted in tests).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(db_app, name="db")
app.add_typer(clickhouse_app, name="clickhouse")
app.add_typer(kafka_app, name="kafka")
app.add_typer(events_app, name="events")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(alerts_app, name="alerts")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # progress lines stay whole in a log


class Shutdown(BaseException):
    """SIGTERM or SIGINT asked the process to stop."""


DrainResultT = TypeVar("DrainResultT", bound="DrainResult")


def _fail(message: str, code: int = 1) -> NoReturn:
    for line in redact(str(message), env_secrets()).splitlines():
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc), 2)


def _stop_event_on_signals() -> threading.Event:
    """An event SIGTERM or SIGINT sets, for loops that stop in their own time."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def _on_signal_raise_shutdown() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        # Stop once: a second Ctrl-C must not interrupt the orderly shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@app.command()
def up(
    prometheus: Annotated[bool, typer.Option(help="Start Debian's Prometheus when it is installed.")] = True,
    live: Annotated[bool | None, typer.Option(help="Live terminal view (default when stdout is a terminal).")] = None,
    pipeline: Annotated[bool, typer.Option(help="Run the pipeline processors (ingestion).")] = True,
    loadgen: Annotated[bool, typer.Option(help="Run the load generator.")] = True,
    rate: Annotated[float, typer.Option(min=10, max=50_000, help="Load generator events/s.")] = 300,
    scenario: Annotated[Path | None, typer.Option(
        help="Incidents the load generator plays [default: scenarios/default.yaml].")] = None,
) -> None:
    """Start the local stack (Kafka, ClickHouse endpoint, Prometheus, ingestion, load generator), live."""
    from shoppulse.local.live_view import watch
    from shoppulse.local.pipeline import DEFAULT_SCENARIO, pipeline_processors
    from shoppulse.local.process import StartupError
    from shoppulse.local.stack import LocalStack

    settings = _settings()
    setup_logging("WARNING")
    scenario = scenario or DEFAULT_SCENARIO
    if pipeline and loadgen and not scenario.is_file():
        _fail(f"scenario file {scenario} does not exist: pass --scenario PATH", 2)
    processors = pipeline_processors(settings, rate if loadgen else None, scenario.resolve()) if pipeline else []
    stack = LocalStack(settings, with_prometheus=prometheus, processors=processors)
    _on_signal_raise_shutdown()
    try:
        stack.start(report=lambda line: console.print(f"[dim]·[/] {line}", highlight=False))
        console.print("[bold green]stack is up[/]", highlight=False)
        watch(stack, console, live if live is not None else console.is_terminal, should_stop=lambda: False)
    except StartupError as exc:
        _fail(str(exc))
    except (Shutdown, KeyboardInterrupt):
        console.print("stopping…")
    finally:
        stack.stop()


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the pending ClickHouse migrations from clickhouse/ in order."""
    from shoppulse import clickhouse
    from shoppulse.sink.migrations import MigrationError, ensure_reader_user, migrate

    settings = _settings()
    setup_logging()
    try:
        applied = migrate(lambda database: clickhouse.connect(settings, database), settings.clickhouse_database,
                          settings.migrations_dir)
        reader = None
        if settings.clickhouse_grafana_password:
            client = clickhouse.connect(settings)
            try:
                reader = ensure_reader_user(client, settings.clickhouse_grafana_user,
                                            settings.clickhouse_grafana_password)
            finally:
                client.close()
    except MigrationError as exc:
        _fail(str(exc))
    except Exception as exc:  # connection errors and the like: say what and where
        _fail(f"cannot migrate ClickHouse at {settings.clickhouse_http_url}: {exc}")
    console.print(f"{len(applied)} migration(s) applied" + "".join(f"\n  {m.name}" for m in applied))
    if reader is not None:
        console.print(f"Grafana's read-only user {settings.clickhouse_grafana_user}: "
                      + ("created or updated" if reader else "enforced by the local endpoint (no access storage)"),
                      highlight=False)


@clickhouse_app.command("serve")
def clickhouse_serve(
    data_dir: Annotated[Path, typer.Option(help="Database folder (owned by this process).")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8123,
) -> None:
    """Serve the embedded ClickHouse engine over ClickHouse's HTTP interface."""
    from shoppulse.local.clickhouse_server import serve
    from shoppulse.local.process import StartupError

    settings = _settings()
    setup_logging()
    stop = _stop_event_on_signals()
    try:
        readers = ({settings.clickhouse_grafana_user: settings.clickhouse_grafana_password}
                   if settings.clickhouse_grafana_password else {})
        serve(data_dir, host, port, settings.clickhouse_user, settings.clickhouse_password, stop=stop,
              readers=readers)
    except StartupError as exc:
        _fail(str(exc))


@kafka_app.command("resolve")
def kafka_resolve() -> None:
    """Fetch the Apache Kafka jars from Maven Central into the cache (once)."""
    from shoppulse.local.kafka import resolve_kafka
    from shoppulse.local.process import StartupError

    settings = _settings()
    setup_logging()
    try:
        with console.status(f"resolving Apache Kafka {settings.kafka_version} from Maven Central…"):
            libs = resolve_kafka(settings.kafka_version, settings.cache_dir)
    except StartupError as exc:
        _fail(str(exc))
    err.print(f"Kafka {settings.kafka_version}: {len(list(libs.glob('*.jar')))} jars in {libs}", highlight=False)


@kafka_app.command("topics")
def kafka_topics() -> None:
    """Create the pipeline's topics on the configured broker (existing ones are kept)."""
    from shoppulse.streaming import ProcessorStartError, require_broker
    from shoppulse.topics import create_topics

    settings = _settings()
    setup_logging()
    try:
        require_broker(settings.kafka_bootstrap, settings.kafka_connect_timeout_s)
        created = create_topics(settings.kafka_bootstrap, settings.topic_partitions, settings.topic_replication)
    except (ProcessorStartError, RuntimeError) as exc:
        _fail(str(exc))
    console.print(f"{len(created)} topic(s) created on {settings.kafka_bootstrap}")


@app.command()
def ingest() -> None:
    """Run the ingestion processor: raw events -> clean events and dead letters."""
    from shoppulse.events.pii import MissingPiiKeyError
    from shoppulse.ingest.app import run
    from shoppulse.streaming import ProcessorStartError

    settings = _settings()
    setup_logging()
    try:
        run(settings)
    except (MissingPiiKeyError, ProcessorStartError) as exc:
        _fail(str(exc))


@app.command()
def aggregate() -> None:
    """Run the aggregation processor: clean events -> windowed metrics, sessions, late events in ClickHouse."""
    from shoppulse.aggregate.app import run
    from shoppulse.streaming import ProcessorStartError

    settings = _settings()
    setup_logging()
    try:
        run(settings)
    except ProcessorStartError as exc:
        _fail(str(exc))


@app.command()
def sidecar(
    warm_up_minutes: Annotated[float, typer.Option(min=0, max=1440,
                                                   help="Minutes of history replayed at start.")] = 30,
) -> None:
    """The anomaly sidecar: detect on the final aggregates, explain, write anomalies and Grafana annotations."""
    from datetime import timedelta

    from shoppulse.sidecar.main import run
    from shoppulse.streaming import ProcessorStartError

    settings = _settings()
    setup_logging()
    stop = _stop_event_on_signals()
    try:
        run(settings, stop, timedelta(minutes=warm_up_minutes))
    except ProcessorStartError as exc:
        _fail(str(exc))


@app.command()
def detect(
    csv_file: Annotated[Path, typer.Option("--csv", help="A CSV with timestamp,value (and optional label) columns.")],
    out: Annotated[Path | None, typer.Option(help="Where the scored CSV goes [default: stdout].")] = None,
) -> None:
    """Run the sidecar's detectors over any time series: a score in [0, 1] and an anomaly flag per point."""
    from shoppulse.output_file import replaced_on_success
    from shoppulse.sidecar.csv_detect import CsvInputError, score_file

    if not csv_file.is_file():
        _fail(f"no such file: {csv_file}", 2)
    try:
        if out is None:
            report = score_file(csv_file, sys.stdout)
        else:
            with replaced_on_success(out) as handle:
                report = score_file(csv_file, handle)
    except CsvInputError as exc:
        _fail(f"{csv_file}: {exc}", 2)
    except UnicodeDecodeError:
        _fail(f"{csv_file}: not a UTF-8 text file", 2)
    except OSError as exc:
        where = out if out is not None and exc.filename != str(csv_file) else csv_file
        _fail(f"cannot {'write' if where == out else 'read'} {where}: {exc.strerror or exc}", 1)
    summary = f"{report.points:,} points, {report.flagged:,} flagged as anomalous"
    if report.precision is not None or report.recall is not None:
        precision = "-" if report.precision is None else f"{report.precision:.2f}"
        recall = "-" if report.recall is None else f"{report.recall:.2f}"
        summary += (f"; against the labels: point precision {precision}, recall {recall}; "
                    f"{report.events_detected} of {report.events} labelled events detected")
    err.print(summary, highlight=False)


@app.command()
def score(
    scenarios: Annotated[list[Path] | None, typer.Option(
        "--scenario", help="Scenario files [default: scenarios/default.yaml, scenarios/all-incidents.yaml].")] = None,
    rate: Annotated[float, typer.Option(min=20, max=2000, help="Events/s of the recorded runs.")] = 150,
    quiet_hours: Annotated[float, typer.Option(min=0.5, max=48, help="Hours of incident-free traffic.")] = 6,
) -> None:
    """Score the sidecar's detection on the load generator's incidents, each scenario and the
    incident-free traffic recorded through a throwaway pipeline (Kafka, ingest, aggregate, the
    sidecar, ClickHouse): detected, delay, false alerts per country-day."""
    from datetime import timedelta

    from shoppulse.loadgen.scenario import ScenarioError, load_scenario
    from shoppulse.local.process import StartupError
    from shoppulse.local.recording import RecordingError
    from shoppulse.local.scratch import ProcessorDiedError
    from shoppulse.sidecar.scoring import run as record_and_score

    settings = _settings()
    setup_logging("WARNING")
    _on_signal_raise_shutdown()  # SIGTERM unwinds through the recordings, which stop what they started
    files = scenarios or [PROJECT_ROOT / "scenarios" / name for name in ("default.yaml", "all-incidents.yaml")]
    try:
        loaded = [load_scenario(path) for path in files]
    except ScenarioError as exc:
        _fail(str(exc), 2)
    with err.status("starting…") as status:
        try:
            for scenario in loaded:
                last = max((i.start_after_s + i.duration_s for i in scenario.incidents), default=0)
                err.print(f"scenario {scenario.name}: recording {last / 60 + 30:.0f} minutes at {rate:g} events/s "
                          "through the pipeline…", highlight=False)
                result = record_and_score(settings, scenario, rate, timedelta(minutes=10), progress=status.update)
                for incident in result.incidents:
                    delay = f"after {incident.delay_s:.0f} s" if incident.delay_s is not None else "-"
                    first = min(incident.regions, key=lambda r: r.opened_at) if incident.regions else None
                    how = f" ({first.metric} {first.country})" if first else ""
                    console.print(f"{scenario.name:14} {incident.kind:18} {','.join(incident.countries):6} "
                                  f"{'detected' if incident.detected else 'MISSED':9} {delay}{how}", highlight=False)
            err.print(f"incident-free traffic: recording {quiet_hours:g} h at {rate:g} events/s through the "
                      "pipeline…", highlight=False)
            quiet = record_and_score(settings, None, rate, timedelta(hours=quiet_hours), seed=11,
                                     progress=status.update)
        except (RecordingError, ProcessorDiedError, StartupError) as exc:
            _fail(f"recording a run failed: {exc}")
        except Shutdown as stop:
            _fail(f"stopped ({stop}); everything the recording started is stopped", 130)
    per_day = len(quiet.false_alerts) / quiet.country_days
    console.print(f"false alerts on incident-free traffic: {len(quiet.false_alerts)} in {quiet_hours:g} h over 12 "
                  f"countries = {per_day:.2f} per country-day (target <= 1)", highlight=False)
    for region in quiet.false_alerts[:10]:
        console.print(f"  {region.opened_at:%H:%M:%S} {region.metric} {region.country} ({region.delta_pct:+.0f}%)",
                      highlight=False)


@app.command()
def loadgen(
    rate: Annotated[float, typer.Option(min=10, max=50_000, help="Events per second to hold.")] = 200,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    scenario: Annotated[Path | None, typer.Option(help="YAML file of scripted incidents.")] = None,
    ground_truth: Annotated[Path, typer.Option(help="JSONL file the incidents' ground truth is appended to.")] = Path(
        ".shoppulse/ground_truth.jsonl"),
    invalid_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of invalid events.")] = 0.0,
    duplicate_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of retried duplicates.")] = 0.0,
    late_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of events late beyond grace.")] = 0.0,
    out_of_order_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share out of order.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a reproducible stream.")] = None,
    replay: Annotated[float | None, typer.Option(min=0.001, max=366, help="Backfill this many past days.")] = None,
) -> None:
    """Send shoppers' events to the raw topic: live at a held rate, or replaying past days."""
    from datetime import UTC, datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from shoppulse.loadgen.generator import BadInput
    from shoppulse.loadgen.run import make_producer, new_stream, run_live, run_replay
    from shoppulse.loadgen.scenario import ScenarioError, load_scenario

    settings = _settings()
    setup_logging("WARNING")
    if invalid_ratio + duplicate_ratio > 1 or late_ratio + out_of_order_ratio > 1:
        _fail("the invalid and duplicate ratios, and the late and out-of-order ratios, must each add up to 1 at most",
              2)
    try:
        plan = load_scenario(scenario) if scenario else None
    except ScenarioError as exc:
        _fail(str(exc), 2)
    bad = BadInput(invalid_ratio, duplicate_ratio, late_ratio, out_of_order_ratio)
    days = replay or 0.0
    now = datetime.now(UTC)
    run_start = now - timedelta(days=days)
    stream = new_stream(rate, plan, run_start, ground_truth, bad, seed)
    producer = make_producer(settings.kafka_bootstrap)
    _on_signal_raise_shutdown()
    try:
        if replay:
            with Progress(TextColumn("replaying {task.fields[days]} day(s)"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%  {task.fields[sent]:,} events"),
                          TimeRemainingColumn(), console=err) as bar:
                task = bar.add_task("replay", total=1.0, days=days, sent=0)
                sent = run_replay(producer, stream, rate, run_start, now,
                                  report=lambda f, n: bar.update(task, completed=f, sent=n))
            console.print(f"replayed {sent:,} events over {days} day(s)")
            return
        final = run_live(producer, stream, rate, duration_s=duration, count=count,
                         report=lambda p: err.print(
                             f"sent {p.sent:,} events in {p.elapsed_s:.0f} s, {p.rate_last_s:,.0f}/s "
                             f"(target {p.target_rate:,.0f}/s)", highlight=False))
    except (Shutdown, KeyboardInterrupt):
        producer.flush()
        return
    achieved = final.sent / final.elapsed_s if final.elapsed_s else 0.0
    console.print(f"sent {final.sent:,} events in {final.elapsed_s:.1f} s: achieved {achieved:,.0f} events/s "
                  f"(target {rate:,.0f}/s); valid {stream.tally.valid:,}, invalid {stream.tally.invalid_total:,}, "
                  f"duplicates {stream.tally.duplicates:,}", highlight=False)


def _per_event(cpu_us: dict[str, float]) -> str:
    """Each process's CPU µs per event, largest first."""
    return ", ".join(f"{name} {us:.0f}" for name, us in sorted(cpu_us.items(), key=lambda item: -item[1]))


@bench_app.command("loadgen")
def bench_loadgen(
    rates: Annotated[list[float], typer.Option("--rate", min=10, max=50_000, help="Targets to hold.")] = [  # noqa: B006
        5000, 50000],
    seconds: Annotated[float, typer.Option(min=1, help="How long to hold each target.")] = 20,
) -> None:
    """The rate the load generator achieves at each target, into a real Kafka broker."""
    from shoppulse.bench.loadgen import measure
    from shoppulse.local.scratch import scratch_broker

    settings = _settings()
    setup_logging("WARNING")
    with scratch_broker(settings) as bootstrap:
        results, ceiling = measure(bootstrap, rates, seconds, report=lambda line: err.print(line, highlight=False))
    for result in results:
        console.print(f"target {result.target:>8,.0f} events/s  achieved {result.achieved:>8,.0f} events/s "
                      f"({result.achieved / result.target:.0%}, {result.sent:,} events in {result.seconds:.1f} s)",
                      highlight=False)
    console.print(f"generator ceiling (no Kafka, one core): {ceiling:,.0f} events/s", highlight=False)


def _drain(measure: Callable[..., DrainResultT], events: int, seconds: float) -> DrainResultT:
    """Run one backlog benchmark (``bench ingest``, ``bench aggregate``, ``bench floor``): its result,
    or a clear failure when the processor died or the run was stopped."""
    from shoppulse.local.scratch import ProcessorDiedError

    settings = _settings()
    setup_logging("WARNING")
    _on_signal_raise_shutdown()  # SIGTERM unwinds through measure(), which stops every process it started
    try:
        result = measure(settings, events, seconds, report=lambda line: err.print(line, highlight=False))
    except ProcessorDiedError as exc:
        _fail(str(exc))
    except (Shutdown, KeyboardInterrupt):
        _fail("stopped before the benchmark finished: no figures")
    if not result.measured:
        _fail(f"the processor got through all {events:,} events before it could be measured: give it a larger "
              "backlog (--events)")
    return result


@bench_app.command("ingest")
def bench_ingest(
    events: Annotated[int, typer.Option(min=50_000, max=5_000_000, help="Events in the backlog.")] = 400_000,
    seconds: Annotated[float, typer.Option(min=5, help="How long to measure ingestion for.")] = 40,
) -> None:
    """Ingestion alone draining a backlog (validation, de-duplication, clean and dead-letter topics),
    beside a bare consumer of the same events."""
    from shoppulse.bench.ingest import measure

    result = _drain(measure, events, seconds)
    console.print(f"ingestion: {result.per_s:,.0f} events/s ({result.measured:,.0f} events in {result.seconds:.0f} s "
                  f"of a {result.events:,}-event backlog); bare consumer ceiling {result.ceiling_per_s:,.0f} events/s; "
                  f"ingestion / ceiling = {result.per_s / result.ceiling_per_s if result.ceiling_per_s else 0:.3f}",
                  highlight=False)
    console.print(f"CPU µs per event: {_per_event(result.cpu_us_per_event())}", highlight=False)


@bench_app.command("aggregate")
def bench_aggregate(
    events: Annotated[int, typer.Option(min=50_000, max=5_000_000, help="Clean events in the backlog.")] = 400_000,
    seconds: Annotated[float, typer.Option(min=5, help="How long to measure the aggregation for.")] = 30,
) -> None:
    """The aggregation alone draining a backlog of clean events (windows, sessions, ClickHouse sink)."""
    from shoppulse.bench.aggregate import measure

    result = _drain(measure, events, seconds)
    console.print(f"aggregation: {result.per_s:,.0f} events/s ({result.measured:,.0f} events in "
                  f"{result.seconds:.0f} s of a {result.events:,}-event backlog)", highlight=False)
    console.print(f"CPU µs per event: {_per_event(result.cpu_us_per_event())}", highlight=False)


@bench_app.command("floor")
def bench_floor(
    events: Annotated[int, typer.Option(min=50_000, max=5_000_000, help="Raw events in the backlog.")] = 300_000,
    seconds: Annotated[float, typer.Option(min=5, help="How long to wait for the copy to go idle.")] = 60,
    rate: Annotated[float, typer.Option(min=10, help="The rate to work out the cores for.")] = 50_000,
) -> None:
    """The least CPU per event of one exactly-once Quix Streams hop here: an application built like
    the processors that only copies each raw event to another topic, draining a backlog."""
    from shoppulse.bench.floor import COPY_APP, CopyStalledError, measure

    try:
        result = _drain(measure, events, seconds)
    except CopyStalledError as exc:
        _fail(str(exc))
    per_event = result.cpu_us_per_event()
    hop = per_event.get(COPY_APP, 0.0) + per_event.get("broker", 0.0)
    console.print(f"copy: {result.per_s:,.0f} events/s ({result.measured:,.0f} events in {result.seconds:.1f} s of a "
                  f"{result.events:,}-event backlog)", highlight=False)
    console.print(f"CPU µs per event: {_per_event(per_event)}", highlight=False)
    console.print(f"{rate:,.0f} events/s through the pipeline's two such hops (ingestion, aggregation) need at least "
                  f"{2 * rate * hop / 1e6:.1f} cores for the copying alone, of the {os.cpu_count()} here",
                  highlight=False)


@bench_app.command("pipeline")
def bench_pipeline(
    rate: Annotated[float, typer.Option(min=10, max=50_000, help="Events/s the load generator holds.")] = 5000,
    seconds: Annotated[float, typer.Option(min=10, help="How long to hold it.")] = 60,
) -> None:
    """Events/s through ingestion + aggregation + sink, lag and RSS over time, latency, and the ceiling."""
    from shoppulse.bench.pipeline import LATENCY_POLL_S, SAMPLE_EVERY_S, WARM_UP_S, measure, percentile

    settings = _settings()
    setup_logging("WARNING")
    _on_signal_raise_shutdown()  # SIGTERM unwinds through measure(), which stops every process it started
    try:
        result = measure(settings, rate, seconds, report=lambda line: err.print(line, highlight=False))
    except (Shutdown, KeyboardInterrupt):
        _fail("stopped before the benchmark finished: no figures")
    load = result.during_load
    first, last = load[len(load) // 3], load[-1]
    console.print(f"load: {result.sent:,} events in {result.seconds:.0f} s "
                  f"({result.sent / result.seconds:,.0f}/s, target {rate:,.0f}/s)", highlight=False)
    caught = f"caught up {result.caught_up_s:.0f} s after the start" if result.caught_up_s else "never caught up"
    console.print(f"through ingestion + aggregation + sink: {result.sustained_per_s:,.0f} events/s ({caught}); "
                  f"lag during the load {first.lag} at {first.elapsed_s:.0f} s -> {last.lag} at {last.elapsed_s:.0f} s",
                  highlight=False)
    latency = result.latency
    for table in latency.tables:
        steady, whole = latency.steady[table], latency.whole(table)
        console.print(f"event -> queryable in {table} (send -> counted, per event, "
                      f"within {LATENCY_POLL_S[table]} s): "
                      f"p50 {steady.percentile(0.5):.2f} s, p95 {steady.percentile(0.95):.2f} s, "
                      f"max {steady.max:.2f} s over {steady.count:,} events after {WARM_UP_S} s of warm-up; "
                      f"whole load p95 {whole.percentile(0.95):.2f} s, {latency.not_counted(table):,} never counted",
                      highlight=False)
    console.print(f"RSS MB: {result.samples[0].rss_mb} at start -> {result.samples[-1].rss_mb} at end",
                  highlight=False)
    if result.sent:
        console.print("CPU seconds until caught up (µs per event): " + ", ".join(
            f"{name} {seconds:,.0f} ({seconds / result.sent * 1e6:,.0f})"
            for name, seconds in sorted(result.cpu_s.items(), key=lambda item: -item[1])), highlight=False)
    busy = sorted(sum(s.cpu_cores.values()) for s in load)
    if busy:
        console.print(f"CPU cores busy during the load (all processes, per {SAMPLE_EVERY_S:.0f} s sample): "
                      f"p50 {percentile(busy, 0.5):.2f}, p95 {percentile(busy, 0.95):.2f}, max {busy[-1]:.2f} "
                      f"of {os.cpu_count()}", highlight=False)
    ceiling = result.ceiling_per_s
    console.print(f"bare consumer ceiling (read + parse only): {ceiling:,.0f} events/s; pipeline / ceiling = "
                  f"{result.sustained_per_s / ceiling if ceiling else float('nan'):.2f}", highlight=False)


@bench_app.command("dashboards")
def bench_dashboards(
    days: Annotated[float, typer.Option(min=0.01, max=31, help="Days of history to load.")] = 7,
    repeat: Annotated[int, typer.Option(min=1, max=1000, help="Runs of each query and of each refresh.")] = 20,
) -> None:
    """Each panel query's latency (p50/p95) and the whole Store live refresh on a week of 5,000 events/s history."""
    from shoppulse.bench.dashboards import measure
    from shoppulse.dashboards.model import dashboard_paths

    settings = _settings()
    setup_logging("WARNING")
    try:
        result = measure(settings, dashboard_paths(), days, repeat,
                         report=lambda line: err.print(line, highlight=False))
    except RuntimeError as exc:
        _fail(str(exc))
    console.print(f"history: {result.history_rows:,} metrics_1s rows ({days:g} days at 5,000 events/s), "
                  f"loaded in {result.load_seconds:.0f} s", highlight=False)
    for timing in result.panels:
        console.print(f"{timing.dashboard[:28]:28} {timing.panel[:34]:34} {timing.ref}  p50 {timing.p50_ms:7.1f} ms"
                      f"  p95 {timing.p95_ms:7.1f} ms  ({timing.rows} rows)", highlight=False)
    console.print(f"Store live whole refresh ({result.refresh_queries} queries, 6 in flight): "
                  f"p50 {result.refresh_p50_ms:.0f} ms, p95 {result.refresh_p95_ms:.0f} ms (goal < 500 ms)",
                  highlight=False)


@bench_app.command("annotate")
def bench_annotate(
    outages: Annotated[int, typer.Option(min=1, max=20, help="Outages to play, one after another.")] = 3,
) -> None:
    """From an anomaly's onset to its Grafana annotation, through the sidecar process, per outage."""
    from shoppulse.bench.annotate import measure

    settings = _settings()
    setup_logging("WARNING")
    try:
        timings = measure(settings, outages, report=lambda line: err.print(line, highlight=False))
    except RuntimeError as exc:
        _fail(str(exc))
    for t in timings:
        console.print(f"outage in {t.country}: first outage second queryable -> annotation "
                      f"{t.queryable_to_annotation_s:.1f} s, region opened -> annotation "
                      f"{t.detection_to_annotation_s:.2f} s", highlight=False)
    worst = max(t.detection_to_annotation_s for t in timings)
    console.print(f"region opened -> annotation: worst {worst:.2f} s over {len(timings)} outages (goal <= 5 s)",
                  highlight=False)


@events_app.command("schemas")
def events_schemas() -> None:
    """Regenerate the JSON Schema files in docs/schemas/ from the event models."""
    from shoppulse.events.catalogue import write_schemas

    for path in write_schemas():
        console.print(f"wrote {path}", highlight=False)


def main() -> None:
    """The console command: a failure no command foresaw is still one line on stderr and exit code 1
    (SHOPPULSE_DEBUG=1 shows its traceback), with every secret of the environment hidden."""
    try:
        app(prog_name="shoppulse")
    except Exception as exc:
        if os.environ.get("SHOPPULSE_DEBUG"):
            raise
        text = " ".join(str(exc).split())[:400] or "no message"
        err.print(f"error: {type(exc).__name__}: {redact(text, env_secrets())} "
                  "(set SHOPPULSE_DEBUG=1 for the traceback)", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
