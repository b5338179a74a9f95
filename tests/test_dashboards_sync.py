"""`shoppulse dashboards push` and `export` against a server enforcing Grafana's dashboard API contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import ROOT
from shoppulse.ascode.dashboards.sync import render
from shoppulse.devstack.grafana_double import fake_grafana
from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana_api import GrafanaClient

TOKEN = "glsa_test_service_account_token"


def shoppulse(*args: str, url: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRAFANA_URL": url, "GRAFANA_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "shoppulse", "dashboards", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT, env=env)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "dashboards"
    folder.mkdir()
    for path in dashboard_paths():
        shutil.copy(path, folder / path.name)
    return folder


def test_shipped_files_are_in_the_normalised_form() -> None:
    for path in dashboard_paths():
        assert render(json.loads(path.read_text())) == path.read_text(), f"{path.name}: not normalised"


def test_push_creates_then_export_import_export_is_byte_identical(repo_copy: Path, tmp_path: Path) -> None:
    with fake_grafana(TOKEN) as (url, grafana):
        pushed = shoppulse("push", *map(str, dashboard_paths(repo_copy)), url=url)
        assert pushed.returncode == 0, pushed.stderr
        assert pushed.stdout.count("created") == 3
        assert set(grafana.folders) == {"shoppulse"}
        assert {d["folderUid"] for d in grafana.dashboards.values()} == {"shoppulse"}
        saves = [body for method, path, body in grafana.requests if path == "/api/dashboards/db"]
        assert all(body["overwrite"] is False and body["dashboard"]["id"] is None for body in saves)

        # Someone edits a dashboard in the UI: Grafana's frontend adds pluginVersion, the save bumps version.
        edited = json.loads(json.dumps(grafana.dashboards["shoppulse-store-live"]["dashboard"]))
        edited["title"] = "Store live (wall)"
        for panel in edited["panels"]:
            panel["pluginVersion"] = "11.3.0"
        GrafanaClient(url, TOKEN).save_dashboard(edited, "shoppulse", "UI edit", overwrite=False)

        exported = shoppulse("export", "--folder", str(repo_copy), url=url)
        assert exported.returncode == 0, exported.stderr
        assert "3 dashboard(s) exported, 1 changed" in exported.stdout
        first = {p.name: p.read_bytes() for p in dashboard_paths(repo_copy)}
        store = json.loads(first["store-live.json"])
        assert store["title"] == "Store live (wall)"
        assert store["id"] is None and "version" not in store
        assert all("pluginVersion" not in panel for panel in store["panels"])

        again = shoppulse("push", *map(str, dashboard_paths(repo_copy)), url=url)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("unchanged") == 3

        second_folder = tmp_path / "second"
        second_folder.mkdir()
        assert shoppulse("export", "--folder", str(second_folder), url=url).returncode == 0
        assert {p.name: p.read_bytes() for p in dashboard_paths(second_folder)} == first


def test_push_updates_with_a_version_check_and_refuses_a_concurrent_change(repo_copy: Path) -> None:
    path = repo_copy / "ai-layer.json"
    with fake_grafana(TOKEN) as (url, grafana):
        assert shoppulse("push", str(path), url=url).returncode == 0
        model = json.loads(path.read_text())
        model["refresh"] = "1m"
        path.write_text(render(model))
        updated = shoppulse("push", str(path), url=url)
        assert updated.returncode == 0, updated.stderr
        assert "updated" in updated.stdout and "version 2" in updated.stdout
        body = [b for m, p, b in grafana.requests if p == "/api/dashboards/db"][-1]
        assert body["dashboard"]["version"] == 1 and body["overwrite"] is False

        # The version check: a save carrying a stale version is refused, as Grafana does.
        client = GrafanaClient(url, TOKEN)
        stale = dict(grafana.dashboards["shoppulse-ai-layer"]["dashboard"], version=1)
        with pytest.raises(Exception, match="412 The dashboard has been changed by someone else"):
            client.save_dashboard(stale, "shoppulse", "stale", overwrite=False)
        assert grafana.dashboards["shoppulse-ai-layer"]["dashboard"]["refresh"] == "1m"


def test_bad_token_and_missing_settings_fail_clearly(repo_copy: Path) -> None:
    with fake_grafana(TOKEN) as (url, grafana):
        denied = shoppulse("push", str(repo_copy / "ai-layer.json"), url=url, token="wrong")
        assert denied.returncode == 1
        assert "HTTP 401 invalid API key — set GRAFANA_TOKEN to a valid service-account token" in denied.stderr
        assert "wrong" not in denied.stderr + denied.stdout
        assert grafana.dashboards == {}
    unreachable = shoppulse("export", "--folder", str(repo_copy), url="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_URL", "GRAFANA_TOKEN")}
    done = subprocess.run([sys.executable, "-m", "shoppulse", "dashboards", "export"], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT, env=env)
    assert done.returncode == 2 and "GRAFANA_URL is not set" in done.stderr
