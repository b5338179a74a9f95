"""`shoppulse detect --csv`: the sidecar's detectors over any labelled or unlabelled series."""

from __future__ import annotations

import csv
import io
import math
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkout import ROOT
from shoppulse.sidecar.csv_detect import CsvInputError, detect, read_rows


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", "detect", *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ROOT)


def test_a_labelled_drop_is_found_and_scored(tmp_path: Path) -> None:
    rng = random.Random(3)
    source = tmp_path / "series.csv"
    lines = ["timestamp,value,label"]
    for i in range(3000):
        anomalous = 2000 <= i < 2060
        value = 100 + 10 * math.sin(i / 50) + rng.gauss(0, 2) - (40 if anomalous else 0)
        lines.append(f"{1767225600 + 60 * i},{value:.3f},{int(anomalous)}")
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.csv"
    done = run("--csv", str(source), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 of 1 labelled events detected" in done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3000 and list(rows[0]) == ["timestamp", "value", "score", "anomaly", "label"]
    flagged = [i for i, r in enumerate(rows) if r["anomaly"] == "1"]
    assert flagged and 2000 <= flagged[0] <= 2003 and all(1995 <= i <= 2080 for i in flagged)
    inside = sorted(float(r["score"]) for r in rows[2000:2060])
    usual = [float(r["score"]) for r in rows[500:1900]]
    assert inside[len(inside) // 2] > max(usual)  # most of it above all else
    # the score is a probability: of usual points, about one in a hundred (Bonferroni: at most) scores above 0.99
    assert sum(score > 0.99 for score in usual) <= 0.01 * len(usual) and sorted(usual)[len(usual) // 2] < 0.5


@pytest.mark.parametrize(("text", "message"), [
    ("time,value\n1,2\n", "the header must name 'timestamp' and 'value'"),
    ("timestamp,value\n1,abc\n", "line 2: value 'abc' is not a number"),
    ("timestamp,value\n1,inf\n", "line 2: value 'inf' is not finite"),
    ("timestamp,value\n1,12 kg\n", "line 2: value '12 kg' is not a number (leave it blank when it is missing)"),
    ("timestamp,value\n,1\n", "line 2: timestamp '' is neither ISO 8601 nor Unix seconds"),
    ("timestamp,value\nyesterday,1\n", "line 2: timestamp 'yesterday' is neither ISO 8601 nor Unix seconds"),
    ("timestamp,value,label\n1,2,yes\n", "line 2: label 'yes' must be 0 or 1"),
])
def test_hostile_input_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(text)
    done = run("--csv", str(source))
    assert done.returncode == 2
    assert message in done.stderr.replace("\n", " ")
    with pytest.raises(CsvInputError):
        list(read_rows(io.StringIO(text)))


def test_a_binary_or_missing_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"timestamp,value\n\xff\xfe\x00\x01,2\n")
    assert "not a UTF-8 text file" in run("--csv", str(binary)).stderr
    assert "no such file" in run("--csv", str(tmp_path / "absent.csv")).stderr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False), max_size=300))
def test_every_point_gets_a_score_in_the_unit_interval(values: list[float]) -> None:
    text = "timestamp,value\n" + "".join(f"{1700000000 + i},{v!r}\n" for i, v in enumerate(values))
    scored = list(detect(read_rows(io.StringIO(text))))
    assert len(scored) == len(values)
    assert all(0.0 <= s.score <= 1.0 and s.anomaly in (0, 1) for s in scored)


def _hour_repeated_gap_and_blank(path: Path) -> list[str]:
    """A machine's clock set back an hour at a DST change (the hour from 05:00 appears twice), a
    pause of two hours, a blank value and pandas' NaN: what real exports look like."""
    rng = random.Random(5)
    lines = ["timestamp,value"]
    moment = 1761440400  # 2025-10-26 01:00 UTC
    for i in range(600):
        if i == 300:
            moment -= 3600  # the clock goes back an hour
        if i == 450:
            moment += 7200  # the logger stopped for two hours
        value = "" if i == 200 else "NaN" if i == 201 else f"{50 + rng.gauss(0, 1):.3f}"
        stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{stamp},{value}")
        moment += 60
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_a_real_export_with_a_repeated_hour_a_gap_and_blank_values_is_scored_row_for_row(tmp_path: Path) -> None:
    source = tmp_path / "machine_temperature.csv"
    lines = _hour_repeated_gap_and_blank(source)
    done = run("--csv", str(source), "--out", "-")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 600  # exactly one output row per input row, in file order
    assert [r["timestamp"][:19].replace("T", " ") for r in rows] == [line.split(",")[0] for line in lines[1:]]
    assert rows[200]["value"] == rows[200]["score"] == "" and rows[201]["score"] == ""
    assert rows[200]["anomaly"] in ("0", "1") and all(r["score"] for i, r in enumerate(rows) if i not in (200, 201))
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    # the first repeated timestamp is the 302nd line of the file (the header is line 1); one line each, capped
    assert "line 302: timestamp 2025-10-26T05:00:00+00:00 goes back from 2025-10-26T05:59:00+00:00" in warnings[0]
    assert len(warnings) == 21 and "40 more timestamps out of order" in warnings[-1]
    assert "2 missing values, 60 timestamps out of order, 1 gaps" in done.stderr.replace("\n", " ")
    assert not any(r["anomaly"] == "1" for r in rows)  # a steady series stays calm through all of it

    ordered = run("--csv", str(source), "--sort", "--out", str(tmp_path / "sorted.csv"))
    assert ordered.returncode == 0 and "warning:" not in ordered.stderr
    stamps = [r["timestamp"] for r in csv.DictReader((tmp_path / "sorted.csv").open())]
    assert len(stamps) == 600 and stamps == sorted(stamps)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=400),
                          st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))),
                max_size=200))
def test_any_order_and_any_missing_values_give_one_row_per_row(rows: list[tuple[int, float | None]]) -> None:
    text = "timestamp,value\n" + "".join(f"{1700000000 + t},{'' if v is None else repr(v)}\n" for t, v in rows)
    warnings: list[str] = []
    scored = list(detect(read_rows(io.StringIO(text), warnings.append)))
    assert [(int(s.row.timestamp.timestamp()) - 1700000000, s.row.value) for s in scored] == rows
    assert all((s.score is None) == (s.row.value is None) for s in scored)
    assert len(warnings) == sum(1 for i in range(1, len(rows)) if rows[i][0] <= max(t for t, _ in rows[:i]))
