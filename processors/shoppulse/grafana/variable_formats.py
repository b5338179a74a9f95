"""Grafana's template variable formats (``${var:format}``, ``${var:format:arg}``), as its format
registry (``@grafana/scenes`` variables/interpolation/formatRegistry.ts) applies them. A multi-value
variable's value is a list even with one value selected, a single-value variable's a string: several
formats treat the two differently."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

Value = str | list[str]
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_LUCENE_SPECIAL = re.compile(r"([!*+\-=<>\s&|()\[\]{}^~?:\\/\"])")
# moment.js tokens the date format may use, and their strftime equivalents
_MOMENT = (("YYYY", "%Y"), ("MM", "%m"), ("DD", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))


class FormatError(ValueError):
    """A format Grafana does not have, or arguments it cannot use."""


def _items(value: Value) -> list[str]:
    return value if isinstance(value, list) else [value]


def _as_js_string(value: Value) -> str:
    """JavaScript's String(value): an array joins with commas."""
    return ",".join(value) if isinstance(value, list) else value


def _regex(value: Value) -> str:
    escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in _items(value)]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _lucene_escape(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return _LUCENE_SPECIAL.sub(r"\\\1", value)


def _lucene(value: Value) -> str:
    if isinstance(value, str):
        return _lucene_escape(value)
    if not value:
        return "__empty__"
    return "(" + " OR ".join('"' + _lucene_escape(v) + '"' for v in value) + ")"


def _uri_component(value: str) -> str:
    """encodeURIComponent, then also ! ' ( ) * (Grafana's encodeURIComponentStrict)."""
    return quote(value, safe="-_.~")


def _percentencode(value: Value) -> str:
    return _uri_component("{" + ",".join(value) + "}" if isinstance(value, list) else value)


def _sqlstring(value: Value) -> str:
    def one(v: str) -> str:
        return "'" + v.replace("'", "''").replace('"', '\\"') + "'"
    return ",".join(one(v) for v in _items(value))


def _date(value: Value, args: list[str]) -> str:
    text = _as_js_string(value)
    if not re.fullmatch(r"-?\d+", text.strip()):
        return "NaN"
    ms = int(text)
    arg = args[0] if args else "iso"
    if arg == "ms":
        return text
    if arg == "seconds":
        return str(round(ms / 1000))
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if arg == "iso":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    pattern = ":".join(args)
    for token, directive in _MOMENT:
        pattern = pattern.replace(token, directive)
    if re.search(r"[A-Za-z]", re.sub(r"%[YmdHMS]", "", pattern)):
        raise FormatError(f"date format {':'.join(args)!r}: the lint knows the moment.js tokens "
                          + ", ".join(t for t, _ in _MOMENT))
    return moment.strftime(pattern)


FORMATS: dict[str, Callable[[Value, list[str], str], str]] = {
    "lucene": lambda v, a, n: _lucene(v),
    "raw": lambda v, a, n: _as_js_string(v),
    "regex": lambda v, a, n: _regex(v),
    "pipe": lambda v, a, n: "|".join(_items(v)),
    "distributed": lambda v, a, n: ",".join(x if i == 0 else f"{n}={x}" for i, x in enumerate(_items(v))),
    "csv": lambda v, a, n: ",".join(_items(v)),
    "html": lambda v, a, n: (", ".join(v) if isinstance(v, list) else v).replace("&", "&amp;").replace(
        "<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;"),
    "json": lambda v, a, n: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")),
    "percentencode": lambda v, a, n: _percentencode(v),
    "singlequote": lambda v, a, n: ",".join("'" + x.replace("'", "\\'") + "'" for x in _items(v)),
    "doublequote": lambda v, a, n: ",".join('"' + x.replace('"', '\\"') + '"' for x in _items(v)),
    "sqlstring": lambda v, a, n: _sqlstring(v),
    "join": lambda v, a, n: (a[0] if a else ",").join(v) if isinstance(v, list) else v,
    "date": lambda v, a, n: _date(v, a),
    "glob": lambda v, a, n: "{" + ",".join(v) + "}" if isinstance(v, list) and len(v) > 1 else _as_js_string(v),
    "text": lambda v, a, n: " + ".join(_items(v)),
    "queryparam": lambda v, a, n: "&".join(f"var-{n}={_uri_component(x)}" for x in _items(v)),
    "customqueryparam": lambda v, a, n: "&".join(
        f"{_uri_component(a[0] if a else n)}={_uri_component(a[1] if len(a) > 1 else '')}{_uri_component(x)}"
        for x in _items(v)),
    "uriencode": lambda v, a, n: quote("{" + ",".join(v) + "}" if isinstance(v, list) else v,
                                       safe="-_.~;,/?:@&=+$#"),
}


def apply_format(fmt: str, args: list[str], values: list[str], multi: bool, name: str) -> str:
    """``${name:fmt:args}`` for the variable's selected ``values``."""
    formatter = FORMATS.get(fmt)
    if formatter is None:
        raise FormatError(f"unknown variable format :{fmt}: Grafana knows {', '.join(sorted(FORMATS))}")
    value: Value = list(values) if multi else (values[0] if len(values) == 1 else list(values))
    return formatter(value, args, name)
