"""Action policies: what shoppulse may do about an incident, reviewed as files in Git (``actions/*.yaml``).

A policy names its trigger (incident kinds, countries, severity, confidence, the metrics it must have
moved, how long the incident has lasted, and the contributor it acts on, with the share of the
incident that contributor must carry), the action (an HTTP call to the shop's admin API, or a command
message on a Kafka topic), its rollback (the inverse call, and when it fires), whether a human
approves it, its rate limits and blast radius, the policies it conflicts with, and its own kill
switch (``enabled``). A policy runs as a dry run (what it would have done, audited) unless its
``mode`` is ``live``.

Text in an action's path, body or message may name the incident's fields in braces
(``PLACEHOLDERS``): ``{country}``, ``{contributor}`` (the value of the contributor it acts on, e.g.
the failing gateway), ``{incident_id}``, ``{kind}``, ``{idempotency_key}``.

``load_policies`` refuses a folder whose policies have problems, each with its file and line, so
a processor never starts on a policy the lint would fail.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoppulse.events.schema import Country
from shoppulse.sidecar.incidents import KINDS
from shoppulse.sidecar.regions import SEVERITIES
from shoppulse.sidecar.signals import METRICS

INCIDENT_KINDS = tuple(dict.fromkeys(kind for _, _, kind in KINDS))
PLACEHOLDERS = frozenset({"country", "contributor", "incident_id", "kind", "idempotency_key"})
DIMENSIONS = ("gateway", "failure reason", "device", "category", "campaign", "refund reason")
ROLLBACK_WHEN = ("incident_resolved", "not_recovered")


def parse_minutes(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``: a duration as policies write it."""
    units = {"s": 1, "m": 60, "h": 3600}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{text!r} is not a duration: write a whole number and s, m or h (90s, 15m, 2h)")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContributorTrigger(_Strict):
    dimension: Literal["gateway", "failure reason", "device", "category", "campaign", "refund reason"]
    min_share: float = Field(ge=0, le=1, description="of the incident's excess the contributor must carry")
    values: list[str] | None = Field(default=None, min_length=1,
                                     description="only these values of it (a refund reason: unauthorized); "
                                                 "default: any")


class Trigger(_Strict):
    incident_kinds: list[str] = Field(min_length=1)
    countries: list[Country] | None = Field(default=None, description="default: any country")
    min_severity: Literal["low", "medium", "high", "critical"] = "high"
    min_confidence: float = Field(default=0.0, ge=0, le=1,
                                  description="how unusual the incident's strongest anomaly was for its series, as a "
                                              "probability (0.999999: one usual point in a million is as unusual)")
    metrics: list[str] | None = Field(default=None, min_length=1,
                                      description="the incident must have moved one of these; default: any")
    min_duration: str = Field(default="0s", description="how long the incident has been open")
    contributor: ContributorTrigger | None = None

    @field_validator("min_duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_minutes(value)
        return value


class HttpCall(_Strict):
    method: Literal["POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(pattern=r"^/", description="on the shop's admin API (SHOPPULSE_SHOP_ADMIN_URL)")
    body: dict[str, Any] = Field(default_factory=dict)


class KafkaCommand(_Strict):
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    key: str = "{country}"
    message: dict[str, Any] = Field(default_factory=dict)


class Call(_Strict):
    http: HttpCall | None = None
    kafka: KafkaCommand | None = None


class Rollback(Call):
    when: list[Literal["incident_resolved", "not_recovered"]] = Field(min_length=1)
    not_recovered_after: str | None = Field(default=None, description="with not_recovered: how long to wait")


class Approval(_Strict):
    required: bool
    approvers: list[str] = Field(default_factory=list, description="Slack user or group ids who may approve")
    expires_after: str = "15m"


class Limits(_Strict):
    per_hour: int | None = Field(default=None, ge=1, description="actions of this policy an hour, all countries")
    per_country_per_hour: int = Field(default=1, ge=1)
    max_countries: int = Field(default=1, ge=1, description="the blast radius: countries one action may touch")


class Policy(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    enabled: bool = True
    mode: Literal["dry_run", "live"] = "dry_run"
    trigger: Trigger
    action: Call
    rollback: Rollback | None = None
    approval: Approval | None = None
    limits: Limits | None = None
    conflicts_with: list[str] = Field(default_factory=list)

    @property
    def min_duration(self) -> timedelta:
        return parse_minutes(self.trigger.min_duration)

    @property
    def per_hour(self) -> int:
        assert self.limits is not None and self.limits.per_hour is not None  # load_policies refused it otherwise
        return self.limits.per_hour


@dataclass(frozen=True)
class PolicyProblem:
    path: Path
    line: int
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.where}: {self.message}"


class PolicyError(ValueError):
    """Policies that cannot be used; the message lists each problem with its file and line."""


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int:
    """The 1-based line of the item at ``loc`` in a composed YAML document (its nearest existing parent's)."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]  # the key's line: a block value starts below it
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


Located = list[tuple[tuple[str | int, ...], str]]  # (the path of the item a problem is about, the problem)


def _templates(value: Any, at: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every text in ``value`` with its path."""
    if isinstance(value, str):
        return [(at, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _templates(v, (*at, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _templates(v, (*at, i))]
    return []


def _placeholder_problems(call: Call, where: str) -> Located:
    found: Located = []
    texts = []
    if call.http is not None:
        texts += _templates({"path": call.http.path, "body": call.http.body}, (where, "http"))
    if call.kafka is not None:
        texts += _templates({"key": call.kafka.key, "message": call.kafka.message}, (where, "kafka"))
    for at, text in texts:
        try:
            names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
        except ValueError as exc:
            found.append((at, f"{text!r}: {exc} (write {{{{ and }}}} for a literal brace)"))
            continue
        for name in sorted(names - PLACEHOLDERS):
            found.append((at, f"unknown placeholder {{{name}}} in {text!r}: use one of "
                              f"{', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}"))
    return found


def policy_problems(policy: Policy, names: set[str]) -> Located:
    """What makes a well-formed policy unsafe to run, each with the path of the item it is about."""
    found: Located = []
    for index, kind in enumerate(policy.trigger.incident_kinds):
        if kind not in INCIDENT_KINDS:
            found.append((("trigger", "incident_kinds", index),
                          f"unknown incident kind {kind!r}: the sidecar's kinds are {', '.join(INCIDENT_KINDS)}"))
    for index, metric in enumerate(policy.trigger.metrics or ()):
        if metric not in METRICS:
            found.append((("trigger", "metrics", index),
                          f"unknown metric {metric!r}: the sidecar's metrics are {', '.join(METRICS)}"))
    for what, call in (("action", policy.action), ("rollback", policy.rollback)):
        if call is not None and (call.http is None) == (call.kafka is None):
            found.append(((what,), f"the {what} needs exactly one of http (the shop's admin API) or kafka "
                                   "(a command message)"))
        if call is not None:
            found += _placeholder_problems(call, what)
    if policy.rollback is None:
        found.append(((), "no rollback: every action needs its inverse call and when it fires "
                          f"(rollback.when: {' and/or '.join(ROLLBACK_WHEN)})"))
    elif "not_recovered" in policy.rollback.when and policy.rollback.not_recovered_after is None:
        found.append((("rollback", "when"), "not_recovered needs rollback.not_recovered_after (e.g. 10m)"))
    if policy.rollback is not None and policy.rollback.not_recovered_after is not None:
        try:
            parse_minutes(policy.rollback.not_recovered_after)
        except ValueError as exc:
            found.append((("rollback", "not_recovered_after"), str(exc)))
    if policy.limits is None or policy.limits.per_hour is None:
        found.append((("limits",) if policy.limits is not None else (),
                      "no rate limit: set limits.per_hour, how many times an hour this action may run at most"))
    if policy.approval is not None:
        try:
            parse_minutes(policy.approval.expires_after)
        except ValueError as exc:
            found.append((("approval", "expires_after"), str(exc)))
        if policy.approval.required and not policy.approval.approvers:
            found.append((("approval", "approvers"), "an approval needs at least one approver"))
    for index, other in enumerate(policy.conflicts_with):
        if other not in names:
            found.append((("conflicts_with", index), f"no policy named {other!r} (known: {', '.join(sorted(names))})"))
    if "{contributor}" in str(policy.action.model_dump()) and policy.trigger.contributor is None:
        found.append((("trigger",), "the action names {contributor}: say which in trigger.contributor"))
    return found


def check_policies(paths: list[Path]) -> tuple[list[Policy], list[PolicyProblem]]:
    """Every policy of ``paths``, and every problem found in them (files that do not parse, fields that
    do not follow the format, unsafe policies, names used twice)."""
    loaded: list[tuple[Path, yaml.Node | None, Policy]] = []
    problems: list[PolicyProblem] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            node = yaml.compose(text)
            document = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.append(PolicyProblem(path, mark.line + 1 if mark else 1, "file",
                                          " ".join(str(exc).split())))
            continue
        try:
            policy = Policy.model_validate(document)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                where = ".".join(str(p) for p in loc) or "policy"
                problems.append(PolicyProblem(path, _line_of(node, loc), where, error["msg"]))
            continue
        loaded.append((path, node, policy))
    names = {policy.name for _, _, policy in loaded}
    seen: dict[str, Path] = {}
    for path, node, policy in loaded:
        if policy.name in seen:
            problems.append(PolicyProblem(path, _line_of(node, ("name",)), "name",
                                          f"{policy.name!r} is also the name of the policy in {seen[policy.name]}"))
        seen.setdefault(policy.name, path)
        for loc, message in policy_problems(policy, names):
            where = ".".join(str(p) for p in loc) or policy.name
            problems.append(PolicyProblem(path, _line_of(node, loc), where, message))
    return [policy for _, _, policy in loaded], problems


def policy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))


def load_policies(folder: Path) -> list[Policy]:
    """The policies of ``folder`` (none when it holds none); PolicyError listing every problem when any
    has one."""
    policies, problems = check_policies(policy_files(folder))
    if problems:
        raise PolicyError(f"{len(problems)} problem(s) in the action policies of {folder}:\n"
                          + "\n".join(str(p) for p in problems))
    return policies


SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
