"""Dashboards and alert rules in the ClickHouse plugin's own query model: what its editor writes when
an SRE opens a panel in Grafana is what Git holds, and what its backend refuses the lint refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from checkout import ROOT
from shoppulse.ascode.alerting.files import alerting_paths
from shoppulse.ascode.dashboards.lint import check_files
from shoppulse.ascode.dashboards.sync import render
from shoppulse.grafana.clickhouse_plugin import PLUGIN_VERSION, migrate_target, target_problems
from shoppulse.grafana.model import CLICKHOUSE_TYPE, DashboardFile, dashboard_paths, load, panel_name

V3_QUERY_TYPES = {0: "timeSeries", 1: "table"}  # what the plugin's 3.x editor saved


def clickhouse_targets(model: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in model.get("panels") or []:
        for target in panel.get("targets") or []:
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("type") == CLICKHOUSE_TYPE:
                found.append(target)
    return found


def as_v3(target: dict[str, Any]) -> dict[str, Any]:
    old = {k: v for k, v in target.items() if k not in ("pluginVersion", "meta")}
    old["queryType"] = V3_QUERY_TYPES[target["format"]]
    return old


def migrated_copies(tmp_path: Path, change: Any = None) -> list[Path]:
    """The shipped dashboards as v3 files put through the plugin's migration (and ``change``)."""
    written = []
    for path in dashboard_paths():
        model = json.loads(path.read_text())
        for target in clickhouse_targets(model):
            target.update(migrate_target(as_v3(target)))
        if change:
            change(model)
        copy_path = tmp_path / path.name
        copy_path.write_text(render(model))
        written.append(copy_path)
    return written


def test_the_shipped_dashboards_are_what_the_plugin_writes() -> None:
    seen = 0
    for path in dashboard_paths():
        for target in clickhouse_targets(json.loads(path.read_text())):
            seen += 1
            assert target["pluginVersion"] == PLUGIN_VERSION and target["meta"] == {}
            assert migrate_target(target) == target, "the plugin would rewrite this target on opening"
            assert migrate_target(as_v3(target)) == target, "the plugin's migration of the 3.x form differs"
    assert seen >= 20


def test_the_plugins_migration_of_the_old_targets_lints_clean_and_export_keeps_it(tmp_path: Path) -> None:
    migrated = migrated_copies(tmp_path)
    report = check_files(migrated)
    assert report.problems == [], "\n".join(map(str, report.problems))
    for path in migrated:  # export's normal form keeps every field the plugin wrote on a target
        assert path.read_text() == (ROOT / "grafana" / "dashboards" / path.name).read_text()


def test_the_3x_form_is_named_for_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    model = json.loads((ROOT / "grafana" / "dashboards" / "ai-layer.json").read_text())
    for target in clickhouse_targets(model):
        old = as_v3(target)
        target.clear()
        target.update(old)
    path.write_text(render(model))
    problems = check_files([path]).problems
    assert problems and all("3.x model" in p.message for p in problems)


def test_a_format_the_backend_refuses_is_reported_with_file_panel_and_line(tmp_path: Path) -> None:
    def editor_wrote_256(model: dict[str, Any]) -> None:
        if model["uid"] == "shoppulse-ai-layer":  # the editor's value for a query type it does not map
            clickhouse_targets(model)[0]["format"] = 256

    migrated = migrated_copies(tmp_path, editor_wrote_256)
    problems = [p for p in check_files(migrated).problems if "format 256" in p.message]
    assert len(problems) == 1
    problem = problems[0]
    file = load(problem.path)
    assert isinstance(file, DashboardFile) and file.path.name == "ai-layer.json"
    panel = next(p for p in file.panels() if any(t.get("format") == 256 for t in p.get("targets") or []))
    assert problem.where == panel_name(panel) and problem.line == file.panel_line(panel)
    assert "is not one the plugin's backend runs" in problem.message
    assert str(problem).startswith(f"{problem.path}:{problem.line}: {panel_name(panel)}: query A: format 256")


@pytest.mark.parametrize(("change", "expected"), [
    ({"format": 5}, "format 5 is not one"),
    ({"format": "1"}, "format '1' is not one"),
    ({"queryType": "timeSeries"}, "queryType 'timeSeries' is not one of"),
    ({"queryType": "timeseries"}, "disagrees with format 1"),
    ({"pluginVersion": "3.3.0"}, "3.x model"),
])
def test_target_problems(change: dict[str, Any], expected: str) -> None:
    target = {"editorType": "sql", "format": 1, "meta": {}, "pluginVersion": PLUGIN_VERSION, "queryType": "table",
              "rawSql": "SELECT 1", "refId": "A"}
    assert target_problems(target) == []
    assert any(expected in problem for problem in target_problems(target | change))


def test_alert_rules_use_the_plugins_model() -> None:
    models = [query["model"] for path in alerting_paths() for group in (yaml.safe_load(path.read_text()) or {})
              .get("groups") or [] for rule in group.get("rules") or [] for query in rule.get("data") or []
              if query.get("datasourceUid") == "shoppulse-clickhouse"]
    assert models
    for model in models:
        assert target_problems(model) == [] and migrate_target(model) == model
