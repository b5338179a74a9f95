"""The local Kafka broker is a real Apache Kafka (KRaft) that keeps its data across restarts."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from quixstreams import Application

from conftest import start_broker
from shoppulse.devstack.kafka import MissingToolError, require_java, require_maven, resolve_kafka
from shoppulse.settings import load_settings
from shoppulse.topics import (
    CLEAN_EVENTS,
    DAY_MS,
    HISTORY_DAYS,
    HISTORY_RETENTION_MS,
    PIPELINE_TOPICS,
    RAW_EVENTS,
    RAW_MAX_MESSAGE_BYTES,
    TopicSpec,
    create_topics,
)

pytestmark = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, expected: int, timeout_ms: int = 20000) -> list[bytes]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=f"reader-{uuid.uuid4().hex[:8]}", consumer_timeout_ms=timeout_ms)
    try:
        values = []
        for message in consumer:
            values.append(message.value)
            if len(values) >= expected:
                break
        return values
    finally:
        consumer.close()


def test_kafka_python_and_quix_streams_produce_and_consume(kafka_bootstrap: str) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, 3, specs=(TopicSpec(topic, "test"),))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(200):
        producer.send(topic, key=str(i % 7).encode(), value=json.dumps({"n": i}).encode())
    producer.flush()
    producer.close()
    app = Application(broker_address=kafka_bootstrap, consumer_group="quix-test", auto_create_topics=False)
    with app.get_producer() as quix_producer:
        for i in range(200, 300):
            quix_producer.produce(topic, key=str(i % 7).encode(), value=json.dumps({"n": i}).encode())
    values = consume_all(kafka_bootstrap, topic, 300)
    assert sorted(json.loads(v)["n"] for v in values) == list(range(300))


def test_messages_written_before_a_restart_are_all_there_after_it(kafka_libs: Path, tmp_path: Path) -> None:
    broker = start_broker(kafka_libs, tmp_path / "kafka")
    try:
        create_topics(broker.bootstrap, 2)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(500):
            producer.send("shop.events.raw", value=str(i).encode())
        producer.flush()
        producer.close()
        broker.stop()
        assert not broker.accepts_clients()
        broker.start()
        values = consume_all(broker.bootstrap, "shop.events.raw", 500)
        assert sorted(int(v) for v in values) == list(range(500))
    finally:
        broker.stop()


def test_topics_are_created_once_and_never_auto_created(kafka_bootstrap: str) -> None:
    first = create_topics(kafka_bootstrap, 3)
    assert create_topics(kafka_bootstrap, 3) == []
    assert set(first) <= {t.name for t in PIPELINE_TOPICS}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_block_ms=3000)
    try:
        with pytest.raises(Exception, match=r"not (present|found)|Timeout|UnknownTopic"):
            producer.send(f"typo-{uuid.uuid4().hex[:6]}", b"x").get(timeout=5)
    finally:
        producer.close(timeout=1)


def test_kafka_jars_are_resolved_once_and_reused(kafka_libs: Path) -> None:
    settings = load_settings()
    marker = kafka_libs.parent / ".resolved"
    before = marker.stat().st_mtime_ns
    assert resolve_kafka(settings.kafka_version, settings.cache_dir) == kafka_libs
    assert marker.stat().st_mtime_ns == before
    jars = {p.name for p in kafka_libs.glob("*.jar")}
    assert f"kafka_2.13-{settings.kafka_version}.jar" in jars
    assert any(name.startswith("kafka-server-") for name in jars)


def test_missing_java_or_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError, match="apt-get install openjdk-17-jre-headless"):
        require_java()
    with pytest.raises(MissingToolError, match="apt-get install maven"):
        require_maven()


def test_cluster_ids_starting_with_a_dash_still_format(kafka_libs: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shoppulse.devstack.kafka as kafka_module

    monkeypatch.setattr(kafka_module, "new_cluster_id", lambda: "-" + "A" * 21)
    broker = start_broker(kafka_libs, tmp_path / "kafka")
    broker.stop()
    assert "cluster.id=-AAAA" in (tmp_path / "kafka" / "data" / "meta.properties").read_text()


def test_the_raw_topic_takes_messages_up_to_its_documented_limit(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    create_topics(kafka_bootstrap, 3)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, RAW_EVENTS.name)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert int(config["max.message.bytes"].value) == RAW_MAX_MESSAGE_BYTES


def test_the_event_topics_keep_a_backfill_of_the_whole_history(kafka_libs: Path, tmp_path: Path) -> None:
    """``loadgen --replay`` stamps each message with the time its event happened, and ingestion stamps the
    clean topic with event time: the broker deletes by that stamp, read or not. A backfill of the whole
    history must survive until the pipeline has read it; older messages do not."""
    broker = start_broker(kafka_libs, tmp_path / "kafka")
    try:
        kept = [TopicSpec(f"{spec.name}.copy", "as the pipeline's", spec.config) for spec in (RAW_EVENTS, CLEAN_EVENTS)]
        expired = TopicSpec("older-than-kept", "a control", {"retention.ms": str(HISTORY_RETENTION_MS)})
        create_topics(broker.bootstrap, 1, specs=(*kept, expired))
        now_ms = int(time.time() * 1000)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(100):
            for spec in kept:  # the oldest events of a two-week backfill, an hour into reading it
                producer.send(spec.name, value=str(i).encode(), timestamp_ms=now_ms - HISTORY_DAYS * DAY_MS - 3_600_000)
            producer.send(expired.name, value=str(i).encode(), timestamp_ms=now_ms - HISTORY_RETENTION_MS - 3_600_000)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        try:
            control = TopicPartition(expired.name, 0)
            deadline = time.monotonic() + 90
            while consumer.beginning_offsets([control])[control] < 100:  # the broker enforced retention
                assert time.monotonic() < deadline, "the broker never deleted the expired control messages"
                time.sleep(1)
            partitions = [TopicPartition(spec.name, 0) for spec in kept]
            assert consumer.beginning_offsets(partitions) == dict.fromkeys(partitions, 0)
        finally:
            consumer.close()
        for spec in kept:
            assert sorted(int(v) for v in consume_all(broker.bootstrap, spec.name, 100)) == list(range(100))
    finally:
        broker.stop()


def test_a_topic_created_keeping_less_has_its_retention_raised_and_a_longer_one_kept(kafka_bootstrap: str) -> None:
    def retention(name: str) -> int:
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"])],
                                               config_filter="all")
        finally:
            admin.close()
        return int(described["topic"][name]["retention.ms"]["value"])

    short, long = f"short-{uuid.uuid4().hex[:6]}", f"long-{uuid.uuid4().hex[:6]}"
    create_topics(kafka_bootstrap, 1, specs=(TopicSpec(short, "an older version's", {"retention.ms": str(7 * DAY_MS)}),
                                             TopicSpec(long, "an operator's", {"retention.ms": str(30 * DAY_MS)})))
    wanted = {"retention.ms": str(HISTORY_RETENTION_MS)}
    specs = (TopicSpec(short, "now", wanted), TopicSpec(long, "now", wanted))
    assert create_topics(kafka_bootstrap, 1, specs=specs) == []
    assert (retention(short), retention(long)) == (HISTORY_RETENTION_MS, 30 * DAY_MS)
