"""Building a processor's Quix application survives a topic that a KRaft broker has not shown yet;
running it leaves what was built out of the garbage collector's full collections."""

from __future__ import annotations

import gc

import pytest
from quixstreams.models.topics.exceptions import TopicNotFoundError

from shoppulse.streaming import built_once_topics_are_visible, run_processor


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


class BuiltApp:
    def __init__(self) -> None:
        self.state = [[n] for n in range(1000)]  # what a built app holds: lists, tracked by the collector
        self.untracked_at_run: list[bool] = []

    def run(self) -> None:
        tracked = {id(o) for o in gc.get_objects()}
        self.untracked_at_run = [id(item) not in tracked for item in self.state]


def test_a_processor_runs_with_what_was_built_frozen() -> None:
    app = BuiltApp()
    assert all(gc.is_tracked(item) for item in app.state)
    try:
        run_processor(app)  # type: ignore[arg-type]
    finally:
        gc.unfreeze()
    assert all(app.untracked_at_run)
