"""Store live's Actions panel, Action steps and Actions annotations read what the actions processor
records: over the demo's failover (proposed, asked in Slack, approved, executed, rolled back) the
panel shows it rolled back and who approved it, the annotations mark its execution and rollback, and
the ``actions`` view's state is the processor's own latest step."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from checkout import ROOT
from conftest import EndpointProcess
from shoppulse.actions.audit import STEP_ORDER, Step, read_actions
from shoppulse.ascode.dashboards.demo_data import DemoPlan, action_rows
from shoppulse.grafana.interpolate import QueryContext, clickhouse_query
from shoppulse.grafana.shapes import Result, shape_problems

STORE_LIVE = json.loads((ROOT / "grafana" / "dashboards" / "store-live.json").read_text())
COUNTRIES = {"country": ["US", "DE", "GB", "FR", "BR", "JP", "IN", "AU"]}


def sql_of(name: str) -> str:
    if name == "annotation":
        [annotation] = [a for a in STORE_LIVE["annotations"]["list"] if a["name"] == "Actions"]
        return str(annotation["target"]["rawSql"])
    [panel] = [p for p in STORE_LIVE["panels"] if p["title"] == name]
    return str(panel["targets"][0]["rawSql"])


@pytest.mark.integration
def test_the_actions_panel_and_annotations_show_the_recorded_steps(clickhouse_endpoint: EndpointProcess) -> None:
    _settings, client = clickhouse_endpoint.migrated("actions_panel")
    plan = DemoPlan(now=datetime.now(UTC).replace(microsecond=0))
    rows = action_rows(plan)
    client.insert("action_audit", rows, column_names=["at", "action_id", "policy", "incident_id", "country", "step",
                                                      "mode", "actor", "detail", "request", "rollback", "response"])
    [action] = read_actions(client, plan.now - timedelta(hours=6))
    [(state, answered_by)] = client.query("SELECT state, answered_by FROM actions").result_rows
    assert (state, answered_by) == (action.latest, "slack:U0ONCALL") == ("rolled_back", "slack:U0ONCALL")

    day = QueryContext(plan.now - timedelta(hours=24), plan.now, 60_000, COUNTRIES, multi=frozenset({"country"}))
    table = client.query(clickhouse_query(sql_of("Actions"), day))
    assert [dict(zip(table.column_names, r, strict=True))["state"] for r in table.result_rows] == ["rolled_back"]
    steps = client.query(clickhouse_query(sql_of("Action steps"), day)).result_rows
    assert sorted(step for _, step, _ in steps) == ["approval_requested", "approved", "executed", "proposed",
                                                   "rolled_back"]

    marked = client.query(clickhouse_query(sql_of("annotation"), day))
    events = [dict(zip(marked.column_names, r, strict=True)) for r in marked.result_rows]
    assert [e["tags"].split(",") for e in events] == [["action", "executed", "DE"], ["action", "rolled_back", "DE"]]
    assert events[1]["text"] == "payment-failover in DE: rolled_back — rolled back: the incident resolved"
    result = Result(list(marked.column_names), [t.name for t in marked.column_types], marked.result_rows)
    assert shape_problems({"type": "annotation"}, {}, result) == []
    elsewhere = QueryContext(plan.now - timedelta(hours=24), plan.now, 60_000, {"country": ["US"]},
                             multi=frozenset({"country"}))
    assert client.query(clickhouse_query(sql_of("annotation"), elsewhere)).result_rows == []
    client.close()


@pytest.mark.parametrize(("columns", "types", "says"), [
    (["time", "title"], ["DateTime64(3, 'UTC')", "UInt8"], "needs a text column"),
    (["at", "text"], ["String", "String"], "needs a time column"),
    (["time", "text"], ["String", "String"], "not a DateTime"),
    (["time", "text", "tags"], ["DateTime", "String", "UInt32"], "splits a string on commas"),
    (["time", "text", "timeEnd"], ["DateTime", "String", "String"], "timeEnd column is String"),
])
def test_an_annotation_query_grafana_would_show_nothing_for_is_refused(columns: list[str], types: list[str],
                                                                      says: str) -> None:
    problems = shape_problems({"type": "annotation"}, {}, Result(columns, types, []))
    assert any(says in p for p in problems), problems


def test_the_view_orders_steps_as_the_processor_does() -> None:
    """Steps of one moment are ordered the same way by the actions view (SQL) and read_actions (Python)."""
    view = (ROOT / "clickhouse" / "0027_actions_view.sql").read_text()
    [listed] = re.findall(r"indexOf\((\[[^\]]+\]), step\)", view)
    expected: Any = list(Step.__args__)  # type: ignore[attr-defined]
    assert json.loads(listed.replace("'", '"')) == expected == json.loads(STEP_ORDER.replace("'", '"'))
