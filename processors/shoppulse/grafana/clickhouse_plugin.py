"""The query model of Grafana's ClickHouse plugin (grafana-clickhouse-datasource 4.x, read from its
``src/data/migration.ts``, ``src/data/utils.ts`` and ``src/types``): what a panel target looks like
once the plugin's editor has opened it, and what its backend accepts.

A v3 target (no ``pluginVersion`` of 4 or more, or ``queryType`` ``sql``/``builder``) is migrated by
the plugin the first time its editor opens: ``queryType`` becomes the one its ``format`` maps to,
``pluginVersion`` is set, ``meta`` becomes ``{}`` (keeping a timezone), and ``builderOptions`` and
``selectedFormat`` go. ``dashboards export`` then brings that form back to Git, so the shipped files
are kept in it and the lint accepts exactly it.
"""

from __future__ import annotations

import re
from typing import Any

PLUGIN_VERSION = "4.13.0"  # the plugin release whose source this mirrors
# The plugin's QueryType values and the Grafana frame format each maps to (grafana/sqlds' FormatQueryOption).
QUERY_TYPE_FORMATS = {"timeseries": 0, "table": 1, "logs": 2, "traces": 3}
FORMAT_QUERY_TYPES = {format_: query_type for query_type, format_ in QUERY_TYPE_FORMATS.items()}
MAX_FORMAT = 4  # sqlds' FormatOptionMulti; the backend refuses anything above
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def _version(text: object) -> tuple[int, int, int] | None:
    match = _VERSION.match(str(text or ""))
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def is_v3_target(target: dict[str, Any]) -> bool:
    """Whether the plugin treats this target as one saved by its 3.x editor (and migrates it)."""
    version = _version(target.get("pluginVersion"))
    return version is None or version < (4, 0, 0) or target.get("queryType") in ("sql", "builder")


def migrate_target(target: dict[str, Any]) -> dict[str, Any]:
    """The target as the plugin's editor rewrites it on opening (SQL targets; others unchanged)."""
    if "rawSql" not in target or not is_v3_target(target) or target.get("queryType") == "builder":
        return dict(target)
    migrated = dict(target, pluginVersion=PLUGIN_VERSION, editorType="sql", rawSql=target.get("rawSql") or "",
                    refId=target.get("refId") or "")
    migrated["queryType"] = FORMAT_QUERY_TYPES.get(target.get("format"), "table")  # type: ignore[arg-type]
    meta: dict[str, Any] = {}
    old_meta = target.get("meta")
    if isinstance(old_meta, dict) and old_meta.get("timezone"):
        meta["timezone"] = old_meta["timezone"]
    migrated["meta"] = meta
    migrated.pop("builderOptions", None)
    migrated.pop("selectedFormat", None)
    return migrated


def target_problems(target: dict[str, Any]) -> list[str]:
    """Why the plugin would not run this target as it is (empty: it would)."""
    problems = []
    fmt = target.get("format")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or not 0 <= fmt <= MAX_FORMAT:
        problems.append(f"format {fmt!r} is not one the plugin's backend runs (0 time series, 1 table, 2 logs, "
                        f"3 traces, {MAX_FORMAT} multi): pick the query type in the editor again")
    query_type = target.get("queryType")
    if is_v3_target(target):
        problems.append(f"the target is in the plugin's 3.x model (pluginVersion {target.get('pluginVersion')!r}, "
                        f"queryType {query_type!r}): Grafana rewrites it when it is opened; save it as the plugin "
                        f"writes it (pluginVersion, queryType {sorted(QUERY_TYPE_FORMATS)}, meta)")
    elif query_type not in QUERY_TYPE_FORMATS:
        problems.append(f"queryType {query_type!r} is not one of the plugin's {sorted(QUERY_TYPE_FORMATS)}")
    elif isinstance(fmt, int) and fmt in FORMAT_QUERY_TYPES and FORMAT_QUERY_TYPES[fmt] != query_type:
        problems.append(f"queryType {query_type!r} disagrees with format {fmt} ({FORMAT_QUERY_TYPES[fmt]}): the "
                        "editor keeps them together")
    return problems
