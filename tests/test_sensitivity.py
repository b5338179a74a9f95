"""detection/sensitivity.yaml: parsed strictly, written in a stable order, reread by the sidecar when it
changes (a broken edit keeps the sensitivity in use), refused at start."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from clickhouse_connect.driver.client import Client

from checkout import ROOT
from shoppulse.settings import Settings
from shoppulse.sidecar import main
from shoppulse.sidecar.app import Sidecar, retune
from shoppulse.sidecar.reviewed_file import FileWatch
from shoppulse.sidecar.sensitivity import (
    Sensitivity,
    SensitivityError,
    load_sensitivity,
    parse_sensitivity,
    write_sensitivity,
)
from shoppulse.streaming import ProcessorStartError

TUNED = Sensitivity(4.5, {("payment_failure_rate", "DE"): 6.0, ("views_per_s", "ALL"): 3.0})


def test_the_shipped_file_is_valid() -> None:
    assert load_sensitivity(ROOT / "detection" / "sensitivity.yaml").default == 4.0


def test_written_and_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "detection" / "sensitivity.yaml"
    write_sensitivity(path, TUNED)
    assert load_sensitivity(path) == TUNED
    assert TUNED.open_z("payment_failure_rate", "DE") == 6.0 and TUNED.open_z("orders_per_s", "DE") == 4.5
    text = path.read_text()
    assert text.index("DE:") < text.index("ALL:")  # countries in the store's order, the store last
    assert load_sensitivity(tmp_path / "missing.yaml") == Sensitivity()


@pytest.mark.parametrize(("text", "message"), [
    ("open_z: {XX: {views_per_s: 5}}", "'XX' is not a country of the store"),
    ("open_z: {DE: {views: 5}}", "DE.views: no such metric"),
    ("open_z: {DE: {views_per_s: 1}}", "DE.views_per_s: 1.0 is outside 2.5 to 20.0"),
    ("default_open_z: 50", "default_open_z: Input should be less than or equal to 20"),
    ("defaults: 4", "defaults: Extra inputs are not permitted"),
    ("open_z: [", "is not valid YAML"),
    ("- 4", "expected a mapping"),
])
def test_a_bad_file_is_refused_with_where_and_why(text: str, message: str) -> None:
    with pytest.raises(SensitivityError) as raised:
        parse_sensitivity(text, "detection/sensitivity.yaml")
    assert message in str(raised.value) and str(raised.value).startswith("detection/sensitivity.yaml")


def test_the_sidecar_rereads_the_file_when_it_changes_and_keeps_it_when_broken(tmp_path: Path) -> None:
    path = tmp_path / "sensitivity.yaml"
    write_sensitivity(path, TUNED)
    sidecar = Sidecar(cast(Client, None), replaying=True)
    watch = FileWatch(path, load_sensitivity)
    retune(sidecar, watch, starting=True)
    tracker = sidecar._series("payment_failure_rate", "DE").tracker  # a series seen before the change
    assert tracker.open_z == 6.0 and sidecar._series("orders_per_s", "JP").tracker.open_z == 4.5
    path.write_text("open_z: {DE: {payment_failure_rate: 0}}\n")  # a broken edit: kept out, logged
    os.utime(path, ns=(1, 1))
    retune(sidecar, watch)
    assert tracker.open_z == 6.0
    write_sensitivity(path, Sensitivity(4.0, {("payment_failure_rate", "DE"): 8.0}))  # the fix is applied
    retune(sidecar, watch)
    assert tracker.open_z == 8.0 and sidecar.series[("orders_per_s", "JP")].tracker.open_z == 4.0
    path.unlink()  # no file: the defaults
    retune(sidecar, watch)
    assert tracker.open_z == 4.0
    path.write_text("open_z: [")
    with pytest.raises(SensitivityError):  # at start a broken file stops the sidecar
        retune(Sidecar(cast(Client, None)), FileWatch(path, load_sensitivity), starting=True)


def test_the_sidecar_process_refuses_a_broken_file_before_it_starts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "detection").mkdir()
    (tmp_path / "detection" / "sensitivity.yaml").write_text("open_z: {DE: {orders: 5}}\n")
    monkeypatch.setenv("SHOPPULSE_HOME", str(tmp_path))
    with pytest.raises(ProcessorStartError, match=r"sensitivity.yaml: open_z: .*DE.orders: no such metric"):
        main.run(Settings(), threading.Event(), timedelta(minutes=1))
