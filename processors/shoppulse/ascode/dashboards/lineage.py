"""Lineage: every panel says which table (or metric) its numbers come from and which process
writes it, so that someone at the wall display can tell whose lag a stale panel shows.

The lint reads the tables a panel's SQL reads and the metrics its PromQL graphs, and asks that
the description name each table and the process that writes it (``TABLE_WRITERS``), and the
process that exports each metric (``METRIC_WRITERS``). Rollups and views name the process whose
rows they are made of; ``tests/test_dashboards_lineage.py`` checks the map against the tables the
processors' ClickHouse sinks really write."""

from __future__ import annotations

import re
from typing import Any

from shoppulse.grafana.promql import metric_names
from shoppulse.sql_text import UnterminatedError, tokens

INGESTION, AGGREGATION, SIDECAR, ACTIONS = "ingestion", "aggregation", "sidecar", "actions"
TABLE_WRITERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("metrics_live", "dead_letters", "events_sample"), (INGESTION,)),
    **dict.fromkeys(("metrics_1s", "metrics_1m", "metrics_1h", "payment_latency_1s", "payment_latency_1m",
                     "payment_latency_1h", "segment_metrics_1s", "sessions", "sessions_1m", "late_events",
                     "freshness"), (AGGREGATION,)),
    "metrics_now": (INGESTION, AGGREGATION),
    **dict.fromkeys(("anomalies", "insights", "incidents", "incident_countries", "expected_band", "llm_calls",
                     "baselines_how", "known_events", "calendar_loads", "known_events_in_force"),
                    (SIDECAR,)),
    **dict.fromkeys(("action_audit", "actions"), (ACTIONS,)),
}
METRIC_WRITERS: dict[str, tuple[str, ...]] = {
    "shoppulse_ingest_": (INGESTION,),
    "shoppulse_aggregate_": (AGGREGATION,),
    "shoppulse_sink_": (INGESTION, AGGREGATION),
    "shoppulse_consumer_lag_": (INGESTION, AGGREGATION),
    "shoppulse_sidecar_": (SIDECAR,),
    "shoppulse_actions_": (ACTIONS,),
    "process_": ("process",),  # every scraped process exports its own CPU, memory
    "python_": ("process",),  # and Python runtime figures
}
_READS_AFTER = frozenset({"FROM", "JOIN"})


def tables_read(sql: str) -> list[str]:
    """The tables and views a query reads: the names after FROM and JOIN, without the query's own
    WITH names (``name AS (...)``) and table functions (``numbers(10)``). Database prefixes are dropped."""
    try:
        toks = list(tokens(sql))
    except UnterminatedError:
        return []  # the SQL checks report it
    words = [sql[t.start:t.end] if t.kind == "word" else None for t in toks]
    own = {words[i] for i in range(len(toks) - 2)
           if words[i] and (words[i + 1] or "").upper() == "AS" and toks[i + 2].kind == "open"}
    found: list[str] = []
    for i, word in enumerate(words[:-1]):
        if not word or word.upper() not in _READS_AFTER:
            continue
        j = i + 1
        if toks[j].kind not in ("word", "quoted"):
            continue  # a subquery
        name = sql[toks[j].start:toks[j].end].strip('`"')
        while j + 2 < len(toks) and sql[toks[j + 1].start:toks[j + 1].end] == ".":
            j += 2
            name = sql[toks[j].start:toks[j].end].strip('`"')
        if j + 1 < len(toks) and toks[j + 1].kind == "open":
            continue  # a table function
        if name not in own and name not in found:
            found.append(name)
    return found


def lineage_problems(description: str, sql: list[str], promql: list[str]) -> list[str]:
    """What a panel's description leaves out of where its numbers come from."""
    said = description.lower()
    messages: list[str] = []
    sources: list[tuple[str, tuple[str, ...]]] = []
    for table in dict.fromkeys(t for query in sql for t in tables_read(query)):
        writers = TABLE_WRITERS.get(table)
        if writers is None:
            messages.append(f"reads {table}, which no process is known to write: add it to "
                            "shoppulse.ascode.dashboards.lineage.TABLE_WRITERS")
            continue
        if not re.search(rf"\b{re.escape(table.lower())}\b", said):
            messages.append(f"the description does not name the table it reads: {table}")
        sources.append((table, writers))
    for metric in dict.fromkeys(m for expr in promql for m in metric_names(expr)):
        writers = next((w for prefix, w in METRIC_WRITERS.items() if metric.startswith(prefix)), None)
        if writers is None:
            messages.append(f"graphs {metric}, which no process is known to export: add its prefix to "
                            "shoppulse.ascode.dashboards.lineage.METRIC_WRITERS")
            continue
        sources.append((metric, writers))
    unnamed: dict[str, str] = {}  # process -> the first source it is behind
    for source, writers in sources:
        for writer in writers:
            if not re.search(rf"\b{writer}", said):
                unnamed.setdefault(writer, source)
    messages += [f"the description does not name {writer}, the process behind {source}"
                 for writer, source in unnamed.items()]
    return messages


def panel_queries(panel: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A panel's SQL and PromQL texts."""
    targets = panel.get("targets") or []
    sql = [str(t["rawSql"]) for t in targets if t.get("rawSql")]
    promql = [str(t["expr"]) for t in targets if t.get("expr")]
    return sql, promql
