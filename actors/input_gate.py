"""The ``InputGate``: one actor's view of its N input channels.

A subtask with several inputs (after a shuffle, a union, two upstream operators) reads
them through one gate. ``poll`` returns the next element from any channel that can give
one, without awaiting:

1. priority items first, from any channel, blocked or not (unaligned barriers,
   announcements and cancellation markers must never wait behind data);
2. then data, round robin over the channels that are neither blocked nor finished, so a
   busy channel cannot starve the others.

``block(i)`` stops data from channel ``i`` (its priority lane is still read): aligned
checkpoints block a channel that delivered barrier ``n`` until every channel has.
When a channel is closed and drained, ``poll`` returns ``(i, END_OF_CHANNEL)`` once for
it; when all are, ``finished`` is true and ``poll`` returns None.

The gate registers the owning actor's ``Waker`` as the consumer waker of every channel,
so ``wait_available`` is that waker's ``wait``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from actors.channel import EMPTY, END_OF_CHANNEL, Channel, _End
from actors.waker import Waker

T = TypeVar("T")


class InputGate(Generic[T]):
    """Reads N channels fairly, with priority events first and per-channel blocking.

    Args:
        channels: the input channels; index ``i`` in the gate is ``channels[i]``.
        waker: the owning actor's waker; a new one if omitted.
    """

    __slots__ = ("_blocked", "_channels", "_ended", "_next", "_open", "waker")

    def __init__(self, channels: Sequence[Channel[T]], waker: Waker | None = None) -> None:
        self._channels = list(channels)
        self.waker = waker if waker is not None else Waker()
        for channel in self._channels:
            channel.set_consumer_waker(self.waker)
        self._blocked = [False] * len(self._channels)
        self._ended = [False] * len(self._channels)
        self._open = len(self._channels)
        self._next = 0

    @property
    def channels(self) -> list[Channel[T]]:
        """The input channels, by index."""
        return self._channels

    @property
    def num_channels(self) -> int:
        """How many input channels the gate reads."""
        return len(self._channels)

    @property
    def finished(self) -> bool:
        """Whether every channel reported its end."""
        return self._open == 0

    def is_blocked(self, index: int) -> bool:
        """Whether data from channel ``index`` is held back."""
        return self._blocked[index]

    def is_ended(self, index: int) -> bool:
        """Whether channel ``index`` was closed and drained (and reported as such)."""
        return self._ended[index]

    def block(self, index: int) -> None:
        """Hold back data from channel ``index``; its priority lane is still read."""
        self._blocked[index] = True

    def unblock(self, index: int) -> None:
        """Let data from channel ``index`` flow again."""
        if self._blocked[index]:
            self._blocked[index] = False
            self.waker.wake()

    def unblock_all(self) -> None:
        """Unblock every channel."""
        if any(self._blocked):
            self._blocked = [False] * len(self._channels)
            self.waker.wake()

    @property
    def blocked_channels(self) -> list[int]:
        """Indices of the blocked channels."""
        return [i for i, b in enumerate(self._blocked) if b]

    @property
    def has_priority(self) -> bool:
        """Whether any channel's priority lane holds an item (no await)."""
        for channel in self._channels:
            if channel.has_priority:
                return True
        return False

    def poll_priority(self) -> tuple[int, T] | None:
        """Take the next priority item of any channel, lowest index first."""
        for index, channel in enumerate(self._channels):
            if channel.has_priority:
                return index, channel.poll_priority()  # type: ignore[return-value]
        return None

    def poll(self) -> tuple[int, T | _End] | None:
        """Take the next element from any channel that can give one. Never blocks.

        Returns:
            ``(channel index, item)``; ``(index, END_OF_CHANNEL)`` once per channel when it
            is closed and drained; None when nothing is available now (or ever, once
            ``finished``).
        """
        channels = self._channels
        for index, channel in enumerate(channels):
            if channel.has_priority:
                return index, channel.poll_priority()  # type: ignore[return-value]
        n = len(channels)
        start = self._next
        blocked = self._blocked
        ended = self._ended
        for step in range(n):
            index = start + step
            if index >= n:
                index -= n
            if blocked[index] or ended[index]:
                continue
            item = channels[index].poll_data()
            if item is EMPTY:
                continue
            self._next = index + 1 if index + 1 < n else 0
            if item is END_OF_CHANNEL:
                ended[index] = True
                self._open -= 1
            return index, item  # type: ignore[return-value]
        return None

    async def wait_available(self) -> None:
        """Wait until something may have arrived (a wake-up of the actor's waker)."""
        await self.waker.wait()
