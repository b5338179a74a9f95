"""``shoppulse alerts lint``: the alerting files against Grafana's file-provisioning format, every
reference between them (contact points, policies, templates, mute timings, datasources, dashboards,
panels, runbooks), every ClickHouse rule query run against the real schema with demo data and its
result checked to be alerting data, PromQL through promtool, and every template field reference."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from shoppulse.ascode.alerting import gotemplate
from shoppulse.ascode.alerting.evaluate import EXPRESSION_UID, NotEvaluableError, RuleEvaluator
from shoppulse.ascode.alerting.expressions import EXPRESSION_TYPES, ExpressionError, parse_math, references
from shoppulse.ascode.alerting.files import AlertingFiles, Located, load, parse_duration
from shoppulse.ascode.alerting.mute import MuteTimingError, TimeInterval
from shoppulse.grafana.clickhouse_plugin import target_problems
from shoppulse.grafana.model import (
    CLICKHOUSE_TYPE,
    PROMETHEUS_TYPE,
    Datasource,
    Problem,
    dashboard_paths,
    provisioned_datasources,
)
from shoppulse.grafana.model import load as load_dashboard
from shoppulse.grafana.promql import PromQLChecker

NO_DATA_STATES = ("Alerting", "NoData", "OK", "KeepLast")
ERROR_STATES = ("Alerting", "Error", "OK", "KeepLast")
SEVERITIES = ("critical", "high", "warning", "info")
REQUIRED_LABELS = ("severity", "team")
# Our message template prints these for every alert.
REQUIRED_ANNOTATIONS = ("summary", "description", "observed", "expected", "runbook_url")
BUILTIN_RECEIVERS = frozenset({"grafana-default-email"})
RECEIVER_TYPES = frozenset({"slack", "pagerduty", "email", "webhook", "opsgenie", "teams", "telegram", "discord",
                            "googlechat", "victorops", "pushover", "sensugo", "threema", "webex", "wecom", "line",
                            "kafka", "sns", "oncall", "mqtt", "jira"})
REQUIRED_SETTINGS = {"pagerduty": ("integrationKey",), "email": ("addresses",), "webhook": ("url",)}
GRAFANA_LABELS = frozenset({"alertname", "grafana_folder", "__alert_rule_uid__", "datasource_uid", "ref_id"})
GRAFANA_ANNOTATIONS = frozenset({"__dashboardUid__", "__panelId__", "__orgId__", "__value_string__", "__values__",
                                 "__alertImageToken__", "Error"})
# Templates Grafana itself defines (default_template.go), callable from contact points.
BUILTIN_TEMPLATES = frozenset({"default.title", "default.message", "__subject", "__text_values_list",
                               "__text_alert_list", "__teams_text_alert_list", "slack.default.title",
                               "slack.default.text", "pagerduty.default.description", "teams.default.message"})
MATCHER_OPERATORS = ("=", "!=", "=~", "!~")
_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_RUNBOOK = re.compile(r"^\$\{SHOPPULSE_RUNBOOK_BASE_URL\}/([\w.-]+\.md)$")
_LABEL_REF = re.compile(r"\$labels\.(\w+)")
_VALUE_REF = re.compile(r"\$values\.(\w+)")
# The fields Grafana's file reader knows; it ignores any other key, so a typo silently drops a setting.
KNOWN_KEYS = {
    "group": {"orgId", "name", "folder", "interval", "rules"},
    "rule": {"uid", "title", "condition", "data", "dasboardUid", "dashboardUid", "panelId", "noDataState",
             "execErrState", "for", "keepFiringFor", "missing_series_evals_to_resolve", "annotations", "labels",
             "isPaused", "notification_settings", "record"},
    "query": {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"},
    "contact point": {"orgId", "name", "receivers"},
    "receiver": {"uid", "type", "settings", "disableResolveMessage"},
    "route": {"orgId", "receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "routes",
              "object_matchers", "matchers", "continue", "mute_time_intervals", "active_time_intervals"},
    "mute timing": {"orgId", "name", "time_intervals"},
    "template": {"orgId", "name", "template"},
}
_BY = re.compile(r"\bby\s*\(([^)]*)\)")  # the labels a PromQL aggregation keeps


@dataclass
class LintReport:
    files: AlertingFiles
    problems: list[Problem] = field(default_factory=list)
    rules: int = 0
    queries_run: int = 0


def lint(paths: list[Path], client: Client, now: datetime, promql: PromQLChecker | None = None,
         datasources: dict[str, Datasource] | None = None) -> LintReport:
    files = load(paths)
    report = LintReport(files, list(files.problems))
    datasources = datasources if datasources is not None else provisioned_datasources()
    checker = RuleChecker(report, datasources, RuleEvaluator(client, datasources), promql or PromQLChecker(), now)
    for rule in files.rules():
        checker.check(rule)
    report.problems += _group_problems(files)
    receivers = _contact_point_problems(files, report)
    report.problems += _rule_routing_problems(files, receivers)
    report.problems += _policy_problems(files, receivers)
    report.problems += _mute_timing_problems(files)
    report.problems += _template_problems(files, checker.labels, checker.annotations)
    report.problems += _unknown_key_problems(files)
    return report


def _unknown(kind: str, item: dict[str, Any]) -> list[str]:
    return sorted(set(item) - KNOWN_KEYS[kind])


def _unknown_key_problems(files: AlertingFiles) -> list[Problem]:
    found: list[tuple[Located, str, list[str]]] = []
    for kind, section in (("group", "groups"), ("contact point", "contactPoints"), ("mute timing", "muteTimes"),
                          ("template", "templates")):
        found += [(item, kind, _unknown(kind, item.item)) for item in files.items(section)]
    for rule in files.rules():
        found.append((rule, "rule", _unknown("rule", rule.item)))
        found += [(rule, "query", _unknown("query", q)) for q in rule.item.get("data") or [] if isinstance(q, dict)]
    found += [(receiver, "receiver", _unknown("receiver", receiver.item)) for receiver in files.receivers()]
    for policy in files.items("policies"):
        found += [(policy, "route", _unknown("route", route)) for route, _depth in _routes(policy.item)]
    problems = []
    for located, kind, keys in found:
        for key in keys:
            line = located.line if kind in ("query", "route") else files.line_of(located.path, f"{key}:", located.line)
            problems.append(Problem(located.path, line, kind, f"unknown key {key!r}: Grafana ignores it (known: "
                                                              f"{', '.join(sorted(KNOWN_KEYS[kind]))})"))
    return problems



def _duration_ok(text: Any) -> bool:
    return parse_duration(text) is not None


def _dashboards() -> dict[str, set[int]]:
    panels: dict[str, set[int]] = {}
    for path in dashboard_paths():
        loaded = load_dashboard(path)
        if not isinstance(loaded, Problem):
            panels[loaded.uid] = {p["id"] for p in loaded.panels() if isinstance(p.get("id"), int)}
    return panels


class RuleChecker:
    def __init__(self, report: LintReport, datasources: dict[str, Datasource], evaluator: RuleEvaluator,
                 promql: PromQLChecker, now: datetime) -> None:
        self.report = report
        self.datasources = datasources
        self.evaluator = evaluator
        self.promql = promql
        self.now = now
        self.dashboards = _dashboards()
        self.uids: Counter[str] = Counter()
        self.labels: set[str] = set(GRAFANA_LABELS)
        self.annotations: set[str] = set(GRAFANA_ANNOTATIONS)
        self.prometheus_labels: set[str] = set()  # the current rule's, from its PromQL's by (...)

    def check(self, located: Located) -> None:
        rule, add = located.item, self.report.problems.append
        self.report.rules += 1
        uid = str(rule.get("uid") or "")
        where = f"rule {uid or rule.get('title') or '?'}"
        if not _UID.match(uid):
            add(located.problem(where, "uid must be 1-40 letters, digits, - or _ (Grafana refuses others)"))
        self.uids[uid] += 1
        if self.uids[uid] == 2:
            add(located.problem(where, f"uid {uid} is used by another rule: uids must be unique"))
        if not str(rule.get("title") or "").strip():
            add(located.problem(where, "no title: Grafana refuses a rule without one"))
        for key, allowed in (("noDataState", NO_DATA_STATES), ("execErrState", ERROR_STATES)):
            if rule.get(key) not in allowed:
                add(located.problem(where, f"{key} {rule.get(key)!r} is not one of {allowed} (choose it on purpose)"))
        if not _duration_ok(rule.get("for")):
            add(located.problem(where, f"for {rule.get('for')!r} is not a duration such as 2m (a pending period "
                                       "keeps alerts from flapping)"))
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        for name in REQUIRED_LABELS:
            if not labels.get(name):
                add(located.problem(where, f"label {name} is missing: notification policies route on it"))
        if labels.get("severity") and labels["severity"] not in SEVERITIES:
            add(located.problem(where, f"severity {labels['severity']!r} is not one of {SEVERITIES}"))
        for name in REQUIRED_ANNOTATIONS:
            if not annotations.get(name):
                add(located.problem(where, f"annotation {name} is missing: the Slack template shows it"))
        self.labels |= set(labels)
        self.annotations |= set(annotations)
        self._check_links(located, where, rule, annotations)
        self.prometheus_labels = set()
        refs = self._check_data(located, where, rule)
        query_labels = self._run(located, where, rule) | self.prometheus_labels
        self.labels |= self.prometheus_labels
        self._check_annotation_templates(located, where, annotations, set(labels) | query_labels, refs)

    def _check_links(self, located: Located, where: str, rule: dict[str, Any], annotations: dict[str, Any]) -> None:
        add = self.report.problems.append
        runbook = _RUNBOOK.match(str(annotations.get("runbook_url") or ""))
        if not runbook:
            add(located.problem(where, "runbook_url must be ${SHOPPULSE_RUNBOOK_BASE_URL}/<file>.md, a runbook "
                                       "in alerting/runbooks/"))
        elif not (located.path.parent / "runbooks" / runbook.group(1)).is_file():
            add(located.problem(where, f"runbook {runbook.group(1)} does not exist in alerting/runbooks/"))
        dashboard = str(rule.get("dashboardUid") or "")
        if dashboard not in self.dashboards:
            add(located.problem(where, f"dashboardUid {dashboard!r} is not a dashboard in grafana/dashboards/ "
                                       f"({', '.join(sorted(self.dashboards))})"))
        elif rule.get("panelId") not in self.dashboards[dashboard]:
            add(located.problem(where, f"panelId {rule.get('panelId')!r} is not a panel of {dashboard}"))

    def _check_data(self, located: Located, where: str, rule: dict[str, Any]) -> set[str]:
        add = self.report.problems.append
        data = rule.get("data") or []
        refs = [str(q.get("refId")) for q in data if isinstance(q, dict)]
        if not data:
            add(located.problem(where, "no data: a rule needs at least one query"))
        for ref, count in Counter(refs).items():
            if count > 1:
                add(located.problem(where, f"refId {ref} is used twice"))
        if rule.get("condition") not in refs:
            add(located.problem(where, f"condition {rule.get('condition')!r} is not a refId of the rule ({refs})"))
        for query in data:
            ref = query.get("refId")
            model = query.get("model") or {}
            if query.get("datasourceUid") == EXPRESSION_UID:
                if model.get("type") not in EXPRESSION_TYPES:
                    add(located.problem(f"{where} {ref}", f"expression type {model.get('type')!r}: use one of "
                                                          f"{EXPRESSION_TYPES}"))
                    continue
                try:
                    if model.get("type") == "math":
                        parse_math(str(model.get("expression", "")))
                except ExpressionError as exc:
                    add(located.problem(f"{where} {ref}", str(exc)))
                missing = [r for r in references(model) if r not in refs]
                if missing:
                    add(located.problem(f"{where} {ref}", f"reads {missing}, not queries of this rule"))
                continue
            datasource = self.datasources.get(str(query.get("datasourceUid")))
            if datasource is None:
                known = ", ".join(sorted(self.datasources))
                add(located.problem(f"{where} {ref}", f"datasourceUid {query.get('datasourceUid')!r} is not a "
                                                      f"provisioned datasource ({known})"))
                continue
            window = query.get("relativeTimeRange") or {}
            if not (isinstance(window.get("from"), int) and isinstance(window.get("to", 0), int)
                    and window["from"] > window.get("to", 0) >= 0):
                add(located.problem(f"{where} {ref}", "relativeTimeRange needs from > to >= 0 (seconds before the "
                                                      "evaluation)"))
            if datasource.type == CLICKHOUSE_TYPE:
                for message in target_problems(model):
                    add(located.problem(f"{where} {ref}", message))
            if datasource.type == PROMETHEUS_TYPE:
                for message in self.promql.problems(str(model.get("expr", ""))):
                    add(located.problem(f"{where} {ref}", message))
                self.prometheus_labels |= {name.strip() for group in _BY.findall(str(model.get("expr", "")))
                                           for name in group.split(",") if name.strip()}
        return set(refs)

    def _run(self, located: Located, where: str, rule: dict[str, Any]) -> set[str]:
        """Evaluate the rule once on the demo data: its queries must run and give alerting data."""
        runnable = [q for q in rule.get("data") or [] if q.get("datasourceUid") in self.datasources
                    and self.datasources[q["datasourceUid"]].type != PROMETHEUS_TYPE]
        if not runnable:
            return set()
        try:
            evaluation = self.evaluator.evaluate(rule, self.now)
        except NotEvaluableError:
            return set()
        self.report.queries_run += len(runnable)
        if evaluation.error:
            self.report.problems.append(located.problem(where, f"evaluation fails: {evaluation.error}"))
        self.labels |= evaluation.label_names
        return evaluation.label_names

    def _check_annotation_templates(self, located: Located, where: str, annotations: dict[str, Any],
                                    labels: set[str], refs: set[str]) -> None:
        for key, text in annotations.items():
            for name in _LABEL_REF.findall(str(text)):
                if name not in labels | GRAFANA_LABELS:
                    self.report.problems.append(located.problem(
                        f"{where} annotation {key}", f"$labels.{name}: the rule has no label {name!r} "
                                                     f"(its labels: {', '.join(sorted(labels))})"))
            for ref in _VALUE_REF.findall(str(text)):
                if ref not in refs:
                    self.report.problems.append(located.problem(
                        f"{where} annotation {key}", f"$values.{ref}: the rule has no query {ref!r} ({sorted(refs)})"))


def _group_problems(files: AlertingFiles) -> list[Problem]:
    problems = []
    for group in files.items("groups"):
        where = f"group {group.item.get('name') or '?'}"
        if not str(group.item.get("name") or "").strip():
            problems.append(group.problem(where, "rule group has no name set"))
        if not str(group.item.get("folder") or "").strip():
            problems.append(group.problem(where, "rule group has no folder set"))
        if not _duration_ok(group.item.get("interval")):
            problems.append(group.problem(where, f"interval {group.item.get('interval')!r} is not a duration"))
    return problems


def _contact_point_problems(files: AlertingFiles, report: LintReport) -> set[str]:
    names: Counter[str] = Counter()
    uids: Counter[str] = Counter()
    for point in files.items("contactPoints"):
        name = str(point.item.get("name") or "").strip()
        names[name] += 1
        if not name:
            report.problems.append(point.problem("contact point", "no name is set"))
        elif names[name] == 2:
            report.problems.append(point.problem(f"contact point {name}", "defined twice"))
    for receiver in files.receivers():
        uid, kind = str(receiver.item.get("uid") or "").strip(), str(receiver.item.get("type") or "")
        where = f"contact point {receiver.parent.get('name')} receiver {uid or '?'}"
        settings = receiver.item.get("settings") or {}
        uids[uid] += 1
        if not uid:
            report.problems.append(receiver.problem(where, "no uid is set"))
        elif uids[uid] == 2:
            report.problems.append(receiver.problem(where, f"uid {uid} is used twice"))
        if kind not in RECEIVER_TYPES:
            report.problems.append(receiver.problem(where, f"type {kind!r} is not a Grafana integration"))
        if not settings:
            report.problems.append(receiver.problem(where, "no settings are set"))
        if kind == "slack" and not (settings.get("url") or settings.get("token")):
            report.problems.append(receiver.problem(where, "slack needs url (webhook) or token (bot)"))
        for key in REQUIRED_SETTINGS.get(kind, ()):
            if not settings.get(key):
                report.problems.append(receiver.problem(where, f"{kind} needs settings.{key}"))
    return set(names) | BUILTIN_RECEIVERS


def _rule_routing_problems(files: AlertingFiles, receivers: set[str]) -> list[Problem]:
    """A rule may route itself to a contact point (simplified routing) instead of the policy tree."""
    problems = []
    mute_names = {str(m.item.get("name")) for m in files.items("muteTimes")}
    for rule in files.rules():
        settings = rule.item.get("notification_settings")
        if settings is None:
            continue
        where = f"rule {rule.item.get('uid')}"
        if not isinstance(settings, dict) or settings.get("receiver") not in receivers:
            receiver = settings.get("receiver") if isinstance(settings, dict) else settings
            problems.append(rule.problem(where, f"notification_settings.receiver {receiver!r} is not a contact point "
                                                f"({', '.join(sorted(receivers))})"))
            continue
        for name in settings.get("mute_time_intervals") or []:
            if name not in mute_names:
                problems.append(rule.problem(where, f"notification_settings mutes with {name!r}, not a mute timing"))
    return problems


def _routes(route: dict[str, Any], depth: int = 0) -> list[tuple[dict[str, Any], int]]:
    found = [(route, depth)]
    for child in route.get("routes") or []:
        if isinstance(child, dict):
            found += _routes(child, depth + 1)
    return found


def _policy_problems(files: AlertingFiles, receivers: set[str]) -> list[Problem]:
    problems = []
    mute_names = {str(m.item.get("name")) for m in files.items("muteTimes")}
    policies = list(files.items("policies"))
    if len(policies) > 1:
        problems.append(policies[1].problem("policies", "a second policy tree for the same org replaces the first"))
    for policy in policies:
        for route, depth in _routes(policy.item):
            where = "root policy" if depth == 0 else f"route to {route.get('receiver')}"
            line = files.line_of(policy.path, f"receiver: {route.get('receiver')}", policy.line)

            def problem(message: str, path: Path = policy.path, w: str = where, n: int = line) -> Problem:
                return Problem(path, n, w, message)
            if route.get("receiver") not in receivers and (depth == 0 or route.get("receiver")):
                problems.append(problem(f"receiver {route.get('receiver')!r} is not a contact point "
                                        f"({', '.join(sorted(receivers))})"))
            for matcher in route.get("object_matchers") or []:
                if not (isinstance(matcher, list) and len(matcher) == 3 and matcher[1] in MATCHER_OPERATORS):
                    problems.append(problem(f"matcher {matcher!r} must be [label, operator, value] with an "
                                            f"operator in {MATCHER_OPERATORS}"))
            for key in ("mute_time_intervals", "active_time_intervals"):
                for name in route.get(key) or []:
                    if name not in mute_names:
                        problems.append(problem(f"{key} names {name!r}, which is not a mute timing"))
            for key in ("group_wait", "group_interval", "repeat_interval"):
                if key in route and not _duration_ok(route[key]):
                    problems.append(problem(f"{key} {route[key]!r} is not a duration"))
    return problems


def _mute_timing_problems(files: AlertingFiles) -> list[Problem]:
    """What Alertmanager's time-interval parser refuses in each interval (mute.py reads them alike)."""
    problems = []
    for timing in files.items("muteTimes"):
        where = f"mute timing {timing.item.get('name')}"
        for interval in timing.item.get("time_intervals") or []:
            try:
                TimeInterval.parse(interval if isinstance(interval, dict) else {})
            except MuteTimingError as exc:
                problems.append(timing.problem(where, str(exc)))
    return problems


def _template_problems(files: AlertingFiles, labels: set[str], annotations: set[str]) -> list[Problem]:
    problems = []
    known = gotemplate.Known(frozenset(labels), frozenset(annotations))
    texts = {t.item.get("name"): t for t in files.items("templates")}
    definitions = gotemplate.Definitions()
    for name, located in texts.items():
        parsed = gotemplate.parse(str(located.item.get("template") or ""))
        definitions.bodies.update(parsed.bodies)
        if parsed.stray:
            problems.append(located.problem(f"template {name}", f"text outside a define block: {parsed.stray[:3]}"))
    checker = gotemplate.Checker(definitions, known, BUILTIN_TEMPLATES)
    callers: dict[str, Located] = {}
    for receiver in files.receivers():
        for key, value in (receiver.item.get("settings") or {}).items():
            caller = f"contact point {receiver.parent.get('name')} settings.{key}"
            callers[caller] = receiver
            for called, argument in gotemplate.calls(str(value)):
                checker.check_call(called, "data" if argument in (".", "$") else "any", caller)
    checker.check_unreached()
    for finding in checker.findings:
        if finding.template in callers:
            receiver = callers[finding.template]
            line = files.line_of(receiver.path, finding.template.rsplit(".", 1)[-1] + ":", receiver.line)
            problems.append(Problem(receiver.path, line, finding.template, finding.message))
            continue
        defined = next((t for t in texts.values() if f'"{finding.template}"' in str(t.item.get("template"))), None)
        if defined is None:
            continue
        line = files.line_of(defined.path, f'define "{finding.template}"', defined.line)
        problems.append(Problem(defined.path, line, f"template {finding.template}", finding.message))
    return problems
