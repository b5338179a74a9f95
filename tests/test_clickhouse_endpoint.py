"""The local ClickHouse endpoint speaks ClickHouse's HTTP interface to clickhouse-connect and raw HTTP."""

from __future__ import annotations

import contextlib
import gzip
import re
import threading
import time
from datetime import datetime
from decimal import Decimal
from urllib.parse import quote_from_bytes

import clickhouse_connect
import pytest
import requests
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, StreamFailureError
from clickhouse_connect.driver.external import ExternalData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TEST_PASSWORD, EndpointProcess
from shoppulse import clickhouse
from shoppulse.devstack.process import StartupError

pytestmark = pytest.mark.integration
AUTH = ("default", TEST_PASSWORD)

TYPED_TABLE = """CREATE TABLE {name} (
    id UInt64, ts DateTime64(3, 'UTC'), country LowCardinality(String), amount Decimal(18, 4),
    tags Array(String), score Nullable(Float64)) ENGINE = MergeTree ORDER BY id"""
TYPED_COLUMNS = ["id", "ts", "country", "amount", "tags", "score"]


def typed_rows(n: int) -> list[list[object]]:
    return [[i, datetime(2026, 11, 25, 12, 0, i % 60, (i % 1000) * 1000), ("US", "DE", "JP")[i % 3],
             Decimal("19.9900") * i, ["sale", "new"][: i % 3], None if i % 7 == 0 else i / 4] for i in range(n)]


def test_command_creates_a_table_and_insert_round_trips_every_type(ch: Client, table_name: str) -> None:
    ch.command(TYPED_TABLE.format(name=table_name))
    rows = typed_rows(500)
    summary = ch.insert(table_name, rows, column_names=TYPED_COLUMNS)
    assert summary.written_rows == 500
    back = ch.query(f"SELECT {', '.join(TYPED_COLUMNS)} FROM {table_name} ORDER BY id").result_rows
    assert [list(r) for r in back] == rows
    types = dict(ch.query(f"SELECT name, type FROM system.columns WHERE table = '{table_name}'").result_rows)
    assert types["country"] == "LowCardinality(String)" and types["ts"] == "DateTime64(3, 'UTC')"


def test_query_df_returns_a_dataframe(ch: Client, table_name: str) -> None:
    ch.command(TYPED_TABLE.format(name=table_name))
    ch.insert(table_name, typed_rows(30), column_names=TYPED_COLUMNS)
    df = ch.query_df(f"SELECT country, sum(amount) AS revenue FROM {table_name} GROUP BY country ORDER BY country")
    assert list(df["country"]) == ["DE", "JP", "US"]
    assert sum(df["revenue"]) == sum(Decimal("19.9900") * i for i in range(30))


def test_date_time64_with_a_time_zone_reaches_pandas_as_the_server_s_column_says(ch: Client) -> None:
    """The Native header names each column's time zone and the response the server's, so clickhouse-connect
    builds the same pandas columns as from a ClickHouse server: zone-aware for an explicit zone, naive UTC
    for UTC by its default tz_mode, zone-aware UTC when asked."""
    sql = ("SELECT toDateTime64('2026-01-01 00:00:00.250', 3, 'UTC') AS utc, "
           "toDateTime64('2026-01-01 09:00:00.250', 3, 'Asia/Tokyo') AS tokyo")
    df = ch.query_df(sql)
    assert str(df["tokyo"].dtype) == "datetime64[ms, Asia/Tokyo]" and str(df["utc"].dtype) == "datetime64[ms]"
    assert df["tokyo"][0].tz_convert("UTC").tz_localize(None) == df["utc"][0]
    aware = ch.query_df(sql, tz_mode="aware")
    assert str(aware["utc"].dtype) == "datetime64[ms, UTC]" and aware["utc"][0] == aware["tokyo"][0]


def test_streaming_query_delivers_every_block(ch: Client) -> None:
    total, blocks = 0, 0
    with ch.query_row_block_stream("SELECT number FROM numbers(2000000)") as stream:
        for block in stream:
            blocks += 1
            total += sum(row[0] for row in block)
    assert total == sum(range(2_000_000))
    assert blocks > 1


def test_syntax_error_comes_back_as_clickhouse_error_62(ch: Client) -> None:
    with pytest.raises(DatabaseError) as raised:
        ch.query("SELEC 1 FROM")
    assert "code: 62" in str(raised.value).lower() or "Code: 62" in str(raised.value)
    assert "Syntax error" in str(raised.value)


def test_a_concurrent_reader_and_writer_both_make_progress(clickhouse_endpoint: EndpointProcess,
                                                           table_name: str) -> None:
    settings = clickhouse_endpoint.settings()
    writer_client = clickhouse.connect(settings, database="default")
    reader_client = clickhouse.connect(settings, database="default")
    writer_client.command(f"CREATE TABLE {table_name} (n UInt64) ENGINE = MergeTree ORDER BY n")
    batches, seen, errors = 40, [], []

    def write() -> None:
        try:
            for b in range(batches):
                writer_client.insert(table_name, [[b * 100 + i] for i in range(100)], column_names=["n"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            while not seen or seen[-1] < batches * 100:
                seen.append(reader_client.query(f"SELECT count() FROM {table_name}").result_rows[0][0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert seen == sorted(seen), "a reader never sees rows disappear"
    assert seen[-1] == batches * 100
    assert len(set(seen)) > 2, "the reader saw the table while it was being written"


def test_rowbinary_insert_in_a_chunked_post_body(ch: Client, clickhouse_endpoint: EndpointProcess,
                                                 table_name: str) -> None:
    ch.command(f"CREATE TABLE {table_name} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    payload = ch.raw_query("SELECT number::UInt32 AS id, concat('item-', toString(number)) AS name "
                           "FROM numbers(1000)", fmt="RowBinary")

    def body():  # a generator body makes requests send Transfer-Encoding: chunked
        for i in range(0, len(payload), 777):
            yield payload[i:i + 777]

    response = requests.post(clickhouse_endpoint.url, params={"query": f"INSERT INTO {table_name} FORMAT RowBinary"},
                             data=body(), auth=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert '"written_rows":"1000"' in response.headers["X-ClickHouse-Summary"]
    assert ch.query(f"SELECT count(), max(name) FROM {table_name}").result_rows == [(1000, "item-999")]


def test_native_insert_with_the_statement_in_the_body(ch: Client, clickhouse_endpoint: EndpointProcess,
                                                      table_name: str) -> None:
    ch.command(f"CREATE TABLE {table_name} (id UInt32, v Float64) ENGINE = MergeTree ORDER BY id")
    native = ch.raw_query("SELECT number::UInt32 AS id, number / 2 AS v FROM numbers(10)", fmt="Native")
    body = f"INSERT INTO {table_name} (id, v) FORMAT Native\n".encode() + native
    response = requests.post(clickhouse_endpoint.url, data=body, auth=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert ch.query(f"SELECT sum(v) FROM {table_name}").result_rows == [(22.5,)]


def test_gzip_encoded_csv_insert_and_values_insert(ch: Client, clickhouse_endpoint: EndpointProcess,
                                                   table_name: str) -> None:
    ch.command(f"CREATE TABLE {table_name} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    csv = gzip.compress(b"1,one\n2,\"t,wo\"\n")
    response = requests.post(clickhouse_endpoint.url, params={"query": f"INSERT INTO {table_name} FORMAT CSV"},
                             data=csv, headers={"Content-Encoding": "gzip"}, auth=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    response = requests.post(clickhouse_endpoint.url, data=f"INSERT INTO {table_name} VALUES (3, 'three')",
                             auth=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert ch.query(f"SELECT name FROM {table_name} ORDER BY id").result_columns == [["one", "t,wo", "three"]]


def test_output_in_the_requested_format_with_its_headers(clickhouse_endpoint: EndpointProcess) -> None:
    response = requests.post(clickhouse_endpoint.url, data="SELECT 1 AS x, 'a' AS y FORMAT JSONEachRow",
                             auth=AUTH, timeout=10)
    assert response.json() == {"x": 1, "y": "a"}
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert response.headers["X-ClickHouse-Query-Id"]
    response = requests.get(clickhouse_endpoint.url, params={"query": "SELECT 2", "default_format": "CSV"},
                            auth=AUTH, timeout=10)
    assert (response.text, response.headers["Content-Type"].split(";")[0]) == ("2\n", "text/csv")


def test_url_parameters_are_settings_and_query_parameters(clickhouse_endpoint: EndpointProcess) -> None:
    params = {"query": "SELECT getSetting('max_threads'), {n:UInt8} * 2", "max_threads": "1", "param_n": "21"}
    response = requests.post(clickhouse_endpoint.url, params=params, auth=AUTH, timeout=10)
    assert response.text == "1\t42\n"
    bad = requests.post(clickhouse_endpoint.url, params={"query": "SELECT 1", "no_such_setting": "1"},
                        auth=AUTH, timeout=10)
    assert bad.status_code == 404
    assert bad.headers["X-ClickHouse-Exception-Code"] == "115"


@pytest.mark.parametrize(("query", "status", "code"), [
    ("SELECT no_such_column", 404, "47"),  # UNKNOWN_IDENTIFIER
    ("SELECT * FROM no_such_table", 404, "60"),  # UNKNOWN_TABLE
    ("SELECT no_such_function(1)", 404, "46"),  # UNKNOWN_FUNCTION
    ("SELEC 1", 400, "62"),  # SYNTAX_ERROR
    ("SELECT toDate('not a date')", 400, "38"),  # CANNOT_PARSE_DATE
    ("SELECT throwIf(1)", 500, "395"),  # any other error
])
def test_errors_have_the_http_status_clickhouse_gives_them(clickhouse_endpoint: EndpointProcess, query: str,
                                                            status: int, code: str) -> None:
    response = requests.post(clickhouse_endpoint.url, data=query, auth=AUTH, timeout=10)
    assert (response.status_code, response.headers["X-ClickHouse-Exception-Code"]) == (status, code)
    assert response.text.startswith(f"Code: {code}. DB::Exception:")


def test_get_requests_are_read_only(clickhouse_endpoint: EndpointProcess) -> None:
    response = requests.get(clickhouse_endpoint.url, params={"query": "CREATE TABLE never (a Int8) ENGINE = Memory"},
                            auth=AUTH, timeout=10)
    assert response.status_code == 500  # ClickHouse gives READONLY no status of its own
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"
    assert response.text.startswith("Code: 164. DB::Exception:")


def test_wrong_password_is_refused(clickhouse_endpoint: EndpointProcess) -> None:
    response = requests.post(clickhouse_endpoint.url, data="SELECT 1", auth=("default", "wrong"), timeout=10)
    assert response.status_code == 403
    assert response.headers["X-ClickHouse-Exception-Code"] == "516"
    with pytest.raises(DatabaseError):
        clickhouse_connect.get_client(dsn=clickhouse_endpoint.url, password="wrong")


def test_session_keeps_settings_between_requests(clickhouse_endpoint: EndpointProcess) -> None:
    session = clickhouse_connect.get_client(dsn=clickhouse_endpoint.url, password=TEST_PASSWORD,
                                            session_id="test-session")
    session.command("SET max_threads = 1")
    assert session.command("SELECT getSetting('max_threads')") == 1
    other = clickhouse_connect.get_client(dsn=clickhouse_endpoint.url, password=TEST_PASSWORD)
    assert other.command("SELECT getSetting('max_threads')") != 1


def test_requests_outside_a_session_start_afresh_though_connections_are_reused(
        clickhouse_endpoint: EndpointProcess) -> None:
    """Idle connections serve later requests with the same settings: nothing a request did to
    its session (SET, USE, a temporary table, a failed query) reaches the next one."""
    def run(query: str, **settings: str) -> requests.Response:
        return requests.post(clickhouse_endpoint.url, params={"query": query, **settings}, auth=AUTH, timeout=10)

    def opened() -> float:
        metrics = requests.get(f"{clickhouse_endpoint.url}/metrics", timeout=10).text
        return float(next(line.split()[1] for line in metrics.splitlines()
                          if line.startswith("shoppulse_clickhouse_connections_opened_total ")))

    before = opened()
    for _ in range(3):  # the second and third rounds are served by idle connections
        assert run("SELECT getSetting('max_threads')", max_threads="1").text == "1\n"
        assert run("SELECT getSetting('max_threads')").text != "1\n"
        assert run("SET max_threads = 1").ok
        assert run("SELECT getSetting('max_threads')").text != "1\n"
        assert run("USE system").ok
        assert run("SELECT currentDatabase()").text == "default\n"
        assert run("CREATE TEMPORARY TABLE scratch (a Int8)").ok
        assert run("EXISTS TEMPORARY TABLE scratch").text == "0\n"
        assert not run("SELECT no_such_column").ok
        assert run("/* never closed SELECT 1").status_code == 400
        assert run("SELECT 1").text == "1\n"
    # Per round: the statements that change session state (and the two failed ones) close theirs.
    assert opened() - before <= 2 + 3 * 5  # (one per request would be 33)


def test_a_session_used_by_two_requests_at_once_is_locked(clickhouse_endpoint: EndpointProcess) -> None:
    params = {"session_id": "busy-session"}
    slow_status: list[int] = []
    slow = threading.Thread(target=lambda: slow_status.append(requests.post(
        clickhouse_endpoint.url, params=params, data="SELECT sleep(2)", auth=AUTH, timeout=30).status_code))
    slow.start()
    time.sleep(0.5)  # let the slow request take the session first
    try:
        while slow.is_alive():
            response = requests.post(clickhouse_endpoint.url, params=params, data="SELECT 1", auth=AUTH, timeout=30)
            if response.status_code != 200:
                break
            time.sleep(0.05)
        assert response.headers["X-ClickHouse-Exception-Code"] == "373"
    finally:
        slow.join()
    assert slow_status == [200]


def test_an_error_in_the_middle_of_a_stream_fails_the_response(ch: Client,
                                                               clickhouse_endpoint: EndpointProcess) -> None:
    """Framed as ClickHouse 25.11+ frames it: the response's X-ClickHouse-Exception-Tag, then in the body
    the marker, the tag, the message, its length and the tag, the marker; the stream cut."""
    query = "SELECT throwIf(number = 1500000) FROM numbers(3000000)"
    with pytest.raises(StreamFailureError, match=r"Code: 395"), ch.query_row_block_stream(query) as stream:
        for _ in stream:
            pass
    with requests.post(clickhouse_endpoint.url, data=query, auth=AUTH, timeout=60, stream=True) as response:
        tag = response.headers["X-ClickHouse-Exception-Tag"]
        body = b""
        with contextlib.suppress(requests.exceptions.ChunkedEncodingError):  # cut without its last chunk
            for piece in response.iter_content(1 << 16):
                body += piece
    assert re.fullmatch(r"[a-z0-9]{16}", tag) and response.status_code == 200
    framed = re.search(rb"\r\n__exception__\r\n" + tag.encode() + rb"\r\n(Code: 395\..*?)\n(\d+) "
                       + tag.encode() + rb"\r\n__exception__\r\n$", body, re.S)
    assert framed is not None and int(framed.group(2)) == len(framed.group(1)), body[-400:]


def test_wait_end_of_query_turns_a_late_error_into_an_http_error(clickhouse_endpoint: EndpointProcess) -> None:
    response = requests.post(clickhouse_endpoint.url, params={"wait_end_of_query": "1"},
                             data="SELECT throwIf(number = 1500000) FROM numbers(3000000)", auth=AUTH, timeout=60)
    assert response.status_code == 500
    assert response.headers["X-ClickHouse-Exception-Code"] == "395"


def test_malformed_chunked_body_is_a_clear_error(clickhouse_endpoint: EndpointProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", clickhouse_endpoint.port), timeout=10) as sock:
        sock.sendall(b"POST /?query=SELECT+1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Authorization: Basic ZGVmYXVsdDp0ZXN0LXNlY3JldA==\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):  # the server closes the connection after the error
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 400")
    assert "not a hex chunk size" in reply


def test_ping_metrics_and_unknown_paths(clickhouse_endpoint: EndpointProcess) -> None:
    assert requests.get(f"{clickhouse_endpoint.url}/ping", timeout=5).text == "Ok.\n"
    metrics = requests.get(f"{clickhouse_endpoint.url}/metrics", timeout=5).text
    assert "shoppulse_clickhouse_http_requests_total" in metrics
    assert requests.get(f"{clickhouse_endpoint.url}/nowhere", timeout=5).status_code == 404


def test_data_survives_an_endpoint_restart_and_the_folder_has_one_owner(tmp_path) -> None:
    endpoint = EndpointProcess(tmp_path / "db").start()
    try:
        client = clickhouse.connect(endpoint.settings(), database="default")
        client.command("CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n")
        client.insert("kept", [[1], [2], [3]], column_names=["n"])
        with pytest.raises(StartupError, match="already owned by pid"):
            from shoppulse.devstack.clickhouse_server import Engine

            Engine(tmp_path / "db")
    finally:
        endpoint.stop()
    endpoint = EndpointProcess(tmp_path / "db").start()
    try:
        client = clickhouse.connect(endpoint.settings(), database="default")
        assert client.query("SELECT sum(n) FROM kept").result_rows == [(6,)]
    finally:
        endpoint.stop()


def test_grafana_reader_may_read_but_never_write(tmp_path_factory: pytest.TempPathFactory) -> None:
    endpoint = EndpointProcess(tmp_path_factory.mktemp("reader") / "db",
                               env={"CLICKHOUSE_GRAFANA_USER": "grafana",
                                    "CLICKHOUSE_GRAFANA_PASSWORD": "reader-secret"}).start()
    try:
        admin = clickhouse.connect(endpoint.settings(), database="default")
        admin.command("CREATE TABLE visible (x UInt8) ENGINE = MergeTree ORDER BY x")
        admin.insert("visible", [[1], [2]], column_names=["x"])
        reader = clickhouse_connect.get_client(dsn=endpoint.url, username="grafana", password="reader-secret",
                                               autogenerate_session_id=False)
        assert reader.query("SELECT sum(x) FROM visible").result_rows == [(3,)]
        for statement in ("INSERT INTO visible VALUES (9)", "CREATE TABLE sneaky (x UInt8) ENGINE = Memory",
                          "DROP TABLE visible", "SET readonly = 0"):
            with pytest.raises(DatabaseError, match=r"READONLY|readonly"):
                reader.command(statement)
        with pytest.raises(DatabaseError, match="readonly"):
            reader.command("INSERT INTO visible VALUES (9)", settings={"readonly": 0})
        assert admin.query("SELECT count() FROM visible").result_rows == [(2,)]
        with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
            clickhouse_connect.get_client(dsn=endpoint.url, username="grafana", password="wrong",
                                          autogenerate_session_id=False)
    finally:
        endpoint.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"'" not in b and b"\\" not in b))
def test_bytes_that_are_not_utf8_inside_a_literal_reach_the_engine_as_they_are(
        clickhouse_endpoint: EndpointProcess, raw: bytes) -> None:
    """A ClickHouse server reads the query as bytes: a literal holds exactly the bytes sent, UTF-8 or not,
    from the body and from the URL's query parameter alike."""
    body = requests.post(clickhouse_endpoint.url, data=b"SELECT hex('" + raw + b"') /* \xff */", auth=AUTH,
                         timeout=30)
    url = requests.get(f"{clickhouse_endpoint.url}/?query=" + quote_from_bytes(b"SELECT hex('" + raw + b"')"),
                       auth=AUTH, timeout=30)
    assert (body.status_code, body.text.strip()) == (url.status_code, url.text.strip()) == (200, raw.hex().upper())


def test_bytes_that_are_not_utf8_elsewhere_are_refused_with_clickhouse_s_error(
        clickhouse_endpoint: EndpointProcess) -> None:
    outside = requests.post(clickhouse_endpoint.url, data=b"SELECT \xff", auth=AUTH, timeout=30)
    assert outside.status_code == 400 and outside.headers["X-ClickHouse-Exception-Code"] == "62"
    parameter = requests.get(f"{clickhouse_endpoint.url}/?query=SELECT%20%7Bx%3AString%7D&param_x=%FF", auth=AUTH,
                             timeout=30)
    assert parameter.status_code == 400 and "param_x" in parameter.text


def test_query_parameters_sent_as_form_fields_are_read_as_clickhouse_reads_them(
        clickhouse_endpoint: EndpointProcess) -> None:
    """clickhouse-connect sends long query parameters (or all, with form_encode_query_params) as form
    fields; ClickHouse's HTTP handler reads the query, parameters and settings from the form."""
    client = clickhouse_connect.get_client(dsn=clickhouse_endpoint.url, username="default", password=TEST_PASSWORD,
                                           form_encode_query_params=True, autogenerate_session_id=False)
    try:
        long = "x&y=" * 5000
        rows = client.query("SELECT {a:String} AS a, {v$1:UInt32} AS b, length({long:String}) AS n",
                            parameters={"a": "hé & ß", "v$1": 7, "long": long}).result_rows
        assert rows == [("hé & ß", 7, len(long))]
        external = ExternalData(data=b"1\n2\n", file_name="ext.csv", fmt="CSV", structure=["n UInt8"])
        with pytest.raises(DatabaseError, match="external tables") as refused:
            client.query("SELECT * FROM ext", external_data=external)
        assert "Code: 48" in str(refused.value)
    finally:
        client.close()


@pytest.mark.parametrize(("request_args", "status", "code", "says"), [
    ({"params": {"role": "analyst"}, "data": "SELECT 1"}, 404, "511", "There is no role `analyst`"),
    ({"data": "SELECT count() FROM system.query_log"}, 404, "60", "system.query_log"),
    ({"data": "SHOW ROW POLICIES"}, 403, "497", "SHOW ROW POLICIES"),
])
def test_what_the_embedded_engine_cannot_do_is_clickhouse_s_own_error(
        clickhouse_endpoint: EndpointProcess, request_args: dict, status: int, code: str, says: str) -> None:
    """No user directories (roles, row policies) and no query log: the errors a ClickHouse server gives
    a user without them (docs/architecture.md says so)."""
    answer = requests.post(clickhouse_endpoint.url, auth=AUTH, timeout=30, **request_args)
    assert (answer.status_code, answer.headers["X-ClickHouse-Exception-Code"]) == (status, code)
    assert says in answer.text


def test_show_create_and_control_statements_run_as_commands(ch: Client, table_name: str) -> None:
    ch.command(f"CREATE TABLE {table_name} (a UInt8) ENGINE = MergeTree ORDER BY a")
    assert str(ch.command(f"SHOW CREATE TABLE {table_name}")).startswith(f"CREATE TABLE default.{table_name}")
    for statement in ("SYSTEM FLUSH LOGS", "KILL QUERY WHERE 0", f"OPTIMIZE TABLE {table_name} FINAL"):
        ch.command(statement)
