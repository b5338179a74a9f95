"""The pipeline benchmark's accounting: CPU seconds of every process it started, by name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from shoppulse.bench.pipeline import _process_name, cpu_seconds

BUSY_THEN_WAIT = ("import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3:\n    pass\n"
                  "print('busy', flush=True)\ntime.sleep(60)")


def test_processes_are_named_by_their_role() -> None:
    assert _process_name([b"/usr/bin/java", b"-Xmx1g", b"kafka.Kafka", b""]) == "broker"
    assert _process_name([b"/venv/bin/python3", b"-m", b"shoppulse", b"aggregate", b""]) == "aggregate"
    assert _process_name([b"/venv/bin/python3", b"-m", b"shoppulse", b"clickhouse", b"serve"]) == "clickhouse"
    assert _process_name([b"/usr/bin/sleep", b"5"]) == "sleep"
    assert _process_name([]) == "?"


def test_cpu_seconds_counts_a_child_process_and_this_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_THEN_WAIT], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "busy"
        time.sleep(0.05)
        usage = cpu_seconds()
        assert usage[os.path.basename(sys.executable)] >= 0.25  # 0.3 s, read in clock ticks
        assert usage["generator + bench"] > 0
    finally:
        child.kill()
        child.wait()
