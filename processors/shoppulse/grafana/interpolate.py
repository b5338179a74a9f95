"""Turn a panel's query text into what Grafana sends to the datasource.

Two steps, in Grafana's order: template variables first (``$var``, ``${var}``, ``${var:format}``,
``[[var]]`` and the global ``$__from``/``$__to``/``$__interval``/``$__range``…), then, for the
ClickHouse datasource, the plugin's macros (``$__timeFilter(col)``, ``$__timeInterval(col)``…)
expanded exactly as grafana-clickhouse-datasource's backend does. Anything left that looks like
a macro or variable is an error: Grafana would send it to ClickHouse as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from shoppulse.grafana.clickhouse_plugin import PLUGIN_VERSION
from shoppulse.grafana.time_range import interval_text
from shoppulse.grafana.variable_formats import FormatError, apply_format

# Grafana's variable syntaxes: ${name.field:format} (a field path only in braces), [[name:format]], $name.
_VARIABLE = re.compile(r"\$\{(\w+(?:\.\w+)*)(?::([^}]+))?\}|\[\[(\w+)(?::([^\]]+))?\]\]|\$(\w+)")
# The fields of Grafana's global objects (${__dashboard.uid}, ${__user.login}, ${__org.name}), as the lint fills them.
_GLOBAL_FIELDS = {"__dashboard.name": "dashboard", "__dashboard.uid": "dashboard-uid", "__org.id": "1",
                  "__org.name": "Main Org.", "__user.id": "1", "__user.login": "lint", "__user.email": "lint@localhost"}
# Filled by Grafana for Prometheus queries only; in a ClickHouse query they reach ClickHouse as written.
_DASHBOARD_ONLY = frozenset({"range", "range_s", "range_ms", "rate_interval"})
# Rewrites of the whole statement that later plugin releases added (pkg/macros/statement.go, with macropro).
_LATER_STATEMENT_MACROS = frozenset({"columns", "rateColumns", "perSecondColumns", "increaseColumns", "lttb"})


class InterpolationError(ValueError):
    """The query uses a variable, format or macro that Grafana would not expand."""


@dataclass(frozen=True)
class QueryContext:
    """The state a query is expanded for: time range, interval, variable values, and whether it is a
    dashboard's query (Grafana's frontend fills its global variables) or an alert rule's (Grafana's
    alerting fills none: only the datasource's own macros are expanded)."""

    time_from: datetime
    time_to: datetime
    interval_ms: int = 1000
    variables: dict[str, list[str]] = field(default_factory=dict)
    alerting: bool = False
    scrape_interval_ms: int = 15_000  # the Prometheus datasource's timeInterval, for $__rate_interval
    multi: frozenset[str] = frozenset()  # the variables with multi-value or All (their value is a list)
    all_selected: frozenset[str] = frozenset()  # the variables whose current value is All

    @property
    def interval_s(self) -> int:
        """The ClickHouse plugin's interval in whole seconds, at least 1 (its ``$__interval_s``)."""
        return max(self.interval_ms // 1000, 1)

    @property
    def range_s(self) -> int:
        return int((self.time_to - self.time_from).total_seconds())

    def global_variables(self, datasource_type: str) -> dict[str, str]:
        """The ``$__`` variables Grafana fills before the datasource sees the query."""
        if self.alerting:
            return {}
        from_ms, to_ms = int(self.time_from.timestamp() * 1000), int(self.time_to.timestamp() * 1000)
        found = {"__from": str(from_ms), "__to": str(to_ms), "__interval": interval_text(self.interval_ms),
                 "__interval_ms": str(self.interval_ms), "__dashboard": "dashboard", "__org": "1", "__user": "lint",
                 **_GLOBAL_FIELDS}
        if datasource_type == "prometheus":  # the Prometheus datasource adds these itself
            scrape = self.scrape_interval_ms
            found |= {"__rate_interval": interval_text(max(4 * scrape, self.interval_ms + scrape)),
                      "__range": f"{self.range_s}s", "__range_s": str(self.range_s),
                      "__range_ms": str(self.range_s * 1000)}
        return found


def _default_format(values: list[str], datasource_type: str, multi: bool) -> str:
    """The format when the query names none: Prometheus' regex; the ClickHouse plugin's own (its
    ``format``): a multi-value variable's values quoted and joined, unescaped, even when one is
    selected; a single-value variable's value as it is."""
    if datasource_type == "prometheus":
        return apply_format("regex", [], values, multi, "")
    if multi:
        return "'" + "','".join(values) + "'"
    return ",".join(values)


def apply_conditional_all(text: str, context: QueryContext) -> str:
    """The plugin's ``$__conditionalAll(condition, $var)``: the condition, or ``1=1`` when the
    variable's current value is All (or empty), applied before the variables, innermost last."""
    macro = "$__conditionalAll("
    while (index := text.rfind(macro)) != -1:
        args, length = _macro_arguments(text[index + len(macro) - 1:])
        if args is None or len(args) != 2 or length < 0:
            raise InterpolationError("$__conditionalAll takes a condition and a variable: "
                                     "$__conditionalAll(country IN ($country), $country)")
        variable = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", args[1])
        condition = args[0]
        if variable and (variable.group(0) in context.all_selected
                         or context.variables.get(variable.group(0)) in ([], [""])):
            condition = "1=1"
        text = text[:index] + condition + text[index + len(macro) - 1 + length:]
    return text


def expand_variables(text: str, context: QueryContext, datasource_type: str) -> str:
    """Replace template and global variables; an unknown variable or format raises."""
    known = {name: [value] for name, value in context.global_variables(datasource_type).items()} | context.variables

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        fmt = match.group(2) or match.group(4)
        if "." in name and name not in known:
            raise InterpolationError(f"${{{name}}}: Grafana has no field path {name.partition('.')[2]!r} on "
                                     f"${name.partition('.')[0]} (global fields: {', '.join(sorted(_GLOBAL_FIELDS))})")
        if name.startswith("__") and name not in known:
            return match.group(0)  # a datasource macro, expanded in the next step
        if name not in known:
            raise InterpolationError(f"unknown template variable ${name}: define it under templating.list")
        values = known[name]
        if fmt is None:
            return _default_format(values, datasource_type, name in context.multi)
        fmt_name, *args = fmt.split(":")
        if fmt_name == "text" and name in context.all_selected:
            return "All"  # the text of the All option, not its values
        try:
            return apply_format(fmt_name, args, values, name in context.multi, name)
        except FormatError as exc:
            raise InterpolationError(f"{exc} (in {match.group(0)})") from None

    return _VARIABLE.sub(replace, text)


def _to_datetime(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _to_datetime64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _to_date(moment: datetime) -> str:
    return f"toDate('{moment.strftime('%Y-%m-%d')}')"


def _range_filter(column: str, low: str, high: str) -> str:
    return f"{column} >= {low} AND {column} <= {high}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_TIME_GROUP_PARTS = ("minute", "hour", "day", "month", "year")


def _time_group(args: list[str]) -> str:
    """The SDK's default ``$__timeGroup(col, period)``: datepart() of the period and every larger one."""
    if args[1] not in _TIME_GROUP_PARTS:
        return ""
    return ",".join(f"datepart({part}, {args[0]})" for part in _TIME_GROUP_PARTS[_TIME_GROUP_PARTS.index(args[1]):])


def _clickhouse_macros(context: QueryContext) -> dict[str, tuple[int | None, Callable[[list[str]], str]]]:
    """Macro name -> (argument count, None when any, and expansion): the plugin's own macros over the
    defaults of Grafana's plugin SDK (``data/sqlutil``), which its backend merges them onto."""
    start, end = context.time_from, context.time_to
    interval = context.interval_s
    return {
        # grafana-plugin-sdk-go sqlutil.DefaultMacros
        "interval": (None, lambda _: interval_text(context.interval_ms)),
        "interval_ms": (None, lambda _: str(context.interval_ms)),
        "timeFrom": (1, lambda a: f"{a[0]} >= '{_rfc3339(start)}'"),
        "timeTo": (1, lambda a: f"{a[0]} <= '{_rfc3339(end)}'"),
        "timeGroup": (2, _time_group),
        "table": (None, lambda _: ""),  # a SQL editor target has no table or column of its own
        "column": (None, lambda _: ""),
        # grafana-clickhouse-datasource pkg/macros
        "fromTime": (None, lambda _: _to_datetime(start)),
        "toTime": (None, lambda _: _to_datetime(end)),
        "fromTime_ms": (None, lambda _: _to_datetime64(start)),
        "toTime_ms": (None, lambda _: _to_datetime64(end)),
        "interval_s": (None, lambda _: str(interval)),
        "timeFilter": (1, lambda a: _range_filter(a[0], _to_datetime(start), _to_datetime(end))),
        "timeFilter_ms": (1, lambda a: _range_filter(a[0], _to_datetime64(start), _to_datetime64(end))),
        "dateFilter": (1, lambda a: _range_filter(a[0], _to_date(start), _to_date(end))),
        "dateTimeFilter": (2, lambda a: f"({_range_filter(a[0], _to_date(start), _to_date(end))}) AND "
                                        f"({_range_filter(a[1], _to_datetime(start), _to_datetime(end))})"),
        "dt": (2, lambda a: f"({_range_filter(a[0], _to_date(start), _to_date(end))}) AND "
                            f"({_range_filter(a[1], _to_datetime(start), _to_datetime(end))})"),
        "timeInterval": (1, lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval} second)"),
        "timeInterval_ms": (1, lambda a: f"toStartOfInterval(toDateTime64({a[0]}, 3), "
                                         f"INTERVAL {max(context.interval_ms, 1)} millisecond)"),
    }


def _macro_arguments(text: str) -> tuple[list[str] | None, int]:
    """The SDK's ``parseArgs``: a bracketed argument list at the start of ``text`` (parentheses nest,
    commas split at the top level only), its arguments trimmed and its length; (None, 0) when there is
    none, (None, -1) when a bracket is never closed."""
    if not text.startswith("("):
        return None, 0
    args: list[str] = []
    current: list[str] = []
    depth = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [*args, "".join(current).strip()], index + 1
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    return None, -1


def expand_clickhouse_macros(text: str, context: QueryContext) -> str:
    """Expand macros as the plugin's backend does: longest names first, every occurrence of each call
    replaced; an unknown macro, a wrong argument count or an unclosed bracket raises (the backend
    refuses the query, or ClickHouse would get ``$__name`` as written)."""
    macros = _clickhouse_macros(context)
    for name in sorted(macros, key=len, reverse=True):
        arity, expand = macros[name]
        while found := re.search(rf"\$__{name}\b", text):
            args, length = _macro_arguments(text[found.end():])
            if length < 0:
                raise InterpolationError(f"$__{name}: failed to parse macro arguments (missing close bracket?)")
            call = text[found.start():found.end() + length]
            if arity is not None and len(args or []) != arity:
                raise InterpolationError(f"$__{name} takes {arity} argument(s), got {len(args or [])} in {call}")
            text = text.replace(call, expand(args or []))
    leftover = re.search(r"\$__(\w+)", text)
    if leftover:
        name = leftover.group(1)
        dashboard_globals = replace(context, alerting=False).global_variables("prometheus")
        if context.alerting and f"__{name}" in dashboard_globals:
            why = f" (${{__{name}}} is a dashboard variable: Grafana's alerting never fills it)"
        elif name in _DASHBOARD_ONLY:
            why = f" (Grafana fills ${{__{name}}} for Prometheus queries, not for ClickHouse)"
        elif name in _LATER_STATEMENT_MACROS:
            why = (f" (a statement macro of the plugin's releases after {PLUGIN_VERSION}, the release this lint "
                   "mirrors and compose installs)")
        else:
            why = ""
        raise InterpolationError(f"unknown ClickHouse macro $__{name}{why}: the plugin knows "
                                 + ", ".join(f"$__{m}" for m in sorted(macros)))
    return text


_AD_HOC_FILTERS = re.compile(r"""\$__adHocFilters\s*\(\s*['"](.+?)['"]\s*\)""")


def apply_ad_hoc_filters(text: str, context: QueryContext) -> str:
    """The plugin frontend's ``$__adHocFilters('table')`` (CHDatasource.applyAdHocFiltersMacro, 4.12+): the
    ``additional_table_filters`` setting with the dashboard's active ad hoc filters, for a SETTINGS clause.
    The lint has none active (an ad hoc variable starts empty): ``additional_table_filters={}``. Alert
    rules have no frontend: there it reaches the backend, which does not know it."""
    if context.alerting:
        return text
    return _AD_HOC_FILTERS.sub("additional_table_filters={}", text)


def clickhouse_query(text: str, context: QueryContext) -> str:
    """The SQL Grafana's ClickHouse plugin would run for ``text``: its frontend's $__conditionalAll,
    Grafana's variables, the frontend's $__adHocFilters, then the backend's macros."""
    expanded = expand_variables(apply_conditional_all(text, context), context, "grafana-clickhouse-datasource")
    return expand_clickhouse_macros(apply_ad_hoc_filters(expanded, context), context)


def prometheus_query(text: str, context: QueryContext) -> str:
    """The PromQL Grafana would send to Prometheus for ``text``."""
    expanded = expand_variables(text, context, "prometheus")
    leftover = re.search(r"\$\w+", expanded)
    if leftover:
        raise InterpolationError(f"{leftover.group(0)} is not a Grafana variable for Prometheus queries")
    return expanded
