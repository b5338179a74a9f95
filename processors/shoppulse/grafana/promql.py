"""PromQL checked by Prometheus' own parser (``promtool check rules``) and against the metrics we export."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import yaml

import shoppulse

SOURCE_DIR = Path(shoppulse.__file__).resolve().parent
_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum|GaugeMetricFamily)\(\s*\"(shoppulse_\w+)\"")
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
    "GaugeMetricFamily": ("",),
}
# Exported by prometheus-client's default process and platform collectors, and by Prometheus itself.
STANDARD = frozenset({
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
    "process_open_fds", "process_max_fds", "process_start_time_seconds", "python_info",
    "python_gc_objects_collected_total", "python_gc_collections_total", "up", "scrape_duration_seconds",
})
_NAME = re.compile(r"(?<![\w:\"'.])((?:shoppulse|process|python)_[a-zA-Z0-9_]*)")
PROMTOOL_TIMEOUT_S = 30


def metric_names(expression: str) -> list[str]:
    """The shoppulse, process and python metric names a PromQL expression uses, in order, once each."""
    return list(dict.fromkeys(_NAME.findall(expression)))


@cache
def exported_metric_names(source_dir: Path = SOURCE_DIR) -> frozenset[str]:
    """Every sample name shoppulse's processes expose, read from the metric definitions in the code."""
    names: set[str] = set(STANDARD)
    for path in source_dir.rglob("*.py"):
        for kind, name in _DEFINITION.findall(path.read_text()):
            names.update(name + suffix for suffix in _SUFFIXES[kind])
    return frozenset(names)


class PromQLChecker:
    """Parses expressions with promtool; finds names of metrics nobody exports."""

    def __init__(self, promtool: str | None = None) -> None:
        self.promtool = promtool or shutil.which("promtool")

    def problems(self, expression: str) -> list[str]:
        found: list[str] = []
        if self.promtool is None:
            return ["promtool not found: install Debian's prometheus package (./dev test does) to check PromQL"]
        syntax = self._promtool_error(expression)
        if syntax:
            found.append(f"promtool rejects the expression: {syntax}")
        known = exported_metric_names()
        for name in sorted(metric_names(expression)):
            if name not in known:
                found.append(f"metric {name} is not exported by any shoppulse process (see prometheus/ and the "
                             "Counter/Gauge/Histogram definitions in processors/)")
        return found

    def _promtool_error(self, expression: str) -> str | None:
        rules = {"groups": [{"name": "lint", "rules": [{"record": "lint:expression", "expr": expression}]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as handle:
            yaml.safe_dump(rules, handle)
            handle.flush()
            done = subprocess.run([str(self.promtool), "check", "rules", handle.name], capture_output=True,
                                  text=True, timeout=PROMTOOL_TIMEOUT_S, check=False)
        if done.returncode == 0:
            return None
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        detail = [line for line in lines if "parse error" in line or "expr" in line] or lines
        return " ".join(detail)[:400]
