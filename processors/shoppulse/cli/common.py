"""What every command family shares: the root command, the consoles, one way to fail, the settings
and signal handling. Each family's commands are in a module of their own; ``shoppulse.cli`` wires them."""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from shoppulse.redact import env_secrets, redact
from shoppulse.settings import Settings, SettingsError, load_settings

# quixstreams imports authlib's httpx integration, which warns about itself at import time; authlib
# installs an "always" filter for its warnings when imported, so ours has to be added after it.
with contextlib.suppress(ImportError):
    import authlib.deprecate  # noqa: F401
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

app = typer.Typer(help="shoppulse: real-time e-commerce observability on Kafka, ClickHouse and Grafana.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # progress lines stay whole in a log


class Shutdown(BaseException):
    """SIGTERM or SIGINT asked the process to stop."""



def fail(message: str, code: int = 1) -> NoReturn:
    for line in redact(str(message), env_secrets()).splitlines():
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def clickhouse_failed(url: str, exc: Exception) -> NoReturn:
    """A command that asked ClickHouse and got no answer: where (credentials hidden), what it said, what to check."""
    from shoppulse.redact import redact_url

    fail(f"ClickHouse at {redact_url(url)}: {str(exc).splitlines()[0][:300]}\n"
         "check the URL, and CLICKHOUSE_USER/CLICKHOUSE_PASSWORD for it")


def run_processor(run: Callable[[Settings], None], *refusals: type[Exception]) -> None:
    """A processor until SIGTERM/SIGINT; what keeps it from starting is one line."""
    from shoppulse.logs import setup_logging
    from shoppulse.streaming import ProcessorStartError

    settings = settings_or_fail()
    setup_logging()
    try:
        run(settings)
    except (ProcessorStartError, *refusals) as exc:  # type: ignore[misc]  # mypy reads no starred tuple of types
        fail(str(exc))


def settings_or_fail() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc), 2)


def stop_event_on_signals() -> threading.Event:
    """An event SIGTERM or SIGINT sets, for loops that stop in their own time."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def on_signal_raise_shutdown() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        # Stop once: a second Ctrl-C must not interrupt the orderly shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


