"""A local HTTP server that speaks the parts of Grafana's HTTP API shoppulse uses, and enforces
their documented contract: Bearer service-account token, JSON bodies, field names and types, uid
rules, dashboard version checks, and Grafana's status codes and error bodies. No Grafana binary
can run on our machines, so this is what export/push (and later annotations) are tested against.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

UID = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")


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
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    next_id: int = 1
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

    def _serve(self, method: str) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        try:
            body = self._body(method)
            with state.lock:
                state.requests.append((method, url.path, body))
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
        if method != "POST":
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
        raise ContractError(404, "Not found")

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
