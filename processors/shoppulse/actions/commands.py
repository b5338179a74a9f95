"""Command messages on a Kafka topic: the other way a policy acts (a shop service consumes the topic).

Each command is produced with the action's id in an ``Idempotency-Key`` header (the rollback's own
key for a rollback), by an idempotent producer that waits for every in-sync replica (``acks=all``),
so the broker's own retries never duplicate it. A crash between the broker's acknowledgement and the
audit's record sends the command again on the next pass with the same key: a consumer acts on a key
once (as the shop's admin API does for HTTP calls), which is the contract a command topic's
consumer must keep. The outcome records the partition and offset the command landed at.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from shoppulse.actions.execute import Outcome

DELIVERY_TIMEOUT_MS = 10_000


class KafkaCommandSender:
    """Produces the rendered ``{"kafka": {topic, key, message}}`` calls to the cluster at ``bootstrap``."""

    def __init__(self, bootstrap: str, client_id: str = "shoppulse-actions") -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "acks": "all",
                                   "enable.idempotence": True, "message.timeout.ms": DELIVERY_TIMEOUT_MS})

    def missing_topics(self, topics: list[str], timeout_s: float = 10.0) -> list[str]:
        """Those of ``topics`` the cluster does not have (a command topic is the shop's to create)."""
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise ConnectionError(f"cannot read the Kafka cluster's topics: {exc}") from exc
        return [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]

    def send(self, request: dict[str, Any], idempotency_key: uuid.UUID) -> Outcome:
        command = request["kafka"]
        try:
            if self.missing_topics([command["topic"]]):
                return Outcome(False, None, None, 0, f"the topic {command['topic']} does not exist on the cluster: "
                                                     "create it, or fix the policy's topic")
        except ConnectionError as exc:
            return Outcome(False, None, None, 0, str(exc))
        delivered: list[tuple[KafkaError | None, Message]] = []
        try:
            self._producer.produce(command["topic"], key=str(command["key"]).encode(),
                                   value=json.dumps(command["message"], sort_keys=True).encode(),
                                   headers=[("Idempotency-Key", str(idempotency_key).encode()),
                                            ("Content-Type", b"application/json")],
                                   on_delivery=lambda error, message: delivered.append((error, message)))
        except (BufferError, KafkaException) as exc:
            return Outcome(False, None, None, 1, f"the command was not produced: {exc}")
        self._producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 5)
        if not delivered:
            return Outcome(False, None, None, 1, "the broker did not acknowledge the command in time")
        error, message = delivered[0]
        if error is not None:
            return Outcome(False, None, None, 1, f"the broker refused the command: {error.str()}")
        return Outcome(True, None, {"topic": message.topic(), "partition": message.partition(),
                                    "offset": message.offset()}, 1)

