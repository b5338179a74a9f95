-- sink_topic_epochs: each Kafka topic id a ClickHouse sink has read from, numbered per topic name (the first 0). A sink stores a
-- row's source offset as epoch << 44 | offset (processors/shoppulse/sink/topic_epochs.py), so rows of a topic that was deleted
-- and created again (offsets from 0 again) are written instead of being fenced as replays of the old topic's rows.
CREATE TABLE IF NOT EXISTS sink_topic_epochs
(
    topic      String,
    topic_id   String,
    epoch      UInt32,
    first_seen DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, topic_id);
