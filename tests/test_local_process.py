"""Stopping a child of the local stack: SIGTERM, repeated for one that missed it, SIGKILL at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shoppulse.devstack.process import ManagedProcess

# Forgets the first SIGTERM (as a Quix Streams processor does when it arrives while its loop starts).
FORGETS_FIRST_SIGTERM = """
import signal, sys, time
seen = []
def on_term(*_):
    seen.append(1)
    if len(seen) > 1:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
IGNORES_SIGTERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n" \
                  "time.sleep(600)"


def started(tmp_path: Path, code: str) -> ManagedProcess:
    process = ManagedProcess("child", [sys.executable, "-c", code], tmp_path / "child.log")
    process.start()
    deadline = time.monotonic() + 20
    while "ready" not in (tmp_path / "child.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


def test_a_forgotten_sigterm_is_sent_again_rather_than_waiting_for_sigkill(tmp_path: Path) -> None:
    process = started(tmp_path, FORGETS_FIRST_SIGTERM)
    process.stop(grace_s=8)
    assert process.returncode == 0  # it stopped on the second SIGTERM; a SIGKILL would be -9


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    process = started(tmp_path, IGNORES_SIGTERM)
    process.stop(grace_s=1)
    assert process.returncode == -9
