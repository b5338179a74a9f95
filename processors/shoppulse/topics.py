"""The Kafka topics of the pipeline, created on purpose (the local broker never auto-creates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
# The history the pipeline keeps replayable: two weeks, what a backtest of the detection replays. The raw and
# clean topics keep a day more, so that a backfill of the whole history (stamped with its own time, as the
# events happened) is sent and read before the broker deletes its oldest events — it deletes by timestamp,
# read or not.
HISTORY_DAYS = 14
HISTORY_RETENTION_MS = (HISTORY_DAYS + 1) * DAY_MS
MONTH_MS = 30 * DAY_MS
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
                       {"retention.ms": str(HISTORY_RETENTION_MS), "max.message.bytes": str(RAW_MAX_MESSAGE_BYTES)})
CLEAN_EVENTS = TopicSpec("shop.events.clean", "validated, de-duplicated, PII-hashed events",
                         {"retention.ms": str(HISTORY_RETENTION_MS)})
DEAD_LETTERS = TopicSpec("shop.events.dead-letter", "rejected events with their reason and source offset",
                         {"retention.ms": str(MONTH_MS)})
PIPELINE_TOPICS = (RAW_EVENTS, CLEAN_EVENTS, DEAD_LETTERS)


def create_topics(bootstrap: str, partitions: int, replication: int = 1,
                  specs: tuple[TopicSpec, ...] = PIPELINE_TOPICS) -> list[str]:
    """Create the topics that do not exist yet, lengthen the retention of those that keep less than
    their spec asks (a topic created by an older version keeps its history too short), and wait until
    every one has a leader for each partition in the broker's metadata (a create returns before that,
    on KRaft especially); returns the names created now."""
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
        _keep_long_enough(admin, [s for s in specs if s.name in existing])
        try:
            admin.wait_for_topics([s.name for s in specs], timeout_ms=READY_WITHIN_MS)
        except KafkaTimeoutError as exc:
            raise RuntimeError(f"the broker at {bootstrap} did not make the topics ready within "
                               f"{READY_WITHIN_MS // 1000} s ({exc}); check the broker's log") from exc
        return created
    finally:
        admin.close()


def _keep_long_enough(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Raise each topic's ``retention.ms`` to its spec's where it is shorter; a longer one an operator set
    is kept."""
    wanted = {s.name: int(s.config["retention.ms"]) for s in specs if "retention.ms" in s.config}
    if not wanted:
        return
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"])
                                        for name in wanted], config_filter="all")
    for name, configs in described.get("topic", {}).items():
        current = int(configs["retention.ms"]["value"])
        if 0 <= current < wanted[name]:  # -1 keeps for ever
            result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                         {"retention.ms": str(wanted[name])})])
            outcome = result.get("topic", {}).get(name)
            if outcome != "OK":
                raise RuntimeError(f"topic {name} keeps {current} ms, less than the {wanted[name]} ms it needs, and "
                                   f"the broker refused to lengthen it ({outcome}); set its retention.ms by hand")
            log.info("topic retention raised",
                     extra={"topic": name, "retention_ms": wanted[name], "was_ms": current})
