"""The alerting provisioning files as Grafana reads them: rule groups, contact points, policies,
templates and mute timings, each item with the file and line it comes from."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from shoppulse.grafana.model import Problem
from shoppulse.project_files import alerting_dir

# The top-level lists of Grafana's alerting file provisioning (apiVersion 1).
SECTIONS = ("groups", "deleteRules", "contactPoints", "deleteContactPoints", "policies", "resetPolicies",
            "templates", "deleteTemplates", "muteTimes", "deleteMuteTimes")
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: object) -> timedelta | None:
    """A Prometheus-style duration as Grafana's files take it (``1m``, ``1h30m``); None if it is not one."""
    if not isinstance(text, str) or not re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        return None
    return timedelta(seconds=sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text)))


@dataclass(frozen=True)
class Located:
    """One item of a provisioning file and where it is."""

    path: Path
    line: int
    item: dict[str, Any]
    parent: dict[str, Any] = field(default_factory=dict)  # a rule's group

    def problem(self, where: str, message: str) -> Problem:
        return Problem(self.path, self.line, where, message)


@dataclass
class AlertingFiles:
    documents: dict[Path, dict[str, Any]] = field(default_factory=dict)
    texts: dict[Path, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path, needle: str, after: int = 1) -> int:
        lines = self.texts[path].splitlines()
        for number in range(max(after, 1), len(lines) + 1):
            if needle in lines[number - 1]:
                return number
        return after

    def items(self, section: str) -> Iterator[Located]:
        for path, document in self.documents.items():
            after = 1
            for item in document.get(section) or []:
                if not isinstance(item, dict):
                    continue
                anchor = item.get("name") or item.get("uid") or item.get("receiver") or section
                after = self.line_of(path, str(anchor), after)
                yield Located(path, after, item)

    def rules(self) -> Iterator[Located]:
        for group in self.items("groups"):
            after = group.line
            for rule in group.item.get("rules") or []:
                if isinstance(rule, dict):
                    after = self.line_of(group.path, f"uid: {rule.get('uid')}", after)
                    yield Located(group.path, after, rule, group.item)

    def receivers(self) -> Iterator[Located]:
        for point in self.items("contactPoints"):
            after = point.line
            for receiver in point.item.get("receivers") or []:
                if isinstance(receiver, dict):
                    after = self.line_of(point.path, str(receiver.get("uid")), after)
                    yield Located(point.path, after, receiver, point.item)


def alerting_paths(folder: Path | None = None) -> list[Path]:
    return sorted(p for p in (folder or alerting_dir()).glob("*") if p.suffix in (".yaml", ".yml", ".json"))


def load(paths: list[Path]) -> AlertingFiles:
    files = AlertingFiles()
    for path in paths:
        text = path.read_text()
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            files.problems.append(Problem(path, (mark.line + 1) if mark else 1, "file", f"not valid YAML: {exc}"))
            continue
        if not isinstance(document, dict):
            files.problems.append(Problem(path, 1, "file", "a provisioning file holds one mapping with apiVersion"))
            continue
        if document.get("apiVersion") != 1:
            files.problems.append(Problem(path, 1, "apiVersion", f"apiVersion is {document.get('apiVersion')!r}; "
                                                                 "Grafana's alerting files use apiVersion: 1"))
        unknown = sorted(set(document) - set(SECTIONS) - {"apiVersion"})
        if unknown:
            files.problems.append(Problem(path, 1, "file", f"unknown top-level keys {unknown}: Grafana reads only "
                                                           + ", ".join(SECTIONS)))
        for section in SECTIONS:
            if section in document and not isinstance(document[section], list):
                files.problems.append(Problem(path, 1, section, f"{section} must be a list"))
                document[section] = []
        files.documents[path] = document
        files.texts[path] = text
    return files
