"""``TriggerRules``: interval, minimum pause and maximum concurrency of periodic triggers.

The property test plays the coordinator's loop: time passes, pending checkpoints finish
(complete or fail), and at every moment the coordinator triggers as long as the rules
say so. The rules must never allow more than ``max_concurrent`` pending checkpoints, a
trigger before ``last_finished + min_pause``, or two triggers less than ``interval``
apart (the first no earlier than one interval after the start); and they must allow the
trigger as soon as all three hold (Flink's ``CheckpointRequestDecider``).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.checkpoint.trigger_rules import TriggerRules

events = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 7)),
        st.tuples(st.just("finish"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    interval=st.integers(1, 5),
    min_pause=st.integers(0, 6),
    max_concurrent=st.integers(1, 3),
    start=st.integers(0, 100),
    events=events,
)
def test_triggers_respect_interval_min_pause_and_max_concurrent(
    interval: int, min_pause: int, max_concurrent: int, start: int, events: list
) -> None:
    rules = TriggerRules(float(interval), float(min_pause), max_concurrent)
    now = float(start)
    rules.start(now)
    pending = 0
    last_trigger: float | None = None
    last_finished: float | None = None
    triggers = 0

    def earliest() -> float:
        due = (start if last_trigger is None else last_trigger) + interval
        if last_finished is not None:
            due = max(due, last_finished + min_pause)
        return due

    for kind, amount in events:
        if kind == "advance":
            now += amount
        elif pending:
            pending -= 1
            rules.finished(now)
            last_finished = now
        while rules.should_trigger(now, pending):
            assert pending < max_concurrent, f"{pending + 1} pending > max {max_concurrent}"
            assert now >= earliest(), f"triggered at {now}, earliest allowed {earliest()}"
            rules.triggered(now)
            pending += 1
            triggers += 1
            last_trigger = now
        # Nothing withheld: the rules allow a trigger exactly when all three hold.
        assert pending >= max_concurrent or now < earliest()
        next_time = rules.next_trigger_time(now, pending)
        if pending >= max_concurrent:
            assert next_time is None
        else:
            assert next_time == earliest()
    assert triggers <= (now - start) // interval


def test_first_trigger_is_one_interval_after_start() -> None:
    rules = TriggerRules(interval=10.0)
    rules.start(100.0)
    assert not rules.should_trigger(109.9, 0)
    assert rules.should_trigger(110.0, 0)
    assert rules.next_trigger_time(100.0, 0) == 110.0


def test_min_pause_counts_from_the_last_completion() -> None:
    rules = TriggerRules(interval=10.0, min_pause=8.0)
    rules.start(0.0)
    rules.triggered(10.0)
    rules.finished(18.0)
    assert rules.next_trigger_time(18.0, 0) == 26.0  # not 20: the pause is longer
    assert not rules.should_trigger(25.0, 0)
    assert rules.should_trigger(26.0, 0)


def test_no_trigger_while_max_concurrent_are_pending() -> None:
    rules = TriggerRules(interval=1.0, max_concurrent=2)
    rules.start(0.0)
    assert rules.should_trigger(5.0, 1)
    assert not rules.should_trigger(5.0, 2)
    assert rules.next_trigger_time(5.0, 2) is None


@pytest.mark.parametrize("min_pause", [0.0, 3.0])
def test_interval_counts_from_the_previous_trigger(min_pause: float) -> None:
    rules = TriggerRules(interval=5.0, min_pause=min_pause)
    rules.start(0.0)
    rules.triggered(7.5)  # late, e.g. a slot was busy
    assert rules.next_trigger_time(7.5, 0) == 12.5
    assert not rules.should_trigger(math.nextafter(12.5, 0.0), 0)
    assert rules.should_trigger(12.5, 0)
