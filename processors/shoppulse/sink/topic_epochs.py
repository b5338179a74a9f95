"""Which incarnation of a Kafka topic a sink's rows come from, so that its offset fence survives a
topic that was deleted and created again (a new cluster, a reset): offsets start again at 0 there,
and a fence of (partition, offset) alone would take every new row for one already written.

Each topic's Kafka topic id (a UUID the broker gives a topic when it is created) is numbered in
ClickHouse's ``sink_topic_epochs`` (clickhouse/0017) the first time a sink meets it: the first id
seen is epoch 0 (rows written before epochs existed belong to it), each later one the next number.
The sink stores a row's source offset as ``epoch << OFFSET_BITS | offset``: a new incarnation's
offsets are all above the old one's, and a replay within one incarnation is fenced as before.

Example: offset 42 of epoch 1 is stored as ``(1 << 44) | 42``; ``source_offset`` gives back 42."""

from __future__ import annotations

import logging
from collections.abc import Callable

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

OFFSET_BITS = 44  # Kafka offsets below 2**44 (17.6 trillion per partition: 11 years at 50,000/s)
EPOCHS_TABLE = "sink_topic_epochs"
LOOKUP_TIMEOUT_S = 15.0


class TopicIdentityError(RuntimeError):
    """The broker did not tell a topic's id."""


def kafka_topic_ids(bootstrap: str) -> Callable[[str], str]:
    """A function from a topic's name to its Kafka topic id, asked of the broker at ``bootstrap``."""

    def topic_id(topic: str) -> str:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        try:
            future = admin.describe_topics(TopicCollection([topic]), request_timeout=LOOKUP_TIMEOUT_S)[topic]
            return str(future.result(timeout=LOOKUP_TIMEOUT_S).topic_id)
        except (KafkaException, TimeoutError) as exc:
            raise TopicIdentityError(f"the broker at {bootstrap} did not describe topic {topic}: {exc}") from exc

    return topic_id


def stored_offset(epoch: int, offset: int) -> int:
    if not 0 <= offset < 1 << OFFSET_BITS:
        raise ValueError(f"offset {offset} is outside 0..2**{OFFSET_BITS}")
    return epoch << OFFSET_BITS | offset


def source_offset(stored: int) -> int:
    """The Kafka offset of a stored ``src_offset``."""
    return stored & ((1 << OFFSET_BITS) - 1)


class TopicEpochs:
    """Each topic's current epoch, looked up (or numbered) once per topic per process."""

    def __init__(self, topic_id: Callable[[str], str]) -> None:
        self._topic_id = topic_id
        self._known: dict[str, int] = {}

    def epoch(self, client: Client, topic: str) -> int:
        if topic not in self._known:
            self._known[topic] = self._number(client, topic, self._topic_id(topic))
        return self._known[topic]

    @staticmethod
    def _number(client: Client, topic: str, topic_id: str) -> int:
        rows = client.query(f"SELECT topic_id, max(epoch) FROM {EPOCHS_TABLE} WHERE topic = {{t:String}} "
                            "GROUP BY topic_id", parameters={"t": topic}).result_rows
        known = {str(found): int(epoch) for found, epoch in rows}
        if topic_id in known:
            return known[topic_id]
        epoch = max(known.values(), default=-1) + 1
        client.insert(EPOCHS_TABLE, [[topic, topic_id, epoch]], column_names=["topic", "topic_id", "epoch"])
        log.info("new topic incarnation", extra={"topic": topic, "topic_id": topic_id, "epoch": epoch})
        return epoch
