"""``FailureCounter``: consecutive checkpoint failures against ``tolerable_failures``.

Flink's ``CheckpointFailureManager``: expired, declined and failed writes count; a
subsumed checkpoint, an ended job or a failed task do not; a completion ends the
streak; the job fails once the streak exceeds the tolerable number.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.checkpoint.failures import CheckpointFailureReason, FailureCounter

COUNTED = [
    CheckpointFailureReason.EXPIRED,
    CheckpointFailureReason.DECLINED,
    CheckpointFailureReason.WRITE_FAILURE,
]
NOT_COUNTED = [
    CheckpointFailureReason.SUBSUMED,
    CheckpointFailureReason.JOB_ENDED,
    CheckpointFailureReason.TASK_FAILURE,
]


def test_every_reason_is_classified() -> None:
    assert set(COUNTED) | set(NOT_COUNTED) == set(CheckpointFailureReason)


@pytest.mark.parametrize("reason", COUNTED)
def test_no_tolerance_fails_the_job_at_the_first_counted_failure(
    reason: CheckpointFailureReason,
) -> None:
    assert reason.counts
    assert FailureCounter(tolerable=0).failed(reason)


@pytest.mark.parametrize("reason", NOT_COUNTED)
def test_subsumed_job_ended_and_task_failure_are_not_counted(
    reason: CheckpointFailureReason,
) -> None:
    assert not reason.counts
    counter = FailureCounter(tolerable=0)
    for _ in range(5):
        assert not counter.failed(reason)
    assert counter.consecutive == 0


def test_tolerable_failures_are_survived_and_the_next_one_fails() -> None:
    counter = FailureCounter(tolerable=2)
    assert not counter.failed(CheckpointFailureReason.DECLINED)
    assert not counter.failed(CheckpointFailureReason.EXPIRED)
    assert counter.failed(CheckpointFailureReason.WRITE_FAILURE)
    assert counter.consecutive == 3


def test_completion_resets_the_streak() -> None:
    counter = FailureCounter(tolerable=1)
    assert not counter.failed(CheckpointFailureReason.DECLINED)
    counter.completed()
    assert counter.consecutive == 0
    assert not counter.failed(CheckpointFailureReason.DECLINED)
    assert counter.failed(CheckpointFailureReason.EXPIRED)


@settings(max_examples=200, deadline=None, database=None)
@given(
    tolerable=st.integers(0, 3),
    events=st.lists(st.one_of(st.sampled_from(list(CheckpointFailureReason)), st.none())),
)
def test_failure_counter_against_a_model(tolerable: int, events: list) -> None:
    counter = FailureCounter(tolerable)
    streak = 0
    for reason in events:
        if reason is None:
            counter.completed()
            streak = 0
            continue
        if reason in COUNTED:
            streak += 1
        assert counter.failed(reason) == (reason in COUNTED and streak > tolerable)
        assert counter.consecutive == streak
