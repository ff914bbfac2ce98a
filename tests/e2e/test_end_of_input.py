"""Checkpoints to the end of the input (FLIP-147) and sources without splits.

* **A bounded job under backpressure keeps checkpointing in its own mode while it
  drains.** A sequence source reads all of its input at once (it fits in the channels),
  ahead of a slow ``async def`` stage chained to an exactly-once ``FileSink``. The slow
  stage is slow deterministically: each record waits until the test releases it *or a
  checkpoint is pending* (then it goes on at once, so the barrier is handled between two
  records). So checkpoints can only complete while the backlog is there, whatever the
  machine's speed. After the source reported ``InputEnded``, a checkpoint completes
  before the backlog drained: unaligned (with in-flight records) in the unaligned modes;
  then the job's final checkpoint has no in-flight record, and the committed output is
  exactly-once.
* **Sources without splits** (restored at a higher parallelism than the savepoint's, or
  more subtasks than splits) take part in checkpoints, stop on stop-with-savepoint, and
  end when the job ends: 3 -> 4, 3 -> 7 and 7 -> 3 from canonical and native savepoints
  and from a retained checkpoint, for stop, stop with drain, and cancel.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    CheckpointingMode,
    ExternalizedCheckpointRetention,
    FileSink,
    JobClient,
    JobStatus,
    SavepointFormat,
    StreamEnvironment,
    read_committed,
)

COUNT = 3000  # records: all fit in the channels (8 x 512); a drain takes thousands of turns


async def until(condition: Any, what: str, client: JobClient) -> None:
    """Poll ``condition()`` until it holds (the test's deadline bounds the wait)."""
    while not condition():
        assert not client.status.is_terminal, f"the job ended before: {what} ({client.status})"
        await asyncio.sleep(0.002)


MODES = {
    "aligned": {},
    "unaligned": {"unaligned": True},
    "aligned-timeout": {"unaligned": True, "aligned_timeout": 0.001},
    "at-least-once": {"mode": CheckpointingMode.AT_LEAST_ONCE},
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_bounded_job_under_backpressure_checkpoints_until_it_ends(
    tmp_path: Path, mode: str
) -> None:
    released = asyncio.Event()
    coordinator: Any = None
    slow_tasks: list[Any] = []

    def not_yet_acknowledged() -> bool:
        """A checkpoint is pending that the slow subtask has still to take part in.

        Unaligned, its barrier overtakes the backlog, which becomes channel state at
        once: the subtask is done with it once it began its snapshot. In the other
        modes it is done once it acknowledged.
        """
        if coordinator is None:
            return False
        for checkpoint_id, pending in coordinator.pending.items():
            for task in slow_tasks:
                if task.task_id in pending.acknowledged:
                    continue
                if mode == "unaligned" and checkpoint_id in task.checkpointing.pending:
                    continue
                return True
        return False

    async def slow(x: int) -> int:
        # Deterministically slow: a record waits until released or until a checkpoint
        # is pending that this subtask has not acknowledged; then one record per
        # event-loop turn, so the barrier is handled after a record or two (and channel
        # state recorded up to it). Once the subtask acknowledged, the backlog stays put
        # however long the other subtasks and the metadata take.
        # (Polls: the coordinator has no event to wait on for "a checkpoint is pending".)
        while not released.is_set() and not not_yet_acknowledged():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        return x

    out = tmp_path / "out"
    env = StreamEnvironment(parallelism=1, buffer_size=8, channel_capacity=512)
    options: dict[str, Any] = dict(MODES[mode])
    checkpoint_mode = options.pop("mode", CheckpointingMode.EXACTLY_ONCE)
    env.enable_checkpointing(0.02, checkpoint_mode, **options)
    (
        env.from_sequence(0, COUNT - 1, uid="numbers")
        .rebalance()
        .map(slow, name="slow", uid="slow")
        .sink_to(FileSink(out), name="files", uid="files")
    )
    client = await env.start("drain")
    coordinator = client._execution.coordinator
    slow_tasks.extend(t for t in client._execution.deployment.tasks if "slow" in t.name)
    assert slow_tasks
    source_tasks = set(coordinator.sources)
    await until(lambda: source_tasks <= coordinator.input_ended, "the source ended", client)
    # Every checkpoint from here on is triggered after the source read all its input.
    first_after_end = coordinator.next_checkpoint_id
    stats = client.checkpoint_stats

    def drained_checkpoint() -> Any:
        for record in stats().history:  # type: ignore[union-attr]
            if record.checkpoint_id >= first_after_end and record.status.value == "completed":
                return record
        return None

    await until(lambda: drained_checkpoint() is not None, "a checkpoint while draining", client)
    record = drained_checkpoint()
    if mode in ("unaligned", "aligned-timeout"):
        # It overtook the backlog: done before the slow stage had processed it all.
        assert client.metrics()["slow"].records_in < COUNT, "the backlog drained before it"
        assert record.unaligned and record.in_flight_bytes > 0, record
    released.set()
    result = await client.wait()

    assert result.status is JobStatus.FINISHED
    assert sorted(int(line) for line in read_committed(out)) == list(range(COUNT))
    history = result.checkpoints.history  # type: ignore[union-attr]
    last = max((r for r in history if r.status.value == "completed"), key=lambda r: r.checkpoint_id)
    assert last.in_flight_bytes == 0, "the final checkpoint left records in channel state"
    assert not [r for r in history if r.status.value == "failed"], history


# -- sources without splits -------------------------------------------------------------

HUGE = 10**12  # a sequence no test reads to its end


def sequence_job(parallelism: int, storage: Path) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(
        0.05,
        storage=storage.as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    (
        env.from_sequence(0, HUGE, uid="numbers")
        .map(lambda x: x, name="identity", uid="identity")
        .sink_to(lambda batch: None, uid="drop")
    )
    return env


async def running(client: JobClient, records: int) -> None:
    await until(lambda: client.metrics()["identity"].records_in >= records, "records", client)


async def first_part(tmp_path: Path, parallelism: int, how: str) -> str:
    """Run the job at ``parallelism`` and return what to restore: a savepoint or a
    retained checkpoint."""
    client = await sequence_job(parallelism, tmp_path / "checkpoints").start("first")
    await running(client, 1000)
    if how == "checkpoint":
        completed = await client.trigger_checkpoint()
        client.cancel()
        result = await client.wait()
        assert result.status is JobStatus.CANCELED
        return completed.pointer
    path = await client.stop_with_savepoint(tmp_path / "savepoints", format=SavepointFormat(how))
    assert (await client.wait()).status is JobStatus.FINISHED
    return path


@pytest.mark.parametrize("action", ["stop", "drain", "cancel"])
@pytest.mark.parametrize("how", ["canonical", "native", "checkpoint"])
@pytest.mark.parametrize(("before", "after"), [(3, 4), (3, 7), (7, 3)], ids=str)
async def test_sources_without_splits_take_part_and_end(
    tmp_path: Path, before: int, after: int, how: str, action: str
) -> None:
    pointer = await first_part(tmp_path, before, how)
    client = await sequence_job(after, tmp_path / "checkpoints").start(
        "second", restore_from=pointer
    )
    await running(client, 1000)
    # A checkpoint needs every source subtask, those without a split included.
    completed = await client.trigger_checkpoint()
    assert completed.checkpoint_id > 0
    if action == "cancel":
        client.cancel()
        assert (await client.wait()).status is JobStatus.CANCELED
        return
    path = await client.stop_with_savepoint(tmp_path / "again", drain=action == "drain")
    result = await client.wait()
    assert result.status is JobStatus.FINISHED
    # The savepoint holds every split: a third run at the first parallelism goes on
    # where the second stopped (nothing read twice: the sequence resumes past it).
    third = await sequence_job(before, tmp_path / "checkpoints").start("third", restore_from=path)
    if action == "stop":
        await running(third, 1)
    third.cancel()
    await third.wait()
