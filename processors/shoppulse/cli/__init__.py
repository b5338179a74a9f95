"""The ``shoppulse`` command: the command families wired together. Each command calls one function
elsewhere; each family's commands are in their own module."""

from __future__ import annotations

import os
import sys

# The families register their commands on the app as they are imported, in this order of the help.
from shoppulse.cli import stack  # isort: skip
from shoppulse.cli import processors  # noqa: F401  # isort: skip
from shoppulse.cli import bench  # isort: skip
from shoppulse.cli import detection  # noqa: F401  # isort: skip
from shoppulse.cli.actions import actions_app
from shoppulse.cli.alerts import alerts_app
from shoppulse.cli.common import app, err
from shoppulse.cli.dashboards import dashboards_app
from shoppulse.redact import env_secrets, redact

# The modules of the optional extras (pyproject.toml) and the extra that brings each.
OPTIONAL_EXTRAS = {"chdb": "local", "matplotlib": "previews", "openai": "llm"}

app.add_typer(stack.db_app, name="db")
app.add_typer(stack.clickhouse_app, name="clickhouse")
app.add_typer(stack.kafka_app, name="kafka")
app.add_typer(stack.events_app, name="events")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(alerts_app, name="alerts")
app.add_typer(actions_app, name="actions")
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    """The console command: a failure no command foresaw is still one line on stderr and exit code 1
    (SHOPPULSE_DEBUG=1 shows its traceback), with every secret of the environment hidden."""
    try:
        app(prog_name="shoppulse")
    except Exception as exc:
        if os.environ.get("SHOPPULSE_DEBUG"):
            raise
        missing = (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""
        extra = OPTIONAL_EXTRAS.get(missing.partition(".")[0])
        if extra is not None:
            err.print(f"error: this command needs {missing}, which comes with the {extra} extra: "
                      f"pip install 'shoppulse[{extra}]'", highlight=False, markup=False, soft_wrap=True)
            sys.exit(2)
        text = " ".join(str(exc).split())[:400] or "no message"
        err.print(f"error: {type(exc).__name__}: {redact(text, env_secrets())} "
                  "(set SHOPPULSE_DEBUG=1 for the traceback)", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
