"""Pinning tests for checkpoint paths that no other test reaches on purpose.

Each test puts a job in a known state by explicit synchronisation, never by timing:
sources behind a ``SourceGate`` (``runtime.testing.gates``) that hold back until the test
opens them, or block their subtask outright; operators that wait on an ``asyncio.Event``
the test sets; small buffers and channels, so that what is queued where is known; and
checkpoints triggered by the test (the periodic interval is an hour).

* A subtask with two inputs takes an unaligned checkpoint when the barrier arrives on
  one input while the other has data queued: its input channel state holds exactly the
  queued records of the other input (and the rest of the buffer it was processing).
* An unaligned checkpoint with data in flight on a keyed edge (output channel state of
  the sources, input channel state of the counters) restores at the same parallelism
  and at others: per-key counts and committed output are exactly-once.
* A barrier that arrives after the alignment timeout has passed switches the alignment
  to unaligned in the same step (the pure barrier handler, with time injected).
* A savepoint declined by a subtask with ``tolerable_failures=0`` fails the savepoint
  request, not the job; a declined checkpoint under the same setting fails the job.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    CheckpointError,
    ExternalizedCheckpointRetention,
    FileSink,
    JobFailedError,
    JobStatus,
    KeyedProcessFunction,
    MapFunction,
    NoRestart,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
    read_committed,
)
from runtime.checkpoint.barriers import (
    BarrierHandler,
    BlockChannel,
    InputStateComplete,
    PromoteBarrier,
    StartRecording,
    StopRecording,
    TriggerSnapshot,
)
from runtime.checkpoint.events import CheckpointBarrier, CheckpointOptions
from runtime.checkpoint.ids import ChannelIndex, CheckpointId
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedSource, SourceGate
from storage.checkpoint.reader import read_checkpoint

MANUAL = 3600.0
"""A checkpoint interval no test reaches: every checkpoint here is triggered by the test."""


class Probe:
    """What a blocking operator shares with its test (every copy of it holds the same)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.seen: list[Any] = []
        self._counted: dict[int, asyncio.Event] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self

    def note(self, value: Any) -> None:
        self.seen.append(value)
        for count, event in self._counted.items():
            if len(self.seen) >= count:
                event.set()

    async def wait_seen(self, count: int) -> None:
        """Until ``count`` records went through."""
        event = self._counted.setdefault(count, asyncio.Event())
        if len(self.seen) >= count:
            event.set()
        await event.wait()


class BlockFirst(MapFunction[Any, Any]):
    """Holds its first record until the probe is released; notes every record."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def map(self, value: Any) -> Any:
        probe = self.probe
        if not probe.release.is_set():
            probe.entered.set()
            await probe.release.wait()
        probe.note(value)
        return value


def file_checkpoints(env: StreamEnvironment, folder: Path, **options: Any) -> None:
    env.enable_checkpointing(
        MANUAL,
        storage=folder.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        **options,
    )
    env.set_restart_strategy(NoRestart())


# -- two inputs, the barrier on one, data queued on the other -------------------------------


async def test_input_channel_state_holds_exactly_the_other_inputs_queued_records(
    tmp_path: Path,
) -> None:
    queued = 12  # three full buffers of 4 from source "b"
    gate_a = SourceGate(hold_after=0)  # "a" emits nothing until opened, takes checkpoints
    gate_b = SourceGate(hold_after=queued, blocking=True)  # "b" then blocks its subtask
    probe = Probe()
    env = StreamEnvironment(parallelism=1, buffer_size=4, channel_capacity=2, buffer_timeout=3600)
    file_checkpoints(env, tmp_path / "checkpoints", unaligned=True)
    a = env.from_source(GatedSource(GeneratorSource(lambda i: ("a", i), 5), gate_a), uid="a")
    b = env.from_source(GatedSource(GeneratorSource(lambda i: ("b", i), queued), gate_b), uid="b")
    a.union(b).map(BlockFirst(probe), name="merge", uid="merge").collect(name="out")

    client = await env.start("two inputs")
    # "merge" holds b0 (the head of b's first buffer); b's other two buffers fill the
    # channel; "b" read all 12 and blocks, so it cannot take the checkpoint yet.
    await probe.entered.wait()
    await gate_b.wait_held()
    checkpoint = asyncio.ensure_future(client.trigger_checkpoint())
    await gate_a.wait_snapshots()  # "a" snapshotted: its barrier is in merge's input
    probe.release.set()  # merge finishes b0, sees the barrier, snapshots unaligned
    await probe.wait_seen(queued)  # ... and processes b1..b11, recording them
    gate_b.open()  # "b" takes the checkpoint: its barrier ends the recording
    completed = await checkpoint
    contents = read_checkpoint(completed.pointer)  # before the job ends and discards it
    gate_a.open()
    result = await client.wait()

    assert result.status is JobStatus.FINISHED
    assert sorted(result.collected["out"]) == sorted(
        [("a", i) for i in range(5)] + [("b", i) for i in range(queued)]
    )
    stats = client.checkpoint_stats()
    assert stats is not None
    [taken] = [c for c in stats.completed() if c.checkpoint_id == completed.checkpoint_id]
    assert taken.unaligned and taken.in_flight_bytes > 0
    [(_, merge)] = list(contents.operators["merge"].subtasks.items())
    assert merge.input_channels == {("b", 0): [("b", i) for i in range(1, queued)]}
    assert merge.output_channels == {}
    # The sources overtook nothing: "a" had nothing queued, "b" nothing left.
    for uid in ("a", "b"):
        for _, source in contents.operators[uid].subtasks.items():
            assert source.output_channels == {}, uid


# -- in-flight data on a keyed edge, restored at the same and other parallelism ----------------

KEYS = 5
FIRST = 16  # records the first run reads before its source holds
TOTAL = 60


class BlockingCount(KeyedProcessFunction):
    """Counts records per key; with a probe, holds its first record until released."""

    def __init__(self, probe: Probe | None = None) -> None:
        self.probe = probe

    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))

    async def process_element(self, value: int, ctx: RuntimeContext) -> list[str]:
        probe = self.probe
        if probe is not None and not probe.release.is_set():
            probe.entered.set()
            await probe.release.wait()
        n = self.count.value() + 1
        self.count.update(n)
        return [f"{value % KEYS} {value} {n}"]


def keyed_job(
    env: StreamEnvironment, out: Path, gate: SourceGate | None, probe: Probe | None
) -> None:
    numbers: Any = GeneratorSource(lambda i: i, TOTAL)
    if gate is not None:
        numbers = GatedSource(numbers, gate)
    (
        env.from_source(numbers, name="numbers", uid="numbers")
        .key_by(lambda i: i % KEYS)
        .process(BlockingCount(probe), name="count", uid="count")
        .sink_to(FileSink(out), name="files", uid="files")
    )


def check_per_key_exactly_once(out: Path) -> None:
    numbers: list[int] = []
    counts: dict[int, list[int]] = defaultdict(list)
    for line in read_committed(out):
        key, i, n = map(int, line.split())
        assert key == i % KEYS, line
        numbers.append(i)
        counts[key].append(n)
    assert sorted(numbers) == list(range(TOTAL)), "records lost or repeated"
    for key, seen in counts.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), f"key {key}: counts {seen}"


@pytest.mark.parametrize("restore_parallelism", [2, 3, 1])
async def test_unaligned_in_flight_data_on_a_keyed_edge_restores_exactly_once(
    tmp_path: Path, restore_parallelism: int
) -> None:
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    gate = SourceGate(hold_after=FIRST, hold_at_end=True)
    probe = Probe()
    env = StreamEnvironment(parallelism=2, buffer_size=4, channel_capacity=2, buffer_timeout=3600)
    file_checkpoints(env, checkpoints, unaligned=True)
    keyed_job(env, out, gate, probe)

    client = await env.start("in flight")
    await gate.wait_flushed(readers=2)  # all 16 records are in the keyed channels
    checkpoint = asyncio.ensure_future(client.trigger_checkpoint())
    # Both sources snapshotted: their barriers overtook the queued buffers, which are
    # now their output channel state.
    await gate.wait_snapshots(readers=2)
    probe.release.set()
    completed = await checkpoint
    contents = read_checkpoint(completed.pointer)
    client.cancel()
    first = await client.wait()
    assert first.status is JobStatus.CANCELED
    assert contents.in_flight_records > 0
    in_flight = [
        record
        for _, subtask in contents.operators["numbers"].subtasks.items()
        for records in subtask.output_channels.values()
        for record in records
    ]
    assert in_flight, "the sources' barriers overtook no queued buffer"
    stats = first.checkpoints
    assert stats is not None
    [taken] = [c for c in stats.completed() if c.checkpoint_id == completed.checkpoint_id]
    assert taken.unaligned and taken.in_flight_bytes > 0

    env = StreamEnvironment(parallelism=restore_parallelism, buffer_size=4, channel_capacity=2)
    file_checkpoints(env, checkpoints)
    keyed_job(env, out, None, None)
    second = await env.execute("restored", restore_from=completed.pointer)

    assert second.status is JobStatus.FINISHED
    assert second.operators["count"].parallelism == restore_parallelism
    check_per_key_exactly_once(out)


# -- a barrier after the alignment timeout --------------------------------------------------

TIMED = CheckpointOptions(unaligned=False, aligned_timeout=0.05)


def timed_barrier(timestamp: float = 10.0) -> CheckpointBarrier:
    return CheckpointBarrier(CheckpointId(1), timestamp, TIMED)


def test_a_first_barrier_after_the_timeout_switches_to_unaligned_in_the_same_step() -> None:
    handler = BarrierHandler(3)
    barrier = timed_barrier()

    actions = handler.on_barrier(1, barrier, now=barrier.timestamp + 1.0)

    [snapshot] = [a for a in actions if isinstance(a, TriggerSnapshot)]
    assert snapshot.unaligned and snapshot.barrier.options.unaligned
    assert StartRecording(CheckpointId(1), (ChannelIndex(0), ChannelIndex(2))) in actions
    # Blocked and unblocked in the same step: no channel stays blocked.
    assert actions.index(BlockChannel(ChannelIndex(1))) < actions.index(snapshot)
    assert handler.blocked == set() and handler.deadline is None
    # The other channels' barriers end their recording; then the checkpoint's input
    # channel state is complete.
    assert handler.on_barrier(0, barrier, now=barrier.timestamp + 2.0) == [
        StopRecording(CheckpointId(1), ChannelIndex(0))
    ]
    assert handler.on_barrier(2, barrier, now=barrier.timestamp + 3.0) == [
        StopRecording(CheckpointId(1), ChannelIndex(2)),
        InputStateComplete(CheckpointId(1)),
    ]


def test_a_barrier_before_the_timeout_waits_and_on_time_switches() -> None:
    handler = BarrierHandler(2)
    barrier = timed_barrier()

    actions = handler.on_barrier(0, barrier, now=barrier.timestamp + 0.01)

    assert actions == [BlockChannel(ChannelIndex(0))]
    assert handler.deadline == barrier.timestamp + TIMED.aligned_timeout
    switched = handler.on_time(barrier.timestamp + 0.06)
    assert any(isinstance(a, TriggerSnapshot) and a.unaligned for a in switched)


def test_an_announcement_after_the_timeout_switches_and_promotes_in_the_same_step() -> None:
    handler = BarrierHandler(2)
    barrier = timed_barrier()

    actions = handler.on_announcement(1, barrier, now=barrier.timestamp + 1.0)

    [snapshot] = [a for a in actions if isinstance(a, TriggerSnapshot)]
    assert snapshot.unaligned
    promote = PromoteBarrier(CheckpointId(1), ChannelIndex(1), barrier)
    assert promote in actions and actions.index(snapshot) < actions.index(promote)
    assert handler.deadline is None


# -- a declined savepoint with tolerable_failures=0 -----------------------------------------


class Declines(MapFunction[int, int]):
    """An identity map whose snapshot fails while ``switch["decline"]`` is true."""

    def __init__(self, switch: dict[str, bool]) -> None:
        self.switch = switch

    def __deepcopy__(self, memo: dict[int, Any]) -> Declines:
        return Declines(self.switch)

    def map(self, value: int) -> int:
        return value

    def snapshot_state(self, checkpoint_id: int) -> None:
        if self.switch["decline"]:
            raise RuntimeError(f"no snapshot of checkpoint {checkpoint_id} today")


def declining_job(gate: SourceGate, switch: dict[str, bool]) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=2)
    env.enable_checkpointing(MANUAL, tolerable_failures=0)
    env.set_restart_strategy(NoRestart())
    (
        env.from_source(GatedSource(GeneratorSource(lambda i: i, 20), gate), uid="numbers")
        .map(Declines(switch), name="declines", uid="declines")
        .collect(name="out")
    )
    return env


async def test_a_declined_savepoint_fails_the_request_and_not_the_job(tmp_path: Path) -> None:
    gate = SourceGate(hold_after=10, hold_at_end=True)
    switch = {"decline": False}
    client = await declining_job(gate, switch).start("declined savepoint")
    await gate.wait_held()

    switch["decline"] = True
    with pytest.raises(CheckpointError, match="no snapshot of checkpoint"):
        await client.trigger_savepoint(tmp_path / "savepoints")
    assert client.status is JobStatus.RUNNING

    switch["decline"] = False
    path = await client.trigger_savepoint(tmp_path / "savepoints")  # the job goes on
    assert Path(path).name.startswith("savepoint-")
    gate.open()
    result = await client.wait()

    assert result.status is JobStatus.FINISHED and result.restarts == 0
    assert sorted(result.collected["out"]) == list(range(20))
    assert result.checkpoints is not None and result.checkpoints.counts.failed == 1


async def test_a_declined_checkpoint_with_tolerable_failures_0_fails_the_job() -> None:
    gate = SourceGate(hold_after=10, hold_at_end=True)
    switch = {"decline": True}
    client = await declining_job(gate, switch).start("declined checkpoint")
    await gate.wait_held()

    with pytest.raises(CheckpointError, match="no snapshot of checkpoint"):
        await client.trigger_checkpoint()
    with pytest.raises(JobFailedError, match="tolerable_failures=0"):
        await client.wait()
