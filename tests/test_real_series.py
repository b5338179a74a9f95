"""`shoppulse bench series`: the detectors scored over labelled series, and the generated corpus."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from checkout import ROOT
from shoppulse.bench.real_series import nab_windows, score_nab, score_series, totals
from shoppulse.loadgen.series_corpus import POINTS, STEP, corpus, usual_level
from shoppulse.sidecar.csv_detect import Row, Scored

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def scored(labels: str, flags: str) -> list[Scored]:
    """Rows from two strings of 0/1, one character per point."""
    return [Scored(Row(i + 2, T0 + timedelta(minutes=i), 1.0, int(label)), 0.5, int(flag))
            for i, (label, flag) in enumerate(zip(labels, flags, strict=True))]


def test_windows_are_found_by_a_region_opening_inside_and_rewarded_for_earliness() -> None:
    score = score_series("s", scored(
        "0001111100000111110000000000",
        "0001100000000000011000011000"))
    assert (score.windows, score.found, score.false_regions, score.points) == (2, 2, 1, 28)
    # the first window found at its first point (1.0), the second at its last (0.5)
    assert score.reward == 1.0 + 0.5
    late = score_series("s", scored("0011111000", "0000011100"))  # at its fourth point of five
    assert late.reward == 1 - 0.5 * 3 / 4 and late.false_regions == 0
    assert score.false_per_1000 == 1000 / 28
    # a region already open when the window starts opened outside it: a false region, and the window missed
    early = score_series("s", scored("000111000", "011111000"))
    assert (early.found, early.false_regions) == (0, 1)
    assert totals([score, early]).recall == 2 / 3


def test_the_corpus_is_the_same_everywhere_and_its_labels_mark_what_changed() -> None:
    first, second = corpus(), corpus()
    assert [(s.name, s.values, s.labels) for s in first] == [(s.name, s.values, s.labels) for s in second]
    by_name = {s.name: s for s in first}
    for name in ("seasonal_calm", "bursty", "growth", "slow_drift"):  # healthy traffic: nothing to alert on
        assert not any(by_name[name].labels), name
    outages = by_name["outages"]
    inside = [v for v, label in zip(outages.values, outages.labels, strict=True) if label]
    usual = [usual_level(i) for i, label in enumerate(outages.labels) if label]
    assert len(inside) == 18 and sum(v or 0 for v in inside) < 0.25 * sum(usual)
    gaps = by_name["gaps"]
    blanks = sum(v is None for v in gaps.values)  # 2 % of points, less those the pause or the outage took
    assert 0.9 * (POINTS // 50) <= blanks <= POINTS // 50
    pauses = [b - a for a, b in zip(gaps.timestamps, gaps.timestamps[1:], strict=False) if b - a > STEP]
    assert pauses == [STEP * 37]  # three hours of rows missing from the feed


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", "bench", "series", *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=ROOT)


def test_the_bench_scores_a_corpus_it_writes_and_refuses_unlabelled_files(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    done = run_bench("--write-corpus", str(folder))
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in folder.glob("*.csv"))
    assert len(files) == len(corpus()) and "outages.csv" in files
    header = next(csv.reader((folder / "outages.csv").open()))
    assert header == ["timestamp", "value", "label"]
    summary = re.search(r"all (\d+) series: ([\d,]+) points; (\d+) of (\d+) labelled windows found .* "
                        r"(\d+) false regions \(([\d.]+) per 1,000 points\)", done.stdout)
    assert summary, done.stdout
    assert int(summary.group(1)) == len(files) and int(summary.group(4)) == 12
    # the same folder scored again (as a folder of NAB files would be) gives the same figures
    again = run_bench("--corpus", str(folder))
    assert again.returncode == 0 and again.stdout == done.stdout
    (folder / "unlabelled.csv").write_text("timestamp,value\n1,2\n")
    refused = run_bench("--corpus", str(folder))
    assert refused.returncode == 2 and "unlabelled: no label column" in refused.stderr
    assert "no such folder" in run_bench("--corpus", str(tmp_path / "absent")).stderr


SAMPLE = ROOT / "corpus" / "nab-sample"


def nab_checkout(tmp_path: Path, windows: str, files: dict[str, str]) -> Path:
    (tmp_path / "labels").mkdir(parents=True)
    (tmp_path / "labels" / "combined_windows.json").write_text(windows)
    for name, text in files.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text(text)
    return tmp_path


def test_a_nab_checkout_is_labelled_by_its_windows(tmp_path: Path) -> None:
    lines = ["timestamp,value"] + [f"2014-04-01 {h:02d}:{m:02d}:00,{1.0 + (h == 10) * 5}" for h in range(24)
                                   for m in range(0, 60, 5)]
    checkout = nab_checkout(tmp_path, json.dumps({"group/s.csv": [["2014-04-01 09:30:00.000000",
                                                                   "2014-04-01 11:00:00.000000"]]}),
                            {"group/s.csv": "\n".join(lines) + "\n"})
    windows = nab_windows(checkout)
    assert windows == {"group/s.csv": [(datetime(2014, 4, 1, 9, 30, tzinfo=UTC), datetime(2014, 4, 1, 11, tzinfo=UTC))]}
    [score] = score_nab(checkout)
    assert (score.name, score.points, score.windows) == ("s", 288, 1)  # 09:30 to 11:00 inclusive is one run


@pytest.mark.parametrize(("windows", "files", "message"), [
    ("{", {}, "combined_windows.json: Expecting property name"),
    ("[]", {}, "expected an object of data file -> list of [start, end] windows"),
    ('{"a.csv": [["2014-01-01"]]}', {}, "a.csv: expected a list of [start, end] windows"),
    ('{"a.csv": [["soon", "later"]]}', {},
     "combined_windows.json: a.csv: timestamp 'soon' is neither ISO 8601 nor Unix seconds"),
    ('{"a.csv": []}', {}, "labels a.csv, but data/a.csv is missing"),
    ('{"../../etc/passwd": []}', {}, "is outside data/"),
    ('{"a.csv": []}', {"a.csv": "timestamp,value\n2014-01-01,x\n"}, "a.csv: line 2: value 'x' is not a number"),
])
def test_a_broken_nab_checkout_is_one_clear_error(tmp_path: Path, windows: str, files: dict[str, str],
                                                    message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        score_nab(nab_checkout(tmp_path, windows, files))


def test_the_bench_scores_the_committed_nab_sample() -> None:
    """Seven real series of NAB (MIT) in the repository: most of their windows found, few false regions
    (the whole benchmark's figures are in docs/benchmarks.md)."""
    done = run_bench("--nab", str(SAMPLE))
    assert done.returncode == 0, done.stderr
    summary = re.search(r"all 7 series: ([\d,]+) points; (\d+) of 15 labelled windows found .* (\d+) false regions",
                        done.stdout)
    assert summary, done.stdout
    assert summary.group(1) == "17,886" and int(summary.group(2)) >= 11 and int(summary.group(3)) <= 15
    assert "art_noisy" in done.stdout and "false regions    0" in done.stdout.split("art_noisy")[1].splitlines()[0]
    assert "labels/combined_windows.json is missing" in run_bench("--nab", str(ROOT / "corpus")).stderr
    assert "give one of" in run_bench("--nab", str(SAMPLE), "--corpus", str(SAMPLE)).stderr
