"""Does a query result fit the panel that draws it? One rule per panel type, as Grafana reads frames."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

_WRAPPERS = re.compile(r"^(?:Nullable|LowCardinality|SimpleAggregateFunction\(\w+,)\((.*)\)$")


@cache
def iso_country_codes() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes, from the IANA time zone database's iso3166.tab (the tzdata package)."""
    text = resources.files("tzdata").joinpath("zoneinfo", "iso3166.tab").read_text()
    return frozenset(line.split("\t")[0] for line in text.splitlines() if line and not line.startswith("#"))


def base_type(type_name: str) -> str:
    """``LowCardinality(Nullable(String))`` -> ``String``."""
    while True:
        match = _WRAPPERS.match(type_name)
        if not match:
            return type_name
        type_name = match.group(1)


def is_time(type_name: str) -> bool:
    return base_type(type_name).startswith(("DateTime", "Date"))


def is_number(type_name: str) -> bool:
    return bool(re.match(r"^(U?Int\d+|Float\d+|Decimal)", base_type(type_name)))


def is_text(type_name: str) -> bool:
    return bool(re.match(r"^(String|FixedString|Enum|UUID)", base_type(type_name)))


@dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: Sequence[Sequence[Any]]

    def named(self, predicate: Any) -> list[str]:
        return [c for c, t in zip(self.columns, self.types, strict=True) if predicate(t)]

    def values(self, column: str) -> list[Any]:
        index = self.columns.index(column)
        return [row[index] for row in self.rows]


def shape_problems(panel: dict[str, Any], target: dict[str, Any], result: Result) -> list[str]:
    """Why ``result`` cannot be drawn by ``panel`` (empty: it can)."""
    kind = panel.get("type")
    if not result.rows and kind != "annotation":  # events are sparse: an annotation query may find none
        return ["the query returned no rows on the demo data: its filters or joins match nothing"]
    times, numbers, texts = result.named(is_time), result.named(is_number), result.named(is_text)
    described = ", ".join(f"{c} {t}" for c, t in zip(result.columns, result.types, strict=True))
    problems: list[str] = []
    if kind in ("timeseries", "heatmap", "state-timeline"):
        if target.get("format") != 0:
            problems.append(f"a {kind} panel needs the time series format (format 0, queryType timeseries; got "
                            f"format {target.get('format')!r})")
        if not times:
            problems.append(f"a {kind} panel needs a time column; the result has {described}")
        elif not _ascending(result.values(times[0])):
            problems.append(f"rows are not ordered by {times[0]}: add ORDER BY {times[0]}")
        if not numbers:
            problems.append(f"a {kind} panel needs a numeric column; the result has {described}")
        if kind == "heatmap" and len(numbers) < 2 and not texts:
            problems.append("a heatmap needs buckets: a label column (e.g. country) or several numeric columns")
    elif kind in ("stat", "gauge", "bargauge", "piechart", "barchart", "histogram"):
        if not numbers:
            problems.append(f"a {kind} panel needs a numeric column; the result has {described}")
        if kind in ("bargauge", "piechart", "barchart") and len(result.rows) > 1 and not (texts or times):
            problems.append(f"a {kind} panel with several rows needs a label column to name its bars")
        x_field = (panel.get("options") or {}).get("xField")
        if kind == "barchart" and x_field and x_field not in result.columns:
            problems.append(f"options.xField {x_field!r} is not a column of the result ({described})")
    elif kind == "geomap":
        problems += _geomap_problems(panel, result, numbers, described)
    elif kind == "annotation":
        problems += _annotation_problems(panel.get("mappings") or {}, result, described)
    return problems + _link_problems(panel, result, described)


def _annotation_problems(mappings: dict[str, Any], result: Result, described: str) -> list[str]:
    """What Grafana's annotation processing (getAnnotationsFromData, standardAnnotationSupport.ts) needs
    of a frame: ``time`` (by name, else the first time field) and ``text`` (by name, else the first
    string field) or it shows nothing; ``timeEnd`` makes a region; ``tags`` is split on commas."""
    typed = {column.lower(): type_name for column, type_name in zip(result.columns, result.types, strict=True)}

    def field(key: str) -> str | None:
        mapping = mappings.get(key) or {}
        if mapping.get("source") in ("skip", "text"):
            return None
        return typed.get(str(mapping.get("value") or key).lower())

    problems = []
    time_field = field("time")
    if time_field is None and not result.named(is_time):
        problems.append(f"an annotation query needs a time column (named time, or a DateTime); the result has "
                        f"{described}")
    elif time_field is not None and not is_time(time_field):
        problems.append(f"the annotation's time column is {time_field}, not a DateTime: Grafana places no event")
    text_field = field("text")
    if text_field is None and not result.named(is_text) and (mappings.get("text") or {}).get("source") != "text":
        problems.append(f"an annotation query needs a text column (named text, or a String); the result has "
                        f"{described}")
    end = field("timeEnd")
    if end is not None and not is_time(end):
        problems.append(f"the annotation's timeEnd column is {end}, not a DateTime")
    tags = field("tags")
    if tags is not None and not is_text(tags):
        problems.append(f"the annotation's tags column is {tags}: Grafana splits a string on commas")
    return problems


# A data link's reference to a field of the row it is clicked on: ${__data.fields.name} or
# ${__data.fields["name"]} (Grafana's data link variables), with or without a :format.
_FIELD_REFERENCE = re.compile(r"\$\{__data\.fields(?:\.([\w-]+)|\[\"([^\"]+)\"\])")


def data_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """The panel's data links: on every field and on fields picked by an override."""
    config = panel.get("fieldConfig") or {}
    links = list((config.get("defaults") or {}).get("links") or [])
    for override in config.get("overrides") or []:
        for prop in override.get("properties") or []:
            if prop.get("id") == "links":
                links += prop.get("value") or []
    return [link for link in links if isinstance(link, dict)]


def _link_problems(panel: dict[str, Any], result: Result, described: str) -> list[str]:
    """A data link naming a field the query does not return links to an empty value in Grafana."""
    problems = []
    for link in data_links(panel):
        for match in _FIELD_REFERENCE.finditer(str(link.get("url", ""))):
            name = match.group(1) or match.group(2)
            if name not in result.columns:
                problems.append(f"data link {link.get('title')!r} uses field {name!r}, which the query does not "
                                f"return ({described})")
    return problems


def _geomap_problems(panel: dict[str, Any], result: Result, numbers: list[str], described: str) -> list[str]:
    problems: list[str] = []
    layers = (panel.get("options") or {}).get("layers") or []
    lookups = [((layer.get("location") or {}).get("lookup"), (layer.get("location") or {}).get("gazetteer"))
               for layer in layers if (layer.get("location") or {}).get("mode") == "lookup"]
    if not lookups:
        return ["the geomap has no layer locating rows by lookup (location.mode lookup, countries gazetteer)"]
    for field, gazetteer in lookups:
        if field not in result.columns:
            problems.append(f"the map looks countries up in {field!r}, which is not a column ({described})")
            continue
        if gazetteer and "countries" not in str(gazetteer):
            problems.append(f"gazetteer {gazetteer!r} does not hold countries")
        unknown = sorted({str(v) for v in result.values(field)} - iso_country_codes())
        if unknown:
            problems.append(f"{field} holds values that are not ISO 3166-1 alpha-2 codes: {', '.join(unknown[:5])}")
    if not numbers:
        problems.append(f"a geomap needs a numeric column to size and colour countries; the result has {described}")
    return problems


def _ascending(values: list[Any]) -> bool:
    stamps = [v for v in values if isinstance(v, datetime)]
    return all(a <= b for a, b in itertools.pairwise(stamps))
