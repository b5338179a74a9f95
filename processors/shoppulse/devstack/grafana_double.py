"""A local stand-in for Grafana's HTTP API, for tests and benchmarks: it speaks the parts shoppulse
uses (dashboards, folders, search, annotations) and enforces their documented contract — Bearer
service-account token, JSON bodies, field names and types, uid rules, dashboard version checks, and
Grafana's status codes and error bodies. No Grafana binary can run on our machines, so this is what
export/push and the sidecar's annotations are tested and measured against.

Behaviour follows Grafana's Dashboard, Folder and Search HTTP API documentation: a save assigns
the numeric id and bumps ``version``; a save whose ``version`` differs from the stored one without
``overwrite`` is refused with 412 ``version-mismatch``; a new dashboard whose title exists in the
folder is refused with 412 ``name-exists``; unknown uid -> 404 ``Dashboard not found``.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

UID = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")
# Annotation fields and their JSON types, from Grafana's annotations HTTP API documentation.
ANNOTATION_FIELDS: dict[str, type] = {"dashboardUID": str, "panelId": int, "time": int, "timeEnd": int,
                                      "tags": list, "text": str, "dashboardId": int, "data": dict}


class ContractError(Exception):
    def __init__(self, status: int, message: str, status_text: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if status_text:
            self.body["status"] = status_text


@dataclass
class GrafanaState:
    token: str
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid"}
    folders: dict[str, str] = field(default_factory=lambda: {})  # uid -> title
    annotations: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    next_id: int = 1
    allow_unknown_dashboards: bool = True  # annotations may name dashboards provisioned from files
    down: bool = False  # answer 503 to everything, as a Grafana restarting behind a proxy does
    lock: threading.Lock = field(default_factory=threading.Lock)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        try:
            body = self._body(method)
            with state.lock:
                state.requests.append((method, url.path, body))
                if state.down:
                    raise ContractError(503, "Service Unavailable")
                self._authorise()
                status, answer = self._route(method, url.path, parse_qs(url.query), body)
        except ContractError as exc:
            status, answer = exc.status, exc.body
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authorise(self) -> None:
        header = self.headers.get("Authorization", "")
        if header != f"Bearer {self.server.state.token}":
            raise ContractError(401, "Unauthorized" if not header else "invalid API key")

    def _body(self, method: str) -> Any:
        if method not in ("POST", "PATCH"):
            return None
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise ContractError(400, "bad request data: Content-Type must be application/json")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError:
            raise ContractError(400, "bad request data") from None

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        state = self.server.state
        if method == "GET" and path == "/api/search":
            return 200, self._search(query)
        if method == "GET" and path.startswith("/api/dashboards/uid/"):
            uid = path.removeprefix("/api/dashboards/uid/")
            stored = state.dashboards.get(uid)
            if stored is None:
                raise ContractError(404, "Dashboard not found", "not-found")
            folder = stored["folderUid"]
            return 200, {"dashboard": json.loads(json.dumps(stored["dashboard"])), "meta": {
                "type": "db", "canSave": True, "canEdit": True, "slug": _slug(stored["dashboard"]["title"]),
                "url": f"/d/{uid}/{_slug(stored['dashboard']['title'])}", "version": stored["dashboard"]["version"],
                "folderUid": folder, "folderTitle": state.folders.get(folder, "General"), "provisioned": False}}
        if method == "POST" and path == "/api/dashboards/db":
            return 200, self._save(body)
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.removeprefix("/api/folders/")
            if uid not in state.folders:
                raise ContractError(404, "Folder not found", "not-found")
            return 200, {"id": 1, "uid": uid, "title": state.folders[uid], "url": f"/dashboards/f/{uid}/"}
        if method == "POST" and path == "/api/folders":
            return 200, self._create_folder(body)
        if method == "POST" and path == "/api/annotations":
            return 200, self._add_annotation(body)
        if method == "PATCH" and path.startswith("/api/annotations/"):
            return 200, self._patch_annotation(path.removeprefix("/api/annotations/"), body)
        if method == "GET" and path == "/api/annotations":
            return 200, self._find_annotations(query)
        raise ContractError(404, "Not found")

    def _check_annotation(self, body: Any, creating: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ContractError(400, "bad request data")
        for name, value in body.items():
            kind = ANNOTATION_FIELDS.get(name)
            if kind is None:
                continue  # Grafana ignores unknown fields
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ContractError(400, f"bad request data: {name} must be a {getattr(kind, '__name__', kind)}")
        if "tags" in body and not all(isinstance(t, str) for t in body["tags"]):
            raise ContractError(400, "bad request data: tags must be strings")
        if creating and not str(body.get("text") or "").strip():
            raise ContractError(400, "Failed to save annotation: text is required")
        if "dashboardUID" in body and body["dashboardUID"] not in self.server.state.dashboards \
                and not self.server.state.allow_unknown_dashboards:
            raise ContractError(404, "Dashboard not found")
        return body

    def _add_annotation(self, body: Any) -> dict[str, Any]:
        state = self.server.state
        body = self._check_annotation(body, creating=True)
        now = int(time.time() * 1000)
        start = body.get("time", now)
        end = body.get("timeEnd", start)
        if end < start:
            raise ContractError(400, "timeEnd must not be before time")
        annotation_id = state.next_id
        state.next_id += 1
        state.annotations[annotation_id] = {
            "id": annotation_id, "alertId": 0, "dashboardId": 0, "dashboardUID": body.get("dashboardUID", ""),
            "panelId": body.get("panelId", 0), "userId": 1, "newState": "", "prevState": "", "created": now,
            "updated": now, "time": start, "timeEnd": end, "text": body["text"], "tags": list(body.get("tags", [])),
            "login": "sa-shoppulse-sidecar", "email": "", "avatarUrl": "", "data": body.get("data", {})}
        return {"message": "Annotation added", "id": annotation_id}

    def _patch_annotation(self, raw_id: str, body: Any) -> dict[str, Any]:
        state = self.server.state
        if not raw_id.isdigit() or int(raw_id) not in state.annotations:
            raise ContractError(404, "Could not find annotation to update")
        body = self._check_annotation(body, creating=False)
        stored = state.annotations[int(raw_id)]
        for name in ("time", "timeEnd", "text", "tags", "data"):
            if name in body:
                stored[name] = body[name]
        if stored["timeEnd"] < stored["time"]:
            raise ContractError(400, "timeEnd must not be before time")
        stored["updated"] = int(time.time() * 1000)
        return {"message": "Annotation patched"}

    def _find_annotations(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = set(query.get("tags", []))
        match_any = query.get("matchAny", ["false"])[0] == "true"
        dashboard = query.get("dashboardUID", [None])[0]
        limit = int(query.get("limit", ["100"])[0])
        found = []
        for annotation in sorted(self.server.state.annotations.values(), key=lambda a: -a["time"]):
            have = set(annotation["tags"])
            if wanted and not (have & wanted if match_any else wanted <= have):
                continue
            if dashboard and annotation["dashboardUID"] != dashboard:
                continue
            found.append(dict(annotation))
        return found[:limit]

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        if query.get("type", ["dash-db"])[0] not in ("dash-db", "dash-folder"):
            raise ContractError(400, "invalid type")
        folders = set(",".join(query.get("folderUIDs", [])).split(",")) - {""}
        hits = []
        for uid, stored in sorted(self.server.state.dashboards.items()):
            if folders and stored["folderUid"] not in folders:
                continue
            title = stored["dashboard"]["title"]
            hits.append({"id": stored["dashboard"]["id"], "uid": uid, "title": title, "uri": f"db/{_slug(title)}",
                         "url": f"/d/{uid}/{_slug(title)}", "slug": "", "type": "dash-db",
                         "tags": stored["dashboard"].get("tags", []), "isStarred": False,
                         "folderUid": stored["folderUid"]})
        return hits

    def _save(self, body: Any) -> dict[str, Any]:
        state = self.server.state
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            raise ContractError(400, "bad request data: dashboard must be an object")
        for name, kind in (("overwrite", bool), ("folderUid", str), ("message", str), ("folderId", int)):
            if name in body and body[name] is not None and not isinstance(body[name], kind):
                raise ContractError(400, f"bad request data: {name} must be a {kind.__name__}")
        dashboard = dict(body["dashboard"])
        title = dashboard.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ContractError(400, "Dashboard title cannot be empty", "empty-name")
        uid = dashboard.get("uid")
        if uid is not None and (not isinstance(uid, str) or not UID.match(uid)):
            raise ContractError(400, "uid contains illegal characters or is longer than 40", "bad-uid")
        folder = body.get("folderUid") or ""
        if folder and folder not in state.folders:
            raise ContractError(400, "folder not found", "folder-not-found")
        overwrite = bool(body.get("overwrite"))
        uid = uid or f"gen{state.next_id:08d}"
        existing = state.dashboards.get(uid)
        if existing is None and dashboard.get("id") is not None:
            raise ContractError(404, "Dashboard not found", "not-found")
        if existing is not None and not overwrite and dashboard.get("version") != existing["dashboard"]["version"]:
            raise ContractError(412, "The dashboard has been changed by someone else", "version-mismatch")
        if existing is None and not overwrite:
            for other in state.dashboards.values():
                if other["folderUid"] == folder and other["dashboard"]["title"] == title:
                    raise ContractError(412, "A dashboard with the same name in the folder already exists",
                                        "name-exists")
        if existing is None:
            dashboard["id"] = state.next_id
            state.next_id += 1
            dashboard["version"] = 1
        else:
            dashboard["id"] = existing["dashboard"]["id"]
            dashboard["version"] = existing["dashboard"]["version"] + 1
        dashboard["uid"] = uid
        state.dashboards[uid] = {"dashboard": dashboard, "folderUid": folder}
        return {"id": dashboard["id"], "uid": uid, "url": f"/d/{uid}/{_slug(title)}", "status": "success",
                "version": dashboard["version"], "slug": _slug(title), "folderUid": folder}

    def _create_folder(self, body: Any) -> dict[str, Any]:
        state = self.server.state
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"].strip():
            raise ContractError(400, "folder title cannot be empty")
        uid = body.get("uid")
        if uid is not None and (not isinstance(uid, str) or not UID.match(uid)):
            raise ContractError(400, "uid contains illegal characters")
        if uid in state.folders:
            raise ContractError(409, "a folder with the same uid already exists")
        if body["title"] in state.folders.values():
            raise ContractError(409, "a folder or dashboard in the general folder with the same name already exists")
        state.folders[uid] = body["title"]
        return {"id": len(state.folders), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: GrafanaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextlib.contextmanager
def fake_grafana(token: str) -> Iterator[tuple[str, GrafanaState]]:
    """A running fake Grafana; yields its URL and its state (for assertions)."""
    state = GrafanaState(token)
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
