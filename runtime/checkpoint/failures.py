"""``FailureCounter``: consecutive checkpoint failures against the tolerable number.

Pure. Flink's ``CheckpointFailureManager``: every failed checkpoint (declined, expired,
written with an error) counts; a completed one resets the count; once the count exceeds
``tolerable`` the job fails.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CheckpointFailureReason(enum.Enum):
    """Why a checkpoint failed."""

    EXPIRED = "the checkpoint expired before completing"
    DECLINED = "a task declined the checkpoint"
    WRITE_FAILURE = "writing the checkpoint failed"
    SUBSUMED = "a newer checkpoint completed first"
    TASK_FAILURE = "a task failed"
    JOB_ENDED = "the job ended"

    @property
    def counts(self) -> bool:
        """Whether this reason counts toward the tolerable failures."""
        return self in (
            CheckpointFailureReason.EXPIRED,
            CheckpointFailureReason.DECLINED,
            CheckpointFailureReason.WRITE_FAILURE,
        )


@dataclass(slots=True)
class FailureCounter:
    """Counts consecutive failures.

    Args:
        tolerable: failures in a row that the job survives.
    """

    tolerable: int
    consecutive: int = 0

    def failed(self, reason: CheckpointFailureReason) -> bool:
        """Record a failure; True if the job must now fail."""
        if not reason.counts:
            return False
        self.consecutive += 1
        return self.consecutive > self.tolerable

    def completed(self) -> None:
        """A checkpoint completed: the streak ends."""
        self.consecutive = 0
