"""Static checks of dashboard models: the JSON model, stable uids, datasource references, panel hygiene
and lineage (``dashboards.lineage``)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from shoppulse.ascode.dashboards.lineage import lineage_problems, panel_queries
from shoppulse.grafana.clickhouse_plugin import target_problems
from shoppulse.grafana.model import (
    CLICKHOUSE_TYPE,
    GRAFANA_TYPE,
    GRAFANA_UID,
    PROMETHEUS_TYPE,
    DashboardFile,
    Datasource,
    Problem,
    panel_name,
)

UID = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")  # Grafana allows 40 characters; ours are chosen, not generated
MIN_SCHEMA_VERSION = 36  # datasources referenced by {type, uid} objects since Grafana 8.3
GRID_COLUMNS = 24
PANEL_TYPES = frozenset({
    "row", "stat", "gauge", "bargauge", "timeseries", "barchart", "table", "geomap", "heatmap",
    "piechart", "text", "state-timeline", "histogram", "news", "logs",
})
WITHOUT_UNIT = frozenset({"row", "text", "news", "logs"})
_VARIABLE_REF = re.compile(r"^\$\{?(\w+)\}?$")


def check_dashboards(files: list[DashboardFile], datasources: dict[str, Datasource]) -> list[Problem]:
    problems: list[Problem] = []
    uids = Counter(f.uid for f in files)
    for file in files:
        problems += _check_dashboard(file, datasources)
        if file.uid and uids[file.uid] > 1:
            others = ", ".join(f.path.name for f in files if f.uid == file.uid and f is not file)
            problems.append(Problem(file.path, file.line_of('"uid"'), "dashboard",
                                    f"duplicate dashboard uid {file.uid!r} (also in {others}): uids must be unique"))
    return problems


def _check_dashboard(file: DashboardFile, datasources: dict[str, Datasource]) -> list[Problem]:
    model, path = file.model, file.path
    problems: list[Problem] = []

    def report(line: int, where: str, message: str) -> None:
        problems.append(Problem(path, line, where, message))

    if not UID.match(file.uid):
        report(file.line_of('"uid"'), "dashboard",
               f"uid {file.uid!r} is not a stable uid: 3-40 characters of a-z, 0-9 and '-', chosen by hand")
    if model.get("id") is not None:
        report(file.line_of('"id"'), "dashboard", "top-level id must be null: Grafana assigns it per instance")
    if not str(model.get("title") or "").strip():
        report(1, "dashboard", "the dashboard has no title")
    schema = model.get("schemaVersion")
    if not isinstance(schema, int) or schema < MIN_SCHEMA_VERSION:
        report(file.line_of('"schemaVersion"'), "dashboard",
               f"schemaVersion {schema!r}: needs {MIN_SCHEMA_VERSION} or later (datasource references by uid)")
    if not isinstance(model.get("panels"), list) or not model["panels"]:
        report(1, "dashboard", "the dashboard has no panels list")
        return problems

    variables = {v.get("name"): v for v in (model.get("templating") or {}).get("list") or []}
    for name, variable in variables.items():
        if variable.get("type") == "query":
            message = datasource_problem(variable.get("datasource"), datasources, variables)
            if message:
                report(file.line_of(f'"name": "{name}"'), f"variable ${name}", message)
    for annotation in (model.get("annotations") or {}).get("list") or []:
        message = datasource_problem(annotation.get("datasource"), datasources, variables)
        if message:
            report(file.line_of(str(annotation.get("name", ""))), f"annotation {annotation.get('name')!r}", message)

    ids = Counter(p.get("id") for p in file.panels())
    for panel in file.panels():
        problems += [Problem(path, file.panel_line(panel), panel_name(panel), m)
                     for m in _panel_problems(panel, datasources, variables, ids)]
    problems += _overlaps(file)
    return problems


def _panel_problems(panel: dict[str, Any], datasources: dict[str, Datasource], variables: dict[str, Any],
                    ids: Counter[Any]) -> list[str]:
    messages: list[str] = []
    kind = panel.get("type")
    if not isinstance(panel.get("id"), int):
        messages.append("panel id must be an integer (alerts and annotations refer to panels by id)")
    elif ids[panel["id"]] > 1:
        messages.append(f"duplicate panel id {panel['id']}")
    if kind not in PANEL_TYPES:
        messages.append(f"unknown panel type {kind!r}")
    if not str(panel.get("title") or "").strip():
        messages.append("panel has no title")
    grid = panel.get("gridPos") or {}
    if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
        messages.append("gridPos needs integer x, y, w and h")
    elif grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > GRID_COLUMNS:
        messages.append(f"gridPos x={grid['x']} w={grid['w']} does not fit the {GRID_COLUMNS}-column grid")
    if kind == "row":
        return messages
    description = str(panel.get("description") or "").strip()
    if not description:
        messages.append("panel has no description: say what it shows and where its numbers come from")
    else:
        messages += lineage_problems(description, *panel_queries(panel))
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
    if kind not in WITHOUT_UNIT and not unit:
        messages.append("panel has no unit (fieldConfig.defaults.unit)")
    if kind in ("text", "news"):
        return messages
    message = datasource_problem(panel.get("datasource"), datasources, variables)
    if message:
        messages.append(message)
    targets = panel.get("targets") or []
    if not targets:
        messages.append("panel has no queries (targets)")
    refs = Counter(t.get("refId") for t in targets)
    for target in targets:
        ref = target.get("refId")
        if not ref or refs[ref] > 1:
            messages.append(f"query refId {ref!r} missing or repeated")
        datasource = target.get("datasource") or panel.get("datasource")
        message = datasource_problem(datasource, datasources, variables)
        if message:
            messages.append(f"query {ref}: {message}")
            continue
        kind_of = resolved_type(datasource, datasources, variables)
        if kind_of == CLICKHOUSE_TYPE:
            if target.get("editorType") != "sql" or not str(target.get("rawSql") or "").strip():
                messages.append(f"query {ref}: ClickHouse queries are kept as SQL (editorType sql, rawSql)")
            messages += [f"query {ref}: {message}" for message in target_problems(target)]
        elif kind_of == PROMETHEUS_TYPE and not str(target.get("expr") or "").strip():
            messages.append(f"query {ref}: Prometheus query has no expr")
    return messages


def datasource_problem(reference: Any, datasources: dict[str, Datasource], variables: dict[str, Any]) -> str | None:
    """Why a datasource reference is not a provisioned uid or a datasource variable (None: it is)."""
    if not isinstance(reference, dict) or not reference.get("uid"):
        return (f"datasource {reference!r} is not referenced by uid: use "
                '{"type": ..., "uid": ...} with a provisioned uid or ${variable}')
    uid, kind = str(reference["uid"]), reference.get("type")
    variable = _VARIABLE_REF.match(uid)
    if variable:
        defined = variables.get(variable.group(1))
        if defined is None or defined.get("type") != "datasource":
            return f"datasource {uid} is not a datasource variable of this dashboard"
        return None
    if kind == GRAFANA_TYPE and uid == GRAFANA_UID:
        return None
    provisioned = datasources.get(uid)
    if provisioned is None:
        return (f"datasource uid {uid!r} is not provisioned (known: {', '.join(sorted(datasources))}); "
                "see grafana/provisioning/datasources/")
    if kind and kind != provisioned.type:
        return f"datasource uid {uid!r} is a {provisioned.type}, not a {kind}"
    return None


def resolved_type(reference: Any, datasources: dict[str, Datasource], variables: dict[str, Any]) -> str:
    """The plugin type behind a checked datasource reference."""
    variable = _VARIABLE_REF.match(str(reference["uid"]))
    if variable:
        return str(variables[variable.group(1)].get("query"))
    if reference.get("uid") == GRAFANA_UID:
        return GRAFANA_TYPE
    return datasources[reference["uid"]].type


def _overlaps(file: DashboardFile) -> list[Problem]:
    """Top-level panels whose grid rectangles overlap (Grafana would silently push one down)."""
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    problems: list[Problem] = []
    for panel in file.model.get("panels") or []:
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
            continue
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel)
                if other is not panel:
                    problems.append(Problem(file.path, file.panel_line(panel), panel_name(panel),
                                            f"overlaps {panel_name(other)} at column {x}, row {y}"))
                    break
            else:
                continue
            break
    return problems
