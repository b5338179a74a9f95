"""The `shoppulse` command tree; each command calls one function elsewhere."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from shoppulse.logs import setup_logging
from shoppulse.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="shoppulse: real-time e-commerce observability on Kafka, ClickHouse and Grafana.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="ClickHouse schema.", no_args_is_help=True)
clickhouse_app = typer.Typer(help="The local ClickHouse endpoint (embedded engine).", no_args_is_help=True)
kafka_app = typer.Typer(help="The local Kafka broker and topics.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clickhouse_app, name="clickhouse")
events_app = typer.Typer(help="The event contract.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(events_app, name="events")

console = Console()
err = Console(stderr=True)


class Shutdown(BaseException):
    """SIGTERM or SIGINT asked the process to stop."""


def _fail(message: str, code: int = 1) -> NoReturn:
    for line in str(message).splitlines():
        err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc), 2)


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
) -> None:
    """Start the local stack (Kafka, ClickHouse endpoint, Prometheus) and watch it live."""
    from shoppulse.local.live_view import watch
    from shoppulse.local.process import StartupError
    from shoppulse.local.stack import LocalStack

    settings = _settings()
    setup_logging("WARNING")
    stack = LocalStack(settings, with_prometheus=prometheus)
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
    from shoppulse.sink.migrations import MigrationError, migrate

    settings = _settings()
    setup_logging()
    try:
        applied = migrate(lambda database: clickhouse.connect(settings, database), settings.clickhouse_database,
                          settings.migrations_dir)
    except MigrationError as exc:
        _fail(str(exc))
    except Exception as exc:  # connection errors and the like: say what and where
        _fail(f"cannot migrate ClickHouse at {settings.clickhouse_http_url}: {exc}")
    console.print(f"{len(applied)} migration(s) applied" + "".join(f"\n  {m.name}" for m in applied))


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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve(data_dir, host, port, settings.clickhouse_user, settings.clickhouse_password, stop=stop)
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
    from shoppulse.topics import create_topics

    settings = _settings()
    setup_logging()
    created = create_topics(settings.kafka_bootstrap, settings.topic_partitions, settings.topic_replication)
    console.print(f"{len(created)} topic(s) created on {settings.kafka_bootstrap}")


@events_app.command("schemas")
def events_schemas() -> None:
    """Regenerate the JSON Schema files in docs/schemas/ from the event models."""
    from shoppulse.events.catalogue import write_schemas

    for path in write_schemas():
        console.print(f"wrote {path}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="shoppulse")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
