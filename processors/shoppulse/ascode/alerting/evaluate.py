"""One evaluation of a Grafana-managed alert rule against ClickHouse, as Grafana's ruler does it.

Each query of the rule runs over its relative time range ending at the evaluation time, with the
ClickHouse plugin's macros expanded for that range (so ``$__toTime`` is the evaluation time).
A SQL result becomes numeric data — one series per row, string columns as labels, the one
numeric column as the value — and the rule's expressions run on it; the condition's non-zero
series are the alert instances that are "true" at that moment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from shoppulse.ascode.alerting.expressions import ExpressionError, Labels, Series, evaluate
from shoppulse.grafana.interpolate import InterpolationError, QueryContext, clickhouse_query
from shoppulse.grafana.model import CLICKHOUSE_TYPE, PROMETHEUS_TYPE, Datasource
from shoppulse.grafana.shapes import is_number, is_text

EXPRESSION_UID = "__expr__"


class ShapeError(ValueError):
    """A query result Grafana cannot turn into numeric data for alerting."""


class NotEvaluableError(ValueError):
    """A query of a datasource this evaluator cannot run after the fact (Prometheus)."""


@dataclass
class Evaluation:
    at: datetime
    true: set[Labels] = field(default_factory=set)  # instances whose condition holds
    no_data: bool = False
    error: str | None = None
    values: dict[str, Series] = field(default_factory=dict)
    label_names: set[str] = field(default_factory=set)


def to_series(names: list[str], types: list[str], rows: Sequence[Sequence[Any]]) -> Series:
    """A table as Grafana's numeric data: exactly one numeric column, the rest text labels."""
    numeric = [i for i, t in enumerate(types) if is_number(t)]
    text = [i for i, t in enumerate(types) if is_text(t)]
    others = [names[i] for i in range(len(names)) if i not in numeric and i not in text]
    if others:
        raise ShapeError(f"columns {others} are neither text nor numbers: alert queries return label columns "
                         "and one value column (a time column would make it a time series: reduce it in SQL)")
    if len(numeric) != 1:
        raise ShapeError(f"{len(numeric)} numeric columns ({[names[i] for i in numeric]}): Grafana's alerting "
                         "needs exactly one value column per query; split the query")
    series: Series = {}
    for row in rows:
        labels = frozenset((names[i], str(row[i])) for i in text)
        if labels in series:
            raise ShapeError(f"two rows with the same labels {dict(labels)}: each row must be one alert instance")
        value = row[numeric[0]]
        series[labels] = None if value is None else float(value) if isinstance(value, int | float | Decimal) else None
    return series


class RuleEvaluator:
    def __init__(self, client: Client, datasources: dict[str, Datasource]) -> None:
        self.client = client
        self.datasources = datasources

    def sql(self, query: dict[str, Any], at: datetime) -> str:
        window = query.get("relativeTimeRange") or {}
        model = query.get("model") or {}
        # Grafana's alerting sends the model's intervalMs (1 s by default) and fills no template variable
        context = QueryContext(at - timedelta(seconds=int(window.get("from", 600))),
                               at - timedelta(seconds=int(window.get("to", 0))),
                               int(model.get("intervalMs") or 1000), alerting=True)
        return clickhouse_query(str(model.get("rawSql", "")), context)

    def run_query(self, query: dict[str, Any], at: datetime) -> tuple[Series, set[str]]:
        """The query's numeric data and its label names (known even when it returns no rows)."""
        datasource = self.datasources.get(str(query.get("datasourceUid")))
        if datasource is None:
            raise NotEvaluableError(f"datasource {query.get('datasourceUid')!r} is not provisioned")
        if datasource.type == PROMETHEUS_TYPE:
            raise NotEvaluableError("a Prometheus query: replay needs the run's Prometheus data, lint checks it with "
                                    "promtool")
        if datasource.type != CLICKHOUSE_TYPE:
            raise NotEvaluableError(f"datasource type {datasource.type} is not supported")
        sql = self.sql(query, at)
        result = self.client.query(sql)
        names, types, rows = list(result.column_names), [t.name for t in result.column_types], result.result_rows
        if not names:  # no rows, no block: ask ClickHouse for the result's columns
            described = self.client.query(f"DESCRIBE TABLE ({sql})").result_rows
            names, types = [row[0] for row in described], [row[1] for row in described]
        return to_series(names, types, rows), {n for n, t in zip(names, types, strict=True) if is_text(t)}

    def evaluate(self, rule: dict[str, Any], at: datetime) -> Evaluation:
        evaluation = Evaluation(at)
        empty_query = False
        try:
            for query in rule.get("data") or []:
                ref = str(query.get("refId"))
                if query.get("datasourceUid") == EXPRESSION_UID:
                    evaluation.values[ref] = evaluate(query.get("model") or {}, evaluation.values)
                    continue
                evaluation.values[ref], label_names = self.run_query(query, at)
                empty_query = empty_query or not evaluation.values[ref]
                evaluation.label_names |= label_names
        except (ExpressionError, ShapeError, InterpolationError) as exc:
            evaluation.error = str(exc)
            return evaluation
        except NotEvaluableError:
            raise
        except Exception as exc:  # a datasource error is the rule's error state, as in Grafana
            evaluation.error = str(exc).splitlines()[0][:300]
            return evaluation
        condition = evaluation.values.get(str(rule.get("condition")), {})
        evaluation.true = {labels for labels, value in condition.items() if value and not math.isnan(value)}
        evaluation.no_data = not condition and empty_query
        return evaluation
