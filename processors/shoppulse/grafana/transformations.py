"""Grafana's "Config from query results" transformation (``configFromData``), as its frontend applies it.

Mirrors grafana/grafana's ``configFromQuery.ts`` and ``fieldToConfigMapping.ts`` (Grafana 12, as since 8.1): the
config query's frame (``configRefId``) is taken out of the panel's data; each of its fields is reduced
(``lastNotNull`` unless its mapping names another reducer); a field mapped to ``threshold1`` pushes a
step ``{value, color}`` (its mapping's colour, red by default) in field order onto a fresh thresholds
config, a null value pushes nothing; and that config *replaces* the thresholds of the fields it
applies to (by default every numeric field of the other frames), so the panel's own thresholds no
longer count for them. Only the threshold mapping the dashboards use is modelled; any other handler
is refused rather than guessed.
"""

from __future__ import annotations

import math
from typing import Any

from shoppulse.grafana.shapes import Result

SUPPORTED_HANDLERS = frozenset({"threshold1"})


class UnsupportedTransformationError(ValueError):
    """A transformation option this model of Grafana does not reproduce."""


def _last_not_null(values: list[Any]) -> Any:
    return next((v for v in reversed(values) if v is not None and not (isinstance(v, float) and math.isnan(v))),
                None)


def config_from_data(panel: dict[str, Any]) -> dict[str, Any] | None:
    """The options of a panel's first enabled ``configFromData`` transformation (None without one)."""
    for transformation in panel.get("transformations") or []:
        if transformation.get("id") == "configFromData" and not transformation.get("disabled"):
            return dict(transformation.get("options") or {})
    return None


def config_ref_id(panel: dict[str, Any]) -> str | None:
    """The refId of the query a panel takes its field config from (Grafana's default: ``config``)."""
    options = config_from_data(panel)
    return None if options is None else str(options.get("configRefId", "config"))


def config_thresholds(panel: dict[str, Any], results: dict[str, Result]) -> list[dict[str, Any]] | None:
    """The threshold steps a panel's ``configFromData`` transformation gives its numeric fields, from the
    query results by refId; None when the panel has none or its config query returned nothing."""
    ref = config_ref_id(panel)
    config = None if ref is None else results.get(ref)
    if config is None:
        return None
    options = config_from_data(panel) or {}
    mappings = {m.get("fieldName"): m for m in options.get("mappings") or []}
    steps: list[dict[str, Any]] = []
    for column in config.columns:
        mapping = mappings.get(column)
        handler = mapping.get("handlerKey") if mapping else column.lower()
        if mapping is None and handler not in SUPPORTED_HANDLERS:
            continue  # an unmapped field whose name is no handler's: ignored, as Grafana does
        if handler not in SUPPORTED_HANDLERS:
            raise UnsupportedTransformationError(f"configFromData handler {handler!r} (field {column!r}) is not "
                                                 "modelled; only threshold1 is")
        if mapping and mapping.get("reducerId", "lastNotNull") != "lastNotNull":
            raise UnsupportedTransformationError(
                f"configFromData reducer {mapping.get('reducerId')!r} is not modelled")
        value = _last_not_null(config.values(column))
        if value is None:
            continue
        colour = (((mapping or {}).get("handlerArguments") or {}).get("threshold") or {}).get("color") or "red"
        steps.append({"value": float(value), "color": colour})
    return steps


def active_colour(steps: list[dict[str, Any]], value: float | None) -> str | None:
    """The colour of the step a value falls in, as Grafana's ``getActiveThreshold`` picks it: the first
    step, then each following one whose value it reaches (a null step value is minus infinity)."""
    if not steps:
        return None
    colour = steps[0].get("color")
    for step in steps[1:]:
        bound = step.get("value")
        if value is not None and (bound is None or value >= bound):
            colour = step.get("color")
        else:
            break
    return colour
