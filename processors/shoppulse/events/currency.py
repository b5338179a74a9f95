"""Conversion of shop amounts into the one reporting currency, from the checked-in rates table."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from shoppulse.events.schema import Currency

RATES_FILE = Path(__file__).with_name("fx_rates.yaml")
CENT_FRACTION = Decimal("0.0001")  # amounts are kept to 4 decimal places, like ClickHouse Decimal(18, 4)


class RatesTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reporting_currency: Currency
    as_of: str
    rates: dict[Currency, Decimal]

    @field_validator("rates")
    @classmethod
    def _every_currency_has_a_positive_rate(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        missing = set(get_args(Currency)) - set(rates)
        if missing:
            raise ValueError(f"no rate for {', '.join(sorted(missing))}")
        if any(rate <= 0 for rate in rates.values()):
            raise ValueError("every rate must be positive")
        return rates

    def to_reporting(self, amount: Decimal, currency: str) -> Decimal:
        return (amount * self.rates[currency]).quantize(CENT_FRACTION)  # type: ignore[index]


@cache
def load_rates(path: Path = RATES_FILE) -> RatesTable:
    return RatesTable.model_validate(yaml.safe_load(path.read_text()))
