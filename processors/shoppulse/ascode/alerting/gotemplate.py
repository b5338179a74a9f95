"""Field references in Grafana notification templates (Go ``text/template``), checked against the
data Grafana hands them: ``ExtendedData`` at the top, ``ExtendedAlert`` inside ``range .Alerts``,
label and annotation maps whose keys must be ones the rules can produce.

Not a Go template engine: it follows the actions that change what ``.`` is (define, range, with,
if/else, end, template calls) and resolves each ``.Field.Chain`` against the type it reaches."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# What each value type of Grafana's notification data offers ("keys": a map of known names).
FIELDS: dict[str, dict[str, str]] = {
    "data": {"Receiver": "str", "Status": "str", "Alerts": "alerts", "GroupLabels": "labels",
             "CommonLabels": "labels", "CommonAnnotations": "annotations", "ExternalURL": "str",
             "GroupKey": "str", "TruncatedAlerts": "int", "Title": "str", "Message": "str"},
    "alerts": {"Firing": "alerts", "Resolved": "alerts"},
    "alert": {"Status": "str", "Labels": "labels", "Annotations": "annotations", "StartsAt": "time",
              "EndsAt": "time", "GeneratorURL": "str", "Fingerprint": "str", "SilenceURL": "str",
              "DashboardURL": "str", "PanelURL": "str", "Values": "any", "ValueString": "str",
              "ImageURL": "str", "EmbeddedImage": "str", "OrgID": "int"},
    "str": {}, "int": {},
}
MAP_METHODS = {"SortedPairs": "any", "Names": "any", "Values": "any", "Remove": "any"}
OPAQUE = {"time", "any"}  # methods of time.Time, values of unknown shape: not checked further
RANGE_ELEMENT = {"alerts": "alert"}

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_REFERENCE = re.compile(r"(?<![\w)\]$])(\$?)\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_CALL = re.compile(r'^(template|block)\s+"([^"]+)"\s*(.*)$', re.DOTALL)
_DEFINE = re.compile(r'^define\s+"([^"]+)"$')


@dataclass(frozen=True)
class Known:
    """The label and annotation names the rules can put on an alert."""

    labels: frozenset[str]
    annotations: frozenset[str]


@dataclass
class Finding:
    template: str
    message: str


@dataclass
class Definitions:
    bodies: dict[str, list[str]] = field(default_factory=dict)
    stray: list[str] = field(default_factory=list)  # actions outside any define


def parse(text: str) -> Definitions:
    """Split a template file into its ``define`` blocks (each a list of action texts)."""
    found = Definitions()
    current: str | None = None
    depth = 0
    for match in _ACTION.finditer(text):
        action = match.group(1).strip()
        if action.startswith("/*"):
            continue
        keyword = action.split(None, 1)[0] if action else ""
        define = _DEFINE.match(action)
        if define and current is None:
            current, depth = define.group(1), 0
            found.bodies[current] = []
            continue
        if current is None:
            found.stray.append(action)
            continue
        if keyword in ("if", "range", "with", "block", "define"):
            depth += 1
        elif keyword == "end":
            if depth == 0:
                current = None
                continue
            depth -= 1
        found.bodies[current].append(action)
    return found


def calls(text: str) -> list[tuple[str, str]]:
    """The templates a text (a contact point setting, a template body) calls: (name, argument)."""
    out = []
    for match in _ACTION.finditer(text):
        call = _CALL.match(match.group(1).strip())
        if call:
            out.append((call.group(2), call.group(3).strip()))
    return out


class Checker:
    def __init__(self, definitions: Definitions, known: Known, builtin: frozenset[str] = frozenset()) -> None:
        self.definitions = definitions
        self.known = known
        self.builtin = builtin  # templates Grafana defines itself (default.title, slack.default.text…)
        self.findings: list[Finding] = []
        self._checked: set[tuple[str, str]] = set()

    def check_call(self, name: str, scope: str, caller: str) -> None:
        if name in self.builtin:
            return
        if name not in self.definitions.bodies:
            self.findings.append(Finding(caller, f'calls template "{name}", which no template file defines'))
            return
        if (name, scope) in self._checked:
            return
        self._checked.add((name, scope))
        self._check_body(name, self.definitions.bodies[name], scope)

    def check_unreached(self) -> None:
        for name, body in self.definitions.bodies.items():
            if not any(checked == name for checked, _ in self._checked):
                self._checked.add((name, "data"))
                self._check_body(name, body, "data")

    def _check_body(self, name: str, body: list[str], scope: str) -> None:
        stack = [scope]
        for action in body:
            keyword = action.split(None, 1)[0] if action else ""
            rest = action[len(keyword):].strip()
            if keyword == "end":
                if len(stack) > 1:
                    stack.pop()
                continue
            if keyword == "else":
                inner = rest.split(None, 1)
                if inner and inner[0] in ("if", "with"):
                    self._references(name, inner[1] if len(inner) > 1 else "", stack)
                continue
            if keyword in ("if", "with", "range"):
                pipeline = re.sub(r"^\$\w+(\s*,\s*\$\w+)?\s*:=\s*", "", rest)
                reached = self._references(name, pipeline, stack)
                if keyword == "if":
                    stack.append(stack[-1])
                elif keyword == "with":
                    stack.append(reached or "any")
                else:
                    stack.append(RANGE_ELEMENT.get(reached or "", "any"))
                continue
            call = _CALL.match(action)
            if call:
                argument = call.group(3).strip()
                self._references(name, argument, stack)
                target = stack[-1] if argument == "." else stack[0] if argument == "$" else \
                    self._type_of_single(argument, stack)
                self.check_call(call.group(2), target, name)
                continue
            self._references(name, action, stack)

    def _type_of_single(self, expression: str, stack: list[str]) -> str:
        match = _REFERENCE.fullmatch(expression.strip())
        if not match:
            return "any"
        return self._resolve(None, match.group(2).split("."), stack[0] if match.group(1) else stack[-1]) or "any"

    def _references(self, name: str, text: str, stack: list[str]) -> str | None:
        """Check every field chain in ``text``; the type of the last one (for range/with)."""
        last = None
        for match in _REFERENCE.finditer(_STRING.sub('""', text)):
            start = stack[0] if match.group(1) else stack[-1]
            last = self._resolve(name, match.group(2).split("."), start)
        return last

    def _resolve(self, name: str | None, chain: list[str], kind: str) -> str | None:
        for part in chain:
            if kind in OPAQUE:
                return kind
            if kind in ("labels", "annotations"):
                if part in MAP_METHODS:
                    kind = MAP_METHODS[part]
                    continue
                names = self.known.labels if kind == "labels" else self.known.annotations
                if part not in names and name is not None:
                    self.findings.append(Finding(name, f"{'.'.join(chain)}: no rule gives the "
                                                       f"{kind[:-1]} {part!r} (known: {', '.join(sorted(names))})"))
                return "str"
            fields = FIELDS.get(kind, {})
            if part not in fields:
                if name is not None:
                    offered = ", ".join(sorted(fields)) or "no fields"
                    self.findings.append(Finding(name, f"{'.'.join(chain)}: {part!r} is not a field of Grafana's "
                                                       f"{kind} (it offers {offered})"))
                return None
            kind = fields[part]
        return kind
