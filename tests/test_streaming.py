"""Building a processor's Quix application survives a topic that a KRaft broker has not shown yet."""

from __future__ import annotations

import pytest
from quixstreams.models.topics.exceptions import TopicNotFoundError

from shoppulse.streaming import built_once_topics_are_visible


def test_a_topic_not_visible_yet_is_waited_for_a_few_times_then_reported() -> None:
    calls: list[int] = []

    def build_after(failures: int) -> object:
        calls.append(1)
        if len(calls) <= failures:
            raise TopicNotFoundError('Topic "changelog__shoppulse-aggregate--x" not found on the broker')
        return "app"

    assert built_once_topics_are_visible(lambda: build_after(2), attempts=3, pause_s=0) == "app"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(TopicNotFoundError, match="changelog"):
        built_once_topics_are_visible(lambda: build_after(5), attempts=3, pause_s=0)
    assert len(calls) == 3
