"""The network channel's ends over a real loopback connection, and the barrier handler
decision they rely on: credits, backpressure, overtaking on both sides, closing."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.channel import EMPTY, END_OF_CHANNEL
from runtime.checkpoint.barriers import (
    BarrierHandler,
    PromoteBarrier,
    StartRecording,
    TriggerSnapshot,
)
from runtime.checkpoint.events import (
    BarrierAnnouncement,
    CheckpointBarrier,
    CheckpointOptions,
)
from runtime.checkpoint.ids import CheckpointId
from runtime.cluster.network import PeerLink
from runtime.cluster.remote_channel import RemoteReceiver, RemoteSender

UNALIGNED = CheckpointBarrier(CheckpointId(1), 0.0, CheckpointOptions(unaligned=True))


class Pair:
    """A sender and a receiver joined by a loopback TCP connection."""

    def __init__(self, capacity: int, notified: list[int]) -> None:
        self.sender = RemoteSender(capacity, name="s", channel_id=7, notified=lambda: notified[0])
        self.receiver = RemoteReceiver(
            capacity, name="r", channel_id=7, notified=lambda: notified[1]
        )
        self.frames: asyncio.Queue[int] = asyncio.Queue()

    async def connect(self) -> None:
        accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(
            lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        their_reader, their_writer = await accepted
        server.close()

        def to_sender(kind: int, channel: int, item: Any) -> None:
            self.sender.grant(item)
            self.frames.put_nowait(kind)

        def to_receiver(kind: int, channel: int, item: Any) -> None:
            self.receiver.on_frame(kind, item)
            self.frames.put_nowait(kind)

        self.sender_link = PeerLink(reader, writer, to_sender)
        self.receiver_link = PeerLink(their_reader, their_writer, to_receiver)
        self.tasks = [
            asyncio.ensure_future(self.sender_link.read_forever()),
            asyncio.ensure_future(self.receiver_link.read_forever()),
        ]
        self.receiver.attach(self.receiver_link)
        self.sender.attach(self.sender_link)
        await self.frames.get()  # the first credits arrived

    async def frames_arrive(self, n: int) -> None:
        for _ in range(n):
            await self.frames.get()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.sender_link.close()
        self.receiver_link.close()


async def test_a_sender_without_credit_queues_and_is_full_at_capacity() -> None:
    pair = Pair(2, [0, 0])
    await pair.connect()
    assert pair.sender.credit == 2
    for i in range(4):
        assert pair.sender.try_send([i])
    assert pair.sender.credit == 0
    assert not pair.sender.try_send([4])  # 2 in flight, 2 queued: full (backpressure)
    assert pair.sender.queued() == ([2], [3])
    await pair.frames_arrive(2)
    assert pair.receiver.poll() == [0]  # one credit back, one queued buffer goes on
    await pair.frames_arrive(2)  # the credit, then the buffer
    assert pair.sender.queued() == ([3],)
    assert [pair.receiver.poll() for _ in range(2)] == [[1], [2]]
    await pair.close()


async def test_an_unaligned_barrier_overtakes_the_queues_of_both_ends() -> None:
    pair = Pair(2, [0, 0])
    await pair.connect()
    for i in range(3):
        pair.sender.try_send([i])
    pair.sender.send_priority(UNALIGNED)  # ahead of [2], still queued at the sender
    assert pair.sender.queued() == ([2],)  # what an unaligned snapshot records
    await pair.frames_arrive(3)
    # At the receiver the barrier is queued behind [0], [1] and announced.
    assert pair.receiver.queued() == ([0], [1], UNALIGNED)
    announcement = pair.receiver.poll()
    assert announcement == BarrierAnnouncement(UNALIGNED)
    overtaken = pair.receiver.promote(announcement.barrier)  # what the handler asks
    assert overtaken == [[0], [1]]
    assert pair.receiver.poll() is announcement.barrier
    assert pair.receiver.poll() == [0]
    await pair.close()


def test_an_announced_unaligned_barrier_snapshots_and_is_promoted() -> None:
    handler = BarrierHandler(2)
    actions = handler.on_announcement(1, UNALIGNED, now=0.0)
    assert [type(a) for a in actions] == [TriggerSnapshot, StartRecording, PromoteBarrier]
    assert actions[1] == StartRecording(CheckpointId(1), (0, 1))
    assert actions[2] == PromoteBarrier(CheckpointId(1), 1, UNALIGNED)


async def test_a_close_after_a_notification_waits_for_it_at_the_receiver() -> None:
    notified = [5, 4]  # the producer's worker was notified of 5, the consumer's of 4
    pair = Pair(2, notified)
    await pair.connect()
    pair.sender.try_send([1])
    pair.sender.close()
    await pair.frames_arrive(2)
    assert pair.receiver.poll() == [1]
    assert pair.receiver.poll() is EMPTY  # not the end yet
    notified[1] = 5
    pair.receiver.on_notified(5)
    assert pair.receiver.poll() is END_OF_CHANNEL
    await pair.close()
