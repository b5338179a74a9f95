"""Scripted incidents from a YAML scenario file, and the ground truth they leave behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shoppulse.events.schema import Country, Device
from shoppulse.loadgen.markets import MARKETS
from shoppulse.loadgen.phenomena import ActivePhenomenon, Phenomenon
from shoppulse.loadgen.shoppers import GATEWAY_KINDS, campaign_id
from shoppulse.project_files import scenarios_dir

IncidentKind = Literal["payment_outage", "flash_sale", "checkout_latency", "abandonment_surge", "ad_click_flood",
                       "chargeback_wave"]

# What each kind of incident moves, in the metric names the aggregates and the sidecar use.
AFFECTED_METRICS: dict[str, tuple[str, ...]] = {
    "payment_outage": ("payment_failure_rate", "orders_per_s", "revenue_per_s", "orders_per_view",
                       "carts_without_order"),
    "flash_sale": ("orders_per_s", "revenue_per_s", "views_per_s"),
    "checkout_latency": ("payment_latency_p95", "carts_without_order", "orders_per_view"),
    "abandonment_surge": ("carts_without_order", "checkouts_per_cart", "orders_per_view", "orders_per_s"),
    "ad_click_flood": ("ad_spend_per_s", "orders_per_ad_click"),
    "chargeback_wave": ("refunds_per_s",),
}



class Incident(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IncidentKind
    countries: list[Country] = Field(min_length=1)
    start_after_s: float = Field(ge=0, description="Seconds after the run starts")
    duration_s: float = Field(gt=0)
    magnitude: float = Field(default=1.0, gt=0, le=10, description="1 = the default strength")
    gateway: str | None = Field(default=None, description="Only this payment gateway fails or slows "
                                                          "(payment_outage, checkout_latency); default: all")
    devices: list[Device] | None = Field(default=None, min_length=1,
                                         description="Only shoppers on these devices meet it (not for flash_sale, "
                                                     "which brings shoppers on every device, nor ad_click_flood "
                                                     "and chargeback_wave); default: all")
    campaign: Literal["search", "social"] | None = Field(
        default=None, description="ad_click_flood: the channel of the countries' campaign whose paid clicks "
                                  "multiply (DE's search campaign is de-search); default: search")

    @model_validator(mode="after")
    def _devices_for_shopper_incidents(self) -> Incident:
        if self.devices is not None and self.kind in ("flash_sale", "ad_click_flood", "chargeback_wave"):
            why = {"flash_sale": "a flash sale brings shoppers on every device",
                   "ad_click_flood": "an ad click flood comes from every device",
                   "chargeback_wave": "a chargeback wave comes from every device"}[self.kind]
            raise ValueError(f"devices is for payment_outage, checkout_latency and abandonment_surge incidents: {why}")
        return self

    @model_validator(mode="after")
    def _campaign_for_floods(self) -> Incident:
        if self.campaign is not None and self.kind != "ad_click_flood":
            raise ValueError(f"campaign is for ad_click_flood incidents, not {self.kind}")
        return self

    @property
    def channel(self) -> str:
        """The flooded campaign's channel (ad_click_flood)."""
        return self.campaign or "search"

    @model_validator(mode="after")
    def _gateway_of_its_countries(self) -> Incident:
        if self.gateway is None:
            return self
        if self.kind not in GATEWAY_KINDS:
            raise ValueError(f"gateway is for {' and '.join(GATEWAY_KINDS)} incidents, not {self.kind}")
        for country in self.countries:
            if self.gateway not in MARKETS[country].gateways:
                raise ValueError(f"{country} pays through {', '.join(MARKETS[country].gateways)}, "
                                 f"not {self.gateway}")
        return self


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    incidents: list[Incident] = Field(default_factory=list)
    phenomena: list[Phenomenon] = Field(default_factory=list, description="How the traffic moves when nothing "
                                                                          "is broken (bursts, drifts, holidays…)")

    @property
    def length(self) -> timedelta:
        """From the run's start to the end of its last incident or phenomenon (a level shift: its start)."""
        ends = [i.start_after_s + i.duration_s for i in self.incidents]
        ends += [p.start_after_s + (p.duration_s or 0) for p in self.phenomena]
        return timedelta(seconds=max(ends, default=0))


class ScenarioError(ValueError):
    """A scenario file is missing or does not follow the format; the message says where."""


def scenario_file(path: Path) -> Path:
    """``path`` itself, or for a bare name that is no file here (``default``, ``all-incidents.yaml``)
    the scenario of that name shipped with shoppulse."""
    if path.is_file() or path.parent != Path("."):
        return path
    shipped = scenarios_dir() / (path.name if path.suffix else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def load_scenario(path: Path) -> Scenario:
    path = scenario_file(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from None
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class ActiveIncident:
    incident: Incident
    start: datetime
    end: datetime

    def active(self, when: datetime) -> bool:
        return self.start <= when < self.end

    def ground_truth(self) -> dict[str, object]:
        return {"kind": self.incident.kind, "countries": self.incident.countries,
                "metrics": list(AFFECTED_METRICS[self.incident.kind]),
                "start": self.start.isoformat(), "end": self.end.isoformat(),
                "magnitude": self.incident.magnitude, "gateway": self.incident.gateway,
                "devices": self.incident.devices,
                "campaigns": [campaign_id(c, self.incident.channel) for c in self.incident.countries]
                if self.incident.kind == "ad_click_flood" else None}


def schedule(scenario: Scenario, run_start: datetime) -> list[ActiveIncident]:
    return [ActiveIncident(i, run_start + timedelta(seconds=i.start_after_s),
                           run_start + timedelta(seconds=i.start_after_s + i.duration_s))
            for i in scenario.incidents]


def write_ground_truth(path: Path, incidents: list[ActiveIncident],
                       phenomena: list[ActivePhenomenon] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        truths = [i.ground_truth() for i in incidents] + [p.ground_truth() for p in phenomena or []]
        out.writelines(json.dumps(truth) + "\n" for truth in truths)
