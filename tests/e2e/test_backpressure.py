"""Backpressure: a fast source behind a slow sink holds a bounded number of records.

The bound, with ``B = buffer_size`` and ``C = channel_capacity`` (``runtime/tasks``):

* a channel holds at most ``C`` buffers (``Channel.try_send`` refuses more; the only
  forced sends, at end of input, come after ``flush_all`` emptied the writer), and a
  buffer holds at most ``B`` records (``RecordWriter`` cuts full buffers at exactly
  ``B``, partial ones are smaller): **C * B per channel**;
* a task that is not a sink holds what its ``RecordWriter`` has not handed over: the
  partial buffer carried from earlier input (< B records) plus the output of the one
  input buffer it just processed (a source reads ``B`` records per ``read``; a map emits
  one record per input, and an input buffer holds <= B). ``Task.process`` then waits in
  ``drain_outputs`` until every full buffer is sent, so it takes no new input while
  backpressured: **< 2 * B per task**, and its input buffer is already in that count;
* a sink task holds the one input buffer it is working through: **<= B per sink task**
  (records are counted as received when the sink function is called with them).

So the records the source has emitted minus those the sink has received never exceed
``channels * C * B + other_tasks * 2 * B + sink_tasks * B``.

The sink is slow without any timing assumption: it yields to the event loop a few times
per record, so the source (which reads a whole buffer per step) gets ahead and fills
every channel. The test samples the difference at every sink call and, independently,
at every event-loop turn of an observer task while the job runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from runtime import DataStream, JobStatus, StreamEnvironment

RECORDS = 3_000
YIELDS_PER_RECORD = 3


@dataclass(frozen=True)
class Topology:
    name: str
    parallelism: int
    stages: int  # operators between source and sink
    rebalance: bool

    def channels(self) -> int:
        # Every edge is forward (p channels) or, when rebalanced, all-to-all (p * p).
        per_edge = self.parallelism**2 if self.rebalance else self.parallelism
        return per_edge * (self.stages + 1)

    def bound(self, buffer_size: int, capacity: int) -> int:
        p = self.parallelism
        non_sink_tasks = p * (1 + self.stages)
        return (
            self.channels() * capacity * buffer_size
            + non_sink_tasks * 2 * buffer_size
            + p * buffer_size
        )


TOPOLOGIES = [
    Topology("source-sink", 1, 0, False),
    Topology("source-map-sink", 1, 1, False),
    Topology("source-rebalance-sink-p2", 2, 0, True),
]


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=lambda t: t.name)
@pytest.mark.parametrize(("buffer_size", "capacity"), [(16, 2), (4, 1), (1, 3)])
async def test_in_flight_records_stay_within_the_channel_bound(
    topology: Topology, buffer_size: int, capacity: int
) -> None:
    env = StreamEnvironment(
        parallelism=topology.parallelism,
        buffer_size=buffer_size,
        channel_capacity=capacity,
        chaining=False,
    )
    received = 0
    samples: list[int] = []

    async def slow_sink(value: int) -> None:
        nonlocal received
        received += 1
        samples.append(emitted() - received)
        for _ in range(YIELDS_PER_RECORD):
            await asyncio.sleep(0)

    stream: DataStream = env.generate(lambda i: i, RECORDS, name="source")
    for stage in range(topology.stages):
        stream = stream.map(lambda x: x, name=f"stage-{stage}")
    if topology.rebalance:
        stream = stream.rebalance()
    stream.sink_to(slow_sink, name="sink")

    client = await env.start("backpressure")

    def emitted() -> int:
        source = client.metrics().get("source")  # absent until the job is deployed
        return 0 if source is None else source.records_out

    waiting = asyncio.get_running_loop().create_task(client.wait())
    while not waiting.done():
        samples.append(emitted() - received)
        await asyncio.sleep(0)
    result = await waiting

    assert result.status is JobStatus.FINISHED
    assert received == RECORDS
    bound = topology.bound(buffer_size, capacity)
    assert max(samples) <= bound, (max(samples), bound)
    # The slow sink let the source run ahead: the channels really filled up.
    assert max(samples) >= capacity * buffer_size
    for name, stats in result.channels.items():
        assert stats.max_queued <= capacity, name
    into_sink = [s for name, s in result.channels.items() if "-> sink (" in name]
    assert any(s.refused > 0 and s.max_queued == capacity for s in into_sink)
    sources = [t for t in result.tasks if t.name.startswith("source (")]
    assert len(sources) == topology.parallelism
    assert sum(t.backpressured_seconds for t in sources) > 0
