"""Grafana's Config from query results transformation, as modelled for the dashboard previews and tests."""

from __future__ import annotations

import math

import pytest

from shoppulse.grafana.shapes import Result
from shoppulse.grafana.transformations import UnsupportedTransformationError, active_colour, config_thresholds


def panel(*mappings: dict) -> dict:
    return {"transformations": [{"id": "configFromData", "options": {"configRefId": "B", "mappings": list(mappings)}}]}


def threshold(field: str, colour: str | None = None) -> dict:
    arguments = {"threshold": {"color": colour}} if colour else {}
    return {"fieldName": field, "handlerKey": "threshold1", "handlerArguments": arguments}


def test_steps_follow_the_config_frame_s_fields_reduced_to_their_last_value_and_nulls_push_nothing() -> None:
    config = Result(["base", "orange from", "green from", "note"],
                    ["Float64", "Nullable(Float64)", "Float64", "String"],
                    [(-math.inf, 0.4, 2.0, "x"), (-math.inf, None, 1.0, "y")])
    steps = config_thresholds(panel(threshold("base", "red"), threshold("orange from", "orange"),
                                    threshold("green from", "green")), {"B": config})
    # "orange from" last non-null is 0.4; "note" has no mapping and is no handler's name: ignored
    assert steps == [{"value": -math.inf, "color": "red"}, {"value": 0.4, "color": "orange"},
                     {"value": 1.0, "color": "green"}]
    assert [active_colour(steps, v) for v in (0.1, 0.5, 3.0, None)] == ["red", "orange", "green", "red"]


def test_a_mapping_without_a_colour_is_red_and_an_unmodelled_handler_is_refused() -> None:
    config = Result(["limit"], ["Float64"], [(5.0,)])
    assert config_thresholds(panel(threshold("limit")), {"B": config}) == [{"value": 5.0, "color": "red"}]
    assert config_thresholds(panel(), {"A": config}) is None  # the config query returned nothing
    assert config_thresholds({}, {"B": config}) is None
    with pytest.raises(UnsupportedTransformationError, match="max"):
        config_thresholds(panel({"fieldName": "limit", "handlerKey": "max"}), {"B": config})
