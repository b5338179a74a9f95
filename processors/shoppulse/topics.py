"""The Kafka topics of the pipeline, created on purpose (the local broker never auto-creates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
MONTH_MS = 30 * 24 * 3600 * 1000
READY_WITHIN_MS = 30_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    config: dict[str, str] = field(default_factory=dict)


# The largest raw message the broker takes (Kafka's default, set explicitly so a broker configured otherwise
# does not change it): ingestion dead-letters anything over 16 KB with its head, size and digest.
RAW_MAX_MESSAGE_BYTES = 1_048_588
RAW_EVENTS = TopicSpec("shop.events.raw", "events as the shop sends them (untrusted bytes, at most 1 MiB each)",
                       {"retention.ms": str(WEEK_MS), "max.message.bytes": str(RAW_MAX_MESSAGE_BYTES)})
CLEAN_EVENTS = TopicSpec("shop.events.clean", "validated, de-duplicated, PII-hashed events",
                         {"retention.ms": str(WEEK_MS)})
DEAD_LETTERS = TopicSpec("shop.events.dead-letter", "rejected events with their reason and source offset",
                         {"retention.ms": str(MONTH_MS)})
PIPELINE_TOPICS = (RAW_EVENTS, CLEAN_EVENTS, DEAD_LETTERS)


def create_topics(bootstrap: str, partitions: int, replication: int = 1,
                  specs: tuple[TopicSpec, ...] = PIPELINE_TOPICS) -> list[str]:
    """Create the topics that do not exist yet and wait until every one has a leader for each
    partition in the broker's metadata (a create returns before that, on KRaft especially);
    returns the names created now."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="shoppulse-topics")
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created = []
        for spec in missing:
            try:
                admin.create_topics([NewTopic(spec.name, partitions, replication, topic_configs=spec.config)])
                created.append(spec.name)
                log.info("topic created", extra={"topic": spec.name, "partitions": partitions})
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
        try:
            admin.wait_for_topics([s.name for s in specs], timeout_ms=READY_WITHIN_MS)
        except KafkaTimeoutError as exc:
            raise RuntimeError(f"the broker at {bootstrap} did not make the topics ready within "
                               f"{READY_WITHIN_MS // 1000} s ({exc}); check the broker's log") from exc
        return created
    finally:
        admin.close()
