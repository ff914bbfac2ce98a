"""``PendingCheckpoint``: a triggered checkpoint waiting for its acknowledgements.

Owned by the coordinator. It knows which tasks must acknowledge, records each
acknowledgement once, and reports expected outcomes as an ``AckResult`` rather than an
exception: a late acknowledgement of a discarded checkpoint, a duplicate, or one from a
task that was not asked are normal events on a checkpoint path.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.checkpoint.events import CheckpointOptions, SubtaskCheckpointMetrics
from runtime.checkpoint.ids import CheckpointId, TaskId


class AckResult(enum.Enum):
    """What an acknowledgement did."""

    SUCCESS = "success"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"  # the task is not among those that must acknowledge
    DISCARDED = "discarded"  # the checkpoint was already aborted or completed


@dataclass(slots=True)
class PendingCheckpoint:
    """A checkpoint in flight.

    Attributes:
        checkpoint_id: its id.
        timestamp: trigger time (``time.monotonic()``).
        options: how it is taken.
        not_yet_acknowledged: tasks that still have to acknowledge.
        acknowledged: per task, the state it reported.
        metrics: per task, what it measured.
        discarded: whether it was aborted or completed (no more acknowledgements).
    """

    checkpoint_id: CheckpointId
    timestamp: float
    options: CheckpointOptions
    not_yet_acknowledged: set[TaskId]
    acknowledged: dict[TaskId, Any] = field(default_factory=dict)
    metrics: dict[TaskId, SubtaskCheckpointMetrics] = field(default_factory=dict)
    discarded: bool = False

    @classmethod
    def create(
        cls,
        checkpoint_id: CheckpointId,
        timestamp: float,
        options: CheckpointOptions,
        tasks: Iterable[TaskId],
    ) -> PendingCheckpoint:
        """A pending checkpoint that ``tasks`` must acknowledge."""
        return cls(checkpoint_id, timestamp, options, set(tasks))

    @property
    def is_fully_acknowledged(self) -> bool:
        """Whether every task acknowledged (and it was not discarded)."""
        return not self.not_yet_acknowledged and not self.discarded

    @property
    def num_acknowledged(self) -> int:
        """How many tasks acknowledged."""
        return len(self.acknowledged)

    def acknowledge(self, task: TaskId, state: Any, metrics: SubtaskCheckpointMetrics) -> AckResult:
        """Record ``task``'s acknowledgement."""
        if self.discarded:
            return AckResult.DISCARDED
        if task in self.acknowledged:
            return AckResult.DUPLICATE
        if task not in self.not_yet_acknowledged:
            return AckResult.UNKNOWN
        self.not_yet_acknowledged.discard(task)
        self.acknowledged[task] = state
        self.metrics[task] = metrics
        return AckResult.SUCCESS

    def discard(self) -> None:
        """No more acknowledgements count (aborted or completed)."""
        self.discarded = True
