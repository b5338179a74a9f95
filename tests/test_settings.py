"""Settings from the environment: a replaced setting is refused with what to set instead."""

from __future__ import annotations

import pytest

from shoppulse.settings import SettingsError, load_settings


def test_the_replaced_commit_interval_names_its_successors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPPULSE_COMMIT_INTERVAL_S", "0.5")
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("bad setting SHOPPULSE_COMMIT_INTERVAL_S='0.5'")
    assert "SHOPPULSE_INGEST_COMMIT_INTERVAL_S" in message and "SHOPPULSE_AGGREGATE_COMMIT_INTERVAL_S" in message


def test_each_processor_has_its_own_commit_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPPULSE_INGEST_COMMIT_INTERVAL_S", "0.25")
    settings = load_settings()
    assert (settings.ingest_commit_interval_s, settings.aggregate_commit_interval_s) == (0.25, 2.0)
    monkeypatch.setenv("SHOPPULSE_AGGREGATE_COMMIT_INTERVAL_S", "0")
    with pytest.raises(SettingsError, match="SHOPPULSE_AGGREGATE_COMMIT_INTERVAL_S"):
        load_settings()


def test_the_aggregation_runs_niced_within_the_niceness_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().aggregate_nice == 5
    monkeypatch.setenv("SHOPPULSE_AGGREGATE_NICE", "0")
    assert load_settings().aggregate_nice == 0
    monkeypatch.setenv("SHOPPULSE_AGGREGATE_NICE", "20")
    with pytest.raises(SettingsError, match="SHOPPULSE_AGGREGATE_NICE"):
        load_settings()
