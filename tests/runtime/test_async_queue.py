"""The in-flight queue of async I/O (``runtime.tasks.async_queue``), without an event loop.

A Hypothesis state machine adds records, completes calls in any order and takes what
may leave, against a model: ordered queues release results in input order and never
past an incomplete call; unordered ones release each completed call once, in completion
order; no queue holds more than its capacity, and ``entries()`` (what a checkpoint
stores) is exactly what was added and not released.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runtime.tasks.async_queue import Entry, InFlightQueue


class QueueMachine(RuleBasedStateMachine):
    """Drives one ``InFlightQueue`` and a model of it."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = InFlightQueue(1, True)
        self.entries: list[Entry] = []  # added, not released, in input order
        self.completed: list[Entry] = []  # completion order, not released
        self.released: list[Any] = []
        self.expected: dict[int, list[Any]] = {}  # id(entry) -> its outputs
        self.next = 0

    @initialize(capacity=st.integers(1, 6), ordered=st.booleans())
    def setup(self, capacity: int, ordered: bool) -> None:
        self.queue = InFlightQueue(capacity, ordered)

    @precondition(lambda self: not self.queue.is_full)
    @rule(outputs=st.integers(0, 2))
    def add(self, outputs: int) -> None:
        record = self.next
        self.next += 1
        entry = self.queue.add(record)
        self.expected[id(entry)] = [f"{record}.{i}" for i in range(outputs)]
        self.entries.append(entry)

    @precondition(lambda self: not self.queue.is_full)
    @rule()
    def add_restored_completed(self) -> None:
        record = self.next
        self.next += 1
        entry = self.queue.add_completed(record, [f"{record}.r"])
        self.expected[id(entry)] = [f"{record}.r"]
        self.entries.append(entry)
        self.completed.append(entry)

    @precondition(lambda self: any(not e.done for e in self.entries))
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        pending = [e for e in self.entries if not e.done]
        entry = data.draw(st.sampled_from(pending))
        self.queue.complete(entry, list(self.expected[id(entry)]))
        self.completed.append(entry)

    @rule()
    def pop(self) -> None:
        out = self.queue.pop_ready()
        if self.queue.ordered:
            expected: list[Any] = []
            while self.entries and self.entries[0].done:
                entry = self.entries.pop(0)
                self.completed.remove(entry)
                expected.extend(self.expected[id(entry)])
        else:
            expected = []
            for entry in self.completed:
                expected.extend(self.expected[id(entry)])
                self.entries.remove(entry)
            self.completed = []
        assert out == expected
        self.released.extend(out)

    @invariant()
    def bounded(self) -> None:
        assert len(self.queue) == len(self.entries) <= self.queue.capacity
        assert self.queue.is_full == (len(self.entries) >= self.queue.capacity)
        assert self.queue.in_flight == sum(1 for e in self.entries if not e.done)

    @invariant()
    def snapshot_is_what_was_not_released(self) -> None:
        stored = self.queue.entries()
        assert sorted(e.record for e in stored) == sorted(e.record for e in self.entries)
        if self.queue.ordered:
            assert [e.record for e in stored] == [e.record for e in self.entries]

    @invariant()
    def ready_means_pop_gives(self) -> None:
        if self.queue.ordered:
            assert self.queue.has_ready == bool(self.entries and self.entries[0].done)
        else:
            assert self.queue.has_ready == bool(self.completed)


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_ordered_holds_back_results_behind_an_incomplete_call() -> None:
    queue = InFlightQueue(3, ordered=True)
    first, second = queue.add("a"), queue.add("b")
    queue.complete(second, ["B"])
    assert queue.pop_ready() == []
    assert queue.is_full is False and len(queue) == 2
    queue.complete(first, ["A1", "A2"])
    assert queue.pop_ready() == ["A1", "A2", "B"]
    assert len(queue) == 0


def test_unordered_releases_in_completion_order_and_keeps_slots_until_released() -> None:
    queue = InFlightQueue(2, ordered=False)
    first, second = queue.add("a"), queue.add("b")
    queue.complete(second, ["B"])
    assert queue.is_full, "a completed entry keeps its slot until its results leave"
    queue.complete(first, [])
    assert queue.pop_ready() == ["B"]
    assert not queue.is_full and len(queue) == 0


def test_completing_twice_is_ignored() -> None:
    queue = InFlightQueue(1, ordered=False)
    entry = queue.add("a")
    queue.complete(entry, ["A"])
    queue.complete(entry, ["again"])
    assert queue.pop_ready() == ["A"]


def test_add_on_a_full_queue_is_our_bug() -> None:
    queue = InFlightQueue(1, ordered=True)
    queue.add("a")
    with pytest.raises(AssertionError):
        queue.add("b")
