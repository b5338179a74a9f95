"""`shoppulse dashboards push` and `export` against a server enforcing Grafana's dashboard API contract."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import ROOT
from shoppulse.ascode.dashboards.sync import VERSIONS_FILE, PushConflictError, push, render
from shoppulse.devstack.grafana_standin import GrafanaState, grafana_standin
from shoppulse.devstack.process import free_port
from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana_api import GrafanaClient, GrafanaTimeoutError

TOKEN = "glsa_test_service_account_token"


def shoppulse(*args: str, url: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_URL", "GRAFANA_TOKEN")}
    env["GRAFANA_URL"] = url
    if token is not None:
        env["GRAFANA_TOKEN"] = token
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
    with grafana_standin(TOKEN) as (url, grafana):
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
    with grafana_standin(TOKEN) as (url, grafana):
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
    with grafana_standin(TOKEN) as (url, grafana):
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


def _saves(grafana: GrafanaState) -> list[object]:
    return [body for method, path, body in grafana.requests if method == "POST" and path.startswith("/api/")
            and path in ("/api/dashboards/db", "/api/folders")]


def test_push_of_a_provisioned_dashboard_stops_and_says_what_to_do(repo_copy: Path) -> None:
    """docker compose's Grafana provisions our dashboards from files (allowUiUpdates: false)."""
    with grafana_standin(TOKEN) as (url, grafana):
        for path in dashboard_paths(repo_copy):
            grafana.provision(json.loads(path.read_text()))
        store = repo_copy / "store-live.json"
        model = json.loads(store.read_text())
        model["refresh"] = "30s"
        store.write_text(render(model))
        for force in ([], ["--force"]):
            pushed = shoppulse("push", *force, *map(str, dashboard_paths(repo_copy)), url=url)
            assert pushed.returncode == 1
            assert "nothing pushed" in pushed.stderr
            assert "store-live.json (shoppulse-store-live): Grafana loads this dashboard from provisioning files" \
                in " ".join(pushed.stderr.split())
            assert "Change the file in Git" in " ".join(pushed.stderr.split())
        assert _saves(grafana) == []  # nothing touched: no save, no folder
        assert grafana.dashboards["shoppulse-store-live"]["dashboard"]["version"] == 1


@pytest.mark.parametrize("major", [12, 13])
def test_an_edit_made_in_grafana_after_export_is_a_conflict_until_forced(repo_copy: Path, major: int) -> None:
    path = repo_copy / "ai-layer.json"
    with grafana_standin(TOKEN, major=major) as (url, grafana):
        assert shoppulse("push", str(path), url=url).returncode == 0
        assert shoppulse("export", "--folder", str(repo_copy), url=url).returncode == 0
        assert "shoppulse-ai-layer: 1" in (repo_copy / VERSIONS_FILE).read_text()
        grafana.edit_in_ui("shoppulse-ai-layer", description="edited in Grafana")  # version 2
        model = json.loads(path.read_text())
        model["refresh"] = "1m"
        path.write_text(render(model))
        refused = shoppulse("push", str(path), url=url)
        assert refused.returncode == 1
        said = " ".join(refused.stderr.split())
        assert "changed in Grafana since you exported version 1; Grafana has version 2" in said
        assert "shoppulse dashboards export" in said and "--force" in said
        assert grafana.dashboards["shoppulse-ai-layer"]["dashboard"]["description"] == "edited in Grafana"

        forced = shoppulse("push", "--force", str(path), url=url)
        assert forced.returncode == 0, forced.stderr
        stored = grafana.dashboards["shoppulse-ai-layer"]["dashboard"]
        assert stored["refresh"] == "1m" and stored.get("description") != "edited in Grafana"
        assert stored["version"] == 3
        again = shoppulse("push", str(path), url=url)  # the forced save's version was recorded
        assert again.returncode == 0 and "unchanged" in again.stdout


class _EditedMeanwhile(GrafanaClient):
    """Someone saves the dashboard in Grafana between push's read and its write."""

    def __init__(self, url: str, state: GrafanaState) -> None:
        super().__init__(url, TOKEN)
        self.state = state

    def get_dashboard(self, uid: str) -> dict[str, object] | None:
        found = super().get_dashboard(uid)
        self.state.edit_in_ui(uid, description="edited meanwhile")
        return found


@pytest.mark.parametrize(("major", "status"), [(12, 412), (13, 409)])
def test_grafana_refuses_a_save_racing_an_edit_and_push_names_the_conflict(repo_copy: Path, major: int,
                                                                           status: int) -> None:
    path = repo_copy / "ai-layer.json"
    with grafana_standin(TOKEN, major=major) as (url, grafana):
        push(GrafanaClient(url, TOKEN), [path], "shoppulse", "shoppulse")
        model = json.loads(path.read_text())
        model["refresh"] = "1m"
        path.write_text(render(model))
        with pytest.raises(PushConflictError, match=f"refused version 1 \\(HTTP {status}\\)"):
            push(_EditedMeanwhile(url, grafana), [path], "shoppulse", "shoppulse")
        assert grafana.dashboards["shoppulse-ai-layer"]["dashboard"]["description"] == "edited meanwhile"


def test_a_rate_limited_call_is_retried_after_retry_after(repo_copy: Path) -> None:
    with grafana_standin(TOKEN) as (url, grafana):
        assert shoppulse("push", *map(str, dashboard_paths(repo_copy)), url=url).returncode == 0
        grafana.fail("GET", "/api/search", 429, "Too many requests", headers={"Retry-After": "2"})
        waits: list[float] = []
        found = GrafanaClient(url, TOKEN, sleep=waits.append).search_dashboards("shoppulse")
        assert waits == [2.0] and len(found) == 3
        grafana.fail("GET", "/api/dashboards/uid/", 503, "Service Unavailable", times=2)
        exported = shoppulse("export", "--folder", str(repo_copy), url=url)  # the command itself, end to end
        assert exported.returncode == 0, exported.stderr
        assert "3 dashboard(s) exported" in exported.stdout


def test_a_save_is_not_repeated_after_an_answer_that_may_mean_it_was_done(repo_copy: Path) -> None:
    with grafana_standin(TOKEN) as (url, grafana):
        grafana.fail("POST", "/api/dashboards/db", 502, "Bad Gateway")
        client = GrafanaClient(url, TOKEN, sleep=lambda _: None)
        with pytest.raises(Exception, match="HTTP 502"):
            push(client, [repo_copy / "ai-layer.json"], "shoppulse", "shoppulse")
        assert len([r for r in grafana.requests if r[1] == "/api/dashboards/db"]) == 1


def test_search_pages_past_grafanas_maximum_page(repo_copy: Path) -> None:
    with grafana_standin(TOKEN) as (url, grafana):
        for n in range(5003):
            grafana.provision({"uid": f"d{n:05d}", "title": f"Dashboard {n:05d}", "panels": []})
        found = GrafanaClient(url, TOKEN).search_dashboards()
        assert len({hit["uid"] for hit in found}) == 5003
        pages = [q.get("page") for m, p, q in grafana.query_strings if p == "/api/search"]
        assert pages == [["1"], ["2"]]
        over = GrafanaClient(url, TOKEN)
        with pytest.raises(Exception, match="HTTP 422"):
            over.request("GET", "/api/search", params={"limit": 5001}, expect=list)


def test_export_skips_a_v2_dashboard_and_says_why(repo_copy: Path) -> None:
    with grafana_standin(TOKEN) as (url, grafana):
        assert shoppulse("push", *map(str, dashboard_paths(repo_copy)), url=url).returncode == 0
        grafana.store_v2("v2-board", "A v2 dashboard", "shoppulse")
        exported = shoppulse("export", "--folder", str(repo_copy), url=url)
        assert exported.returncode == 0, exported.stderr
        assert "3 dashboard(s) exported" in exported.stdout
        assert "skipped  v2-board" in exported.stderr and "v2 dashboard format" in exported.stderr


def test_a_password_in_grafana_url_is_used_and_never_shown(repo_copy: Path) -> None:
    secret = "pw-Xq81-never-print"
    with grafana_standin(TOKEN, basic_auth=("admin", secret)) as (url, _):
        with_password = url.replace("http://", f"http://admin:{secret}@")
        pushed = shoppulse("push", str(repo_copy / "ai-layer.json"), url=with_password, token=None)
        assert pushed.returncode == 0, pushed.stderr
        denied = shoppulse("push", str(repo_copy / "ai-layer.json"), url=with_password.replace(secret, secret + "x"),
                           token=None)
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr
        outputs = pushed.stdout + pushed.stderr + denied.stdout + denied.stderr
    gone = shoppulse("export", "--folder", str(repo_copy), url=f"http://admin:{secret}@127.0.0.1:9", token=None)
    assert gone.returncode == 1 and "unreachable" in gone.stderr and "127.0.0.1:9" in gone.stderr
    # the sidecar's start-up log names Grafana too (it stops at once here: no ClickHouse answers)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "CLICKHOUSE_"))}
    env.update({"GRAFANA_URL": f"http://admin:{secret}@127.0.0.1:9", "GRAFANA_TOKEN": TOKEN,
                "CLICKHOUSE_URL": "http://127.0.0.1:9", "SHOPPULSE_SIDECAR_METRICS_PORT": str(free_port())})
    sidecar = subprocess.run([sys.executable, "-m", "shoppulse", "sidecar"], capture_output=True, text=True,
                             timeout=120, check=False, cwd=ROOT, env=env)
    assert "sidecar starting" in sidecar.stdout + sidecar.stderr and "admin:***@127.0.0.1:9" in sidecar.stderr
    assert secret not in outputs + gone.stdout + gone.stderr + sidecar.stdout + sidecar.stderr


def test_the_standin_refuses_requests_outside_grafanas_spec() -> None:
    """The check that keeps every other test honest: a misspelt field Grafana would ignore fails here."""
    with pytest.raises(AssertionError, match="Additional properties are not allowed"), \
            grafana_standin(TOKEN) as (url, grafana):
        client = GrafanaClient(url, TOKEN)
        with pytest.raises(Exception, match="HTTP 400 bad request data"):
            client.create_annotation({"text": "x", "dashboardUid": "typo"})
        assert grafana.violations


def test_a_grafana_that_does_not_answer_is_reported_as_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        waits: list[float] = []
        client = GrafanaClient(url, TOKEN, timeout_s=0.3, attempts=2, sleep=waits.append)
        with pytest.raises(GrafanaTimeoutError, match=r"did not answer within 0.3 s \(SHOPPULSE_GRAFANA_TIMEOUT_S\)"):
            client.search_dashboards()
        assert len(waits) == 1  # a read is repeated once, then reported
        with pytest.raises(GrafanaTimeoutError):
            client.create_annotation({"text": "x"})
        assert len(waits) == 1  # a create that may have been done is not repeated
