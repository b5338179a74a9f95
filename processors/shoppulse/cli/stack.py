"""``shoppulse up``, ``db``, ``clickhouse``, ``kafka`` and ``events``: the local stack, the schema, the broker,
the event contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoppulse.cli.common import (
    Shutdown,
    app,
    console,
    err,
    fail,
    on_signal_raise_shutdown,
    settings_or_fail,
    stop_event_on_signals,
)
from shoppulse.logs import setup_logging

db_app = typer.Typer(help="ClickHouse schema.", no_args_is_help=True)
clickhouse_app = typer.Typer(help="The local ClickHouse endpoint (embedded engine).", no_args_is_help=True)
kafka_app = typer.Typer(help="The local Kafka broker and topics.", no_args_is_help=True)
events_app = typer.Typer(help="The event contract.", no_args_is_help=True)


@app.command()
def up(
    prometheus: Annotated[bool, typer.Option(help="Start Debian's Prometheus when it is installed.")] = True,
    live: Annotated[bool | None, typer.Option(help="Live terminal view (default when stdout is a terminal).")] = None,
    pipeline: Annotated[bool, typer.Option(help="Run the pipeline processors (ingestion).")] = True,
    loadgen: Annotated[bool, typer.Option(help="Run the load generator.")] = True,
    rate: Annotated[float, typer.Option(min=10, max=50_000, help="Load generator events/s.")] = 300,
    scenario: Annotated[Path | None, typer.Option(
        help="Incidents the load generator plays (default: scenarios/default.yaml).")] = None,
) -> None:
    """Start the local stack (Kafka, ClickHouse endpoint, Prometheus, ingestion, load generator), live."""
    from shoppulse.devstack.live_view import watch
    from shoppulse.devstack.pipeline import default_scenario, pipeline_processors
    from shoppulse.devstack.process import StartupError
    from shoppulse.devstack.stack import LocalStack
    from shoppulse.loadgen.scenario import scenario_file

    settings = settings_or_fail()
    setup_logging("WARNING")
    scenario = scenario_file(scenario) if scenario else default_scenario()
    if pipeline and loadgen and not scenario.is_file():
        fail(f"scenario file {scenario} does not exist: pass --scenario PATH (or default, all-incidents)", 2)
    processors = pipeline_processors(settings, rate if loadgen else None, scenario.resolve()) if pipeline else []
    stack = LocalStack(settings, with_prometheus=prometheus, processors=processors)
    on_signal_raise_shutdown()
    try:
        stack.start(report=lambda line: console.print(f"[dim]·[/] {line}", highlight=False))
        console.print("[bold green]stack is up[/]", highlight=False)
        watch(stack, console, live if live is not None else console.is_terminal, should_stop=lambda: False)
    except StartupError as exc:
        fail(str(exc))
    except (Shutdown, KeyboardInterrupt):
        console.print("stopping…")
    finally:
        stack.stop()


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the pending ClickHouse migrations from clickhouse/ in order."""
    from shoppulse import clickhouse
    from shoppulse.sink.migrations import MigrationError, ensure_reader_user, migrate

    settings = settings_or_fail()
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
        fail(str(exc))
    except Exception as exc:  # connection errors and the like: say what and where
        fail(f"cannot migrate ClickHouse at {settings.clickhouse_http_url}: {exc}")
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
    from shoppulse.devstack.clickhouse_server import serve
    from shoppulse.devstack.process import StartupError

    settings = settings_or_fail()
    setup_logging()
    stop = stop_event_on_signals()
    try:
        readers = ({settings.clickhouse_grafana_user: settings.clickhouse_grafana_password}
                   if settings.clickhouse_grafana_password else {})
        serve(data_dir, host, port, settings.clickhouse_user, settings.clickhouse_password, stop=stop,
              readers=readers)
    except StartupError as exc:
        fail(str(exc))


@kafka_app.command("resolve")
def kafka_resolve() -> None:
    """Fetch the Apache Kafka jars from Maven Central into the cache (once)."""
    from shoppulse.devstack.kafka import resolve_kafka
    from shoppulse.devstack.process import StartupError

    settings = settings_or_fail()
    setup_logging()
    try:
        with console.status(f"resolving Apache Kafka {settings.kafka_version} from Maven Central…"):
            libs = resolve_kafka(settings.kafka_version, settings.cache_dir)
    except StartupError as exc:
        fail(str(exc))
    err.print(f"Kafka {settings.kafka_version}: {len(list(libs.glob('*.jar')))} jars in {libs}", highlight=False)


@kafka_app.command("topics")
def kafka_topics() -> None:
    """Create the pipeline's topics on the configured broker (existing ones are kept)."""
    from shoppulse.streaming import ProcessorStartError, require_broker
    from shoppulse.topics import create_topics

    settings = settings_or_fail()
    setup_logging()
    try:
        require_broker(settings.kafka_bootstrap, settings.kafka_connect_timeout_s)
        created = create_topics(settings.kafka_bootstrap, settings.topic_partitions, settings.topic_replication)
    except (ProcessorStartError, RuntimeError) as exc:
        fail(str(exc))
    console.print(f"{len(created)} topic(s) created on {settings.kafka_bootstrap}")


@events_app.command("schemas")
def events_schemas() -> None:
    """Regenerate the JSON Schema files in docs/schemas/ from the event models."""
    from shoppulse.events.catalogue import write_schemas

    for path in write_schemas():
        console.print(f"wrote {path}", highlight=False)


