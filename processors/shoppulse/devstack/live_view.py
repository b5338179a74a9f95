"""The terminal view of `shoppulse up`: each component's health and address, refreshed live."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shoppulse import clickhouse
from shoppulse.devstack.pipeline import IngestRates, StoreKpis
from shoppulse.devstack.stack import LocalStack
from shoppulse.redact import redact_url

REFRESH_S = 1.0
HEALTH_EVERY_S = 2.0
HEARTBEAT_EVERY_S = 5.0
_STATE_STYLE = {"healthy": "bold green", "external": "bold cyan"}


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def render(stack: LocalStack, ingest: IngestRates | None = None, store: StoreKpis | None = None) -> Panel:
    table = Table(expand=True, header_style="bold")
    for column in ("component", "state", "address", "pid", "uptime", "restarts"):
        table.add_column(column)
    now = time.time()
    for c in stack.components:
        table.add_row(c.name, Text(c.state, style=_STATE_STYLE.get(c.state, "bold red")), c.address,
                      str(c.pid or "-"), _uptime(now - c.started_at), str(c.restarts) if c.restart else "")
    parts: list[Table | Text] = [table]
    if ingest is not None:
        parts.append(render_ingest(ingest))
    if store is not None:
        parts.append(render_store(store))
        parts.append(render_insights(store))
    s = stack.settings
    footer = Text(
        f"data: {stack.data_dir}   KAFKA_BOOTSTRAP_SERVERS={s.kafka_bootstrap}   "
        f"CLICKHOUSE_URL={redact_url(s.clickhouse_http_url)}\n"
        "Ctrl-C stops everything this command started.", style="dim")
    return Panel(Group(*parts, footer), title="shoppulse — local stack", border_style="blue")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_store(store: StoreKpis) -> Table:
    lag = ""
    if store.watermark is not None:
        lag = f" — data up to {store.watermark:%H:%M:%S} UTC, {time.time() - store.watermark.timestamp():.0f} s behind"
    table = Table(title=f"store, last minute{lag}{'  ' + store.error if store.error else ''}", expand=True,
                  header_style="bold")
    for column in ("country", "orders/s", "revenue/min (USD)", "conversion (15 min)", "abandonment (15 min)"):
        table.add_column(column, justify="right")
    for country, orders, revenue, conversion, abandonment in store.rows:
        table.add_row(country, f"{orders:.2f}", f"{revenue:,.2f}", _pct(conversion), _pct(abandonment))
    return table


_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def render_insights(store: StoreKpis) -> Text:
    text = Text("newest insights (anomaly sidecar)\n", style="bold")
    if not store.insights:
        text.append("none yet: the sidecar writes one when it opens an anomaly region\n", style="dim")
    for created, severity, insight in store.insights:
        text.append(f"{created:%H:%M:%S} ", style="dim")
        text.append(f"{severity:8} ", style=_SEVERITY_STYLE.get(severity, ""))
        text.append(insight + "\n")
    return text


def render_ingest(ingest: IngestRates) -> Table:
    table = Table(title="ingestion", expand=True, header_style="bold")
    for column in ("events in/s", "clean out/s", "duplicates/s", "dead letters/s", "dead letters by reason"):
        table.add_column(column)
    reasons = ", ".join(f"{reason} {int(total)}" for reason, total in sorted(ingest.dead_letters.items())) or "none"
    table.add_row(f"{ingest.in_per_s:,.0f}", f"{ingest.out_per_s:,.0f}", f"{ingest.duplicates_per_s:,.1f}",
                  f"{ingest.dead_per_s:,.1f}", reasons)
    return table


def watch(stack: LocalStack, console: Console, live: bool, should_stop: Callable[[], bool]) -> None:
    """Refresh health, record heartbeats and redraw until ``should_stop``."""
    last_health = last_heartbeat = 0.0
    last_states: dict[str, str] = {}
    has_aggregate = any(c.name == "aggregate" for c in stack.components)
    store = StoreKpis() if has_aggregate else None
    store_client = None
    ingest = next((IngestRates(c.address if c.address.startswith("http") else f"http://{c.address}/metrics")
                   for c in stack.components if c.name == "ingest"), None)

    def tick() -> None:
        nonlocal last_health, last_heartbeat
        now = time.monotonic()
        if now - last_health >= HEALTH_EVERY_S:
            stack.refresh()
            if ingest is not None:
                ingest.refresh()
            if store is not None:
                nonlocal store_client
                try:
                    store_client = store_client or clickhouse.connect(stack.settings)
                    store.refresh(store_client)
                except Exception as exc:
                    store.error, store_client = str(exc).splitlines()[0][:120], None
            last_health = now
        if now - last_heartbeat >= HEARTBEAT_EVERY_S:
            stack.record_heartbeats()
            last_heartbeat = now

    if live:
        with Live(render(stack, ingest, store), console=console, refresh_per_second=4, screen=False) as view:
            while not should_stop():
                tick()
                view.update(render(stack, ingest, store))
                time.sleep(REFRESH_S)
        return
    while not should_stop():
        tick()
        for c in stack.components:  # without a terminal: one line per change of state
            if last_states.get(c.name) != c.state:
                console.print(f"{c.name}: {c.state} at {c.address}")
                last_states[c.name] = c.state
        time.sleep(REFRESH_S)
