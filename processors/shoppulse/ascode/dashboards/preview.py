"""PNG previews of dashboards drawn from their real query results, for reviewers without a Grafana.

Each panel is drawn at its grid position with its title, in the spirit of its Grafana panel type:
stats with colour thresholds and sparklines, time series (with the expected band and anomaly
regions), ranked bars, grouped bars, heatmaps, tables, pies and gauges. The geomap is drawn as a
country bar chart (no map tiles offline). Prometheus panels are drawn from a running Prometheus
when one is given, and otherwise show their checked PromQL.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from shoppulse.ascode.dashboards.queries import Executed
from shoppulse.grafana.model import DashboardFile
from shoppulse.grafana.shapes import Result, is_number, is_text, is_time
from shoppulse.grafana.transformations import active_colour, config_ref_id, config_thresholds

BACKGROUND, PANEL, TEXT, MUTED = "#111217", "#181b1f", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
           "#37872d", "#fade2a", "#c4162a", "#1f60c4"]
COLOURS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2"}
ROW_HEIGHT_PX, WIDTH_PX, DPI = 30, 1920, 100


def _number(value: Any) -> float | None:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _format(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit == "currencyUSD":
        return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"
    if unit == "s":
        return f"{value:.0f} s"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _threshold_colour(panel: dict[str, Any], value: float | None,
                      steps_from_data: list[dict[str, Any]] | None = None) -> str:
    """The colour Grafana gives ``value``: by the steps a config query set (they replace the panel's),
    else by the panel's own thresholds."""
    steps = steps_from_data if steps_from_data is not None else (((panel.get("fieldConfig") or {}).get(
        "defaults") or {}).get("thresholds") or {}).get("steps") or []
    colour = active_colour(steps, value) or "green"
    return COLOURS.get(colour, colour)


def _override_colour(panel: dict[str, Any], name: str, default: str) -> str:
    """The fixed colour an override gives the field ``name``, as Grafana applies it."""
    for override in (panel.get("fieldConfig") or {}).get("overrides") or []:
        if (override.get("matcher") or {}).get("options") != name:
            continue
        for prop in override.get("properties") or []:
            if prop.get("id") == "color" and (prop.get("value") or {}).get("fixedColor"):
                fixed = prop["value"]["fixedColor"]
                return COLOURS.get(fixed, fixed)
    return default


def _series(result: Result) -> dict[str, tuple[list[datetime], list[float]]]:
    """Time series by name, long format (time, label, value) pivoted to wide as the plugin does."""
    times = result.named(is_time)
    if not times:
        return {}
    labels = [c for c in result.named(is_text) if c not in times]
    numbers = result.named(is_number)
    t_index = result.columns.index(times[0])
    out: dict[str, tuple[list[datetime], list[float]]] = defaultdict(lambda: ([], []))
    for row in result.rows:
        prefix = " ".join(str(row[result.columns.index(c)]) for c in labels)
        for column in numbers:
            value = _number(row[result.columns.index(column)])
            if value is None:
                continue
            name = f"{prefix} {column}".strip() if labels and len(numbers) > 1 else (prefix or column)
            out[name][0].append(row[t_index])
            out[name][1].append(value)
    return dict(out)


def _style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color("#2c3235")
    ax.tick_params(colors=MUTED, labelsize=9)
    ax.set_title(title, color=TEXT, fontsize=13, loc="left", pad=8, fontweight="bold")


def _stat(ax: Axes, panel: dict[str, Any], by_ref: dict[str, Result], unit: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    steps = config_thresholds(panel, by_ref)
    config_ref = config_ref_id(panel)
    results = [result for ref, result in by_ref.items() if ref != config_ref]
    series = _series(results[0]) if results else {}
    if series:
        values = next(iter(series.values()))[1]
        value = values[-1] if values else None
    else:
        numbers = results[0].named(is_number) if results else []
        value = _number(results[0].values(numbers[-1])[-1]) if numbers and results[0].rows else None
        values = []
    colour = _threshold_colour(panel, value, steps)
    ax.set_facecolor(colour)
    if values:
        twin = ax.inset_axes((0, 0, 1, 0.45))
        twin.fill_between(range(len(values)), values, color="white", alpha=0.25, linewidth=0)
        twin.plot(range(len(values)), values, color="white", alpha=0.7, linewidth=1.5)
        twin.axis("off")
        twin.set_facecolor("none")
    ax.text(0.5, 0.58, _format(value, unit), color="white", fontsize=34, ha="center", va="center",
            fontweight="bold", transform=ax.transAxes)


def _timeseries(ax: Axes, panel: dict[str, Any], results: list[Result], anomalies: Sequence[Sequence[Any]]) -> None:
    merged: dict[str, tuple[list[datetime], list[float]]] = {}
    for result in results:
        merged.update(_series(result))
    band = {"lower", "upper"} <= set(merged)
    for index, (name, (times, values)) in enumerate(sorted(merged.items())):
        if band and name in ("lower", "upper"):
            continue
        style = "--" if name == "expected" else "-"
        # matplotlib takes datetimes through its units registry; its stubs know numbers only
        ax.plot(times, values, style, color=PALETTE[index % len(PALETTE)],  # type: ignore[arg-type]
                linewidth=2 if style == "-" else 1.5, label=name,
                marker="o" if len(times) < 4 else None)  # a lone point draws no line
    if band:
        lower, upper = merged["lower"], merged["upper"]
        ax.fill_between(lower[0], lower[1], upper[1], color="#8ab8ff", alpha=0.2,  # type: ignore[arg-type]
                        linewidth=0, label="expected band")
    for start, end in anomalies:
        ax.axvspan(start, end, color="#f2495c", alpha=0.18, linewidth=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(color="#2c3235", linewidth=0.6)
    if merged:
        ax.legend(loc="upper left", fontsize=8, facecolor=PANEL, edgecolor="#2c3235", labelcolor=TEXT, ncol=4)


def _bars(ax: Axes, panel: dict[str, Any], result: Result, unit: str, horizontal: bool,
          log: bool = False) -> None:
    labels = result.named(is_text)
    numbers = result.named(is_number)
    if not labels or not numbers:
        return
    names = [str(v) for v in result.values(labels[0])]
    if horizontal:
        values = [_number(v) or 0.0 for v in result.values(numbers[0])]
        ax.barh(range(len(values)), values[::-1], color=PALETTE[2], height=0.7)
        for y, (name, value) in enumerate(zip(names[::-1], values[::-1], strict=True)):
            ax.text(0, y, f" {name}  {_format(value, unit)}", va="center", color=BACKGROUND, fontsize=9,
                    fontweight="bold")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    width = 0.8 / len(numbers)
    for index, column in enumerate(numbers):
        values = [_number(v) or 0.0 for v in result.values(column)]
        ax.bar([i + index * width for i in range(len(names))], values, width, label=column,
               color=_override_colour(panel, column, PALETTE[index % len(PALETTE)]))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    if log:
        ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8, facecolor=PANEL, edgecolor="#2c3235", labelcolor=TEXT, ncol=3)


def _heatmap(ax: Axes, result: Result) -> None:
    times, labels, numbers = result.named(is_time), result.named(is_text), result.named(is_number)
    if not (times and labels and numbers):
        return
    xs = sorted({row[result.columns.index(times[0])] for row in result.rows})
    ys = sorted({str(row[result.columns.index(labels[0])]) for row in result.rows})
    grid = [[float("nan")] * len(xs) for _ in ys]
    for row in result.rows:
        value = _number(row[result.columns.index(numbers[0])])
        grid[ys.index(str(row[result.columns.index(labels[0])]))][xs.index(row[result.columns.index(times[0])])] = (
            value if value is not None else float("nan"))
    limit = max((abs(v) for line in grid for v in line if not math.isnan(v)), default=1.0) or 1.0
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_yticks(range(len(ys)), ys)
    step = max(1, len(xs) // 8)
    ax.set_xticks(range(0, len(xs), step), [x.strftime("%H:%M") for x in xs[::step]])
    bar = plt.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    bar.ax.tick_params(colors=MUTED, labelsize=8)


def hidden_fields(panel: dict[str, Any]) -> set[str]:
    """The fields a table override hides by name (``custom.hidden``): Grafana does not draw them."""
    overrides = (panel.get("fieldConfig") or {}).get("overrides") or []
    return {str((o.get("matcher") or {}).get("options")) for o in overrides
            if (o.get("matcher") or {}).get("id") == "byName"
            and any(p.get("id") == "custom.hidden" and p.get("value") for p in o.get("properties") or [])}


def _table(ax: Axes, panel: dict[str, Any], result: Result) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    hidden = hidden_fields(panel)
    shown = [i for i, column in enumerate(result.columns) if column not in hidden]
    ax.text(0.01, 0.95, "   ".join(result.columns[i] for i in shown), color=MUTED, fontsize=9, va="top",
            transform=ax.transAxes, fontweight="bold")
    for index, row in enumerate(result.rows[:8]):
        cells = [v.strftime("%H:%M:%S") if isinstance(v, datetime) else str(v) for v in (row[i] for i in shown)]
        text = "   ".join(cells)
        for part, chunk in enumerate((text[:85], text[85:170])):
            ax.text(0.01, 0.85 - index * 0.2 - part * 0.08, chunk, color=TEXT if part == 0 else MUTED, fontsize=9,
                    va="top", transform=ax.transAxes)


def _pie(ax: Axes, result: Result) -> None:
    labels, numbers = result.named(is_text), result.named(is_number)
    if labels and numbers:
        ax.pie([_number(v) or 0.0 for v in result.values(numbers[0])], labels=result.values(labels[0]),
               colors=PALETTE, textprops={"color": TEXT}, wedgeprops={"width": 0.45})


def _gauge(ax: Axes, panel: dict[str, Any], result: Result, unit: str) -> None:
    numbers = result.named(is_number)
    value = _number(result.values(numbers[0])[0]) if numbers and result.rows else None
    ax.set_xticks([])
    ax.set_yticks([])
    fraction = min(max(value or 0.0, 0.0), 1.0)
    ax.barh([0], [1], color="#2c3235", height=0.25)
    ax.barh([0], [fraction], color=_threshold_colour(panel, value), height=0.25)
    ax.set_xlim(0, 1)
    ax.text(0.5, 0.75, _format(value, unit), color=TEXT, fontsize=28, ha="center", transform=ax.transAxes)


def _text(ax: Axes, lines: list[str]) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for index, line in enumerate(lines[:6]):
        ax.text(0.02, 0.85 - index * 0.14, line[:110], color=MUTED, fontsize=8.5, va="top", transform=ax.transAxes,
                family="monospace")


def render_dashboard(file: DashboardFile, executed: list[Executed], anomalies: Sequence[Sequence[Any]],
                     out: Path) -> Path:
    """Draw ``file``'s panels from ``executed`` (its query results) into ``out`` (a PNG)."""
    panels = [p for p in file.panels() if p.get("type") != "row"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height_px = rows * ROW_HEIGHT_PX + 60
    figure = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=BACKGROUND)
    figure.text(0.01, 1 - 18 / height_px, f"{file.model.get('title')}   ·   {file.path.name} (uid {file.uid})",
                color=TEXT, fontsize=15, va="top", fontweight="bold")
    by_panel: dict[Any, list[Executed]] = defaultdict(list)  # by panel id, as the file gives it
    for item in executed:
        if item.file.path == file.path:
            by_panel[item.panel.get("id")].append(item)
    for panel in panels:
        grid = panel["gridPos"]
        kind = panel.get("type")
        framed = kind in ("timeseries", "barchart", "heatmap")  # these need room for axis labels
        pad_left, pad_bottom = (44 / WIDTH_PX, 22 / height_px) if framed else (0.0, 0.0)
        left = grid["x"] / 24 + 0.004 + pad_left
        bottom = 1 - (60 + (grid["y"] + grid["h"]) * ROW_HEIGHT_PX) / height_px + 0.004 + pad_bottom
        ax = figure.add_axes((left, bottom, grid["w"] / 24 - 0.008 - pad_left,
                              grid["h"] * ROW_HEIGHT_PX / height_px - 0.008 - 28 / height_px - pad_bottom))
        _style(ax, str(panel.get("title")))
        unit = str(((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit") or "")
        results = [e.result for e in by_panel.get(panel.get("id"), []) if e.result is not None]
        if not results:
            expressions = [str(t.get("expr") or t.get("rawSql") or "") for t in panel.get("targets") or []]
            _text(ax, ["no offline data: Prometheus query, checked by promtool", *expressions])
        elif kind == "stat":
            _stat(ax, panel, {str(e.target.get("refId")): e.result for e in by_panel.get(panel.get("id"), [])
                              if e.result is not None}, unit)
        elif kind == "timeseries":
            # The sidecar annotates the panel that draws its expectation: anomaly regions go there.
            expects = any("expected_band" in str(t.get("rawSql")) for t in panel.get("targets") or [])
            _timeseries(ax, panel, results, anomalies if expects else [])
        elif kind in ("bargauge", "geomap"):
            _bars(ax, panel, results[0], unit, horizontal=True)
            if kind == "geomap":
                ax.text(0.99, 0.02, "geomap (offline: country bars)", color=MUTED, fontsize=8, ha="right",
                        transform=ax.transAxes)
        elif kind == "barchart":
            scale = (((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom") or {}).get(
                "scaleDistribution") or {}
            if results[0].named(is_text):
                _bars(ax, panel, results[0], unit, horizontal=False, log=scale.get("type") == "log")
        elif kind == "heatmap":
            _heatmap(ax, results[0])
        elif kind == "table":
            _table(ax, panel, results[0])
        elif kind == "piechart":
            _pie(ax, results[0])
        elif kind == "gauge":
            _gauge(ax, panel, results[0], unit)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, facecolor=BACKGROUND)
    plt.close(figure)
    return out
