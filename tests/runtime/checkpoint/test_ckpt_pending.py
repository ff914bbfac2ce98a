"""``PendingCheckpoint``: which tasks acknowledged, and what each acknowledgement did.

On the checkpoint path expected outcomes are results, not exceptions (STYLE.md): every
acknowledgement returns an ``AckResult``. A pending checkpoint is fully acknowledged
only when every task it waits for acknowledged and it was not discarded.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.checkpoint.events import CheckpointOptions, SubtaskCheckpointMetrics
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.checkpoint.pending import AckResult, PendingCheckpoint

TASKS = [TaskId("0:0"), TaskId("0:1"), TaskId("1:0")]
STRANGER = TaskId("9:9")


def pending(tasks: list[TaskId] = TASKS) -> PendingCheckpoint:
    return PendingCheckpoint.create(CheckpointId(4), 12.5, CheckpointOptions(), tasks)


def metrics(size: int = 0) -> SubtaskCheckpointMetrics:
    return SubtaskCheckpointMetrics(state_size=size)


def test_fully_acknowledged_only_when_every_task_acknowledged() -> None:
    checkpoint = pending()
    for i, task in enumerate(TASKS):
        assert not checkpoint.is_fully_acknowledged
        assert checkpoint.acknowledge(task, f"state {i}", metrics(i)) is AckResult.SUCCESS
        assert checkpoint.num_acknowledged == i + 1
    assert checkpoint.is_fully_acknowledged
    assert checkpoint.acknowledged == {t: f"state {i}" for i, t in enumerate(TASKS)}
    assert checkpoint.metrics == {t: metrics(i) for i, t in enumerate(TASKS)}


def test_duplicate_keeps_the_first_acknowledgement() -> None:
    checkpoint = pending()
    assert checkpoint.acknowledge(TASKS[0], "first", metrics(1)) is AckResult.SUCCESS
    assert checkpoint.acknowledge(TASKS[0], "second", metrics(2)) is AckResult.DUPLICATE
    assert checkpoint.acknowledged[TASKS[0]] == "first"
    assert checkpoint.metrics[TASKS[0]] == metrics(1)
    assert checkpoint.num_acknowledged == 1


def test_unknown_task_is_not_counted() -> None:
    checkpoint = pending([TASKS[0]])
    assert checkpoint.acknowledge(STRANGER, "state", metrics()) is AckResult.UNKNOWN
    assert checkpoint.num_acknowledged == 0
    assert not checkpoint.is_fully_acknowledged
    assert checkpoint.acknowledge(TASKS[0], "state", metrics()) is AckResult.SUCCESS
    assert checkpoint.is_fully_acknowledged


def test_discarded_checkpoint_takes_no_acknowledgement() -> None:
    checkpoint = pending()
    assert checkpoint.acknowledge(TASKS[0], "state", metrics()) is AckResult.SUCCESS
    checkpoint.discard()
    for task in [*TASKS, STRANGER]:
        assert checkpoint.acknowledge(task, "late", metrics()) is AckResult.DISCARDED
    assert checkpoint.num_acknowledged == 1
    assert not checkpoint.is_fully_acknowledged


def test_discarded_after_every_acknowledgement_is_not_fully_acknowledged() -> None:
    checkpoint = pending([TASKS[0]])
    checkpoint.acknowledge(TASKS[0], "state", metrics())
    checkpoint.discard()
    assert not checkpoint.is_fully_acknowledged


@settings(max_examples=200, deadline=None, database=None)
@given(
    must_ack=st.sets(st.sampled_from(TASKS), min_size=1),
    events=st.lists(st.one_of(st.sampled_from([*TASKS, STRANGER]), st.just("discard"))),
)
def test_acknowledgements_against_a_model(must_ack: set[TaskId], events: list) -> None:
    checkpoint = pending(sorted(must_ack))
    acked: set[TaskId] = set()
    discarded = False
    for event in events:
        if event == "discard":
            checkpoint.discard()
            discarded = True
            continue
        result = checkpoint.acknowledge(event, event, metrics())
        if discarded:
            assert result is AckResult.DISCARDED
        elif event in acked:
            assert result is AckResult.DUPLICATE
        elif event not in must_ack:
            assert result is AckResult.UNKNOWN
        else:
            assert result is AckResult.SUCCESS
            acked.add(event)
        assert checkpoint.num_acknowledged == len(acked)
        assert checkpoint.not_yet_acknowledged == must_ack - acked
        assert checkpoint.is_fully_acknowledged == (acked == must_ack and not discarded)
