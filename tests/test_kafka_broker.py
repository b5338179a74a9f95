"""The local Kafka broker is a real Apache Kafka (KRaft) that keeps its data across restarts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from quixstreams import Application

from conftest import start_broker
from shoppulse.devstack.kafka import MissingToolError, require_java, require_maven, resolve_kafka
from shoppulse.settings import load_settings
from shoppulse.topics import PIPELINE_TOPICS, RAW_EVENTS, RAW_MAX_MESSAGE_BYTES, TopicSpec, create_topics

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
