"""The two ends of a channel between subtasks in different worker processes.

Both are ``actors.Channel`` subclasses, so record writers, input gates and barrier
handlers use them unchanged.

``RemoteSender`` (in the producer's worker): an item goes straight to the socket while
the sender has credit and nothing queued ahead of it; otherwise it waits in the local
data lane, bounded by the channel's capacity as in one process (a full lane is
backpressure). Credits from the receiver send queued items on. Priority items
(unaligned barriers, cancellation markers) are written at once, overtaking the local
queue, which an unaligned barrier records as output channel state (``queued()``).

``RemoteReceiver`` (in the consumer's worker): frames land in the data lane (never more
than the credits granted, its capacity); each item the consumer takes grants one credit
back (granted in one frame per loop turn). An unaligned barrier overtakes the frames
queued here too: it is queued behind them and announced on the priority lane, and the
barrier handler promotes it, recording the overtaken frames as input channel state
(``BarrierHandler.on_announcement``). Announcements of aligned barriers are dropped: an
alignment that times out records the channel until its barrier arrives instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from actors import Channel
from actors.channel import EMPTY, END_OF_CHANNEL
from runtime.checkpoint.events import BarrierAnnouncement, CheckpointBarrier
from runtime.cluster.network import CLOSE, CREDIT, DATA, PRIORITY, PeerLink


class RemoteSender(Channel[Any]):
    """The producer's end: a bounded local queue in front of a credit-limited socket."""

    __slots__ = ("_close_sent", "channel_id", "credit", "link", "notified")

    def __init__(
        self,
        capacity: int,
        *,
        name: str,
        channel_id: int,
        notified: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__(capacity, name=name)
        self.channel_id = channel_id
        self.credit = 0
        self.link: PeerLink | None = None
        self.notified = notified
        self._close_sent = False

    def try_send(self, item: Any) -> bool:
        """As ``Channel``'s (see the module docstring for the network part)."""
        if self.credit > 0 and not self._data and self.link is not None and not self._closed:
            self.credit -= 1
            self._sent += 1
            self.link.send(DATA, self.channel_id, item)
            return True
        return super().try_send(item)

    def force_send(self, item: Any) -> None:
        """As ``Channel``'s (see the module docstring for the network part)."""
        if self.credit > 0 and not self._data and self.link is not None and not self._closed:
            self.credit -= 1
            self._sent += 1
            self.link.send(DATA, self.channel_id, item)
            return
        super().force_send(item)

    def send_priority(self, item: Any) -> None:
        """As ``Channel``'s (see the module docstring for the network part)."""
        if self.link is None:
            super().send_priority(item)  # sent when the link is attached
            return
        if self._closed:
            return
        self._sent_priority += 1
        self.link.send(PRIORITY, self.channel_id, item)

    def close(self) -> None:
        """As ``Channel``'s (see the module docstring for the network part)."""
        if not self._closed:
            self._closed = True
            self._flush()

    def grant(self, credits: int) -> None:
        """The receiver granted ``credits`` more items: send what waits."""
        self.credit += credits
        self._flush()

    def attach(self, link: PeerLink) -> None:
        """Connect to the peer (before the producer runs)."""
        self.link = link
        while self._priority:
            link.send(PRIORITY, self.channel_id, self._priority.popleft())
        self._flush()

    def _flush(self) -> None:
        link = self.link
        if link is None:
            return
        data = self._data
        while data and self.credit > 0:
            was_full = len(data) >= self.capacity
            item = data.popleft()
            self.credit -= 1
            link.send(DATA, self.channel_id, item)
            if was_full and self._producer_waker is not None:
                self._producer_waker.wake()
        if self._closed and not data and not self._close_sent:
            self._close_sent = True
            link.send(CLOSE, self.channel_id, self.notified())


class RemoteReceiver(Channel[Any]):
    """The consumer's end: frames from the socket, one credit back per item taken."""

    __slots__ = (
        "_close_at",
        "_grant_scheduled",
        "_injected",
        "_owed",
        "channel_id",
        "link",
        "notified",
    )

    def __init__(
        self,
        capacity: int,
        *,
        name: str,
        channel_id: int,
        notified: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__(capacity, name=name)
        self.channel_id = channel_id
        self.link: PeerLink | None = None
        self.notified = notified
        self._close_at: int | None = None
        self._owed = 0
        self._grant_scheduled = False
        self._injected: set[int] = set()

    def attach(self, link: PeerLink) -> None:
        """Connect to the peer and grant the first credits (the capacity)."""
        self.link = link
        link.send(CREDIT, self.channel_id, self.capacity)

    def on_frame(self, kind: int, item: Any) -> None:
        """A frame of this channel arrived."""
        if kind == DATA:
            Channel.force_send(self, item)
        elif kind == PRIORITY:
            if isinstance(item, BarrierAnnouncement):
                return
            if isinstance(item, CheckpointBarrier) and self._data:
                # Overtake the frames queued here: the handler promotes the barrier and
                # records what it overtook as input channel state.
                self._data.append(item)
                self._injected.add(id(item))
                Channel.send_priority(self, BarrierAnnouncement(item))
                return
            Channel.send_priority(self, item)
        elif kind == CLOSE:
            # The producer ended after a notification (a final checkpoint, a completed
            # stop-with-savepoint): the consumer must have it before the end of its
            # input, as in one process, where every task is notified at once.
            if item <= self.notified():
                Channel.close(self)
            else:
                self._close_at = item

    def on_notified(self, checkpoint_id: int) -> None:
        """This worker was notified of ``checkpoint_id``: deliver a close waiting for it."""
        if self._close_at is not None and checkpoint_id >= self._close_at:
            self._close_at = None
            Channel.close(self)

    def poll_data(self) -> Any:
        """As ``Channel``'s (see the module docstring for the network part)."""
        item = super().poll_data()
        if item is not EMPTY and item is not END_OF_CHANNEL:
            if id(item) in self._injected:
                self._injected.discard(id(item))
            else:
                self._owe()
        return item

    def promote(self, item: Any) -> list[Any] | None:
        """As ``Channel``'s (see the module docstring for the network part)."""
        self._injected.discard(id(item))
        return super().promote(item)

    def _owe(self) -> None:
        self._owed += 1
        if not self._grant_scheduled:
            self._grant_scheduled = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        self._grant_scheduled = False
        owed, self._owed = self._owed, 0
        if owed and self.link is not None:
            self.link.send(CREDIT, self.channel_id, owed)
