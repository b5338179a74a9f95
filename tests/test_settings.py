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


def test_an_empty_variable_is_unset_as_compose_passes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose.yml passes ``${X:-}`` for every optional setting: the actions service must start."""
    for name in ("SHOPPULSE_SHOP_ADMIN_URL", "SHOPPULSE_SHOP_ADMIN_TOKEN", "SHOPPULSE_ACTIONS_PUBLIC_URL",
                 "SLACK_BOT_TOKEN", "SHOPPULSE_ACTIONS_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert (settings.shop_admin_url, settings.actions_public_url, settings.slack_bot_token) == (None, None, None)


def test_a_setting_read_from_two_names_prefers_ours_and_is_named_when_bad(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_CHANNEL", "C0ALERTS")
    assert load_settings().actions_slack_channel == "C0ALERTS"
    monkeypatch.setenv("SHOPPULSE_ACTIONS_SLACK_CHANNEL", "C0APPROVALS")
    assert load_settings().actions_slack_channel == "C0APPROVALS"
    monkeypatch.setenv("SHOPPULSE_ACTIONS_PUBLIC_URL", "actions.example.com")
    with pytest.raises(SettingsError, match=r"^bad setting SHOPPULSE_ACTIONS_PUBLIC_URL='actions\.example\.com'"):
        load_settings()


def test_every_secret_setting_is_redacted_wherever_it_is_printed() -> None:
    """A setting hidden from repr is a secret: its variable is one the CLI's and the logs' redaction knows,
    and a setting that is a URL may carry credentials, which the redaction strips too."""
    from shoppulse.redact import SECRET_VARIABLES, URL_VARIABLES
    from shoppulse.settings import Settings, _env_name

    secrets = {_env_name(name) for name, info in Settings.model_fields.items() if not info.repr}
    assert secrets <= set(SECRET_VARIABLES), secrets - set(SECRET_VARIABLES)
    urls = {_env_name(name) for name in Settings.model_fields if name.endswith("_url")} - {"SLACK_WEBHOOK_URL"}
    assert urls <= set(URL_VARIABLES), urls - set(URL_VARIABLES)
