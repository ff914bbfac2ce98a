"""The kernel end to end: producers and a slow consumer over bounded channels."""

from __future__ import annotations

import asyncio

import pytest

from actors import END_OF_CHANNEL, Actor, ActorState, Channel, InputGate, Supervisor

BUFFERS = 1000
RECORDS_PER_BUFFER = 4


class Producer(Actor):
    """Emits ``BUFFERS`` buffers; waits on its own waker while the output is full."""

    def __init__(self, name: str, out: Channel[list[int]]) -> None:
        super().__init__(name)
        self.out = out
        out.set_producer_waker(self.waker)  # freed room wakes this actor

    async def run(self) -> None:
        for n in range(BUFFERS):
            buffer = [n * RECORDS_PER_BUFFER + k for k in range(RECORDS_PER_BUFFER)]
            while not self.out.try_send(buffer):
                await self.wait_backpressured()
        self.out.close()

    def on_cancel(self) -> None:
        self.out.close()


class SlowConsumer(Actor):
    """Reads every input through one gate, yielding to the loop a few times per buffer."""

    def __init__(self, name: str, inputs: list[Channel[list[int]]]) -> None:
        super().__init__(name)
        self.gate = InputGate(inputs, waker=self.waker)
        self.received: list[list[list[int]]] = [[] for _ in inputs]
        self.ends = 0
        self.most_queued = 0

    async def run(self) -> None:
        while not self.gate.finished:
            element = self.gate.poll()
            if element is None:
                await self.wait_idle()
                continue
            index, item = element
            if item is END_OF_CHANNEL:
                self.ends += 1
                continue
            self.received[index].append(item)  # type: ignore[arg-type]
            self.most_queued = max(self.most_queued, *(len(c) for c in self.gate.channels))
            for _ in range(3):  # the work that makes this consumer the slow side
                await asyncio.sleep(0)


@pytest.mark.parametrize("producers", [1, 3])
async def test_backpressured_producers_deliver_every_buffer_in_order(producers: int) -> None:
    channels: list[Channel[list[int]]] = [
        Channel(2, name=f"producer[{i}]->consumer") for i in range(producers)
    ]
    sources = [Producer(f"producer[{i}]", channel) for i, channel in enumerate(channels)]
    consumer = SlowConsumer("consumer", channels)

    await Supervisor([*sources, consumer]).run()

    expected = [
        [n * RECORDS_PER_BUFFER + k for k in range(RECORDS_PER_BUFFER)] for n in range(BUFFERS)
    ]
    assert consumer.received == [expected] * producers
    assert consumer.ends == producers
    assert consumer.most_queued <= 2
    for channel in channels:
        stats = channel.statistics()
        assert stats.max_queued <= stats.capacity == 2
        assert stats.sent == stats.received == BUFFERS
        assert stats.refused > 0  # the producer really was held back
        assert stats.closed
    for source in sources:
        assert source.state is ActorState.FINISHED
        stats = source.statistics()
        assert stats.backpressured_seconds > 0
        assert stats.idle_seconds == 0
        assert stats.wakeups > 0
    assert consumer.state is ActorState.FINISHED
    assert consumer.statistics().backpressured_seconds == 0
