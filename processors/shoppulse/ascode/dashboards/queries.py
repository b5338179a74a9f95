"""Run every dashboard query as Grafana would: variables resolved, macros expanded, against real data.

ClickHouse queries run on a ClickHouse server holding the schema and demo data, and their result
must fit the panel (``shapes``); PromQL is parsed by Prometheus' own ``promtool`` and its metric
names must be ones shoppulse exports (``promql``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from shoppulse.ascode.dashboards.structure import datasource_problem, resolved_type
from shoppulse.grafana.interpolate import InterpolationError, QueryContext, clickhouse_query, prometheus_query
from shoppulse.grafana.model import CLICKHOUSE_TYPE, PROMETHEUS_TYPE, DashboardFile, Datasource, Problem, panel_name
from shoppulse.grafana.promql import PromQLChecker
from shoppulse.grafana.shapes import Result, shape_problems
from shoppulse.grafana.time_range import TimeRangeError, interval_ms, panel_interval_ms, panel_range


@dataclass(frozen=True)
class Executed:
    """One ClickHouse panel query as run: where it is, the SQL sent and what came back."""

    file: DashboardFile
    panel: dict[str, Any]
    target: dict[str, Any]
    sql: str
    result: Result | None
    seconds: float


def panel_context(dashboard_time: dict[str, Any] | None, panel: dict[str, Any], now: datetime,
                  variables: dict[str, list[str]], datasource: Datasource | None = None,
                  multi: frozenset[str] = frozenset()) -> QueryContext:
    """The time range and interval Grafana gives this panel's queries: the dashboard's range, the
    panel's relative time and shift, Grafana's interval for its resolution and minimum interval."""
    start, end = panel_range(dashboard_time, panel, now)
    min_interval = datasource.min_interval if datasource else None
    interval = panel_interval_ms(panel, start, end, min_interval)
    scrape = interval_ms(min_interval) if min_interval else 15_000
    return QueryContext(start, end, interval, variables, scrape_interval_ms=scrape, multi=multi)


class QueryRunner:
    """Checks the queries of dashboards against one ClickHouse client and one promtool."""

    def __init__(self, client: Client, datasources: dict[str, Datasource], promql: PromQLChecker,
                 now: datetime | None = None) -> None:
        self.client = client
        self.datasources = datasources
        self.promql = promql
        self.now = now or datetime.now(UTC).replace(microsecond=0)
        self.executed: list[Executed] = []

    def check(self, file: DashboardFile) -> list[Problem]:
        variables, problems = self.resolve_variables(file)
        for panel in file.panels():
            for target in panel.get("targets") or []:
                problems += self._check_target(file, panel, target, variables)
        for annotation in (file.model.get("annotations") or {}).get("list") or []:
            target = annotation.get("target")
            if annotation.get("builtIn") or not isinstance(target, dict) or "rawSql" not in target:
                continue  # Grafana's own annotations (by dashboard or tags) run no query of ours
            # An annotation query runs over the dashboard's range; its result becomes events (shapes.py).
            name = str(annotation.get("name"))
            as_panel = {"type": "annotation", "title": f"annotation {name}", "id": f"annotation {name}",
                        "datasource": annotation.get("datasource"), "mappings": annotation.get("mappings") or {}}
            problems += self._check_target(file, as_panel, target, variables)
        return problems

    def resolve_variables(self, file: DashboardFile) -> tuple[dict[str, list[str]], list[Problem]]:
        """Each template variable's values (all of them for a multi-value variable), in order."""
        values: dict[str, list[str]] = {}
        problems: list[Problem] = []
        for variable in (file.model.get("templating") or {}).get("list") or []:
            name, kind = variable.get("name"), variable.get("type")
            line = file.line_of(f'"name": "{name}"')
            if kind == "query":
                start, end = panel_range(file.model.get("time"), {}, self.now)
                context = QueryContext(start, end, 1000, values)
                query = variable.get("query")
                text = query.get("rawSql") if isinstance(query, dict) else query
                try:
                    rows = self.client.query(clickhouse_query(str(text or ""), context)).result_rows
                except (InterpolationError, ClickHouseError) as exc:
                    problems.append(Problem(file.path, line, f"variable ${name}", _first_line(exc)))
                    continue
                found = [str(row[0]) for row in rows]
                if not found:
                    problems.append(Problem(file.path, line, f"variable ${name}",
                                            "the variable's query returned no values on the demo data"))
                values[name] = found
            elif kind in ("custom", "constant", "textbox", "interval"):
                values[name] = [v.strip() for v in str(variable.get("query") or "").split(",") if v.strip()]
            elif kind == "datasource":
                values[name] = [str(variable.get("query"))]
        return values, problems

    def _check_target(self, file: DashboardFile, panel: dict[str, Any], target: dict[str, Any],
                      variables: dict[str, list[str]]) -> list[Problem]:
        reference = target.get("datasource") or panel.get("datasource")
        variable_defs = {v.get("name"): v for v in (file.model.get("templating") or {}).get("list") or []}
        if datasource_problem(reference, self.datasources, variable_defs):
            return []  # reported by the structure checks
        kind = resolved_type(reference, self.datasources, variable_defs)
        try:
            multi = frozenset(n for n, v in variable_defs.items() if v.get("multi") or v.get("includeAll"))
            context = panel_context(file.model.get("time"), panel, self.now, variables,
                                    self.datasources.get(str((reference or {}).get("uid"))), multi)
        except TimeRangeError as exc:
            return [Problem(file.path, file.panel_line(panel), panel_name(panel), str(exc))]
        where = f"{panel_name(panel)} query {target.get('refId')}"
        if kind == CLICKHOUSE_TYPE:
            text = str(target.get("rawSql") or "")
            line = file.query_line(panel, text)
            return [Problem(file.path, line, where, m) for m in self._run_clickhouse(file, panel, target, context)]
        if kind == PROMETHEUS_TYPE:
            text = str(target.get("expr") or "")
            line = file.query_line(panel, text)
            try:
                expression = prometheus_query(text, context)
            except InterpolationError as exc:
                return [Problem(file.path, line, where, str(exc))]
            return [Problem(file.path, line, where, m) for m in self.promql.problems(expression)]
        return []

    def _run_clickhouse(self, file: DashboardFile, panel: dict[str, Any], target: dict[str, Any],
                        context: QueryContext) -> list[str]:
        try:
            sql = clickhouse_query(str(target.get("rawSql") or ""), context)
        except InterpolationError as exc:
            return [str(exc)]
        started = datetime.now(UTC)
        try:
            answer = self.client.query(sql)
        except ClickHouseError as exc:
            self.executed.append(Executed(file, panel, target, sql, None, 0.0))
            return [f"ClickHouse rejected the query: {_first_line(exc)}"]
        result = Result(list(answer.column_names), [t.name for t in answer.column_types], answer.result_rows)
        seconds = (datetime.now(UTC) - started).total_seconds()
        self.executed.append(Executed(file, panel, target, sql, result, seconds))
        return shape_problems(panel, target, result)

    def results(self) -> Iterator[Executed]:
        yield from self.executed


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    match = re.search(r"Code: \d+\..*?(?=\(version|\Z)", text, re.S)
    return " ".join((match.group(0) if match else text).split())[:400]
