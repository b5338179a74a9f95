"""The local ClickHouse endpoint under hostile clients: what Grafana's read-only user may not do, and
requests that are malformed, oversized, compressed wrongly, slow or many at once."""

from __future__ import annotations

import base64
import gzip
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest
import requests
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout import ROOT
from conftest import TEST_PASSWORD, EndpointProcess
from shoppulse import clickhouse
from shoppulse.ascode.dashboards.demo_data import DemoPlan, load_demo_data
from shoppulse.ascode.dashboards.lint import check_files, run_queries
from shoppulse.devstack.clickhouse_engine import MAX_SESSIONS
from shoppulse.devstack.http_connection import HEADERS_TIMEOUT_S

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

pytestmark = pytest.mark.integration
READER, READER_PASSWORD = "grafana", "reader-secret"
SECRET_IN_ENV = "SHOPPULSE_TEST_SECRET_VALUE_0xC0FFEE"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointProcess]:
    endpoint = EndpointProcess(tmp_path_factory.mktemp("hardened") / "db",
                               env={"CLICKHOUSE_GRAFANA_USER": READER, "CLICKHOUSE_GRAFANA_PASSWORD": READER_PASSWORD,
                                    "SHOPPULSE_TEST_SECRET": SECRET_IN_ENV})
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture(scope="module")
def admin(endpoint: EndpointProcess) -> Iterator[Client]:
    client = clickhouse.connect(endpoint.settings(), database="default")
    client.command("CREATE TABLE IF NOT EXISTS visible (x UInt8) ENGINE = MergeTree ORDER BY x")
    client.command("TRUNCATE TABLE visible")
    client.insert("visible", [[1], [2]], column_names=["x"])
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def reader(endpoint: EndpointProcess, admin: Client) -> Iterator[Client]:
    client = clickhouse_connect.get_client(dsn=endpoint.url, username=READER, password=READER_PASSWORD,
                                           autogenerate_session_id=False)
    try:
        yield client
    finally:
        client.close()


def raw_request(endpoint: EndpointProcess, request: bytes, timeout: float = 10) -> bytes:
    """The whole answer to raw request bytes (the connection closes after it or times out)."""
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def post(endpoint: EndpointProcess, query: str, body: bytes = b"", **headers: str) -> requests.Response:
    return requests.post(f"{endpoint.url}/", params={"query": query} if query else None, data=body,
                         auth=("default", TEST_PASSWORD), headers=headers, timeout=30)


def rss_kb(endpoint: EndpointProcess) -> int:
    status = Path(f"/proc/{endpoint.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


# -- Grafana's read-only user -----------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "SELECT * FROM file('/proc/self/environ', 'RawBLOB')",
    "SELECT file('/proc/self/environ')",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT count() FROM visible WHERE toString(x) IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "SELECT * FROM url('http://127.0.0.1:1/', 'RawBLOB')",
    "SELECT * FROM visible AS v JOIN url('http://127.0.0.1:1/', 'CSV', 'x UInt8') AS u ON v.x = u.x",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')",
    "SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'l String')",
    "DESCRIBE TABLE file('/etc/passwd', 'LineAsString')",
    "EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
])
def test_the_reader_cannot_reach_files_urls_or_other_servers(reader: Client, statement: str) -> None:
    with pytest.raises(DatabaseError, match="ACCESS_DENIED") as raised:
        reader.query(statement)
    assert SECRET_IN_ENV not in str(raised.value) and "root:" not in str(raised.value)


@pytest.mark.parametrize(("statement", "error"), [
    ("INSERT INTO FUNCTION file('/tmp/shoppulse-reader-wrote', 'CSV', 'x UInt8') SELECT 1", "READONLY"),
    ("SYSTEM STOP MERGES", "READONLY"),
    ("KILL QUERY WHERE 1", "ACCESS_DENIED"),
    ("CREATE TABLE sneaky (x UInt8) ENGINE = Memory", "READONLY"),
    ("SET readonly = 0", "READONLY"),
    ("SELECT 1 SETTINGS max_execution_time = 0", "READONLY"),
    ("SELECT 1; SELECT file('/etc/passwd')", "SYNTAX_ERROR"),
])
def test_the_reader_cannot_write_kill_or_administer(reader: Client, statement: str, error: str) -> None:
    with pytest.raises(DatabaseError, match=error):
        reader.command(statement)
    assert not Path("/tmp/shoppulse-reader-wrote").exists()


def test_nobody_writes_a_file_with_into_outfile(reader: Client, admin: Client, tmp_path: Path) -> None:
    target = tmp_path / "outfile.csv"
    for client in (reader, admin):
        with pytest.raises(DatabaseError, match="INTO_OUTFILE_NOT_ALLOWED"):
            client.query(f"SELECT * FROM visible INTO OUTFILE '{target}'")
    assert not target.exists()


def reader_get(endpoint: EndpointProcess, query: str, **settings: str) -> requests.Response:
    """As clickhouse-go (Grafana's driver) sends it: settings as URL parameters, unchecked by the client."""
    return requests.get(f"{endpoint.url}/", params={"query": query, **settings}, auth=(READER, READER_PASSWORD),
                        timeout=30)


def test_the_reader_has_an_execution_time_limit_it_cannot_lift(endpoint: EndpointProcess) -> None:
    for value in ("0", "100000", "nan", "-1", "abc"):
        answer = reader_get(endpoint, "SELECT 1", max_execution_time=value)
        assert answer.status_code == 500 and "SETTING_CONSTRAINT_VIOLATION" in answer.text, answer.text
    assert "READONLY" in reader_get(endpoint, "SELECT 1", max_threads="64").text
    assert "READONLY" in reader_get(endpoint, "SELECT 1", readonly="0").text
    slow = reader_get(endpoint, "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 3",
                      max_execution_time="1")
    assert "TIMEOUT_EXCEEDED" in slow.text
    # Grafana's plugin sets its datasource's timeout: allowed within the profile's bound, and a value
    # a setting already has is no change.
    assert reader_get(endpoint, "SELECT 1", max_execution_time="30").text == "1\n"
    assert reader_get(endpoint, "SELECT 1", readonly="1").text == "1\n"


def test_the_reader_runs_every_dashboard_query(endpoint: EndpointProcess) -> None:
    """What Grafana runs as the reader: every panel query of the shipped dashboards, on demo data."""
    settings, admin_client = endpoint.migrated("dash")
    now = datetime.now(UTC)
    load_demo_data(admin_client, DemoPlan(now=now))
    reader_client = clickhouse_connect.get_client(dsn=endpoint.url, username=READER, password=READER_PASSWORD,
                                                  database=settings.clickhouse_database,
                                                  autogenerate_session_id=False)
    try:
        report = check_files(sorted((ROOT / "grafana" / "dashboards").glob("*.json")))
        run_queries(report, reader_client, now)
    finally:
        reader_client.close()
        admin_client.close()
    assert report.executed, "no query ran"
    assert [p for p in report.problems if "READONLY" in p.message or "ACCESS_DENIED" in p.message] == []
    assert report.problems == []


# -- request bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_a_truncated_compressed_insert_commits_nothing(endpoint: EndpointProcess, admin: Client,
                                                       encoding: str) -> None:
    table = f"truncated_{encoding}"
    admin.command(f"CREATE TABLE IF NOT EXISTS {table} (n UInt64) ENGINE = MergeTree ORDER BY n")
    rows = "".join(f"{n}\n" for n in range(300_000)).encode()
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstd.compress}[encoding](rows)
    answer = post(endpoint, f"INSERT INTO {table} FORMAT TSV", packed[: len(packed) // 2],
                  **{"Content-Encoding": encoding})
    assert answer.status_code == 400 and "truncated" in answer.text
    assert admin.query(f"SELECT count() FROM {table}").result_rows == [(0,)]
    assert post(endpoint, f"INSERT INTO {table} FORMAT TSV", packed, **{"Content-Encoding": encoding}).ok
    assert admin.query(f"SELECT count() FROM {table}").result_rows == [(300_000,)]


def test_a_decompression_bomb_and_a_4_mb_query_are_refused_with_bounded_memory(endpoint: EndpointProcess,
                                                                                admin: Client) -> None:
    admin.command("CREATE TABLE IF NOT EXISTS bombed (s String) ENGINE = MergeTree ORDER BY s")
    before = rss_kb(endpoint)
    bomb = zstd.compress(b"\x00" * (1 << 30))  # 1 GiB of zeros in ~32 KB
    as_query = post(endpoint, "", bomb, **{"Content-Encoding": "zstd"})
    assert as_query.status_code == 400 and "Max query size exceeded" in as_query.text
    as_rows = post(endpoint, "INSERT INTO bombed FORMAT JSONEachRow", bomb, **{"Content-Encoding": "zstd"})
    assert as_rows.status_code >= 400
    gzip_bomb = gzip.compress(b"SELECT 1 " + b" " * (300 << 20))
    assert "Max query size exceeded" in post(endpoint, "", gzip_bomb, **{"Content-Encoding": "gzip"}).text
    long_query = "SELECT " + ",".join(["1"] * (2 << 20))  # 4 MB of text
    answer = post(endpoint, "", long_query.encode())
    assert answer.status_code == 400 and "Max query size exceeded" in answer.text
    assert admin.query("SELECT count() FROM bombed").result_rows == [(0,)]
    assert rss_kb(endpoint) - before < 300_000, "the endpoint's memory grew by more than 300 MB"


# -- malformed requests -----------------------------------------------------------------------

AUTH_HEADER = "Authorization: Basic " + base64.b64encode(f"default:{TEST_PASSWORD}".encode()).decode()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Encoding: zstd\r\nContent-Length: 9\r\n\r\nnot zstd!", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nSELECT 1\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: 10\r\n\r\nSELECT '\xff\xfe'", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: 8\r\nContent-Length: 8\r\n\r\nSELECT 1", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: 8\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"8\r\nSELECT 1\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: -8\r\n\r\nSELECT 1", 400),
    (b"POST /?session_id=s&session_timeout=nan HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: 8\r\n\r\nSELECT 1",
     500),
    (b"POST /?session_id=s&session_timeout=1e9 HTTP/1.1\r\nHost: x\r\n%AUTH%\r\nContent-Length: 8\r\n\r\nSELECT 1",
     500),
    (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + base64.b64encode(b"default:wrong")
     + b"\r\nX-ClickHouse-Key: " + TEST_PASSWORD.encode() + b"\r\nContent-Length: 8\r\n\r\nSELECT 1", 403),
    (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nContent-Length: 8\r\n\r\nSELECT 1", 403),
])
def test_malformed_requests_get_a_clickhouse_error_and_no_python_text(endpoint: EndpointProcess,
                                                                      request_bytes: bytes, status: int) -> None:
    answer = raw_request(endpoint, request_bytes.replace(b"%AUTH%", AUTH_HEADER.encode()))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:300]
    assert b"X-ClickHouse-Exception-Code" in head and body.startswith(b"Code: ")
    for python_text in (b"Traceback", b"Error:", b"Exception:", b"STD_EXCEPTION", b"object has no"):
        assert python_text not in body.replace(b"DB::Exception:", b""), body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600) | st.lists(st.sampled_from([
    b"POST / HTTP/1.1\r\n", b"GET /?query=SELECT%201 HTTP/1.1\r\n", b"Content-Length: 5\r\n", b"Content-Length: x\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Content-Encoding: gzip\r\n", AUTH_HEADER.encode() + b"\r\n", b"\r\n",
    b"ff\r\n", b"SELECT 1", b"\x1f\x8b\x08\x00", b"X-ClickHouse-User: grafana\r\n", b"0\r\n\r\n"]),
    max_size=12).map(b"".join))
def test_any_request_bytes_get_an_http_answer_or_a_close_never_a_crash(endpoint: EndpointProcess,
                                                                        request_bytes: bytes) -> None:
    answer = raw_request(endpoint, request_bytes, timeout=HEADERS_TIMEOUT_S + 20)
    if answer:
        assert answer.startswith(b"HTTP/1."), answer[:200]
        status = int(answer.split(b" ", 2)[1])
        assert status != 500 or b"X-ClickHouse-Exception-Code" in answer
        assert b"Traceback" not in answer and b"STD_EXCEPTION" not in answer
    assert requests.get(f"{endpoint.url}/ping", timeout=5).text == "Ok.\n"


# -- many clients, slow clients ---------------------------------------------------------------

def test_200_connections_at_once_are_all_served(endpoint: EndpointProcess) -> None:
    def one(n: int) -> str:
        with requests.Session() as session:
            return session.get(f"{endpoint.url}/", params={"query": f"SELECT {n}"},
                               auth=("default", TEST_PASSWORD), timeout=60).text

    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(one, range(200)))
    assert answers == [f"{n}\n" for n in range(200)]


def test_slowloris_connections_are_dropped_while_ping_answers(endpoint: EndpointProcess) -> None:
    sockets = [socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) for _ in range(200)]
    closed: list[float] = []
    started = time.monotonic()

    def trickle() -> None:
        """Each connection sends a header byte every second, never finishing its headers."""
        for sock in sockets:
            sock.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
        alive = list(sockets)
        while alive and time.monotonic() - started < HEADERS_TIMEOUT_S + 20:
            for sock in list(alive):
                try:
                    sock.sendall(b"a")
                    sock.setblocking(False)
                    if sock.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    alive.remove(sock)
                    closed.append(time.monotonic() - started)
                finally:
                    sock.setblocking(True)
            time.sleep(1)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        pings = [requests.get(f"{endpoint.url}/ping", timeout=5).text for _ in range(5)]
        thread.join()
    finally:
        for sock in sockets:
            sock.close()
    assert pings == ["Ok.\n"] * 5
    assert len(closed) == 200, f"{200 - len(closed)} slow connections were still open after {HEADERS_TIMEOUT_S + 20} s"
    assert max(closed) < HEADERS_TIMEOUT_S + 5


def test_a_query_is_cancelled_when_its_client_goes_away(endpoint: EndpointProcess, admin: Client) -> None:
    marker = f"abandoned-{uuid.uuid4().hex[:8]}"
    statement = f"SELECT sleepEachRow(0.01), number, '{marker}' FROM numbers(1000000) SETTINGS max_block_size = 1"

    def running() -> int:
        return admin.query("SELECT count() FROM system.processes WHERE position(query, {m:String}) > 0 "
                           "AND position(query, 'system.processes') = 0", parameters={"m": marker}).result_rows[0][0]

    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{AUTH_HEADER}\r\n"
                     f"Content-Length: {len(statement)}\r\n\r\n{statement}".encode())
        time.sleep(1.0)
        assert running() == 1, "the query should be running while its client waits"
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0, "the query kept running after its client closed the connection"


def test_sessions_are_capped_and_their_timeout_is_whole_seconds(endpoint: EndpointProcess) -> None:
    def in_session(session: str, timeout: str = "60") -> requests.Response:
        return requests.post(f"{endpoint.url}/", params={"session_id": session, "session_timeout": timeout},
                             data=b"SELECT 1", auth=("default", TEST_PASSWORD), timeout=30)

    prefix = uuid.uuid4().hex[:8]
    answers = [in_session(f"{prefix}-{n}") for n in range(MAX_SESSIONS + 1)]
    assert all(a.ok for a in answers[:MAX_SESSIONS]), [a.text for a in answers if not a.ok][:1]
    assert "USER_SESSION_LIMIT_EXCEEDED" in answers[-1].text
    assert in_session(f"{prefix}-0").ok, "an open session is still served"
    for bad in ("nan", "inf", "0", "-5", "3601", "1.5"):
        assert "INVALID_SESSION_TIMEOUT" in in_session(f"{prefix}-0", bad).text


def test_a_failing_querys_text_stays_out_of_the_log(endpoint: EndpointProcess) -> None:
    literal = f"card-{uuid.uuid4().hex}"
    answer = post(endpoint, f"SELECT '{literal}' FROM no_such_table_here")
    assert answer.status_code == 404
    time.sleep(0.5)
    log = endpoint.process.log_path.read_text()
    assert "UNKNOWN_TABLE" in log and literal not in log
