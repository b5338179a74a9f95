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

from shoppulse.grafana.model import dashboard_paths
from shoppulse.grafana_api import GrafanaClient, GrafanaError

VOLATILE_TOP = ("version", "iteration")
VOLATILE_PANEL = ("pluginVersion",)


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


@dataclass(frozen=True)
class Exported:
    uid: str
    path: Path
    changed: bool


def export(client: GrafanaClient, folder: Path, folder_uid: str | None) -> list[Exported]:
    """Write every dashboard of the Grafana folder to ``folder``, normalised; files are matched by uid."""
    by_uid: dict[str, Path] = {}
    for path in dashboard_paths(folder):
        try:
            by_uid[str(json.loads(path.read_text()).get("uid"))] = path
        except (json.JSONDecodeError, AttributeError):
            continue
    done: list[Exported] = []
    for hit in client.search_dashboards(folder_uid):
        found = client.get_dashboard(hit["uid"])
        if found is None:  # deleted between search and read
            continue
        model = found["dashboard"]
        path = by_uid.get(hit["uid"]) or folder / _file_name(model)
        text = render(model)
        changed = not path.exists() or path.read_text() != text
        if changed:
            path.write_text(text)
        done.append(Exported(hit["uid"], path, changed))
    return done


@dataclass(frozen=True)
class Pushed:
    uid: str
    path: Path
    outcome: str  # created | updated | unchanged
    version: int | None


class PushConflictError(GrafanaError):
    """The dashboard changed in Grafana between our read and our write."""


def push(client: GrafanaClient, paths: list[Path], folder_uid: str, folder_title: str,
         force: bool = False) -> list[Pushed]:
    """Save each file's dashboard into the Grafana folder.

    Without ``force`` the save carries the version just read from Grafana and ``overwrite``
    false, so a dashboard someone changed in between is refused (HTTP 412) rather than lost."""
    client.ensure_folder(folder_uid, folder_title)
    results: list[Pushed] = []
    for path in paths:
        model = json.loads(path.read_text())
        uid = str(model.get("uid") or "")
        if not uid:
            raise GrafanaError(f"{path}: the dashboard has no uid; give it a stable one before pushing")
        current = client.get_dashboard(uid)
        if current is not None and render(current["dashboard"]) == render(model) \
                and current["meta"].get("folderUid") == folder_uid:
            results.append(Pushed(uid, path, "unchanged", current["meta"].get("version")))
            continue
        body = normalise(model)
        if current is not None:
            body["id"] = current["dashboard"].get("id")
            body["version"] = current["dashboard"].get("version")
        try:
            saved = client.save_dashboard(body, folder_uid, f"shoppulse push from Git: {path.name}", overwrite=force)
        except GrafanaError as exc:
            if exc.status == 412:
                raise PushConflictError(f"{path.name} ({uid}): {exc} — it changed in Grafana while pushing; "
                                   "export it, merge, and push again (or --force to overwrite)", 412,
                                   exc.reason) from None
            raise
        results.append(Pushed(uid, path, "updated" if current else "created", saved.get("version")))
    return results
