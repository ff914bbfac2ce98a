"""``CheckpointCoordinator``: triggering, completing, aborting, retaining, ending.

DESIGN.md, "A checkpoint": pending ``n`` -> every subtask acknowledges -> ``_metadata``
committed -> completed ``n``, older ones beyond ``retained`` discarded -> every task told
``notify_checkpoint_complete(n)``; a timeout or a decline aborts ``n`` and tells every
task ``notify_checkpoint_aborted(n)``; past ``tolerable_failures`` the job fails.

Each test runs a real coordinator (``harness`` in this directory's conftest) with
in-memory storage, fake task mailboxes and a manual clock, starts at clock 100, and
drives it by putting messages in its mailbox and moving the clock; it waits only for
conditions it can observe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.checkpoint import (
    CheckpointConfig,
    CheckpointError,
    CheckpointFailedError,
    CheckpointFailureReason,
    CheckpointingMode,
    CheckpointStatus,
    CompletedCheckpoint,
)
from runtime.checkpoint.events import (
    AwaitFinalCheckpoint,
    CheckpointBarrier,
    CheckpointDeclined,
    CheckpointOptions,
    NotifyCheckpointAborted,
    NotifyCheckpointComplete,
    StopSource,
    TaskFinished,
    TriggerCheckpoint,
)
from runtime.checkpoint.ids import CheckpointId, TaskId
from storage.checkpoint import (
    METADATA_FILE,
    CheckpointMetadata,
    CheckpointNotFoundError,
    FileCheckpointStorage,
    MemoryCheckpointStorage,
    StorageError,
)

# The harness class lives in this directory's conftest; tests get it from a fixture.
CoordinatorHarness = Any
Harness = Callable[..., CoordinatorHarness]


def triggered(h: CoordinatorHarness, task: str = "src:0") -> list[int]:
    return [m.barrier.checkpoint_id for m in h.of_type(task, TriggerCheckpoint)]


def completed(h: CoordinatorHarness, task: str = "map:0") -> list[int]:
    return [m.checkpoint_id for m in h.of_type(task, NotifyCheckpointComplete)]


def aborted(h: CoordinatorHarness, task: str = "map:0") -> list[int]:
    return [m.checkpoint_id for m in h.of_type(task, NotifyCheckpointAborted)]


async def trigger_next(h: CoordinatorHarness, seconds: float = 10.0) -> int:
    """Move the clock one interval on and wait for the next periodic trigger."""
    before = len(triggered(h))
    h.advance(seconds)
    await h.until(lambda: len(triggered(h)) > before, "the next periodic trigger")
    return triggered(h)[-1]


async def complete(h: CoordinatorHarness, checkpoint_id: int) -> None:
    h.ack_all(checkpoint_id)
    await h.until(lambda: checkpoint_id in completed(h), f"checkpoint {checkpoint_id} completed")


# -- triggering -----------------------------------------------------------------------------


async def test_periodic_trigger_goes_to_every_source_and_no_other_task(harness: Harness) -> None:
    h = harness(
        CheckpointConfig(interval=10.0), sources=("src:0", "src:1"), others=("map:0", "map:1")
    )
    await h.start()
    h.advance(9.0)
    await h.one_turn()
    assert all(h.inbox(t) == [] for t in h.tasks), "triggered before one interval passed"

    h.advance(1.0)
    await h.until(lambda: triggered(h, "src:0") and triggered(h, "src:1"), "the first trigger")
    expected = TriggerCheckpoint(CheckpointBarrier(CheckpointId(1), 110.0, CheckpointOptions()))
    assert h.inbox("src:0") == [expected]
    assert h.inbox("src:1") == [expected]
    assert h.inbox("map:0") == [] and h.inbox("map:1") == []
    stats = h.coordinator.statistics_snapshot()
    assert (stats.counts.triggered, stats.counts.in_progress) == (1, 1)
    assert [s.status for s in stats.history] == [CheckpointStatus.IN_PROGRESS]
    await h.finish()


@pytest.mark.parametrize(
    ("config", "options"),
    [
        (CheckpointConfig(interval=10.0, unaligned=True), CheckpointOptions(unaligned=True)),
        (
            CheckpointConfig(interval=10.0, unaligned=True, aligned_timeout=0.5),
            CheckpointOptions(unaligned=False, aligned_timeout=0.5),
        ),
        (
            CheckpointConfig(interval=10.0, mode=CheckpointingMode.AT_LEAST_ONCE),
            CheckpointOptions(exactly_once=False),
        ),
    ],
)
async def test_barrier_options_follow_the_config(
    harness: Harness, config: CheckpointConfig, options: CheckpointOptions
) -> None:
    h = harness(config)
    await h.start()
    await trigger_next(h)
    assert h.of_type("src:0", TriggerCheckpoint)[0].barrier.options == options
    await h.finish()


async def test_next_trigger_waits_for_a_free_slot(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0))  # max_concurrent=1
    await h.start()
    await trigger_next(h)
    h.advance(10.0)
    await h.one_turn()
    assert triggered(h) == [1], "a second checkpoint while max_concurrent=1 is pending"
    await complete(h, 1)  # the slot frees at 120, when the next one is already due
    await h.until(lambda: triggered(h) == [1, 2], "the trigger held back by the slot")
    await h.finish()


# -- completing -----------------------------------------------------------------------------


async def test_acknowledgements_from_every_task_complete_the_checkpoint(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0), others=("map:0", "map:1"))
    await h.start()
    await trigger_next(h)
    h.advance(2.5)
    h.ack(1, "src:0", state_size=7)
    h.ack(1, "map:1", state_size=5)
    await h.one_turn()
    assert completed(h) == [] and h.storage.list_completed() == []
    h.ack(1, "map:0", state_size=3)
    await h.until(lambda: completed(h) == [1], "notify complete")

    for task in h.tasks:
        assert h.of_type(task, NotifyCheckpointComplete) == [
            NotifyCheckpointComplete(CheckpointId(1))
        ]
    assert h.storage.list_completed() == [1]
    metadata = await h.storage.load(h.pointer(1))
    assert isinstance(metadata, CheckpointMetadata)
    assert (metadata.job_id, metadata.checkpoint_id, metadata.is_savepoint) == ("job", 1, False)
    sizes = {
        op.uid: [(s.subtask_index, s.state_size) for s in op.subtasks] for op in metadata.operators
    }
    assert sizes == {"src": [(0, 7)], "map": [(0, 3), (1, 5)]}
    assert h.coordinator.latest_completed == CompletedCheckpoint(
        CheckpointId(1), h.pointer(1), 110.0
    )
    stats = h.coordinator.statistics_snapshot()
    assert (stats.counts.completed, stats.counts.in_progress, stats.counts.failed) == (1, 0, 0)
    [checkpoint] = stats.history
    assert checkpoint.status is CheckpointStatus.COMPLETED
    assert checkpoint.end_to_end_duration == 2.5
    assert checkpoint.external_pointer == h.pointer(1)
    assert checkpoint.state_size == 15
    assert set(checkpoint.subtasks) == set(h.tasks)
    await h.finish()


async def test_duplicate_unknown_and_late_acknowledgements_are_ignored(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    await trigger_next(h)
    h.ack(1, "src:0", state_size=1)
    h.ack(1, "src:0", state_size=90)  # duplicate: does not stand in for map:0
    h.ack(1, "ghost:0", state_size=90)  # not a task of this checkpoint
    h.ack(7, "map:0", state_size=90)  # no such checkpoint
    await h.one_turn()
    assert completed(h) == []
    h.ack(1, "map:0", state_size=2)
    await h.until(lambda: completed(h) == [1], "checkpoint 1 completed")
    h.ack_all(1)  # late: the checkpoint is complete
    await h.finish()  # the mailbox is FIFO: the late acks were handled before this

    assert all(completed(h, t) == [1] for t in h.tasks)
    stats = h.coordinator.statistics_snapshot()
    assert stats.counts.completed == 1
    assert stats.history[0].state_size == 3
    assert {t: m.state_size for t, m in stats.history[0].subtasks.items()} == {
        "src:0": 1,
        "map:0": 2,
    }
    metadata = await h.storage.load(h.pointer(1))
    assert sorted(op.uid for op in metadata.operators) == ["map", "src"]


async def test_completing_a_checkpoint_aborts_older_pending_ones(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, max_concurrent=2))  # tolerable_failures=0
    await h.start()
    assert await trigger_next(h) == 1
    assert await trigger_next(h) == 2
    await complete(h, 2)

    for task in h.tasks:
        notices = [
            (type(m).__name__, m.checkpoint_id)
            for m in h.inbox(task)
            if isinstance(m, NotifyCheckpointAborted | NotifyCheckpointComplete)
        ]
        assert notices == [("NotifyCheckpointAborted", 1), ("NotifyCheckpointComplete", 2)]
    assert "checkpoint 1 was subsumed by 2" in h.of_type("map:0", NotifyCheckpointAborted)[0].reason
    failures = h.coordinator.planner.failures
    assert failures.consecutive == 0, "a subsumed checkpoint counted as a failure"
    stats = h.coordinator.statistics_snapshot()
    assert {s.checkpoint_id: s.status for s in stats.history} == {
        1: CheckpointStatus.FAILED,
        2: CheckpointStatus.COMPLETED,
    }
    h.ack_all(1)  # late acknowledgements of the subsumed checkpoint
    await h.finish()
    assert h.storage.list_completed() == [2]
    assert completed(h) == [2]


async def test_retained_checkpoints_beyond_the_limit_are_discarded(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, retained=2))
    await h.start()
    for n in (1, 2, 3):
        assert await trigger_next(h) == n
        await complete(h, n)
    assert h.storage.list_completed() == [2, 3]
    assert [c.checkpoint_id for c in h.coordinator.store.all()] == [2, 3]
    with pytest.raises(CheckpointNotFoundError):
        await h.storage.load(h.pointer(1))
    assert h.coordinator.latest_completed is not None
    assert h.coordinator.latest_completed.checkpoint_id == 3
    await h.finish()


# -- aborting -------------------------------------------------------------------------------


async def test_decline_aborts_and_without_tolerance_fails_the_job(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0))  # tolerable_failures=0
    await h.start()
    await trigger_next(h)
    h.ack(1, "src:0")
    h.decline(1, "map:0", "disk full")
    with pytest.raises(
        CheckpointFailedError,
        match=r"^1 checkpoints failed in a row, more than tolerable_failures=0; last: "
        r"task map:0 declined checkpoint 1: disk full$",
    ) as caught:
        await h.stopped()
    assert caught.value.reason is CheckpointFailureReason.DECLINED
    assert caught.value.checkpoint_id == 1
    for task in h.tasks:
        [notice] = h.of_type(task, NotifyCheckpointAborted)
        assert notice.checkpoint_id == 1 and "disk full" in notice.reason
    stats = h.coordinator.statistics_snapshot()
    assert (stats.counts.failed, stats.counts.in_progress) == (1, 0)
    assert stats.history[0].status is CheckpointStatus.FAILED
    assert stats.history[0].failure is not None and "disk full" in stats.history[0].failure
    assert h.storage.list_completed() == []


async def test_one_tolerable_failure_is_survived_and_a_completion_resets_the_streak(
    harness: Harness,
) -> None:
    h = harness(CheckpointConfig(interval=10.0, tolerable_failures=1))
    await h.start()
    assert await trigger_next(h) == 1
    h.decline(1, "map:0", "busy")
    await h.until(lambda: aborted(h) == [1], "checkpoint 1 aborted")
    assert h.coordinator.planner.failures.consecutive == 1

    assert await trigger_next(h) == 2
    await complete(h, 2)
    assert h.coordinator.planner.failures.consecutive == 0

    assert await trigger_next(h) == 3
    h.decline(3, "map:0", "busy")
    await h.until(lambda: aborted(h) == [1, 3], "checkpoint 3 aborted")
    assert h.run_task is not None and not h.run_task.done()

    assert await trigger_next(h) == 4
    h.decline(4, "src:0", "again")
    with pytest.raises(
        CheckpointFailedError,
        match=r"^2 checkpoints failed in a row, more than tolerable_failures=1; "
        r"last: task src:0 declined checkpoint 4: again$",
    ):
        await h.stopped()


async def test_expired_checkpoint_is_aborted(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, timeout=5.0, tolerable_failures=1))
    await h.start()
    await trigger_next(h)  # at 110
    h.ack(1, "src:0")
    h.advance(4.0)
    await h.one_turn()
    assert aborted(h) == []
    h.advance(1.0)
    await h.until(lambda: aborted(h) == [1], "checkpoint 1 expired")
    for task in h.tasks:
        [notice] = h.of_type(task, NotifyCheckpointAborted)
        assert notice.reason == (
            "checkpoint 1 expired after 5 s before every task acknowledged (waiting for: map:0)"
        )
    stats = h.coordinator.statistics_snapshot()
    assert stats.history[0].status is CheckpointStatus.FAILED
    assert stats.history[0].end_to_end_duration == 5.0
    h.ack(1, "map:0")  # late
    await h.finish()
    assert completed(h) == [] and h.storage.list_completed() == []


async def test_expiry_without_tolerance_fails_the_job(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, timeout=5.0))
    await h.start()
    await trigger_next(h)
    h.advance(5.0)
    with pytest.raises(CheckpointFailedError, match=r"checkpoint 1 expired after 5 s") as caught:
        await h.stopped()
    assert caught.value.reason is CheckpointFailureReason.EXPIRED


async def test_decline_as_subsumed_is_not_a_failure(harness: Harness) -> None:
    # A task whose alignment of 1 was overtaken by barrier 2 declines 1 as subsumed.
    h = harness(CheckpointConfig(interval=10.0))  # tolerable_failures=0
    await h.start()
    await trigger_next(h)
    h.send(
        CheckpointDeclined(
            CheckpointId(1),
            TaskId("map:0"),
            "barrier 2 arrived before checkpoint 1 completed here",
            subsumed=True,
        )
    )
    await h.until(lambda: aborted(h) == [1], "checkpoint 1 aborted")
    assert h.coordinator.planner.failures.consecutive == 0
    assert h.coordinator.statistics_snapshot().history[0].status is CheckpointStatus.FAILED
    assert await trigger_next(h) == 2  # the job goes on
    await h.finish()


class FailingCommitStorage(MemoryCheckpointStorage):
    async def commit(self, metadata: CheckpointMetadata) -> str:
        raise StorageError("no space left on device")


async def test_failed_metadata_write_aborts_the_checkpoint(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0), storage=FailingCommitStorage("job"))
    await h.start()
    await trigger_next(h)
    h.ack_all(1)
    with pytest.raises(
        CheckpointFailedError,
        match=r"writing the metadata of checkpoint 1 to memory failed: no space left on device",
    ) as caught:
        await h.stopped()
    assert caught.value.reason is CheckpointFailureReason.WRITE_FAILURE
    assert aborted(h) == [1] and completed(h) == []


# -- manual triggers ------------------------------------------------------------------------


async def test_requested_checkpoint_resolves_with_the_completed_checkpoint(
    harness: Harness,
) -> None:
    h = harness(CheckpointConfig())  # no periodic checkpoints
    await h.start()
    future = h.coordinator.request_checkpoint(CheckpointOptions())
    await h.until(lambda: triggered(h) == [1], "the requested trigger")
    assert not future.done()
    h.ack_all(1)
    assert await future == CompletedCheckpoint(CheckpointId(1), h.pointer(1), 100.0)
    await h.finish()


async def test_requested_savepoint_is_not_retained_as_a_checkpoint(harness: Harness) -> None:
    h = harness(CheckpointConfig())
    await h.start()
    future = h.coordinator.request_checkpoint(CheckpointOptions(is_savepoint=True))
    await h.until(lambda: triggered(h) == [1], "the savepoint trigger")
    assert h.of_type("src:0", TriggerCheckpoint)[0].barrier.options.is_savepoint
    h.ack_all(1)
    savepoint = await future
    assert savepoint.is_savepoint and savepoint.pointer == h.pointer(1)
    assert h.coordinator.latest_completed is None
    assert len(h.coordinator.store) == 0
    assert h.coordinator.statistics_snapshot().history[0].is_savepoint
    await h.finish()


async def test_requested_checkpoint_that_is_declined_fails_with_checkpoint_error(
    harness: Harness,
) -> None:
    h = harness(CheckpointConfig(tolerable_failures=1))
    await h.start()
    future = h.coordinator.request_checkpoint(CheckpointOptions())
    await h.until(lambda: triggered(h) == [1], "the requested trigger")
    h.decline(1, "map:0", "no space")
    with pytest.raises(CheckpointError, match=r"^task map:0 declined checkpoint 1: no space$") as e:
        await future
    assert not isinstance(e.value, CheckpointFailedError)
    assert e.value.reason is CheckpointFailureReason.DECLINED
    assert e.value.checkpoint_id == 1
    await h.finish()


async def test_request_still_pending_when_the_job_ends_fails(harness: Harness) -> None:
    h = harness(CheckpointConfig())
    await h.start()
    future = h.coordinator.request_checkpoint(CheckpointOptions())
    await h.until(lambda: triggered(h) == [1], "the requested trigger")
    await h.finish()
    with pytest.raises(CheckpointError, match="the job ended"):
        await future


# -- the end of the job ---------------------------------------------------------------------


def finals(h: CoordinatorHarness, task: str = "map:0") -> list[int]:
    return [m.checkpoint_id for m in h.of_type(task, NotifyCheckpointComplete) if m.final]


@pytest.mark.parametrize(
    "config",
    [
        CheckpointConfig(interval=10.0),
        CheckpointConfig(interval=10.0, unaligned=True),
        CheckpointConfig(interval=10.0, unaligned=True, aligned_timeout=0.5),
        CheckpointConfig(interval=10.0, mode=CheckpointingMode.AT_LEAST_ONCE),
    ],
    ids=["aligned", "unaligned", "aligned-timeout", "at-least-once"],
)
async def test_checkpoints_go_on_in_the_jobs_mode_while_the_job_drains(
    harness: Harness, config: CheckpointConfig
) -> None:
    # FLIP-147: sources that read all of their input still take part; nothing is forced
    # aligned (the old final checkpoint waited for every backlog to drain).
    h = harness(config, sources=("src:0", "src:1"))
    await h.start()
    h.input_ended("src:0", "src:1")
    await h.one_turn()
    assert triggered(h, "src:0") == [], "triggered before the interval: map:0 still runs"
    assert await trigger_next(h) == 1
    assert triggered(h, "src:1") == [1]
    options = h.of_type("src:0", TriggerCheckpoint)[0].barrier.options
    assert options == h.coordinator.default_options() and not options.is_final
    h.ack_all(1)  # map:0 took it before its end: not final
    await h.until(lambda: completed(h) == [1], "checkpoint 1 completed")
    assert finals(h) == []
    assert await trigger_next(h) == 2
    await h.finish()


async def test_final_checkpoint_once_every_task_ended_its_input(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, unaligned=True), sources=("src:0", "src:1"))
    await h.start()
    h.input_ended("src:0", "src:1")
    await h.one_turn()
    assert triggered(h, "src:0") == []
    h.input_ended("map:0")  # the last task: triggered at once, not after the interval
    await h.until(lambda: triggered(h, "src:0") == [1] == triggered(h, "src:1"), "final trigger")
    barrier = h.of_type("src:1", TriggerCheckpoint)[0].barrier
    assert barrier == CheckpointBarrier(CheckpointId(1), 100.0, h.coordinator.default_options())
    assert barrier.options.unaligned, "the final checkpoint takes the job's mode"
    h.ack_all(1, after_end=True)
    await h.until(lambda: finals(h) == [1], "the final notification")
    assert all(finals(h, t) == [1] for t in h.tasks)

    h.advance(100.0)  # ten intervals: no checkpoint after the final one
    await h.one_turn()
    assert triggered(h, "src:0") == [1] == triggered(h, "src:1")
    with pytest.raises(CheckpointError, match="final checkpoint completed"):
        await h.coordinator.request_checkpoint(CheckpointOptions())
    await h.finish()
    assert h.storage.list_completed() == [1]


async def test_checkpoint_one_task_took_before_its_end_is_not_final(harness: Harness) -> None:
    # A periodic checkpoint triggered before map:0 ended may complete after it: it is
    # final only if every task snapshotted after its end (no record in channel state).
    h = harness(CheckpointConfig(interval=10.0), others=("map:0", "map:1"))
    await h.start()
    assert await trigger_next(h) == 1
    h.input_ended()
    h.ack(1, "src:0", after_end=True)
    h.ack(1, "map:0", after_end=False)
    h.ack(1, "map:1", after_end=True)
    await h.until(lambda: completed(h) == [1], "checkpoint 1 completed")
    assert finals(h) == []
    await h.until(lambda: triggered(h) == [1, 2], "the final trigger, at once")
    h.ack_all(2, after_end=True)
    await h.until(lambda: finals(h) == [2], "the final notification")
    await h.finish()


async def test_aborted_final_checkpoint_is_triggered_again(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0, tolerable_failures=1))
    await h.start()
    h.input_ended()
    await h.until(lambda: triggered(h) == [1], "the final trigger")
    h.decline(1, "map:0", "not ready")
    await h.until(lambda: aborted(h) == [1], "checkpoint 1 aborted")
    await h.one_turn()
    assert triggered(h) == [1], "a declined final checkpoint was retried at once"
    assert await trigger_next(h) == 2
    h.ack_all(2, after_end=True)
    await h.until(lambda: finals(h) == [2], "the final notification")
    await h.finish()


async def test_coordinator_returns_when_every_task_finished(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0), others=("map:0", "map:1"))
    await h.start()
    h.send(TaskFinished(TaskId("src:0")))
    h.send(TaskFinished(TaskId("map:0")))
    await h.one_turn()
    assert h.run_task is not None and not h.run_task.done()
    h.send(TaskFinished(TaskId("map:1")))
    assert await h.run_task is None


async def test_unexpected_message_is_a_type_error(harness: Harness) -> None:
    h = harness(CheckpointConfig())
    await h.start()
    h.send("hello")
    with pytest.raises(TypeError, match="checkpoint coordinator: unexpected message 'hello'"):
        await h.stopped()


# -- savepoints -----------------------------------------------------------------------------


async def test_savepoint_is_written_to_its_own_folder(harness: Harness, tmp_path: Path) -> None:
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    future = h.coordinator.request_savepoint(str(tmp_path))
    await h.until(lambda: triggered(h) == [1], "the savepoint trigger")
    options = h.of_type("src:0", TriggerCheckpoint)[0].barrier.options
    assert options.is_savepoint and options.canonical and not options.terminate
    assert not options.unaligned and options.exactly_once
    assert options.target is not None
    folder = Path(options.target)
    assert folder.parent == tmp_path and folder.name.startswith("savepoint-job-")
    h.ack_all(1)
    savepoint = await future
    assert savepoint.is_savepoint and Path(savepoint.pointer) == folder
    assert (folder / METADATA_FILE).is_file()
    metadata = await FileCheckpointStorage(folder.parent, "job").load(str(folder))
    assert metadata.properties == {"format": "canonical"}, "a savepoint must declare its format"
    assert h.storage.list_completed() == [], "a savepoint went to the checkpoint storage"
    assert h.coordinator.latest_completed is None, "a savepoint became a retained checkpoint"
    await h.finish()


async def test_savepoint_into_an_unwritable_folder_fails_the_request(
    harness: Harness, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    future = h.coordinator.request_savepoint(str(not_a_folder))
    with pytest.raises(CheckpointError, match="cannot write the savepoint"):
        await future
    await h.one_turn()
    assert triggered(h) == [] and h.coordinator.pending == {}
    assert await trigger_next(h) == 1  # periodic checkpoints go on
    await h.finish()


async def test_stop_with_savepoint_commits_side_effects(harness: Harness, tmp_path: Path) -> None:
    # Synchronous (the job stops after it): tasks are told, so sinks commit (as Flink).
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    future = h.coordinator.request_savepoint(str(tmp_path), terminate=True)
    await h.until(lambda: triggered(h) == [1], "the savepoint trigger")
    assert h.of_type("src:0", TriggerCheckpoint)[0].barrier.options.terminate
    h.ack_all(1)
    await future
    await h.until(lambda: completed(h) == [1], "notify complete of the savepoint")
    await h.finish()


async def test_drain_savepoint_is_the_final_checkpoint(harness: Harness, tmp_path: Path) -> None:
    h = harness(CheckpointConfig(interval=10.0), sources=("src:0", "src:1"))
    await h.start()
    future = h.coordinator.request_drain_savepoint(str(tmp_path))
    await h.one_turn()
    assert h.inbox("src:0") == [AwaitFinalCheckpoint(), StopSource()] == h.inbox("src:1")
    assert h.inbox("map:0") == [AwaitFinalCheckpoint()]
    h.input_ended("src:0", "src:1")
    await h.one_turn()
    assert triggered(h, "src:0") == [], "the drain savepoint before every task ended"
    h.input_ended("map:0")
    await h.until(lambda: triggered(h, "src:0") == [1] == triggered(h, "src:1"), "drain trigger")
    options = h.of_type("src:1", TriggerCheckpoint)[0].barrier.options
    assert options.is_savepoint and options.is_final and not options.unaligned
    assert options.target is not None and Path(options.target).parent == tmp_path
    h.ack_all(1, after_end=True)
    savepoint = await future
    assert savepoint.is_savepoint and (Path(savepoint.pointer) / METADATA_FILE).is_file()
    await h.until(lambda: finals(h) == [1], "final notification of the drain savepoint")
    h.advance(100.0)
    await h.one_turn()
    assert triggered(h) == [1], "a checkpoint after the final savepoint"
    await h.finish()


async def test_drain_asked_while_a_final_checkpoint_is_pending(
    harness: Harness, tmp_path: Path
) -> None:
    # The plain final checkpoint completes, but only the drain savepoint ends the job.
    h = harness(CheckpointConfig(interval=10.0, max_concurrent=2))
    await h.start()
    h.input_ended()
    await h.until(lambda: triggered(h) == [1], "the final trigger")
    future = h.coordinator.request_drain_savepoint(str(tmp_path))
    await h.until(lambda: triggered(h) == [1, 2], "the drain savepoint")
    h.ack_all(1, after_end=True)
    await h.until(lambda: completed(h) == [1], "checkpoint 1 completed")
    assert finals(h) == []
    h.ack_all(2, after_end=True)
    assert (await future).is_savepoint
    await h.until(lambda: finals(h) == [2], "the final notification")
    await h.finish()


async def test_plain_savepoint_does_not_commit_side_effects(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    future = h.coordinator.request_savepoint(str(tmp_path))
    await h.until(lambda: triggered(h) == [1], "the savepoint trigger")
    h.ack_all(1)
    await future
    await h.finish()  # FIFO: anything the completion sent is in the inboxes now
    assert all(completed(h, t) == [] for t in h.tasks), "tasks told to commit a savepoint"


async def test_plain_savepoint_does_not_subsume_pending_checkpoints(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness(CheckpointConfig(interval=10.0, max_concurrent=2))
    await h.start()
    assert await trigger_next(h) == 1
    future = h.coordinator.request_savepoint(str(tmp_path))
    await h.until(lambda: triggered(h) == [1, 2], "the savepoint trigger")
    h.ack_all(2)
    await future
    h.ack_all(1)
    await h.finish()
    assert aborted(h) == [], "a savepoint subsumed checkpoint 1"
    assert completed(h) == [1]
    assert h.storage.list_completed() == [1]


# -- attempts and the end of the job --------------------------------------------------------


async def test_next_attempt_aborts_pending_checkpoints_and_carries_on(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0))
    await h.start()
    assert await trigger_next(h) == 1
    await complete(h, 1)
    assert await trigger_next(h) == 2
    await h.finish()  # the attempt ended with checkpoint 2 pending: aborted (job ended)

    await h.next_attempt()
    assert h.coordinator.pending == {}
    stats = h.coordinator.statistics_snapshot()
    assert {s.checkpoint_id: s.status for s in stats.history} == {
        1: CheckpointStatus.COMPLETED,
        2: CheckpointStatus.FAILED,
    }
    assert stats.history[1].failure == "checkpoint 2 was aborted: the job ended"
    assert stats.counts.in_progress == 0
    assert await trigger_next(h) == 3, "checkpoint ids carry on across attempts"
    await complete(h, 3)
    assert h.coordinator.latest_completed is not None
    assert h.coordinator.latest_completed.checkpoint_id == 3
    assert h.storage.list_completed() == [3]
    await h.finish()


class RecordingStorage(MemoryCheckpointStorage):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.discarded: list[int] = []

    async def discard(self, checkpoint_id: int) -> None:
        self.discarded.append(checkpoint_id)
        await super().discard(checkpoint_id)


async def test_checkpoint_pending_when_the_job_ends_is_aborted(harness: Harness) -> None:
    h = harness(CheckpointConfig(interval=10.0), storage=RecordingStorage("job"))
    await h.start()
    await trigger_next(h)
    h.ack(1, "src:0")  # map:0 finishes without acknowledging
    await h.finish()
    stats = h.coordinator.statistics_snapshot()
    assert stats.counts.in_progress == 0
    assert stats.history[0].status is CheckpointStatus.FAILED
    assert h.storage.discarded == [1]
