"""A stand-in for Grafana 12.2's HTTP API, for tests and benchmarks (no Grafana binary runs here).

It answers the calls shoppulse makes — dashboards, folders, search, annotations, the caller's
permissions — as Grafana does, refusals included, each behaviour taken from Grafana's source
(``pkg/api/annotations.go``, ``pkg/api/dashboard.go``, ``pkg/services/dashboards/errors.go``,
``pkg/api/search.go``) and its OpenAPI description:

- dashboards: a save assigns the id and bumps ``version``; a stale ``version`` without ``overwrite``
  is refused with 412 ``version-mismatch`` (Grafana 12) or 409 "Dashboard already exists. Use
  overwrite flag to update." (Grafana 13's dashboard API, ``major=13``); a provisioned dashboard is
  never saved (400 "Cannot save provisioned dashboard", overwrite or not) and reads back with
  ``meta.provisioned: true``; titles may repeat within a folder; a dashboard stored in the v2 format
  answers its read with 406;
- folders: titles may repeat; a taken uid is 409;
- search: pages of ``limit`` (default 1000, above 5000: 422) numbered from 1, ordered by title;
- annotations: a create naming a dashboard Grafana does not have is stored organisation-wide (no
  error); ``timeEnd`` before ``time`` is swapped; tags are parsed as ``key:value`` with both sides
  trimmed (``country:`` is stored as ``country``); a lookup naming an unknown dashboard is 400
  "Invalid dashboard UID in annotation request"; a PATCH of a missing annotation is 404
  "Annotation not found" and changes only the fields it carries that are non-zero; a DELETE needs
  ``annotations:delete`` (403 without it), and answers 404 "Annotation not found" for one it does not have;
  a PATCH or DELETE by id passes Grafana's route check first (``pkg/api/api.go``, the access-control
  middleware and ``AnnotationTypeScopeResolver``): a grant whose scope covers ``annotations:id:<id>`` (a
  wildcard such as the Editor's ``annotations:*``) lets it through to the answers above, while one scoped
  to the annotation's type (``annotations:type:dashboard``) needs the annotation resolved — and one that
  is missing (or an id that is no number) cannot be, so that token is answered 403, not 404.

Every request and every answer is checked against ``grafana_api_spec.yaml``; what does not fit is
recorded in ``violations`` (the tests assert there are none) and refused with 400.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from shoppulse.devstack.http_standin import StandinServer, serving

VERSION = "12.2.0"
SPEC = Path(__file__).with_name("grafana_api_spec.yaml")
UID = re.compile(r"^[a-zA-Z0-9\-_]*$")
MAX_UID = 40
MAX_SEARCH_LIMIT = 5000
DEFAULT_SEARCH_LIMIT = 1000
# Everything shoppulse's token needs (the README lists them); tests take some away.
ALL_PERMISSIONS = ("annotations:create", "annotations:write", "annotations:read", "annotations:delete",
                   "dashboards:read", "dashboards:write", "dashboards:create", "folders:read", "folders:create")


def covers(scope: str, target: str) -> bool:
    """Whether a granted scope covers ``target``: the same, or a wildcard (``*``, ``annotations:*``) over it."""
    return scope == target or (scope.endswith("*") and target.startswith(scope[:-1]))


class GrafanaAnswerError(Exception):
    """An error answer, in Grafana's shape: ``{"message": ..., "status"?: ...}``."""

    def __init__(self, status: int, message: str, status_text: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if status_text:
            self.body["status"] = status_text
        self.headers = headers or {}


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


@cache
def operations() -> tuple[Operation, ...]:
    document = yaml.safe_load(SPEC.read_text())
    found = []
    for template, methods in document["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, spec in methods.items():
            found.append(Operation(method.upper(), template, pattern, spec))
    return tuple(found)


def _spec_problems(method: str, path: str, query: dict[str, list[str]],
                   body: Any) -> tuple[Operation | None, list[str]]:
    """The operation of this request in the spec subset, and how the request departs from it."""
    operation = next((o for o in operations() if o.method == method and o.pattern.match(path)), None)
    if operation is None:
        return None, [f"{method} {path} is not an operation of the spec subset"]
    problems = []
    declared = {p["name"]: p["schema"] for p in operation.spec.get("parameters", [])}
    for name, values in query.items():
        schema = declared.get(name)
        if schema is None:
            problems.append(f"{method} {operation.template}: unknown query parameter {name}")
            continue
        for value in values if schema.get("type") == "array" else values[-1:]:
            kind = (schema.get("items") or schema).get("type")
            if kind == "integer" and not re.fullmatch(r"-?\d+", value):
                problems.append(f"{method} {operation.template}: {name}={value!r} is not an integer")
            elif kind == "boolean" and value not in ("true", "false"):
                problems.append(f"{method} {operation.template}: {name}={value!r} is not true/false")
            elif "enum" in schema and value not in schema["enum"]:
                problems.append(f"{method} {operation.template}: {name}={value!r} is not one of {schema['enum']}")
        if schema.get("type") != "array" and len(values) > 1:
            problems.append(f"{method} {operation.template}: {name} given {len(values)} times")
    request_body = operation.spec.get("requestBody")
    if request_body is not None:
        problems += [f"{method} {operation.template} body: {e.message}"
                     for e in jsonschema.Draft202012Validator(request_body["schema"]).iter_errors(body)]
    elif body is not None:
        problems.append(f"{method} {operation.template} takes no body")
    return operation, problems


def _answer_problems(operation: Operation, answer: Any) -> list[str]:
    schema = operation.spec["responses"]["200"]["schema"]
    return [f"answer of {operation.method} {operation.template}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(answer)]


def normalise_tags(tags: list[str]) -> list[str]:
    """Grafana's annotation tags: ``key:value`` with both sides trimmed, ``key`` when the value is empty."""
    found: list[str] = []
    for tag in tags:
        key, _, value = tag.partition(":")
        key, value = key.strip(), value.strip()
        if not key:
            continue
        text = f"{key}:{value}" if value else key
        if text not in found:
            found.append(text)
    return found


@dataclass
class Failure:
    """An answer the stand-in gives instead of serving, for requests matching ``method`` and ``path_prefix``."""

    method: str
    path_prefix: str
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1


@dataclass
class GrafanaState:
    token: str
    major: int = 12  # 13: a stale version is refused with 409 instead of 412
    basic_auth: tuple[str, str] | None = None  # a user allowed in with basic auth (Grafana's own users)
    permissions: dict[str, list[str]] = field(default_factory=lambda: {a: ["*"] for a in ALL_PERMISSIONS})
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid", …}
    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    annotations: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    query_strings: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    next_id: int = 1
    down: bool = False  # answer 503 to everything, as a Grafana restarting behind a proxy does
    lock: threading.Lock = field(default_factory=threading.Lock)

    def provision(self, model: dict[str, Any], folder_uid: str = "", allow_ui_updates: bool = False) -> None:
        """A dashboard loaded by Grafana's file provisioning (as docker-compose's Grafana loads ours)."""
        with self.lock:
            dashboard = dict(model, id=self._take_id(), version=1)
            self.dashboards[dashboard["uid"]] = {"dashboard": dashboard, "folderUid": folder_uid,
                                                 "provisioned": not allow_ui_updates, "v2": False}

    def store_v2(self, uid: str, title: str, folder_uid: str = "") -> None:
        """A dashboard saved in Grafana's v2 format (dashboard.grafana.app/v2): /api/dashboards answers 406."""
        with self.lock:
            self.dashboards[uid] = {"dashboard": {"uid": uid, "title": title, "id": self._take_id(), "version": 1},
                                    "folderUid": folder_uid, "provisioned": False, "v2": True}

    def edit_in_ui(self, uid: str, **changes: Any) -> int:
        """Someone saves the dashboard in Grafana's UI; returns its new version."""
        with self.lock:
            stored = self.dashboards[uid]
            stored["dashboard"] = dict(stored["dashboard"], **changes)
            stored["dashboard"]["version"] += 1
            return int(stored["dashboard"]["version"])

    def delete_annotation(self, annotation_id: int) -> None:
        """Someone deletes an annotation in Grafana."""
        with self.lock:
            del self.annotations[annotation_id]

    def fail(self, method: str, path_prefix: str, status: int, message: str, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.failures.append(Failure(method, path_prefix, status, message, headers or {}, times))

    def _take_id(self) -> int:
        taken = self.next_id
        self.next_id += 1
        return taken


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer[GrafanaState]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        try:
            body = self._body(method)
            with state.lock:
                state.requests.append((method, url.path, body))
                state.query_strings.append((method, url.path, query))
                if state.down:
                    raise GrafanaAnswerError(503, "Service Unavailable")
                self._injected(method, url.path)
                self._authorise()
                operation, problems = _spec_problems(method, url.path, query, body)
                if problems:
                    state.violations += problems
                    raise GrafanaAnswerError(400, "bad request data")
                status, answer = self._route(method, url.path, query, body)
                if operation is not None:
                    state.violations += _answer_problems(operation, answer)
        except GrafanaAnswerError as exc:
            status, answer, headers = exc.status, exc.body, exc.headers
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _injected(self, method: str, path: str) -> None:
        state = self.server.state
        for failure in state.failures:
            if failure.times > 0 and failure.method == method and path.startswith(failure.path_prefix):
                failure.times -= 1
                raise GrafanaAnswerError(failure.status, failure.message, headers=failure.headers)

    def _authorise(self) -> None:
        state = self.server.state
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {state.token}":
            return
        if state.basic_auth and header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode(errors="replace").partition(":")
            if (user, password) == state.basic_auth:
                return
        raise GrafanaAnswerError(401, "Unauthorized" if not header else "invalid API key")

    def _allowed(self, action: str) -> None:
        if action not in self.server.state.permissions:
            raise GrafanaAnswerError(403, f"You'll need additional permissions to perform this action. "
                                     f"Permissions needed: {action}")

    def _allowed_on_annotation(self, action: str, raw_id: str) -> None:
        """The route check of /api/annotations/:annotationId: the id's own scope first, as granted; else
        the annotation's type, which a missing annotation (or an id that is no number) does not resolve to."""
        scopes = self.server.state.permissions.get(action, [])
        if any(covers(scope, f"annotations:id:{raw_id}") for scope in scopes):
            return
        stored = self.server.state.annotations.get(int(raw_id)) if raw_id.isdigit() else None
        kind = None if stored is None else "dashboard" if stored["dashboardId"] else "organization"
        if kind is None or not any(covers(scope, f"annotations:type:{kind}") for scope in scopes):
            raise GrafanaAnswerError(403, f"You'll need additional permissions to perform this action. "
                                     f"Permissions needed: {action}")

    def _body(self, method: str) -> Any:
        if method not in ("POST", "PATCH"):
            return None
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise GrafanaAnswerError(400, "bad request data")
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError:
            raise GrafanaAnswerError(400, "bad request data") from None

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/search":
            return 200, self._search(query)
        if method == "GET" and path.startswith("/api/dashboards/uid/"):
            return 200, self._get_dashboard(path.removeprefix("/api/dashboards/uid/"))
        if method == "POST" and path == "/api/dashboards/db":
            return 200, self._save(body)
        if method == "GET" and path.startswith("/api/folders/"):
            return 200, self._get_folder(path.removeprefix("/api/folders/"))
        if method == "POST" and path == "/api/folders":
            return 200, self._create_folder(body)
        if method == "POST" and path == "/api/annotations":
            return 200, self._add_annotation(body)
        if method == "PATCH" and path.startswith("/api/annotations/"):
            return 200, self._patch_annotation(path.removeprefix("/api/annotations/"), body)
        if method == "DELETE" and path.startswith("/api/annotations/"):
            return 200, self._delete_annotation(path.removeprefix("/api/annotations/"))
        if method == "GET" and path == "/api/annotations":
            return 200, self._find_annotations(query)
        if method == "GET" and path == "/api/access-control/user/permissions":
            return 200, {action: list(scopes) for action, scopes in self.server.state.permissions.items()}
        raise GrafanaAnswerError(404, "Not found")

    # dashboards and folders

    def _get_dashboard(self, uid: str) -> dict[str, Any]:
        self._allowed("dashboards:read")
        stored = self.server.state.dashboards.get(uid)
        if stored is None:
            raise GrafanaAnswerError(404, "Dashboard not found", "not-found")
        if stored["v2"]:
            raise GrafanaAnswerError(406, "dashboard api version not supported, use "
                                     f"/apis/dashboard.grafana.app/v2/namespaces/default/dashboards/{uid} instead")
        dashboard = json.loads(json.dumps(stored["dashboard"]))
        folder = stored["folderUid"]
        meta = {"type": "db", "canSave": not stored["provisioned"], "canEdit": True,
                "slug": _slug(dashboard["title"]), "url": f"/d/{uid}/{_slug(dashboard['title'])}",
                "version": dashboard["version"], "folderUid": folder,
                "folderTitle": self.server.state.folders.get(folder, "Dashboards"),
                "provisioned": stored["provisioned"]}
        if stored["provisioned"]:
            meta["provisionedExternalId"] = f"{uid}.json"
        return {"dashboard": dashboard, "meta": meta}

    def _save(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        dashboard = dict(body["dashboard"])
        title = dashboard.get("title")
        if not isinstance(title, str) or not title.strip():
            raise GrafanaAnswerError(400, "Dashboard title cannot be empty", "empty-name")
        if len(body.get("message") or "") > 500:
            raise GrafanaAnswerError(400, "message too long, max 500 characters")
        uid = dashboard.get("uid")
        if uid is not None:
            if not isinstance(uid, str) or not UID.match(uid):
                raise GrafanaAnswerError(400, "uid contains illegal characters")
            if len(uid) > MAX_UID:
                raise GrafanaAnswerError(400, "uid too long, max 40 characters")
        folder = body.get("folderUid") or ""
        if folder and folder not in state.folders:
            raise GrafanaAnswerError(400, "folder not found")
        overwrite = bool(body.get("overwrite"))
        uid = uid or f"gen{state.next_id:08d}"
        existing = state.dashboards.get(uid)
        self._allowed("dashboards:write" if existing else "dashboards:create")
        if existing is not None and existing["provisioned"]:
            raise GrafanaAnswerError(400, "Cannot save provisioned dashboard")
        if existing is None and dashboard.get("id") is not None:
            raise GrafanaAnswerError(404, "Dashboard not found", "not-found")
        if existing is not None and not overwrite and dashboard.get("version") != existing["dashboard"]["version"]:
            if state.major >= 13:
                raise GrafanaAnswerError(409, "Dashboard already exists. Use overwrite flag to update.")
            raise GrafanaAnswerError(412, "The dashboard has been changed by someone else", "version-mismatch")
        if existing is None:
            dashboard["id"] = state._take_id()
            dashboard["version"] = 1
        else:
            dashboard["id"] = existing["dashboard"]["id"]
            dashboard["version"] = existing["dashboard"]["version"] + 1
        dashboard["uid"] = uid
        state.dashboards[uid] = {"dashboard": dashboard, "folderUid": folder, "provisioned": False, "v2": False}
        return {"id": dashboard["id"], "uid": uid, "url": f"/d/{uid}/{_slug(title)}", "status": "success",
                "version": dashboard["version"], "slug": _slug(title), "folderUid": folder}

    def _get_folder(self, uid: str) -> dict[str, Any]:
        self._allowed("folders:read")
        if uid not in self.server.state.folders:
            raise GrafanaAnswerError(404, "folder not found", "not-found")
        return {"id": 1, "uid": uid, "title": self.server.state.folders[uid], "url": f"/dashboards/f/{uid}/"}

    def _create_folder(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        self._allowed("folders:create")
        if not body["title"].strip():
            raise GrafanaAnswerError(400, "folder title cannot be empty")
        uid = body.get("uid") or f"f{state.next_id:08d}"
        if not UID.match(uid) or len(uid) > MAX_UID:
            raise GrafanaAnswerError(400, "invalid uid for folder provided")
        if uid in state.folders or uid in state.dashboards:
            raise GrafanaAnswerError(409, "a folder/dashboard with the same uid already exists")
        state.folders[uid] = body["title"]
        return {"id": state._take_id(), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/"}

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        self._allowed("dashboards:read")
        limit = int(query.get("limit", [str(DEFAULT_SEARCH_LIMIT)])[-1])
        if limit > MAX_SEARCH_LIMIT:
            raise GrafanaAnswerError(422, f"Limit is above maximum allowed ({MAX_SEARCH_LIMIT}), use page param")
        page = int(query.get("page", ["1"])[-1])
        folders = {uid for value in query.get("folderUIDs", []) for uid in value.split(",")} - {""}
        hits = []
        for uid, stored in self.server.state.dashboards.items():
            if folders and stored["folderUid"] not in folders:
                continue
            title = stored["dashboard"]["title"]
            hits.append({"id": stored["dashboard"]["id"], "uid": uid, "title": title, "uri": f"db/{_slug(title)}",
                         "url": f"/d/{uid}/{_slug(title)}", "slug": "", "type": "dash-db",
                         "tags": stored["dashboard"].get("tags", []), "isStarred": False,
                         "folderUid": stored["folderUid"]})
        hits.sort(key=lambda hit: (hit["title"].lower(), hit["uid"]))
        return hits[(page - 1) * limit: page * limit]

    # annotations

    def _dashboard_id(self, uid: str) -> int | None:
        stored = self.server.state.dashboards.get(uid)
        return int(stored["dashboard"]["id"]) if stored else None

    def _add_annotation(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        dashboard_uid = body.get("dashboardUID") or ""
        dashboard_id = self._dashboard_id(dashboard_uid) if dashboard_uid else body.get("dashboardId") or None
        self._allowed("annotations:create")
        if not body["text"]:
            raise GrafanaAnswerError(400, "Failed to save annotation")
        now = int(time.time() * 1000)
        start = body.get("time") or now
        end = body.get("timeEnd") or start
        start, end = min(start, end), max(start, end)
        annotation_id = state._take_id()
        stored_uid = dashboard_uid if dashboard_id else ""  # an unknown dashboard: stored organisation-wide
        state.annotations[annotation_id] = {
            "id": annotation_id, "alertId": 0, "dashboardId": dashboard_id or 0, "dashboardUID": stored_uid,
            "panelId": body.get("panelId", 0) if dashboard_id else 0, "userId": 1, "newState": "", "prevState": "",
            "created": now, "updated": now, "time": start, "timeEnd": end, "text": body["text"],
            "tags": normalise_tags(body.get("tags") or []), "login": "sa-shoppulse-sidecar", "email": "",
            "avatarUrl": "", "data": body.get("data", {})}
        return {"message": "Annotation added", "id": annotation_id}

    def _patch_annotation(self, raw_id: str, body: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        self._allowed_on_annotation("annotations:write", raw_id)
        if not raw_id.isdigit():
            raise GrafanaAnswerError(400, "annotationId is invalid")
        stored = state.annotations.get(int(raw_id))
        if stored is None:
            raise GrafanaAnswerError(404, "Annotation not found")
        if body.get("tags") is not None:
            stored["tags"] = normalise_tags(body["tags"])
        if body.get("text"):
            stored["text"] = body["text"]
        if body.get("time", 0) > 0:
            stored["time"] = body["time"]
        if body.get("timeEnd", 0) > 0:
            stored["timeEnd"] = body["timeEnd"]
        if body.get("data") is not None:
            stored["data"] = body["data"]
        stored["time"], stored["timeEnd"] = min(stored["time"], stored["timeEnd"]), max(stored["time"],
                                                                                         stored["timeEnd"])
        stored["updated"] = int(time.time() * 1000)
        return {"message": "Annotation patched"}

    def _delete_annotation(self, raw_id: str) -> dict[str, Any]:
        """``DeleteAnnotationByID``: the route demands annotations:delete; then an id that is no number is
        400, one Grafana does not have 404."""
        self._allowed_on_annotation("annotations:delete", raw_id)
        if not raw_id.isdigit():
            raise GrafanaAnswerError(400, "annotationId is invalid")
        if self.server.state.annotations.pop(int(raw_id), None) is None:
            raise GrafanaAnswerError(404, "Annotation not found")
        return {"message": "Annotation deleted"}

    def _find_annotations(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        self._allowed("annotations:read")
        dashboard_uid = query.get("dashboardUID", [""])[-1]
        dashboard_id = None
        if dashboard_uid:
            dashboard_id = self._dashboard_id(dashboard_uid)
            if dashboard_id is None:
                raise GrafanaAnswerError(400, "Invalid dashboard UID in annotation request")
        wanted = set(normalise_tags(query.get("tags", [])))
        match_any = query.get("matchAny", ["false"])[-1] == "true"
        kind = query.get("type", [""])[-1]
        limit = int(query.get("limit", ["100"])[-1])
        found = []
        for annotation in sorted(self.server.state.annotations.values(), key=lambda a: (-a["time"], -a["id"])):
            have = set(annotation["tags"])
            if wanted and not (have & wanted if match_any else wanted <= have):
                continue
            if dashboard_id is not None and annotation["dashboardId"] != dashboard_id:
                continue
            if (kind == "alert" and not annotation["alertId"]) or (kind == "annotation" and annotation["alertId"]):
                continue
            found.append(dict(annotation))
        return found[:limit]


@contextlib.contextmanager
def grafana_standin(token: str, major: int = 12,
                    basic_auth: tuple[str, str] | None = None) -> Iterator[tuple[str, GrafanaState]]:
    """A running Grafana stand-in; yields its URL and its state (for assertions). On the way out it
    fails (AssertionError) if any request it received departed from Grafana's API spec."""
    state = GrafanaState(token, major=major, basic_auth=basic_auth)
    with serving(state, _Handler) as url:
        yield url, state
    if state.violations:
        raise AssertionError("requests or answers outside Grafana's API spec (grafana_api_spec.yaml):\n"
                             + "\n".join(dict.fromkeys(state.violations)))
