"""How strong the evidence must be before a series opens an anomaly region, per country and metric.

The knob is each series' ``open_z``: the |z| (or a detector's surprise, as a |z|) from which a step
is strong enough to open a region (``regions.RegionTracker``). Higher is less sensitive: fewer false
alerts, later or missed incidents. The values live in ``detection/sensitivity.yaml`` of the as-code
home, reviewed in Git like the dashboards and alert rules; ``shoppulse backtest --write`` proposes
them from history, and the sidecar reads the file at start and again whenever it changes.

Example::

    default_open_z: 4.0
    open_z:
      DE:
        payment_failure_rate: 5.0   # DE's payment gateway flaps: fewer pages for it
      ALL:
        views_per_s: 6.0            # the store's traffic is bursty

A series the file does not name uses ``default_open_z``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shoppulse.events.schema import Country
from shoppulse.project_files import detection_dir
from shoppulse.sidecar.reviewed_file import ReviewedFileError, parse_reviewed, read_reviewed
from shoppulse.sidecar.signals import GLOBAL, METRICS

DEFAULT_OPEN_Z = 4.0
MIN_OPEN_Z = 2.5  # below this a calm series opens regions every few minutes by chance alone
MAX_OPEN_Z = 20.0
SERIES_COUNTRIES = (*get_args(Country), GLOBAL)
HEADER = ("# Per-country and per-metric detection sensitivity, reviewed in Git: the |z| from which a step opens\n"
          "# an anomaly region (higher: fewer alerts, later detection). A series not named uses default_open_z.\n"
          "# `shoppulse backtest --write` proposes it from history; the sidecar rereads it when it changes.\n")


class SensitivityError(ReviewedFileError):
    """The sensitivity file cannot be used; the message names the file, the place and the fix."""


class _SensitivityFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_open_z: float = Field(default=DEFAULT_OPEN_Z, ge=MIN_OPEN_Z, le=MAX_OPEN_Z)
    open_z: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("open_z")
    @classmethod
    def _known_series(cls, by_country: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for country, by_metric in by_country.items():
            if country not in SERIES_COUNTRIES:
                raise ValueError(f"{country!r} is not a country of the store: use one of "
                                 f"{', '.join(SERIES_COUNTRIES)}")
            for metric, value in (by_metric or {}).items():
                if metric not in METRICS:
                    raise ValueError(f"{country}.{metric}: no such metric; the sidecar's are {', '.join(METRICS)}")
                if not MIN_OPEN_Z <= value <= MAX_OPEN_Z:
                    raise ValueError(f"{country}.{metric}: {value} is outside {MIN_OPEN_Z} to {MAX_OPEN_Z}")
        return by_country


@dataclass(frozen=True)
class Sensitivity:
    default: float = DEFAULT_OPEN_Z
    by_series: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (metric, country) -> open_z

    def open_z(self, metric: str, country: str) -> float:
        return self.by_series.get((metric, country), self.default)

    def as_yaml(self) -> str:
        """The file's text: countries and metrics in a fixed order, so a retune reads as a small diff."""
        by_country: dict[str, dict[str, float]] = {}
        for country in SERIES_COUNTRIES:
            chosen = {m: round(self.by_series[(m, country)], 2) for m in METRICS if (m, country) in self.by_series}
            if chosen:
                by_country[country] = chosen
        document = {"default_open_z": round(self.default, 2), "open_z": by_country}
        return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def sensitivity_path() -> Path:
    return detection_dir() / "sensitivity.yaml"


def parse_sensitivity(text: str, origin: str) -> Sensitivity:
    parsed = parse_reviewed(text, origin, _SensitivityFile, SensitivityError, "default_open_z and open_z",
                            "fix the file; `shoppulse backtest --write` writes a valid one")
    return Sensitivity(parsed.default_open_z, {(metric, country): value
                                               for country, by_metric in parsed.open_z.items()
                                               for metric, value in (by_metric or {}).items()})


def load_sensitivity(path: Path) -> Sensitivity:
    """The file's sensitivity; the defaults when there is no file."""
    text = read_reviewed(path, SensitivityError)
    return Sensitivity() if text is None else parse_sensitivity(text, str(path))


def write_sensitivity(path: Path, sensitivity: Sensitivity) -> None:
    """Replace the file in one step, so a sidecar rereading it never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(sensitivity.as_yaml(), encoding="utf-8")
    os.replace(partial, path)
