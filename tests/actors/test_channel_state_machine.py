"""A Hypothesis state machine: ``Channel`` against a model of two deques and a flag."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors import EMPTY, END_OF_CHANNEL, Channel, ChannelClosedError, Waker


@dataclass(eq=False)
class Item:
    """A unique queued object (compared by identity, as ``promote`` does)."""

    serial: int
    forced: bool = False


class ChannelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.serial = 0
        self.data: deque[Item] = deque()
        self.priority: deque[Item] = deque()
        self.closed = False
        self.sent = self.sent_priority = self.received = self.refused = 0
        self.max_queued = 0
        # Wake-ups the channel owes since the wakers were last replaced. Spurious
        # wake-ups are allowed; missing ones are not.
        self.consumer_owed = False
        self.producer_owed = False

    @initialize(capacity=st.integers(1, 4))
    def create(self, capacity: int) -> None:
        self.capacity = capacity
        self.channel: Channel[Item] = Channel(capacity, name="machine")
        self.fresh_wakers()

    # -- helpers -------------------------------------------------------------------------

    def new_item(self, *, forced: bool = False) -> Item:
        self.serial += 1
        return Item(self.serial, forced)

    def queued_into_data(self, item: Item) -> None:
        self.data.append(item)
        self.sent += 1
        self.max_queued = max(self.max_queued, len(self.data))
        self.consumer_owed = True

    def took_from_data(self, index: int) -> Item:
        was_full = len(self.data) >= self.capacity
        item = self.data[index]
        del self.data[index]
        if was_full and len(self.data) < self.capacity:
            self.producer_owed = True
        return item

    def expect_closed_error(self, send, item: Item) -> None:
        with pytest.raises(ChannelClosedError, match="channel 'machine' is closed"):
            send(item)

    # -- producer rules ------------------------------------------------------------------

    @rule()
    def try_send(self) -> None:
        item = self.new_item()
        if self.closed:
            self.expect_closed_error(self.channel.try_send, item)
            return
        accepted = self.channel.try_send(item)
        assert accepted == (len(self.data) < self.capacity)
        if accepted:
            self.queued_into_data(item)
        else:
            self.refused += 1

    @rule()
    def force_send(self) -> None:
        item = self.new_item(forced=True)
        if self.closed:
            self.expect_closed_error(self.channel.force_send, item)
            return
        self.channel.force_send(item)
        self.queued_into_data(item)

    @rule()
    def send_priority(self) -> None:
        item = self.new_item()
        if self.closed:
            self.expect_closed_error(self.channel.send_priority, item)
            return
        self.channel.send_priority(item)
        self.priority.append(item)
        self.sent_priority += 1
        self.consumer_owed = True

    @rule()
    def close(self) -> None:
        self.channel.close()
        if not self.closed:
            self.consumer_owed = True
        self.closed = True

    # -- consumer rules ------------------------------------------------------------------

    def expected_end_or_empty(self) -> object:
        if self.closed and not self.data and not self.priority:
            return END_OF_CHANNEL
        return EMPTY

    @rule()
    def poll(self) -> None:
        got = self.channel.poll()
        if self.priority:
            assert got is self.priority.popleft()
            self.received += 1
        elif self.data:
            assert got is self.took_from_data(0)
            self.received += 1
        else:
            assert got is self.expected_end_or_empty()

    @rule()
    def poll_data(self) -> None:
        got = self.channel.poll_data()
        if self.data:
            assert got is self.took_from_data(0)
            self.received += 1
        else:
            assert got is self.expected_end_or_empty()

    @rule()
    def poll_priority(self) -> None:
        got = self.channel.poll_priority()
        if self.priority:
            assert got is self.priority.popleft()
            self.received += 1
        else:
            assert got is EMPTY

    @precondition(lambda self: self.data)
    @rule(data=st.data())
    def promote_queued(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.data) - 1), label="index")
        target = self.data[index]
        overtaken = self.channel.promote(target)
        assert overtaken is not None
        assert [id(item) for item in overtaken] == [id(item) for item in list(self.data)[:index]]
        self.took_from_data(index)
        self.priority.append(target)
        self.consumer_owed = True

    @rule()
    def promote_absent(self) -> None:
        assert self.channel.promote(self.new_item()) is None
        if self.priority:
            assert self.channel.promote(self.priority[0]) is None

    @rule()
    def fresh_wakers(self) -> None:
        self.producer, self.consumer = Waker(), Waker()
        self.channel.set_producer_waker(self.producer)
        self.channel.set_consumer_waker(self.consumer)
        self.producer_owed = self.consumer_owed = False

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def lanes_match_the_model_in_order(self) -> None:
        assert [id(i) for i in self.channel.queued()] == [id(i) for i in self.data]
        assert [id(i) for i in self.channel.queued_priority()] == [id(i) for i in self.priority]
        assert len(self.channel) == len(self.data)
        assert self.channel.has_data == bool(self.data)
        assert self.channel.has_priority == bool(self.priority)
        assert self.channel.closed == self.closed
        assert self.channel.drained == (self.closed and not self.data and not self.priority)

    @invariant()
    def only_forced_items_exceed_capacity(self) -> None:
        forced = sum(item.forced for item in self.data)
        assert len(self.data) <= self.capacity + forced
        assert self.channel.writable == (len(self.data) < self.capacity)

    @invariant()
    def statistics_match_the_model(self) -> None:
        stats = self.channel.statistics()
        assert stats.capacity == self.capacity
        assert stats.queued == len(self.data)
        assert stats.queued_priority == len(self.priority)
        assert stats.max_queued == self.max_queued
        assert stats.sent == self.sent
        assert stats.sent_priority == self.sent_priority
        assert stats.received == self.received
        assert stats.refused == self.refused
        assert stats.closed == self.closed
        # Conservation: everything accepted was received or is still queued.
        assert stats.sent + stats.sent_priority == (
            stats.received + stats.queued + stats.queued_priority
        )

    @invariant()
    def owed_wakeups_were_delivered(self) -> None:
        if self.consumer_owed:
            assert self.consumer.pending
        if self.producer_owed:
            assert self.producer.pending


ChannelMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, database=None
)
TestChannelMachine = ChannelMachine.TestCase
