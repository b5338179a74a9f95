"""Child processes of the local stack: start in their own session, log to a file, stop for sure."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STOP_GRACE_S = 30.0
TERM_AGAIN_S = 3.0
POLL_INTERVAL_S = 0.2


class StartupError(RuntimeError):
    """A component could not start; the message says why and what to do."""


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (we cannot bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free_port(host: str, port: int, what: str, setting: str) -> None:
    if port_in_use(host, port):
        raise StartupError(
            f"port {port} on {host} is in use, so {what} cannot listen there: "
            f"stop whatever holds it or choose another port with {setting}=<port>"
        )


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_CHOSEN_PORT = 10_000


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (for tests and ephemeral components), below the kernel's ephemeral range:
    a port from that range (what binding port 0 gives) can be taken as the source port of any
    outgoing connection before the process meant to listen on it has started."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(LOWEST_CHOSEN_PORT, max(LOWEST_CHOSEN_PORT, low - 1))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               alive: Callable[[], bool] = lambda: True, on_fail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until it is true; fail fast when ``alive`` says the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise StartupError(f"{what} exited during start-up. {on_fail()}".strip())
        time.sleep(POLL_INTERVAL_S)
    raise StartupError(f"{what} was not ready after {timeout_s:.0f} s. {on_fail()}".strip())


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, to quote in an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"Last lines of {path}:\n" + "\n".join(text)


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so that
    even a SIGKILLed supervisor leaves no orphans behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child process in its own session (so a terminal's Ctrl-C reaches only the
    supervisor, which then stops children in order) whose output goes to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})}, cwd=self.cwd, start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl, safe after fork
            )

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole process group — again every ``TERM_AGAIN_S`` — then SIGKILL whatever is
        left after ``grace_s``. The repeat is for a processor stopped while it starts: Quix Streams
        installs its SIGTERM handler and then marks its loop as running, so a SIGTERM between the two
        is forgotten and the processor ran on until the SIGKILL, 30 s later."""
        if self.popen is None:
            return
        deadline = time.monotonic() + grace_s
        while self.popen.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
                break
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(min(TERM_AGAIN_S, left))
        # Reap any grandchildren left in the group.
        self._signal_group(signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self.popen is not None and self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.popen.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)
