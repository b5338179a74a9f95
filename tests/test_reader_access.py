"""Grafana's read-only user: the settings it may send and the statements it may run, as the endpoint decides."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoppulse.devstack.clickhouse_errors import ClickHouseError
from shoppulse.devstack.reader_access import (
    MAX_EXECUTION_S,
    check_reader_statement,
    reader_engine_settings,
    reader_settings,
)

DEFAULTS = {"max_threads": "0", "readonly": "0", "max_execution_time": "0"}


def current(name: str) -> str | None:
    return DEFAULTS.get(name)


@given(st.text(max_size=30))
def test_max_execution_time_is_accepted_only_within_its_bounds(value: str) -> None:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    try:
        settings = reader_settings({"max_execution_time": value}, current)
    except ClickHouseError as exc:
        assert not 0 < seconds <= MAX_EXECUTION_S
        assert exc.code == 452
        return
    assert 0 < seconds <= MAX_EXECUTION_S
    assert settings["max_execution_time"] == value and settings["readonly"] == "1"


@given(st.dictionaries(st.sampled_from(["max_threads", "readonly", "max_result_bytes", "result_overflow_mode",
                                        "log_comment", "max_memory_usage"]), st.text(max_size=12), max_size=4))
def test_any_other_setting_may_only_keep_its_value(requested: dict[str, str]) -> None:
    ours = reader_engine_settings()
    unchanged = all(value == ours.get(name, current(name)) for name, value in requested.items())
    try:
        settings = reader_settings(requested, current)
    except ClickHouseError as exc:
        assert not unchanged and exc.code == 164
        return
    assert unchanged and settings == ours


TABLE_FUNCTIONS = frozenset({"file", "url", "numbers", "values", "s3", "remote", "executable", "view"})


@pytest.mark.parametrize(("ast", "error"), [
    ("SelectWithUnionQuery (children 1)\n ExpressionList\n  Function file (children 1)", "ACCESS_DENIED"),
    ("SelectWithUnionQuery (children 1)\n   TableExpression\n    Function URL (children 1)", "ACCESS_DENIED"),
    ("SelectWithUnionQuery (children 1)\n   Function catboostEvaluate (children 1)", "ACCESS_DENIED"),
    ("SelectWithUnionQuery (children 1)\n   Set", "READONLY"),
    ("KillQueryQuery Literal_UInt64_1 ASYNC (children 1)", "ACCESS_DENIED"),
    ("SYSTEM query", "READONLY"),
    ("InsertQuery   (children 2)\n Function file (children 1)", "READONLY"),
    ("Explain EXPLAIN (children 1)\n InsertQuery (children 1)", "READONLY"),
    ("", "READONLY"),
])
def test_statements_a_reader_may_not_run(ast: str, error: str) -> None:
    with pytest.raises(ClickHouseError, match=error):
        check_reader_statement(ast, TABLE_FUNCTIONS)


@pytest.mark.parametrize("ast", [
    "SelectWithUnionQuery (children 1)\n   TableExpression\n    Function numbers (children 1)",
    "SelectWithUnionQuery (children 1)\n    Function toStartOfInterval (children 1)\n     Function view",
    "ShowTables", "ShowColumns", "DescribeQuery (children 1)", "ExistsTableQuery  t (children 1)",
    "Explain EXPLAIN SYNTAX (children 1)\n SelectWithUnionQuery (children 1)",
])
def test_statements_a_reader_may_run(ast: str) -> None:
    check_reader_statement(ast, TABLE_FUNCTIONS)
