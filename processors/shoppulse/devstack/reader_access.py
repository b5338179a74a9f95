"""What Grafana's read-only ClickHouse user may run on the local endpoint, decided by the endpoint itself.

On a real server that user has the ``grafana_reader`` role (clickhouse/0009, 0015): SELECT on the
database and the ``readonly = 1`` profile, in which only ``max_execution_time`` may change, within
its bounds. The embedded engine has no access storage, and its own readonly setting does not cover
what the engine adds: the scalar ``file()`` reads host files even under ``readonly = 1``, ``INTO
OUTFILE`` writes one, ``KILL QUERY`` and ``SYSTEM`` run. So the endpoint decides from ClickHouse's
own parse of the statement (``EXPLAIN AST``, the engine's parser, never a second grammar of ours):

* the statement is one read — SELECT (with UNION, INTERSECT, EXCEPT), SHOW, DESCRIBE, EXISTS, or an
  EXPLAIN of one of those;
* it calls no table function outside ``SAFE_TABLE_FUNCTIONS`` (numbers, values, view…), wherever it
  stands, and no scalar function that reads the host (``HOST_FUNCTIONS``);
* it has no SETTINGS clause (readonly = 1 lets a statement change no setting);
* its URL settings are those of ``readonly = 1``: unchanged values, or ``max_execution_time`` within
  ``(0, MAX_EXECUTION_S]``; and the engine runs it with the reader's limits (``reader_engine_settings``)
  as a second line of defence.

Example::

    >>> reader_settings({"max_execution_time": "30"}, current=lambda name: None)
    {'readonly': '1', 'max_execution_time': '30', 'max_result_bytes': '268435456', 'result_overflow_mode': 'throw'}
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

from shoppulse.devstack.clickhouse_errors import (
    ACCESS_DENIED,
    READONLY,
    SETTING_CONSTRAINT_VIOLATION,
    ClickHouseError,
)

DEFAULT_MAX_EXECUTION_S = 60  # the grafana_reader profile's default (clickhouse/0009)
MAX_EXECUTION_S = 300  # its upper bound (clickhouse/0015): a reader cannot lift the limit
MAX_RESULT_BYTES = 256 * 1024 * 1024  # a reader's result, uncompressed (clickhouse/0015)

# Table functions that compute rows from their arguments alone: no file, URL, other server, process or
# storage outside the tables a reader may SELECT.
SAFE_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "primes", "values",
    "null", "view", "viewIfPermitted", "generateRandom", "loop", "format", "SQLStandardValues",
})
# Scalar functions that read the host's files.
HOST_FUNCTIONS = frozenset({"file", "catboostEvaluate"})
# Settings a reader may change (the profile's CHANGEABLE_IN_READONLY), with their bounds below.
CHANGEABLE_IN_READONLY = frozenset({"max_execution_time"})

_READ_ROOT = re.compile(
    r"^(SelectWithUnionQuery|SelectIntersectExceptQuery|SelectQuery|DescribeQuery|Exists\w*Query"
    r"|Show(Tables|Columns|Functions|Indexes|Create\w*Query|Engines?\w*))$")
_FUNCTION = re.compile(r"^\s*Function (\S+)")
_SETTINGS_CLAUSE = re.compile(r"^\s*Set$")


def reader_settings(requested: dict[str, str], current: Callable[[str], str | None]) -> dict[str, str]:
    """The engine settings of a reader's request: what ``readonly = 1`` allows of ``requested`` (a
    setting given its current value ``current(name)`` is no change), plus the reader's limits.
    Raises READONLY for any other change and SETTING_CONSTRAINT_VIOLATION for an out-of-bounds limit."""
    settings = reader_engine_settings()
    for name, value in requested.items():
        if name == "max_execution_time":
            settings[name] = _bounded_execution_time(value)
        elif value != settings.get(name, current(name)):  # the reader's own limits are its current values
            raise ClickHouseError(READONLY, f"Cannot modify '{name}' setting in readonly mode (READONLY)")
    return settings


def reader_engine_settings() -> dict[str, str]:
    """The settings every reader request runs with."""
    return {"readonly": "1", "max_execution_time": str(DEFAULT_MAX_EXECUTION_S),
            "max_result_bytes": str(MAX_RESULT_BYTES), "result_overflow_mode": "throw"}


def _bounded_execution_time(value: str) -> str:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_EXECUTION_S:  # also NaN; 0 would mean no limit
        raise ClickHouseError(
            SETTING_CONSTRAINT_VIOLATION,
            f"Setting max_execution_time shouldn't be less than 0 (no limit) or greater than {MAX_EXECUTION_S}: "
            f"{value[:40]!r} is not allowed for a read-only user (SETTING_CONSTRAINT_VIOLATION)")
    return value


def check_reader_statement(ast: str, table_functions: frozenset[str]) -> None:
    """Refuse what a reader may not run, given the statement's ``EXPLAIN AST`` text and the
    engine's table function names. Raises ACCESS_DENIED or READONLY."""
    lines = [line for line in ast.splitlines() if line.strip()]
    root = _root(lines)
    if root.startswith("KillQuery"):  # other users' queries: a grant readonly users do not have
        raise ClickHouseError(ACCESS_DENIED, "Not enough privileges: a read-only user may not KILL queries "
                                             "(ACCESS_DENIED)")
    if not _READ_ROOT.match(root):
        raise ClickHouseError(
            READONLY,
            f"Cannot execute query in readonly mode: a read-only user may run SELECT, SHOW, DESCRIBE, EXISTS and "
            f"EXPLAIN of them, not {root or 'this statement'} (READONLY)")
    outside = _reaching_outside(table_functions)
    for line in lines:
        if _SETTINGS_CLAUSE.match(line):
            raise ClickHouseError(READONLY, "Cannot modify settings in readonly mode: a read-only user's statement "
                                            "may not have a SETTINGS clause (READONLY)")
        function = _FUNCTION.match(line)
        if function and function.group(1).lower() in outside:
            raise ClickHouseError(
                ACCESS_DENIED,
                f"Not enough privileges: {function.group(1)}() reaches outside the database (files, URLs, other "
                "servers or processes) and a read-only user may not call it (ACCESS_DENIED)")


@functools.cache
def _reaching_outside(table_functions: frozenset[str]) -> frozenset[str]:
    """The lower-cased names of the functions a reader may not call, of the engine's table functions
    (computed once per engine, not per request)."""
    safe = {name.lower() for name in SAFE_TABLE_FUNCTIONS}
    return frozenset({name.lower() for name in table_functions} - safe | {name.lower() for name in HOST_FUNCTIONS})


def _root(lines: list[str]) -> str:
    """The statement's kind: the AST's first node, or for EXPLAIN the node it explains."""
    if not lines:
        return ""
    first = lines[0].split()[0]
    if first == "Explain" and len(lines) > 1:
        return lines[1].split()[0]
    return first
