"""Ingestion end to end through the real broker and the real ClickHouse engine: every valid event
reaches the clean topic exactly once, every invalid one is dead-lettered with its reason, and no
PII from the generator survives anywhere downstream."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from kafka import KafkaProducer

from checkout import ROOT
from conftest import TEST_PASSWORD, EndpointProcess, start_broker
from pipeline_harness import read_all
from shoppulse import clickhouse
from shoppulse.devstack.process import free_port
from shoppulse.events.catalogue import catalogue_examples
from shoppulse.events.validate import Reason
from shoppulse.ingest.app import DEAD_LETTER_ORIGINAL_BYTES, received_at_ms
from shoppulse.loadgen.bad_input import BAD_KINDS
from shoppulse.loadgen.generator import BadInput, EventStream
from shoppulse.loadgen.run import make_producer, run_live
from shoppulse.sink.migrations import migrate
from shoppulse.topics import CLEAN_EVENTS, DEAD_LETTERS, RAW_EVENTS, create_topics

pytestmark = pytest.mark.integration
PII_KEY = "test-pii-key-0123456789abcdef"


@pytest.fixture(scope="module")
def pipeline(kafka_libs: Path, clickhouse_endpoint: EndpointProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A fresh broker, a fresh database, and `shoppulse ingest` running against both."""
    broker = start_broker(kafka_libs, tmp_path_factory.mktemp("ingest-kafka"))
    database = f"ingest_{uuid.uuid4().hex[:8]}"
    settings = clickhouse_endpoint.settings(clickhouse_database=database)
    migrate(lambda db: clickhouse.connect(settings, db), database, ROOT / "clickhouse")
    create_topics(broker.bootstrap, 3)
    metrics_port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CLICKHOUSE_URL": clickhouse_endpoint.url,
           "CLICKHOUSE_PASSWORD": TEST_PASSWORD, "SHOPPULSE_CLICKHOUSE_DATABASE": database,
           "SHOPPULSE_PII_KEY": PII_KEY, "SHOPPULSE_DATA_DIR": str(tmp_path_factory.mktemp("ingest-data")),
           "SHOPPULSE_INGEST_METRICS_PORT": str(metrics_port), "PATH": "/usr/bin:/bin"}
    log = tmp_path_factory.mktemp("ingest-log") / "ingest.log"
    running = {"bootstrap": broker.bootstrap, "settings": settings, "metrics": f"http://127.0.0.1:{metrics_port}",
               "process": start_ingest(env, log), "log": log, "env": env}
    try:
        yield running
    finally:
        stop_ingest(running["process"])
        broker.stop()


def start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shoppulse", "ingest"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def stop_ingest(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def sent(pipeline: dict) -> EventStream:
    """The generator's run: valid events, invalid ones of every kind, and retried duplicates."""
    stream = EventStream(rate=500, bad=BadInput(invalid=0.12, duplicates=0.08, out_of_order=0.05, late=0.02),
                         seed=20261125, record_pii=True)
    run_live(make_producer(pipeline["bootstrap"]), stream, rate=3000, count=4000)
    return stream


def test_exactly_the_valid_events_reach_the_clean_topic_once_each(pipeline: dict, sent: EventStream) -> None:
    messages = read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid)
    ids = [json.loads(m.value)["event_id"] for m in messages]
    assert len(ids) == sent.tally.valid, f"log: {pipeline['log'].read_text()[-2000:]}"
    assert len(set(ids)) == len(ids), "a duplicate passed"
    assert sent.tally.duplicates > 0
    for message in messages:  # keyed by country for the aggregation, stamped with the event time
        event = json.loads(message.value)
        assert message.key.decode() == event["country"]
        assert message.timestamp == event["event_time_ms"]


def test_exactly_the_invalid_events_are_dead_lettered_each_with_its_reason(pipeline: dict, sent: EventStream) -> None:
    messages = read_all(pipeline["bootstrap"], DEAD_LETTERS.name, sent.tally.invalid_total)
    letters = [json.loads(m.value) for m in messages]
    expected = Counter({str(kind): n for kind, n in sent.tally.invalid.items()})
    assert Counter(letter["reason"] for letter in letters) == expected
    assert {Reason(r) for r in sent.tally.invalid} == set(BAD_KINDS), "the run covered every kind of bad input"
    for letter in letters:
        assert letter["detail"]
        assert letter["source"]["topic"] == "shop.events.raw" and letter["source"]["offset"] >= 0
        original = base64.b64decode(letter["original_b64"])
        assert len(original) == min(letter["size_bytes"], DEAD_LETTER_ORIGINAL_BYTES)
        assert letter["original_truncated"] == (letter["size_bytes"] > DEAD_LETTER_ORIGINAL_BYTES)


def test_dead_letters_and_a_sample_land_in_clickhouse_with_no_pii(pipeline: dict, sent: EventStream) -> None:
    client = clickhouse.connect(pipeline["settings"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.query("SELECT count() FROM dead_letters").result_rows[0][0] >= sent.tally.invalid_total:
            break
        time.sleep(0.5)
    by_reason = dict(client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows)
    assert by_reason == {str(k): n for k, n in sent.tally.invalid.items()}
    assert client.query("SELECT count() FROM events_sample").result_rows[0][0] > 0
    assert len(sent.tally.pii) > 100
    tables = [row[0] for row in client.query("SHOW TABLES").result_rows]
    for table in tables:
        dump = client.raw_query(f"SELECT * FROM {table}", fmt="TabSeparated").decode()
        leaked = [value for value in sent.tally.pii if value in dump]
        assert not leaked, f"{table} holds raw PII: {leaked[:3]}"


def test_no_pii_on_the_clean_topic(pipeline: dict, sent: EventStream) -> None:
    messages = read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid, settle_s=0)
    payload = b"\n".join(m.value for m in messages).decode()
    assert not [value for value in sent.tally.pii if value in payload]
    assert '"user_hash": "' in payload or '"user_hash":"' in payload


def test_prometheus_counters_match_what_was_sent(pipeline: dict, sent: EventStream) -> None:
    read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid, settle_s=0)
    text = requests.get(f"{pipeline['metrics']}/metrics", timeout=5).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("shoppulse_ingest_") and "_total" in line}
    total = sent.tally.valid + sent.tally.invalid_total + sent.tally.duplicates
    assert values["shoppulse_ingest_events_in_total"] == total
    assert values["shoppulse_ingest_events_out_total"] == sent.tally.valid
    assert values["shoppulse_ingest_duplicates_total"] == sent.tally.duplicates
    assert values['shoppulse_ingest_dead_letters_total{reason="oversized"}'] == sent.tally.invalid[Reason.OVERSIZED]


def test_ingestion_refuses_to_start_without_a_pii_key(tmp_path: Path) -> None:
    env = {"SHOPPULSE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "shoppulse", "ingest"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert "SHOPPULSE_PII_KEY is not set" in result.stderr


def test_a_dead_letter_is_received_when_its_message_reached_kafka_unless_that_is_implausible() -> None:
    now = 1_764_000_000_000
    hour_ago = now - 3_600_000
    assert received_at_ms(hour_ago, now) == hour_ago  # a backlog or a backfill keeps its own time
    assert received_at_ms(now + 60_000, now) == now  # from the future: when ingestion saw it
    assert received_at_ms(0, now) == now  # older than dead_letters keeps rows: when ingestion saw it
    assert received_at_ms(-1, now) == now  # no timestamp


def test_poison_pills_are_dead_lettered_and_a_restart_replays_nothing_twice(pipeline: dict, sent: EventStream) -> None:
    """A 900 KB message (its base64 would not fit the dead-letter topic) and an event from before 1970
    (ClickHouse's DateTime cannot hold it) once stopped ingestion for good; now each is one dead letter,
    the events after them flow, and a restart of ingestion replays none of it a second time."""
    read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid, settle_s=0)  # the run is through
    now = datetime.now(UTC)
    huge = b'{"pad": "' + b"x" * 900_000 + b'"}'
    before_1970 = json.dumps({**catalogue_purchase(), "event_id": str(uuid.uuid4()),
                              "event_time": "1969-12-31T23:59:59Z"}).encode()
    after = [json.dumps({**catalogue_purchase(), "event_id": str(uuid.uuid4()), "event_time": now.isoformat()})
             .encode() for _ in range(2)]
    producer = KafkaProducer(bootstrap_servers=pipeline["bootstrap"], max_request_size=2_000_000)
    for raw in (huge, before_1970, after[0]):
        producer.send(RAW_EVENTS.name, key=b"s-poison", value=raw)
    producer.flush()
    poison = {hashlib.sha256(raw).hexdigest(): raw for raw in (huge, before_1970)}
    dead_before = sent.tally.invalid_total
    letters = [json.loads(m.value) for m in read_all(pipeline["bootstrap"], DEAD_LETTERS.name, dead_before + 2)]
    clean = read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid + 1, settle_s=0)
    assert json.loads(after[0])["event_id"] in {json.loads(m.value)["event_id"] for m in clean}, \
        f"ingestion stopped after the poison pills: {pipeline['log'].read_text()[-2000:]}"
    mine = {letter["sha256"]: letter for letter in letters if letter["sha256"] in poison}
    assert {digest: mine[digest]["reason"] for digest in mine} == {
        hashlib.sha256(huge).hexdigest(): "oversized", hashlib.sha256(before_1970).hexdigest(): "time_too_old"}
    big = mine[hashlib.sha256(huge).hexdigest()]
    assert big["size_bytes"] == len(huge) and big["original_truncated"] is True
    assert base64.b64decode(big["original_b64"]) == huge[:DEAD_LETTER_ORIGINAL_BYTES]

    stop_ingest(pipeline["process"])
    pipeline["process"] = start_ingest(pipeline["env"], pipeline["log"])
    producer.send(RAW_EVENTS.name, key=b"s-poison", value=after[1])
    producer.flush()
    producer.close()
    clean = read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid + 2)
    ids = Counter(json.loads(m.value)["event_id"] for m in clean)
    assert [ids[json.loads(raw)["event_id"]] for raw in after] == [1, 1]
    assert len(clean) == sent.tally.valid + 2
    letters = [json.loads(m.value) for m in read_all(pipeline["bootstrap"], DEAD_LETTERS.name, dead_before + 2)]
    assert len(letters) == dead_before + 2
    client = clickhouse.connect(pipeline["settings"])
    deadline = time.monotonic() + 60
    rows: list = []
    while time.monotonic() < deadline:
        rows = client.query("SELECT sha256, count() FROM dead_letters WHERE sha256 IN {d:Array(String)} "
                            "GROUP BY sha256", parameters={"d": list(poison)}).result_rows
        if len(rows) == 2:
            break
        time.sleep(0.5)
    assert sorted(count for _, count in rows) == [1, 1]


LEADING_BYTES = [b"\x00\x00\x00\xdc", b"\x00\x00\x01\x00", b"\x00\x00\x02\xff", b"\x00\x00\x04\x80",
                 b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\x00\x00\x00"]


def test_retries_of_ids_with_any_leading_bytes_are_caught_across_a_restart(pipeline: dict,
                                                                           sent: EventStream) -> None:
    """Ids whose first bytes read like a TTL stamp (0x000000DC..0x00000480 as epoch-ms are 1999..2126)
    were once stripped or expired by Quix's TTL bookkeeping, and their retries passed as new events."""
    before = len(read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, sent.tally.valid, settle_s=0))
    now = datetime.now(UTC).isoformat()
    events = {f"s-lead-{n}": json.dumps({**catalogue_purchase(), "event_id": str(uuid.UUID(bytes=lead + uuid.uuid4()
                                         .bytes[len(lead):])), "event_time": now}).encode()
              for n, lead in enumerate(LEADING_BYTES)}
    producer = KafkaProducer(bootstrap_servers=pipeline["bootstrap"])
    for session, raw in events.items():
        producer.send(RAW_EVENTS.name, key=session.encode(), value=raw)
    producer.flush()
    read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, before + len(events), settle_s=1)
    for _ in range(2):  # two retries of each, the second after a restart restored the state
        for session, raw in events.items():
            producer.send(RAW_EVENTS.name, key=session.encode(), value=raw)
        producer.flush()
        time.sleep(2)
        stop_ingest(pipeline["process"])
        pipeline["process"] = start_ingest(pipeline["env"], pipeline["log"])
    producer.close()
    clean = read_all(pipeline["bootstrap"], CLEAN_EVENTS.name, before + len(events) * 3, timeout_s=30)
    ids = Counter(json.loads(m.value)["event_id"] for m in clean)
    assert {json.loads(raw)["event_id"][:8]: ids[json.loads(raw)["event_id"]] for raw in events.values()} == {
        json.loads(raw)["event_id"][:8]: 1 for raw in events.values()}
    assert len(clean) == before + len(events)


def catalogue_purchase() -> dict:
    return next(json.loads(raw) for raw in catalogue_examples() if json.loads(raw)["event_type"] == "purchase")
