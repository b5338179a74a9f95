"""``shoppulse ingest``, ``aggregate``, ``sidecar`` and ``detect``: the runtime processors, one per command."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from shoppulse.cli.common import (
    app,
    err,
    fail,
    run_processor,
    stop_event_on_signals,
)


@app.command()
def ingest() -> None:
    """Run the ingestion processor: raw events -> clean events and dead letters."""
    from shoppulse.events.pii import MissingPiiKeyError
    from shoppulse.ingest.app import run

    run_processor(run, MissingPiiKeyError)


@app.command()
def aggregate() -> None:
    """Run the aggregation processor: clean events -> windowed metrics, sessions, late events in ClickHouse."""
    from shoppulse.aggregate.app import run

    run_processor(run)


@app.command()
def sidecar(
    warm_up_minutes: Annotated[float, typer.Option(min=0, max=1440,
                                                   help="Minutes of history replayed at start.")] = 30,
    calendar: Annotated[Path | None, typer.Option(help="The known events (holidays, campaigns) whose countries' "
                                                       "volumes are not judged while they last; default: "
                                                       "detection/calendar.yaml of the as-code home.")] = None,
) -> None:
    """The anomaly sidecar: detect on the final aggregates, explain, write anomalies and Grafana annotations."""
    from shoppulse.sidecar.main import run

    run_processor(lambda settings: run(settings, stop_event_on_signals(), timedelta(minutes=warm_up_minutes),
                                       calendar))


MAX_ORDER_WARNINGS = 20  # a file with its clock set back warns line by line; thousands would bury the summary


@app.command()
def detect(
    csv_file: Annotated[Path, typer.Option("--csv", help="A CSV with timestamp,value (and optional label) columns.")],
    out: Annotated[str | None, typer.Option(help="Where the scored CSV goes ('-' or nothing: stdout).")] = None,
    sort: Annotated[bool, typer.Option("--sort", help="Order the rows by time first (else they are scored in "
                                                      "file order, with a warning for each timestamp out of "
                                                      "order).")] = False,
) -> None:
    """Run the sidecar's detectors over any time series: a score in [0, 1] and an anomaly flag per row."""
    from shoppulse.output_file import replaced_on_success
    from shoppulse.sidecar.csv_detect import CsvInputError, score_file

    if not csv_file.is_file():
        fail(f"no such file: {csv_file}", 2)
    warnings: list[str] = []
    target = None if out in (None, "-") else Path(out)
    try:
        if target is None:
            report = score_file(csv_file, sys.stdout, sort, warnings.append)
        else:
            with replaced_on_success(target) as handle:
                report = score_file(csv_file, handle, sort, warnings.append)
    except CsvInputError as exc:
        fail(f"{csv_file}: {exc}", 2)
    except UnicodeDecodeError:
        fail(f"{csv_file}: not a UTF-8 text file", 2)
    except OSError as exc:
        where = target if target is not None and exc.filename != str(csv_file) else csv_file
        fail(f"cannot {'write' if where == target else 'read'} {where}: {exc.strerror or exc}", 1)
    for warning in warnings[:MAX_ORDER_WARNINGS]:
        err.print(f"warning: {csv_file}: {warning}", highlight=False, markup=False, soft_wrap=True)
    if len(warnings) > MAX_ORDER_WARNINGS:
        err.print(f"warning: {csv_file}: {len(warnings) - MAX_ORDER_WARNINGS:,} more timestamps out of order",
                  highlight=False)
    summary = f"{report.points:,} points, {report.flagged:,} flagged as anomalous"
    details = [f"{n:,} {what}" for n, what in ((report.missing, "missing values"),
                                               (report.out_of_order, "timestamps out of order"),
                                               (report.gaps, "gaps")) if n]
    if details:
        summary += f" ({', '.join(details)})"
    if report.precision is not None or report.recall is not None:
        precision = "-" if report.precision is None else f"{report.precision:.2f}"
        recall = "-" if report.recall is None else f"{report.recall:.2f}"
        summary += (f"; against the labels: point precision {precision}, recall {recall}; "
                    f"{report.events_detected} of {report.events} labelled events detected")
    err.print(summary, highlight=False)


