"""Dashboards between Git and a running Grafana: export (Grafana -> files) and push (files -> Grafana).

Files hold the normalised form: keys sorted, two-space indent, and none of the fields Grafana
changes on every save or per instance (the numeric ``id``, ``version``, ``iteration``, panels'
``pluginVersion``). So export -> push -> export gives the same bytes, and a diff shows only what
someone changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana_api import GrafanaClient, GrafanaError

VOLATILE_TOP = ("version", "iteration")
VOLATILE_PANEL = ("pluginVersion",)
VERSIONS_FILE = ".grafana-versions.yaml"


def normalise(model: dict[str, Any]) -> dict[str, Any]:
    """The dashboard without per-instance and per-save fields."""
    clean = {k: v for k, v in model.items() if k not in VOLATILE_TOP}
    clean["id"] = None
    clean["panels"] = [_normalise_panel(p) for p in model.get("panels") or []]
    return clean


def _normalise_panel(panel: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in panel.items() if k not in VOLATILE_PANEL}
    if "panels" in panel:
        clean["panels"] = [_normalise_panel(p) for p in panel["panels"] or []]
    return clean


def render(model: dict[str, Any]) -> str:
    """The file text of a dashboard: normalised, sorted keys, two-space indent, final newline."""
    return json.dumps(normalise(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _file_name(model: dict[str, Any]) -> str:
    uid = str(model.get("uid") or "")
    stem = re.sub(r"^shoppulse-", "", uid) or re.sub(r"[^a-z0-9]+", "-", str(model.get("title", "")).lower())
    return f"{stem.strip('-') or 'dashboard'}.json"


class Versions:
    """The version of each dashboard in each Grafana as last exported or pushed (``VERSIONS_FILE``
    beside the dashboard files). Push sends it back: Grafana refuses the save when the dashboard has
    changed there since, so an edit made in Grafana is never overwritten unseen."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / VERSIONS_FILE
        try:
            loaded = yaml.safe_load(self.path.read_text()) if self.path.exists() else {}
        except yaml.YAMLError as exc:
            raise GrafanaError(f"{self.path} is not valid YAML ({exc}): delete it and export again") from None
        self._by_grafana: dict[str, dict[str, int]] = {
            str(url): {str(uid): int(v) for uid, v in (known or {}).items() if isinstance(v, int)}
            for url, known in (loaded or {}).items() if isinstance(known, dict)}
        self._changed = False

    def get(self, grafana: str, uid: str) -> int | None:
        return self._by_grafana.get(grafana, {}).get(uid)

    def set(self, grafana: str, uid: str, version: object) -> None:
        if isinstance(version, int) and self.get(grafana, uid) != version:
            self._by_grafana.setdefault(grafana, {})[uid] = version
            self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        header = ("# Written by `shoppulse dashboards export` and `push`: each dashboard's version in each Grafana\n"
                  "# as last exported or pushed. Push sends it back, so edits made in Grafana since are not lost.\n")
        body = {url: dict(sorted(known.items())) for url, known in sorted(self._by_grafana.items())}
        self.path.write_text(header + yaml.safe_dump(body, sort_keys=False))
        self._changed = False


@dataclass(frozen=True)
class Exported:
    uid: str
    path: Path | None
    changed: bool
    skipped: str = ""  # why the dashboard was not exported


def export(client: GrafanaClient, folder: Path, folder_uid: str | None) -> list[Exported]:
    """Write every dashboard of the Grafana folder to ``folder``, normalised; files are matched by uid.
    The version of each is recorded for push."""
    by_uid: dict[str, Path] = {}
    for path in dashboard_paths(folder):
        try:
            by_uid[str(json.loads(path.read_text()).get("uid"))] = path
        except (json.JSONDecodeError, AttributeError):
            continue
    versions = Versions(folder)
    done: list[Exported] = []
    try:
        for hit in client.search_dashboards(folder_uid):
            try:
                found = client.get_dashboard(hit["uid"])
            except GrafanaError as exc:
                if exc.status != 406:
                    raise
                done.append(Exported(hit["uid"], None, False, str(exc)))
                continue
            if found is None:  # deleted between search and read
                continue
            model = found["dashboard"]
            path = by_uid.get(hit["uid"]) or folder / _file_name(model)
            text = render(model)
            changed = not path.exists() or path.read_text() != text
            if changed:
                path.write_text(text)
            versions.set(client.url, hit["uid"], found["meta"].get("version", model.get("version")))
            done.append(Exported(hit["uid"], path, changed))
    finally:
        versions.save()
    return done


@dataclass(frozen=True)
class Pushed:
    uid: str
    path: Path
    outcome: str  # created | updated | unchanged
    version: int | None


class PushRefusedError(GrafanaError):
    """Push wrote nothing: a dashboard is provisioned in that Grafana, or changed there since export."""


class PushConflictError(GrafanaError):
    """Grafana refused a save because the dashboard changed there meanwhile."""


@dataclass
class _Plan:
    path: Path
    uid: str
    model: dict[str, Any]
    current: dict[str, Any] | None
    expected: int | None  # the version we last saw in this Grafana
    have: Any = None  # the version Grafana has (when it has the dashboard)
    same: bool = False  # Grafana holds exactly the file's content


def _provisioned(path: Path, uid: str, folder_uid: str) -> str:
    return (f"{path.name} ({uid}): Grafana loads this dashboard from provisioning files and refuses to save it "
            "over the API. Change the file in Git and let provisioning load it (docker compose mounts "
            "grafana/dashboards/); `dashboards push` is for a Grafana that does not provision these files — "
            f"a shared or cloud instance — into the folder SHOPPULSE_GRAFANA_FOLDER ({folder_uid}).")


def _conflict(path: Path, uid: str, expected: int | None, have: object) -> str:
    if expected is None:
        return (f"{path.name} ({uid}): Grafana has this dashboard (version {have}) but it was never exported from "
                "or pushed to this Grafana, so edits made there would be lost: run `shoppulse dashboards "
                "export`, merge with Git, and push again (or push --force to overwrite Grafana's copy)")
    return (f"{path.name} ({uid}): changed in Grafana since you exported version {expected}; Grafana has version "
            f"{have}. Run `shoppulse dashboards export`, merge the changes with Git, and push again "
            "(or push --force to overwrite them)")


def push(client: GrafanaClient, paths: list[Path], folder_uid: str, folder_title: str,
         force: bool = False) -> list[Pushed]:
    """Save each file's dashboard into the Grafana folder.

    Every dashboard is checked before anything is written: one provisioned in that Grafana, or
    changed there since the version recorded at export (``Versions``), stops the push with nothing
    written (``--force`` overwrites the changed ones). Each save carries the recorded version with
    ``overwrite`` false, so Grafana itself refuses one that changes between our check and our save
    (412 in Grafana 12, 409 in 13)."""
    plans: list[_Plan] = []
    problems: list[str] = []
    versions: dict[Path, Versions] = {}
    for path in paths:
        model = json.loads(path.read_text())
        uid = str(model.get("uid") or "")
        if not uid:
            raise GrafanaError(f"{path}: the dashboard has no uid; give it a stable one before pushing")
        known = versions.setdefault(path.parent, Versions(path.parent))
        plan = _Plan(path, uid, model, client.get_dashboard(uid), known.get(client.url, uid))
        if plan.current is not None:
            plan.have = plan.current["meta"].get("version", plan.current["dashboard"].get("version"))
            plan.same = render(plan.current["dashboard"]) == render(model)
            if plan.current["meta"].get("provisioned"):
                problems.append(_provisioned(path, uid, folder_uid))
            elif not force and plan.have != plan.expected and not plan.same:
                problems.append(_conflict(path, uid, plan.expected, plan.have))
        plans.append(plan)
    if problems:
        raise PushRefusedError("nothing pushed:\n" + "\n".join(problems))
    client.ensure_folder(folder_uid, folder_title)
    results: list[Pushed] = []
    try:
        for plan in plans:
            results.append(_save(client, plan, folder_uid, force, versions[plan.path.parent]))
    finally:
        for known in versions.values():
            known.save()
    return results


def _save(client: GrafanaClient, plan: _Plan, folder_uid: str, force: bool, versions: Versions) -> Pushed:
    current = plan.current
    if current is not None and plan.same and current["meta"].get("folderUid") == folder_uid:
        versions.set(client.url, plan.uid, plan.have)  # Grafana holds exactly the file: safe to build on
        return Pushed(plan.uid, plan.path, "unchanged", plan.have)
    body = normalise(plan.model)
    if current is not None:
        body["id"] = current["dashboard"].get("id")
        # what we last saw, or (forced, or Grafana already equal in content) what Grafana has
        body["version"] = current["dashboard"].get("version") if force or plan.expected is None else plan.expected
    try:
        saved = client.save_dashboard(body, folder_uid, f"shoppulse push from Git: {plan.path.name}",
                                      overwrite=force)
    except GrafanaError as exc:
        if exc.status in (409, 412):
            raise PushConflictError(f"{plan.path.name} ({plan.uid}): Grafana refused version {body.get('version')} "
                                    f"(HTTP {exc.status}): the dashboard changed in Grafana meanwhile. Run "
                                    "`shoppulse dashboards export`, merge, and push again (or push --force)",
                                    exc.status, exc.reason) from None
        raise
    versions.set(client.url, plan.uid, saved.get("version"))
    return Pushed(plan.uid, plan.path, "updated" if current else "created", saved.get("version"))
