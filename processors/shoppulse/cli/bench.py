"""``shoppulse bench …``, ``score`` and ``loadgen``: benchmarks, detection scoring and the load generator
(the development stack; never run against production traffic)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from shoppulse.cli.actions import action_policies_or_fail
from shoppulse.cli.common import (
    Shutdown,
    app,
    console,
    err,
    fail,
    on_signal_raise_shutdown,
    settings_or_fail,
)
from shoppulse.logs import setup_logging
from shoppulse.project_files import scenarios_dir
from shoppulse.topics import DAY_MS, HISTORY_DAYS, HISTORY_RETENTION_MS

if TYPE_CHECKING:
    from shoppulse.bench.drain import DrainResult

bench_app = typer.Typer(help="Benchmarks (measured, never asserted in tests).", no_args_is_help=True)
DrainResultT = TypeVar("DrainResultT", bound="DrainResult")


@app.command()
def score(
    scenarios: Annotated[list[Path] | None, typer.Option(
        "--scenario", help="Scenario files (default: scenarios/default.yaml, all-incidents.yaml, "
                           "real-world.yaml, known-events.yaml).")] = None,
    rate: Annotated[float, typer.Option(min=20, max=2000, help="Events/s of the recorded runs.")] = 150,
    quiet_hours: Annotated[float, typer.Option(min=0.5, max=48, help="Hours of incident-free traffic.")] = 6,
    quiet_seed: Annotated[int, typer.Option(min=0, help="The load generator's seed for the incident-free "
                                                        "traffic.")] = 11,
    quiet_from: Annotated[datetime | None, typer.Option(
        help="The shop's time (UTC) the incident-free traffic starts at: its hours of the week set the "
             "traffic's shape (default: a Monday noon).")] = None,
    quiet_only: Annotated[bool, typer.Option(help="Score the incident-free traffic only.")] = False,
) -> None:
    """Score the sidecar's detection on the load generator's incidents and real-world phenomena, each
    scenario and the incident-free traffic recorded through a throwaway pipeline (Kafka, ingest,
    aggregate, the sidecar, ClickHouse): detected, delay, false alerts per country-day."""
    from datetime import timedelta

    from shoppulse.bench.detection import PLAYS, quiet_lines, scenario_lines
    from shoppulse.bench.detection import run as record_and_score
    from shoppulse.devstack.process import StartupError
    from shoppulse.devstack.recording import RecordingError
    from shoppulse.devstack.scratch import ProcessorDiedError
    from shoppulse.loadgen.scenario import ScenarioError, load_scenario

    settings = settings_or_fail()
    policies = action_policies_or_fail()
    setup_logging("WARNING")
    on_signal_raise_shutdown()  # SIGTERM unwinds through the recordings, which stop what they started
    files = [] if quiet_only else scenarios or [scenarios_dir() / name for name in (
        "default.yaml", "all-incidents.yaml", "real-world.yaml", "known-events.yaml")]
    try:
        loaded = [load_scenario(path) for path in files]
    except ScenarioError as exc:
        fail(str(exc), 2)
    with err.status("starting…") as status:
        try:
            for scenario in loaded:
                last = scenario.length.total_seconds()
                err.print(f"scenario {scenario.name}: recording {last / 60 + 30:.0f} minutes at {rate:g} events/s "
                          "through the pipeline…", highlight=False)
                result = record_and_score(settings, scenario, rate, timedelta(minutes=10), progress=status.update,
                                          policies=policies)
                for line in scenario_lines(scenario.name, result):
                    console.print(line, highlight=False, markup=False)
            err.print(f"incident-free traffic: recording {quiet_hours:g} h at {rate:g} events/s through the "
                      "pipeline…", highlight=False)
            quiet = record_and_score(settings, None, rate, timedelta(hours=quiet_hours), seed=quiet_seed,
                                     progress=status.update, policies=policies,
                                     plays=(quiet_from or PLAYS).replace(tzinfo=UTC))
        except (RecordingError, ProcessorDiedError, StartupError) as exc:
            fail(f"recording a run failed: {exc}")
        except Shutdown as stop:
            fail(f"stopped ({stop}); everything the recording started is stopped", 130)
    for line in quiet_lines(quiet, quiet_hours):
        console.print(line, highlight=False, markup=False)


@app.command()
def loadgen(
    rate: Annotated[float, typer.Option(min=10, max=50_000, help="Events per second to hold.")] = 200,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    scenario: Annotated[Path | None, typer.Option(help="YAML file of scripted incidents, or the name of a shipped "
                                                  "one (default, all-incidents).")] = None,
    ground_truth: Annotated[Path, typer.Option(help="JSONL file the incidents' ground truth is appended to.")] = Path(
        ".shoppulse/ground_truth.jsonl"),
    invalid_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of invalid events.")] = 0.0,
    duplicate_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of retried duplicates.")] = 0.0,
    late_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of events late beyond grace.")] = 0.0,
    out_of_order_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share out of order.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a reproducible stream.")] = None,
    replay: Annotated[float | None, typer.Option(min=0.001, max=366, help="Backfill this many past days "
                                                                     f"(at most {HISTORY_DAYS}).")] = None,
) -> None:
    """Send shoppers' events to the raw topic: live at a held rate, or replaying past days."""
    from datetime import UTC, datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from shoppulse.loadgen.generator import BadInput
    from shoppulse.loadgen.run import make_producer, new_stream, run_live, run_replay
    from shoppulse.loadgen.scenario import ScenarioError, load_scenario

    settings = settings_or_fail()
    setup_logging("WARNING")
    if invalid_ratio + duplicate_ratio > 1 or late_ratio + out_of_order_ratio > 1:
        fail("the invalid and duplicate ratios, and the late and out-of-order ratios, must each add up to 1 at most",
              2)
    if replay and replay > HISTORY_DAYS:
        fail(f"--replay {replay:g}: the raw and clean topics keep {HISTORY_RETENTION_MS / DAY_MS:g} days (a day more "
             "than the history, for the replay to be sent and read), so the broker would delete the oldest replayed "
             f"events while the pipeline reads them (and metrics_1s keeps as long); replay at most {HISTORY_DAYS} "
             "days", 2)
    try:
        plan = load_scenario(scenario) if scenario else None
    except ScenarioError as exc:
        fail(str(exc), 2)
    bad = BadInput(invalid_ratio, duplicate_ratio, late_ratio, out_of_order_ratio)
    days = replay or 0.0
    now = datetime.now(UTC)
    run_start = now - timedelta(days=days)
    stream = new_stream(rate, plan, run_start, ground_truth, bad, seed, seasonal=bool(replay))
    producer = make_producer(settings.kafka_bootstrap)
    on_signal_raise_shutdown()
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
    from shoppulse.devstack.scratch import scratch_broker

    settings = settings_or_fail()
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
    from shoppulse.devstack.scratch import ProcessorDiedError

    settings = settings_or_fail()
    setup_logging("WARNING")
    on_signal_raise_shutdown()  # SIGTERM unwinds through measure(), which stops every process it started
    try:
        result = measure(settings, events, seconds, report=lambda line: err.print(line, highlight=False))
    except ProcessorDiedError as exc:
        fail(str(exc))
    except (Shutdown, KeyboardInterrupt):
        fail("stopped before the benchmark finished: no figures")
    if not result.measured:
        fail(f"the processor got through all {events:,} events before it could be measured: give it a larger "
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
        fail(str(exc))
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

    settings = settings_or_fail()
    setup_logging("WARNING")
    on_signal_raise_shutdown()  # SIGTERM unwinds through measure(), which stops every process it started
    try:
        result = measure(settings, rate, seconds, report=lambda line: err.print(line, highlight=False))
    except (Shutdown, KeyboardInterrupt):
        fail("stopped before the benchmark finished: no figures")
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
    from shoppulse.grafana.model import dashboard_paths

    settings = settings_or_fail()
    setup_logging("WARNING")
    try:
        result = measure(settings, dashboard_paths(), days, repeat,
                         report=lambda line: err.print(line, highlight=False))
    except RuntimeError as exc:
        fail(str(exc))
    console.print(f"history: {result.history_rows:,} metrics_1s rows ({days:g} days at 5,000 events/s), "
                  f"loaded in {result.load_seconds:.0f} s", highlight=False)
    for timing in result.panels:
        console.print(f"{timing.dashboard[:28]:28} {timing.panel[:34]:34} {timing.ref}  p50 {timing.p50_ms:7.1f} ms"
                      f"  p95 {timing.p95_ms:7.1f} ms  ({timing.rows} rows)", highlight=False)
    console.print(f"Store live whole refresh ({result.refresh_queries} queries, 6 in flight): "
                  f"p50 {result.refresh_p50_ms:.0f} ms, p95 {result.refresh_p95_ms:.0f} ms (goal < 500 ms)",
                  highlight=False)


class OutageKind(StrEnum):
    """The outages `bench annotate` plays (``bench.annotate.OUTAGES``)."""

    payments = "payments"
    silent = "silent"


@bench_app.command("annotate")
def bench_annotate(
    outages: Annotated[int, typer.Option(min=1, max=20, help="Outages to play, one after another.")] = 3,
    kind: Annotated[OutageKind, typer.Option(
        help="payments: every payment of the country fails; silent: the country's shop sends nothing.")]
    = OutageKind.payments,
) -> None:
    """From an anomaly's onset to its Grafana annotation, through the sidecar process, per outage."""
    from shoppulse.bench.annotate import measure

    settings = settings_or_fail()
    setup_logging("WARNING")
    try:
        timings = measure(settings, outages, kind.value, report=lambda line: err.print(line, highlight=False))
    except RuntimeError as exc:
        fail(str(exc))
    for t in timings:
        console.print(f"outage in {t.country}: events -> {'provisional' if t.provisional else 'final'} region "
                      f"{t.event_to_region_s:.1f} s, region -> annotation {t.detection_to_annotation_s:.2f} s, "
                      f"events -> annotation {t.event_to_annotation_s:.1f} s", highlight=False)
    p95 = _p95([t.event_to_region_s for t in timings])
    worst = max(t.detection_to_annotation_s for t in timings)
    console.print(f"over {len(timings)} outages: events -> region p95 {p95:.1f} s (goal <= 5 s), "
                  f"region -> annotation worst {worst:.2f} s", highlight=False)


def _p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank (the worst of fewer than 20)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@bench_app.command("backtest")
def bench_backtest(
    hours: Annotated[float, typer.Option(min=0.5, max=24 * 15, help="Hours of history to replay (default: 2).")] = 2,
) -> None:
    """How long `shoppulse backtest` takes per day of history, over the demo history at the local stack's load."""
    from shoppulse.bench.backtest import measure

    settings = settings_or_fail()
    setup_logging("WARNING")
    with err.status("preparing…") as status:
        timing = measure(settings, hours, report=status.update)
    console.print(f"backtest over {timing.history / timedelta(hours=1):g} h of history ({timing.steps:,} steps of "
                  f"{timing.step_s} s, {timing.candidates} candidate sensitivities): replayed in "
                  f"{timing.replay_s:.1f} s, {timing.steps_per_s:,.0f} steps/s — {timing.minutes_per_day:.2f} min per "
                  f"day of history (loading it took {timing.load_s:.1f} s)", highlight=False)


@bench_app.command("series")
def bench_series(
    corpus: Annotated[Path | None, typer.Option(
        help="A folder of labelled timestamp,value,label CSVs (e.g. NAB's) (default: the generated corpus).")] = None,
    nab: Annotated[Path | None, typer.Option(
        help="A checkout of the Numenta Anomaly Benchmark (data/ and labels/combined_windows.json), or "
             "corpus/nab-sample.")] = None,
    write_corpus: Annotated[Path | None, typer.Option(
        help="Write the generated corpus into this folder (and score it).")] = None,
) -> None:
    """The sidecar's detectors over labelled series: windows found (rewarded for early), false regions
    per 1,000 points, per file and in all."""
    import tempfile

    from shoppulse.bench.real_series import score_folder, score_nab, totals
    from shoppulse.loadgen.series_corpus import write_corpus as generate

    if sum(option is not None for option in (corpus, nab, write_corpus)) > 1:
        fail("give one of --corpus (a folder to score), --nab (a NAB checkout) or --write-corpus (a folder to "
             "generate into)", 2)
    for given in (corpus, nab):
        if given is not None and not given.is_dir():
            fail(f"no such folder: {given}", 2)
    with tempfile.TemporaryDirectory(prefix="shoppulse-series-") as scratch:
        folder = corpus or nab or write_corpus or Path(scratch)
        if corpus is None and nab is None:
            try:
                generate(folder)
            except OSError as exc:
                fail(f"cannot write the corpus into {folder}: {exc.strerror or exc}", 1)
        with err.status("scoring…") as status:
            score = score_folder if nab is None else score_nab
            try:
                scores = score(folder, lambda name: status.update(f"scoring {name}…"))
            except ValueError as exc:  # CsvInputError among them
                fail(str(exc), 2)
    if not scores:
        fail(f"{folder} holds no .csv file" if nab is None else f"{folder / 'labels'} labels no data file", 2)
    for s in scores:
        console.print(f"{s.name:<38} {s.points:>7,} points  windows {s.found}/{s.windows} found  "
                      f"reward {s.reward:5.2f}  false regions {s.false_regions:>4} ({s.false_per_1000:.2f} per 1,000)",
                      highlight=False)
    t = totals(scores)
    console.print(f"all {len(scores)} series: {t.points:,} points; {t.found} of {t.windows} labelled windows found "
                  f"({t.recall:.0%}), reward {t.reward:.2f} of {t.windows}; {t.false_regions} false regions "
                  f"({t.false_per_1000:.2f} per 1,000 points)", highlight=False)
