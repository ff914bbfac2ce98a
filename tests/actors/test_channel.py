"""The bounded two-lane ``Channel``: capacity, backpressure, priority, close, promote."""

from __future__ import annotations

import asyncio
import re

import pytest

from actors import (
    EMPTY,
    END_OF_CHANNEL,
    Channel,
    ChannelClosedError,
    ChannelEmptyError,
    ChannelFullError,
    ChannelStatistics,
    EndOfChannel,
    Waker,
    WouldBlock,
)

NAME = "map[0]->count[1]"


class Event:
    """A queued event found by identity, like a checkpoint barrier."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"Event({self.label!r})"

    def __eq__(self, other: object) -> bool:
        # Equal to any event of the same label, so that identity lookups are tested.
        return isinstance(other, Event) and other.label == self.label


def drain(channel: Channel[object]) -> list[object]:
    """Poll until the channel gives nothing more; END_OF_CHANNEL is not included."""
    items = []
    while (item := channel.poll()) is not EMPTY and item is not END_OF_CHANNEL:
        items.append(item)
    return items


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, True, False, 1.5, "2", None])
def test_invalid_capacity_is_refused_naming_the_channel(capacity: object) -> None:
    expected = f"channel {NAME!r}: capacity must be an int >= 1, got {capacity!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Channel(capacity, name=NAME)  # type: ignore[arg-type]


def test_new_channel_is_empty_and_open() -> None:
    channel: Channel[int] = Channel(3, name=NAME)
    assert len(channel) == 0
    assert channel.writable
    assert not channel.closed
    assert not channel.drained
    assert not channel.has_data
    assert not channel.has_priority
    assert channel.poll() is EMPTY
    assert channel.queued() == ()
    assert channel.statistics() == ChannelStatistics(
        capacity=3,
        queued=0,
        queued_priority=0,
        max_queued=0,
        sent=0,
        sent_priority=0,
        received=0,
        refused=0,
        closed=False,
    )
    assert NAME in repr(channel)


# -- data lane ---------------------------------------------------------------------------


def test_data_lane_is_fifo() -> None:
    channel: Channel[int] = Channel(10)
    for i in range(10):
        assert channel.try_send(i)
    assert channel.queued() == tuple(range(10))
    assert [channel.poll() for _ in range(10)] == list(range(10))
    assert channel.poll() is EMPTY


def test_try_send_refuses_when_full_and_counts_the_refusal() -> None:
    channel: Channel[str] = Channel(2)
    assert channel.try_send("a")
    assert channel.try_send("b")
    assert not channel.writable
    assert channel.try_send("c") is False
    assert channel.try_send("c") is False
    assert channel.queued() == ("a", "b")
    stats = channel.statistics()
    assert (stats.sent, stats.refused, stats.queued) == (2, 2, 2)
    assert channel.poll() == "a"
    assert channel.writable
    assert channel.try_send("c")
    assert drain(channel) == ["b", "c"]


def test_send_nowait_raises_channel_full_error_naming_the_channel() -> None:
    channel: Channel[str] = Channel(1, name=NAME)
    channel.send_nowait("a")
    with pytest.raises(ChannelFullError, match=re.escape(f"channel {NAME!r} is full (1 items)")):
        channel.send_nowait("b")
    assert issubclass(ChannelFullError, WouldBlock)
    assert channel.queued() == ("a",)
    assert channel.statistics().refused == 1


async def test_send_waits_while_full_and_resumes_when_the_consumer_polls(spin) -> None:
    channel: Channel[str] = Channel(1)
    channel.try_send("a")
    sender = asyncio.create_task(channel.send("b"))
    await spin()
    assert not sender.done()  # backpressured
    assert channel.queued() == ("a",)
    assert channel.poll() == "a"  # frees room and wakes the sender
    await sender
    assert channel.queued() == ("b",)
    assert channel.statistics().sent == 2


async def test_send_restores_the_registered_producer_waker(spin) -> None:
    channel: Channel[str] = Channel(1)
    producer = Waker()
    channel.set_producer_waker(producer)
    channel.try_send("a")
    sender = asyncio.create_task(channel.send("b"))
    await spin()
    channel.poll()
    await sender
    assert not producer.pending  # the private waker was woken while send waited
    channel.poll()  # "b": room appears, the registered waker is woken again
    assert producer.pending


async def test_cancelled_send_leaves_the_item_unsent(spin) -> None:
    channel: Channel[str] = Channel(1)
    producer = Waker()
    channel.set_producer_waker(producer)
    channel.try_send("a")
    sender = asyncio.create_task(channel.send("b"))
    await spin()
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    assert channel.queued() == ("a",)
    assert channel.poll() == "a"
    assert channel.poll() is EMPTY
    assert producer.pending  # the registered waker is back in place


async def test_send_on_a_closed_channel_raises() -> None:
    channel: Channel[str] = Channel(1, name=NAME)
    channel.close()
    with pytest.raises(ChannelClosedError, match=re.escape(f"channel {NAME!r} is closed")):
        await channel.send("a")


def test_force_send_exceeds_capacity_and_keeps_order() -> None:
    channel: Channel[str] = Channel(2)
    channel.try_send("a")
    channel.try_send("b")
    channel.force_send("buffer")
    channel.force_send("barrier")
    assert len(channel) == 4
    assert not channel.writable
    assert not channel.try_send("c")
    stats = channel.statistics()
    assert (stats.queued, stats.max_queued, stats.sent, stats.refused) == (4, 4, 4, 1)
    assert drain(channel) == ["a", "b", "buffer", "barrier"]
    assert channel.statistics().max_queued == 4


def test_room_after_forced_items_needs_the_lane_below_capacity() -> None:
    channel: Channel[int] = Channel(2)
    for i in range(4):
        channel.force_send(i)
    channel.poll()
    channel.poll()
    assert not channel.writable  # 2 left of capacity 2
    channel.poll()
    assert channel.writable
    assert channel.try_send(9)
    assert drain(channel) == [3, 9]


# -- priority lane -------------------------------------------------------------------------


def test_priority_items_overtake_queued_data() -> None:
    channel: Channel[str] = Channel(3)
    channel.try_send("a")
    channel.try_send("b")
    channel.send_priority("p1")
    channel.send_priority("p2")
    assert channel.has_priority
    assert channel.queued() == ("a", "b")
    assert channel.queued_priority() == ("p1", "p2")
    assert [channel.poll() for _ in range(4)] == ["p1", "p2", "a", "b"]
    assert not channel.has_priority


def test_priority_lane_is_unbounded_and_does_not_take_data_room() -> None:
    channel: Channel[int] = Channel(1)
    for i in range(5):
        channel.send_priority(i)
    assert channel.writable
    assert channel.try_send(99)
    assert drain(channel) == [0, 1, 2, 3, 4, 99]


def test_poll_data_and_poll_priority_read_one_lane_each() -> None:
    channel: Channel[str] = Channel(3)
    channel.try_send("a")
    channel.send_priority("p")
    assert channel.poll_data() == "a"
    assert channel.poll_data() is EMPTY
    assert channel.poll_priority() == "p"
    assert channel.poll_priority() is EMPTY
    assert channel.statistics().received == 2


# -- close ----------------------------------------------------------------------------------


def test_close_delivers_queued_items_then_end_of_channel_forever() -> None:
    channel: Channel[str] = Channel(2, name=NAME)
    channel.try_send("a")
    channel.force_send("b")
    channel.force_send("c")
    channel.send_priority("p")
    channel.close()
    assert channel.closed
    assert not channel.drained
    assert drain(channel) == ["p", "a", "b", "c"]
    assert channel.drained
    for _ in range(3):
        assert channel.poll() is END_OF_CHANNEL
        assert channel.poll_data() is END_OF_CHANNEL
    assert channel.poll_priority() is EMPTY
    assert channel.statistics().closed


def test_close_is_idempotent() -> None:
    channel: Channel[str] = Channel(1)
    consumer = Waker()
    channel.set_consumer_waker(consumer)
    channel.close()
    assert consumer.pending
    consumer = Waker()
    channel.set_consumer_waker(consumer)
    channel.close()
    assert channel.closed
    assert not consumer.pending
    assert channel.poll() is END_OF_CHANNEL


def test_poll_data_does_not_report_the_end_while_priority_items_remain() -> None:
    channel: Channel[str] = Channel(1)
    channel.send_priority("p")
    channel.close()
    assert channel.poll_data() is EMPTY
    assert channel.poll() == "p"
    assert channel.poll_data() is END_OF_CHANNEL


@pytest.mark.parametrize("full", [False, True], ids=["room", "full"])
def test_every_send_after_close_raises_naming_the_channel(full: bool) -> None:
    channel: Channel[str] = Channel(1, name=NAME)
    if full:
        channel.try_send("a")
    channel.close()
    message = re.escape(f"channel {NAME!r} is closed")
    for send in (channel.try_send, channel.send_nowait, channel.force_send, channel.send_priority):
        with pytest.raises(ChannelClosedError, match=message):
            send("x")
    # A refusal on a closed channel is an error, not a backpressure refusal.
    assert channel.statistics().refused == 0
    assert channel.queued() == (("a",) if full else ())


def test_receive_nowait_raises_when_empty_or_ended() -> None:
    channel: Channel[str] = Channel(2, name=NAME)
    with pytest.raises(ChannelEmptyError, match=re.escape(f"channel {NAME!r} is empty")):
        channel.receive_nowait()
    channel.try_send("a")
    channel.close()
    assert channel.receive_nowait() == "a"
    with pytest.raises(EndOfChannel):
        channel.receive_nowait()


async def test_receive_waits_for_an_item_then_for_the_end(spin) -> None:
    channel: Channel[str] = Channel(2)
    consumer = Waker()
    channel.set_consumer_waker(consumer)
    receiver = asyncio.create_task(channel.receive())
    await spin()
    assert not receiver.done()
    channel.try_send("a")
    assert await receiver == "a"
    assert not consumer.pending  # receive woke its private waker, not this one
    channel.try_send("b")
    assert consumer.pending  # the registered consumer waker is back in place
    assert await channel.receive() == "b"
    receiver = asyncio.create_task(channel.receive())
    await spin()
    channel.close()
    with pytest.raises(EndOfChannel):
        await receiver


# -- queued() and promote() -----------------------------------------------------------------


def test_queued_is_an_immutable_copy() -> None:
    channel: Channel[str] = Channel(3)
    channel.try_send("a")
    channel.try_send("b")
    view = channel.queued()
    channel.poll()
    channel.try_send("c")
    assert view == ("a", "b")
    assert channel.queued() == ("b", "c")
    assert isinstance(view, tuple)


def test_promote_moves_the_item_to_the_priority_lane_and_returns_what_it_overtook() -> None:
    channel: Channel[object] = Channel(3)
    barrier = Event("barrier-7")
    channel.try_send("a")
    channel.try_send("b")
    channel.force_send(barrier)
    channel.force_send("c")
    overtaken = channel.promote(barrier)
    assert overtaken == ["a", "b"]
    assert channel.queued() == ("a", "b", "c")
    assert channel.queued_priority() == (barrier,)
    assert channel.poll() is barrier
    assert drain(channel) == ["a", "b", "c"]
    stats = channel.statistics()
    assert (stats.sent, stats.sent_priority, stats.received) == (4, 0, 4)


def test_promote_of_the_oldest_item_overtakes_nothing() -> None:
    channel: Channel[object] = Channel(2)
    barrier = Event("b")
    channel.try_send(barrier)
    channel.try_send("a")
    assert channel.promote(barrier) == []
    assert drain(channel) == [barrier, "a"]


def test_promote_appends_behind_earlier_priority_items() -> None:
    channel: Channel[object] = Channel(2)
    barrier = Event("b")
    channel.try_send(barrier)
    channel.send_priority("announcement")
    channel.promote(barrier)
    assert channel.queued_priority() == ("announcement", barrier)


def test_promote_finds_items_by_identity_and_returns_none_when_absent() -> None:
    channel: Channel[object] = Channel(3)
    queued = Event("b")
    channel.try_send("a")
    channel.try_send(queued)
    assert channel.promote(Event("b")) is None  # equal, but not the queued object
    assert channel.promote("missing") is None
    assert channel.queued() == ("a", queued)
    assert channel.queued_priority() == ()
    channel.promote(queued)
    assert channel.promote(queued) is None  # already on the priority lane


# -- wakers ---------------------------------------------------------------------------------


def wired(capacity: int) -> tuple[Channel[object], Waker, Waker]:
    channel: Channel[object] = Channel(capacity)
    producer, consumer = Waker(), Waker()
    channel.set_producer_waker(producer)
    channel.set_consumer_waker(consumer)
    return channel, producer, consumer


@pytest.mark.parametrize(
    "arrive",
    [
        lambda channel: channel.try_send("x"),
        lambda channel: channel.send_nowait("x"),
        lambda channel: channel.force_send("x"),
        lambda channel: channel.send_priority("x"),
        lambda channel: channel.close(),
    ],
    ids=["try_send", "send_nowait", "force_send", "send_priority", "close"],
)
def test_arrivals_and_close_wake_the_consumer(arrive) -> None:
    channel, producer, consumer = wired(1)
    arrive(channel)
    assert consumer.pending
    assert not producer.pending


def test_promote_wakes_the_consumer() -> None:
    channel, _, consumer = wired(2)
    barrier = Event("b")
    channel.try_send(barrier)
    consumer = Waker()
    channel.set_consumer_waker(consumer)
    channel.promote(barrier)
    assert consumer.pending


@pytest.mark.parametrize("take", ["poll", "poll_data", "promote"])
def test_freeing_room_in_a_full_lane_wakes_the_producer(take: str) -> None:
    channel, producer, _ = wired(2)
    first = Event("first")
    channel.try_send(first)
    channel.try_send("second")
    assert not channel.try_send("third")
    assert not producer.pending
    if take == "promote":
        channel.promote(first)
    else:
        getattr(channel, take)()
    assert channel.writable
    assert producer.pending


def test_unregistered_wakers_are_not_woken() -> None:
    channel, producer, consumer = wired(1)
    channel.set_producer_waker(None)
    channel.set_consumer_waker(None)
    channel.try_send("a")
    channel.poll()
    assert not producer.pending
    assert not consumer.pending


# -- statistics -----------------------------------------------------------------------------


def test_statistics_count_every_lane() -> None:
    channel: Channel[str] = Channel(2, name=NAME)
    channel.try_send("a")
    channel.try_send("b")
    channel.try_send("refused")
    channel.force_send("forced")
    channel.send_priority("p")
    channel.poll()  # p
    channel.poll()  # a
    stats = channel.statistics()
    assert stats == ChannelStatistics(
        capacity=2,
        queued=2,
        queued_priority=0,
        max_queued=3,
        sent=3,
        sent_priority=1,
        received=2,
        refused=1,
        closed=False,
    )
    # statistics() is a snapshot, not a live view.
    channel.poll()
    assert stats.received == 2
    assert channel.statistics().received == 3
