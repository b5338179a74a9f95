"""Every CLI failure is one clear line on stderr and a non-zero exit: no traceback, no partial output
file, no secret of the environment."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shoppulse.devstack.process import free_port

SECRET = "hunter2-s3cr3t-value"
BASE_ENV = {"PATH": "/usr/bin:/bin", "SHOPPULSE_PII_KEY": "cli-test-pii-key-0123456789abcdef",
            "SHOPPULSE_KAFKA_CONNECT_TIMEOUT_S": "1", "CLICKHOUSE_PASSWORD": SECRET, "GRAFANA_TOKEN": SECRET + "-tok"}


@dataclass
class Case:
    argv: list[str]
    says: str  # what the one error line must contain
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] = lambda _: None
    code: int | None = None


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoppulse", *argv], env={**BASE_ENV, "SHOPPULSE_DATA_DIR": str(
        cwd / "data"), **env}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


CASES = {
    "detect: a timestamp of 1e300": Case(["detect", "--csv", "in.csv"], "outside the years 1 to 9999",
                                         prepare=write("in.csv", "timestamp,value\n1e300,1\n"), code=2),
    "detect: a timestamp of -1e15": Case(["detect", "--csv", "in.csv"], "outside the years 1 to 9999",
                                         prepare=write("in.csv", "timestamp,value\n-1e15,1\n"), code=2),
    "detect: a field over 128 KB": Case(["detect", "--csv", "in.csv"], "line 2: longer than",
                                        prepare=write("in.csv", "timestamp,value\n1," + "9" * 140_000 + "\n"), code=2),
    "detect: --out is a folder": Case(["detect", "--csv", "in.csv", "--out", "."], "Is a directory",
                                      prepare=write("in.csv", "timestamp,value\n1,1\n")),
    "detect: --out cannot be created": Case(["detect", "--csv", "in.csv", "--out", "/proc/none/out.csv"],
                                            "cannot write /proc/none/out.csv",
                                            prepare=write("in.csv", "timestamp,value\n1,1\n")),
    "detect: --out is a full device": Case(["detect", "--csv", "in.csv", "--out", "/dev/full"],
                                           "No space left on device",
                                           prepare=write("in.csv", "timestamp,value\n1,1\n")),
    "ingest: an unresolvable broker host": Case(["ingest"], "does not resolve",
                                                env={"KAFKA_BOOTSTRAP_SERVERS": "no-such-host.invalid:9092"}),
    "ingest: no broker answers": Case(["ingest"], "no Kafka broker answers at 127.0.0.1:9",
                                      env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}),
    "ingest: an unwritable data folder": Case(["ingest"], "cannot write in /proc/shoppulse",
                                              env={"SHOPPULSE_DATA_DIR": "/proc/shoppulse"}),
    "aggregate: an unwritable data folder": Case(["aggregate"], "cannot write in /proc/shoppulse",
                                                 env={"SHOPPULSE_DATA_DIR": "/proc/shoppulse"}),
    "clickhouse serve: an unwritable data folder": Case(["clickhouse", "serve", "--data-dir", "/proc/shoppulse/db"],
                                                        "cannot use /proc/shoppulse/db as the ClickHouse data folder"),
    "kafka topics: no broker answers": Case(["kafka", "topics"], "no Kafka broker answers",
                                            env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}),
    "db migrate: credentials inside CLICKHOUSE_URL": Case(
        ["db", "migrate"], "cannot migrate ClickHouse at http://***@127.0.0.1:9",
        env={"CLICKHOUSE_URL": f"http://admin:{SECRET}@127.0.0.1:9/"}),
    "a bad CLICKHOUSE_URL with credentials": Case(["db", "migrate"], "is not an http(s) URL",
                                                  env={"CLICKHOUSE_URL": f"ftp://admin:{SECRET}@host/"}, code=2),
    "dashboards export: credentials inside GRAFANA_URL": Case(
        ["dashboards", "export", "--folder", "."], "is unreachable",
        env={"GRAFANA_URL": f"http://admin:{SECRET}@127.0.0.1:9"}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_failure_is_one_clear_line(case: Case, tmp_path: Path) -> None:
    case.prepare(tmp_path)
    result = run(case.argv, case.env, tmp_path)
    assert_one_clear_line(result, case.says, case.code)


def assert_one_clear_line(result: subprocess.CompletedProcess[str], says: str, code: int | None = None) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and (code is None or result.returncode == code), result.stderr
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


def test_ingest_with_its_metrics_port_in_use(busy_port: int, tmp_path: Path) -> None:
    result = run(["ingest"], {"SHOPPULSE_INGEST_METRICS_PORT": str(busy_port),
                              "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}, tmp_path)
    assert_one_clear_line(result, "set SHOPPULSE_INGEST_METRICS_PORT to a free one")


def test_a_failed_detect_leaves_an_existing_out_file_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "good.csv").write_text("timestamp,value\n1,1\n2,2\n")
    (tmp_path / "bad.csv").write_text("timestamp,value\n1,1\n2,x\n")
    assert run(["detect", "--csv", "good.csv", "--out", "scored.csv"], {}, tmp_path).returncode == 0
    before = (tmp_path / "scored.csv").read_text()
    assert_one_clear_line(run(["detect", "--csv", "bad.csv", "--out", "scored.csv"], {}, tmp_path),
                          "value 'x' is not a number", 2)
    assert (tmp_path / "scored.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["bad.csv", "good.csv", "scored.csv"]


def test_a_header_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftimestamp,value\n1,1\n2,2\n")
    result = run(["detect", "--csv", "bom.csv"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "timestamp,value,score,anomaly"


def test_a_200_mb_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    with (tmp_path / "huge.csv").open("w") as handle:
        handle.write("timestamp,value\n1,")
        chunk = "9" * (1 << 20)
        for _ in range(200):
            handle.write(chunk)
        handle.write("\n")
    # The peak is read inside the child (VmHWM belongs to its own address space; a fork's rusage would
    # count the test process's pages too).
    code = ("import atexit, pathlib, sys\n"
            "atexit.register(lambda: pathlib.Path('peak').write_text(next(line for line in open('/proc/self/status')"
            " if line.startswith('VmHWM:'))))\n"
            "sys.argv = ['shoppulse', 'detect', '--csv', 'huge.csv']\n"
            "from shoppulse.cli import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=BASE_ENV, capture_output=True, text=True,
                            timeout=120, check=False)
    assert_one_clear_line(result, "line 2: longer than", 2)
    peak_kb = int((tmp_path / "peak").read_text().split()[1])
    assert peak_kb < 300_000, f"peak RSS {peak_kb} KB: the 200 MB line was read whole"


@pytest.mark.parametrize(("content", "says"), [
    (bytes(range(256)) * 8, "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
])
def test_dashboards_lint_reports_a_binary_or_deeply_nested_file(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "weird.json").write_bytes(content)
    result = run(["dashboards", "lint", str(tmp_path / "weird.json")], {}, Path.cwd())
    assert result.returncode == 1
    assert says in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
