"""Dashboard JSON files as Grafana's provider loads them: the model, its panels and where they are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shoppulse.project_files import dashboards_dir, datasources_dir

CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_TYPE = "prometheus"
GRAFANA_TYPE = "grafana"  # Grafana's built-in "-- Grafana --" datasource (annotations)
GRAFANA_UID = "-- Grafana --"


@dataclass(frozen=True)
class Problem:
    """One finding, pointing at the file, line and panel it is about."""

    path: Path
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        try:
            shown = self.path.relative_to(Path.cwd())
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.where}: {self.message}"


@dataclass(frozen=True)
class DashboardFile:
    path: Path
    text: str
    model: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.model.get("uid") or "")

    def line_of(self, needle: str, after: int = 1) -> int:
        """The first line at or after line ``after`` that holds ``needle`` (``after`` when none does)."""
        lines = self.text.splitlines()
        for number in range(max(after, 1), len(lines) + 1):
            if needle in lines[number - 1]:
                return number
        return after

    def panel_line(self, panel: dict[str, Any]) -> int:
        """The line of the panel's id (or title) in the file."""
        if isinstance(panel.get("id"), int):
            return self.line_of(f'"id": {panel["id"]},')
        return self.line_of(json.dumps(panel.get("title", "")))

    def query_line(self, panel: dict[str, Any], text: str) -> int:
        """The line of a query's text within the panel."""
        return self.line_of(json.dumps(text)[:60], self.panel_line(panel))

    def panels(self) -> Iterator[dict[str, Any]]:
        """Every panel, including those folded inside collapsed rows."""
        for panel in self.model.get("panels") or []:
            yield panel
            yield from panel.get("panels") or []


def panel_name(panel: dict[str, Any]) -> str:
    return f"panel {panel.get('id', '?')} {json.dumps(panel.get('title') or '(untitled)')}"


def load(path: Path) -> DashboardFile | Problem:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return Problem(path, 1, "file", f"not UTF-8 text (byte {exc.start}): a dashboard is a JSON file")
    except OSError as exc:
        return Problem(path, 1, "file", f"cannot be read: {exc.strerror}")
    try:
        model = json.loads(text)
    except json.JSONDecodeError as exc:
        return Problem(path, exc.lineno, "file", f"not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return Problem(path, 1, "file", "JSON nested deeper than the parser follows: a dashboard model is a few "
                                        "levels deep")
    if not isinstance(model, dict):
        return Problem(path, 1, "file", "a dashboard file must hold one JSON object (the dashboard model)")
    return DashboardFile(path, text, model)


def dashboard_paths(folder: Path | None = None) -> list[Path]:
    return sorted((folder or dashboards_dir()).glob("*.json"))


@dataclass(frozen=True)
class Datasource:
    name: str
    uid: str
    type: str
    min_interval: str | None = None  # jsonData.timeInterval: the lowest $__interval of its queries


def provisioned_datasources(folder: Path | None = None) -> dict[str, Datasource]:
    """The datasources Grafana is provisioned with, by uid."""
    found: dict[str, Datasource] = {}
    for path in sorted((folder or datasources_dir()).glob("*.y*ml")):
        document = yaml.safe_load(path.read_text()) or {}
        for entry in document.get("datasources") or []:
            interval = (entry.get("jsonData") or {}).get("timeInterval")
            found[entry["uid"]] = Datasource(entry["name"], entry["uid"], entry["type"],
                                             str(interval) if interval else None)
    return found
