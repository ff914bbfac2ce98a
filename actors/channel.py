"""The bounded ``Channel``: how buffers travel from one actor to another.

A channel connects one producer actor to one consumer actor (a subtask's output
subpartition to a downstream subtask's input, in Flink's words). It has two lanes:

* the **data lane**, a FIFO of at most ``capacity`` items. ``try_send`` refuses an item
  while the lane is full, and the producer then waits for room: this is the backpressure
  that slows a fast producer to its consumer's pace. Items are buffers (lists of records)
  and ordered events such as aligned checkpoint barriers.
* the **priority lane**, unbounded but used only for a handful of events that must
  overtake queued data (unaligned barriers, announcements, cancellation markers).
  ``poll`` always returns priority items first.

``queued()`` is a consistent view of the data lane (everything runs on one event loop
thread, so a view taken between two awaits cannot tear): an unaligned barrier records
it as the channel's in-flight state while the buffers themselves are still delivered.
``promote`` moves a queued event to the priority lane and returns what it overtook
(aligned barriers that time out become unaligned this way).

The producer owns ``try_send``, ``send``, ``force_send``, ``send_priority`` and ``close``;
the consumer owns ``poll``, ``receive`` and ``promote``. Producer and consumer register
their actor's ``Waker`` so that arrivals and freed room wake them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from actors.errors import ChannelClosedError, ChannelEmptyError, ChannelFullError, EndOfChannel
from actors.waker import Waker

T = TypeVar("T")


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()
"""Returned by ``Channel.poll`` when nothing can be received right now."""


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_CHANNEL"


END_OF_CHANNEL = _End()
"""Returned by ``Channel.poll`` once the channel is closed and drained."""


@dataclass(slots=True)
class ChannelStatistics:
    """Counters of one channel. Read them with ``Channel.statistics()``.

    Attributes:
        capacity: the data lane's bound, in items.
        queued: items in the data lane now.
        queued_priority: items in the priority lane now.
        max_queued: the most items the data lane ever held.
        sent: items accepted into the data lane (including forced ones).
        sent_priority: items put on the priority lane.
        received: items handed to the consumer from either lane.
        refused: ``try_send`` calls refused because the lane was full.
        closed: whether the producer closed the channel.
    """

    capacity: int
    queued: int
    queued_priority: int
    max_queued: int
    sent: int
    sent_priority: int
    received: int
    refused: int
    closed: bool


class Channel(Generic[T]):
    """A bounded two-lane FIFO between one producer and one consumer actor.

    Args:
        capacity: the most items the data lane holds before ``try_send`` refuses; >= 1.
        name: shown in errors and statistics, e.g. ``"map[0]->count[1]"``.
    """

    __slots__ = (
        "_closed",
        "_consumer_waker",
        "_data",
        "_max_queued",
        "_priority",
        "_producer_waker",
        "_received",
        "_refused",
        "_sent",
        "_sent_priority",
        "capacity",
        "name",
    )

    def __init__(self, capacity: int, *, name: str = "") -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self.name = name
        self._data: deque[T] = deque()
        self._priority: deque[T] = deque()
        self._closed = False
        self._consumer_waker: Waker | None = None
        self._producer_waker: Waker | None = None
        self._sent = 0
        self._sent_priority = 0
        self._received = 0
        self._refused = 0
        self._max_queued = 0

    def __repr__(self) -> str:
        return (
            f"Channel({self.name!r}, queued={len(self._data)}/{self.capacity}, "
            f"priority={len(self._priority)}, closed={self._closed})"
        )

    # -- wiring ---------------------------------------------------------------------------

    def set_consumer_waker(self, waker: Waker | None) -> None:
        """Register the waker woken when an item arrives or the channel is closed."""
        self._consumer_waker = waker

    def set_producer_waker(self, waker: Waker | None) -> None:
        """Register the waker woken when the consumer frees room in the data lane."""
        self._producer_waker = waker

    # -- producer side --------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Whether ``try_send`` would accept an item now."""
        return len(self._data) < self.capacity

    def try_send(self, item: T) -> bool:
        """Append ``item`` to the data lane if there is room. Never blocks.

        Returns:
            True if the item was queued, False if the lane is full (nothing changed).

        Raises:
            ChannelClosedError: the channel was closed.
        """
        data = self._data
        if len(data) >= self.capacity:
            if self._closed:
                raise ChannelClosedError(f"channel {self.name!r} is closed")
            self._refused += 1
            return False
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        data.append(item)
        self._sent += 1
        n = len(data)
        if n > self._max_queued:
            self._max_queued = n
        waker = self._consumer_waker
        if waker is not None:
            waker.wake()
        return True

    def send_nowait(self, item: T) -> None:
        """Like ``try_send`` but raises ``ChannelFullError`` when the lane is full."""
        if not self.try_send(item):
            raise ChannelFullError(f"channel {self.name!r} is full ({self.capacity} items)")

    async def send(self, item: T) -> None:
        """Append ``item`` to the data lane, waiting while it is full.

        Meant for tests and simple producers that own no other waker: it registers a
        private producer waker while it waits. Cancellation leaves the item unsent.
        """
        if self.try_send(item):
            return
        waker = Waker()
        previous = self._producer_waker
        self._producer_waker = waker
        try:
            while not self.try_send(item):
                await waker.wait()
        finally:
            self._producer_waker = previous

    def force_send(self, item: T) -> None:
        """Append ``item`` to the data lane even if it is full.

        For an ordered event (a barrier, end of input) that must follow the data already
        produced, or for the one buffer a producer holds when such an event must follow
        it. Each producer forces at most a bounded number of items (its pending buffer
        and the event), so memory stays bounded.
        """
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        self._data.append(item)
        self._sent += 1
        n = len(self._data)
        if n > self._max_queued:
            self._max_queued = n
        if self._consumer_waker is not None:
            self._consumer_waker.wake()

    def send_priority(self, item: T) -> None:
        """Put ``item`` on the priority lane, ahead of all queued data. Never blocks."""
        if self._closed:
            raise ChannelClosedError(f"channel {self.name!r} is closed")
        self._priority.append(item)
        self._sent_priority += 1
        if self._consumer_waker is not None:
            self._consumer_waker.wake()

    def close(self) -> None:
        """Close the producer side: end of input once the consumer drains what is queued.

        Idempotent. Items already queued are still delivered.
        """
        if not self._closed:
            self._closed = True
            if self._consumer_waker is not None:
                self._consumer_waker.wake()

    # -- consumer side --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the producer closed the channel."""
        return self._closed

    @property
    def has_priority(self) -> bool:
        """Whether the priority lane holds an item (a cheap check, no await)."""
        return bool(self._priority)

    @property
    def has_data(self) -> bool:
        """Whether the data lane holds an item."""
        return bool(self._data)

    @property
    def drained(self) -> bool:
        """Whether the channel is closed and both lanes are empty."""
        return self._closed and not self._data and not self._priority

    def __len__(self) -> int:
        return len(self._data)

    def poll(self) -> T | _Empty | _End:
        """Take the next item: priority lane first, then data. Never blocks.

        Returns:
            The item; ``EMPTY`` if nothing is queued; ``END_OF_CHANNEL`` if the channel is
            closed and drained (returned again on every later call).
        """
        if self._priority:
            self._received += 1
            return self._priority.popleft()
        return self.poll_data()

    def poll_data(self) -> T | _Empty | _End:
        """Take the next item of the data lane only, leaving the priority lane alone."""
        data = self._data
        if data:
            was_full = len(data) >= self.capacity
            item = data.popleft()
            self._received += 1
            if was_full and self._producer_waker is not None:
                self._producer_waker.wake()
            return item
        if self._closed and not self._priority:
            return END_OF_CHANNEL
        return EMPTY

    def poll_priority(self) -> T | _Empty:
        """Take the next item of the priority lane only."""
        if self._priority:
            self._received += 1
            return self._priority.popleft()
        return EMPTY

    def receive_nowait(self) -> T:
        """Take the next item or raise.

        Raises:
            ChannelEmptyError: nothing is queued and the channel is open.
            EndOfChannel: the channel is closed and drained.
        """
        item = self.poll()
        if item is EMPTY:
            raise ChannelEmptyError(f"channel {self.name!r} is empty")
        if item is END_OF_CHANNEL:
            raise EndOfChannel(self.name)
        return item  # type: ignore[return-value]

    async def receive(self) -> T:
        """Take the next item, waiting while the channel is empty and open.

        Like ``send``, for tests and simple consumers: registers a private consumer waker
        while it waits.

        Raises:
            EndOfChannel: the channel is closed and drained.
        """
        item = self.poll()
        if item is EMPTY:
            waker = Waker()
            previous = self._consumer_waker
            self._consumer_waker = waker
            try:
                while (item := self.poll()) is EMPTY:
                    await waker.wait()
            finally:
                self._consumer_waker = previous
        if item is END_OF_CHANNEL:
            raise EndOfChannel(self.name)
        return item  # type: ignore[return-value]

    def queued(self) -> tuple[T, ...]:
        """A consistent copy of the data lane, oldest first (nothing is removed)."""
        return tuple(self._data)

    def queued_priority(self) -> tuple[T, ...]:
        """A consistent copy of the priority lane, oldest first."""
        return tuple(self._priority)

    def promote(self, item: T) -> list[T] | None:
        """Move ``item`` (found by identity) from the data lane to the priority lane.

        The items queued ahead of it stay queued, in order, and are returned: the caller
        records them as in-flight data the promoted event overtook.

        Returns:
            The overtaken items, or None if ``item`` is not in the data lane.
        """
        data = self._data
        for index, queued in enumerate(data):
            if queued is item:
                overtaken = [data[i] for i in range(index)]
                was_full = len(data) >= self.capacity
                del data[index]
                self._priority.append(item)
                if was_full and self._producer_waker is not None:
                    self._producer_waker.wake()
                if self._consumer_waker is not None:
                    self._consumer_waker.wake()
                return overtaken
        return None

    def statistics(self) -> ChannelStatistics:
        """A copy of the channel's counters."""
        return ChannelStatistics(
            capacity=self.capacity,
            queued=len(self._data),
            queued_priority=len(self._priority),
            max_queued=self._max_queued,
            sent=self._sent,
            sent_priority=self._sent_priority,
            received=self._received,
            refused=self._refused,
            closed=self._closed,
        )
