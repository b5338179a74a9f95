"""`shoppulse detect --csv`: the sidecar's detectors over any labelled or unlabelled series."""

from __future__ import annotations

import csv
import io
import math
import random
import subprocess
import sys
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
    assert max(float(r["score"]) for r in rows[2000:2060]) > 0.5 > max(float(r["score"]) for r in rows[500:1900])


@pytest.mark.parametrize(("text", "message"), [
    ("time,value\n1,2\n", "the header must name 'timestamp' and 'value'"),
    ("timestamp,value\n1,abc\n", "line 2: value 'abc' is not a number"),
    ("timestamp,value\n1,nan\n", "line 2: value 'nan' is not finite"),
    ("timestamp,value\n2026-01-01 00:00:00,1\n2025-12-31 23:59:00,2\n", "line 3: timestamp"),
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
