"""Checkpoint statistics, as Flink's web UI shows them.

The coordinator reports every trigger, completion, failure and restore to a
``CheckpointStatsTracker``; ``JobClient.checkpoint_stats()`` and ``JobResult`` expose its
``CheckpointStatistics``: totals, and per checkpoint its id, trigger time, status,
end-to-end duration, the per-subtask sync, async, alignment and start-delay durations,
state size, persisted in-flight bytes, and whether it ended unaligned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from runtime.checkpoint.events import SubtaskCheckpointMetrics
from runtime.checkpoint.ids import CheckpointId, TaskId


class CheckpointStatus(enum.Enum):
    """Where a checkpoint is."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(slots=True)
class CheckpointStats:
    """One checkpoint's statistics.

    Attributes:
        checkpoint_id: its id.
        trigger_time: wall-clock time of the trigger (``time.time()``).
        status: in progress, completed or failed.
        is_savepoint: whether it is a savepoint.
        end_to_end_duration: seconds from trigger to completion or failure.
        subtasks: what each subtask measured.
        failure: why it failed, if it did.
        external_pointer: where a completed checkpoint lives.
    """

    checkpoint_id: CheckpointId
    trigger_time: float
    status: CheckpointStatus = CheckpointStatus.IN_PROGRESS
    is_savepoint: bool = False
    end_to_end_duration: float | None = None
    subtasks: dict[TaskId, SubtaskCheckpointMetrics] = field(default_factory=dict)
    failure: str | None = None
    external_pointer: str | None = None

    @property
    def state_size(self) -> int:
        """Bytes of state over all subtasks."""
        return sum(m.state_size for m in self.subtasks.values())

    @property
    def in_flight_bytes(self) -> int:
        """Bytes of persisted channel state over all subtasks."""
        return sum(m.in_flight_bytes for m in self.subtasks.values())

    @property
    def unaligned(self) -> bool:
        """Whether any subtask took it unaligned."""
        return any(m.unaligned for m in self.subtasks.values())

    def _max(self, attribute: str) -> float:
        return max((getattr(m, attribute) for m in self.subtasks.values()), default=0.0)

    @property
    def max_sync_duration(self) -> float:
        """The longest synchronous part of any subtask."""
        return self._max("sync_duration")

    @property
    def max_async_duration(self) -> float:
        """The longest asynchronous part of any subtask."""
        return self._max("async_duration")

    @property
    def max_alignment_duration(self) -> float:
        """The longest alignment of any subtask."""
        return self._max("alignment_duration")

    @property
    def max_start_delay(self) -> float:
        """The longest delay from trigger to first barrier of any subtask."""
        return self._max("start_delay")


@dataclass(slots=True)
class CheckpointCounts:
    """Totals over the job's life."""

    triggered: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    restored: int = 0


@dataclass(slots=True)
class CheckpointStatistics:
    """Counts and the history of checkpoints (oldest first)."""

    counts: CheckpointCounts
    history: list[CheckpointStats]
    restored_from: str | None = None

    @property
    def latest_completed(self) -> CheckpointStats | None:
        """The newest completed checkpoint."""
        for stats in reversed(self.history):
            if stats.status is CheckpointStatus.COMPLETED:
                return stats
        return None

    def completed(self) -> list[CheckpointStats]:
        """Completed checkpoints, oldest first."""
        return [s for s in self.history if s.status is CheckpointStatus.COMPLETED]

    def summary(self) -> str:
        """A short table for people."""
        c = self.counts
        lines = [
            f"checkpoints: {c.triggered} triggered, {c.completed} completed, "
            f"{c.failed} failed, {c.in_progress} in progress, {c.restored} restored",
        ]
        if self.history:
            lines.append(
                f"  {'id':>4} {'status':<11} {'duration':>9} {'sync':>8} {'async':>8} "
                f"{'align':>8} {'state':>10} {'in-flight':>10} unaligned"
            )
        for s in self.history[-10:]:
            duration = "-" if s.end_to_end_duration is None else f"{s.end_to_end_duration:.3f}s"
            lines.append(
                f"  {s.checkpoint_id:>4} {s.status.value:<11} {duration:>9} "
                f"{s.max_sync_duration * 1e3:>6.1f}ms {s.max_async_duration * 1e3:>6.1f}ms "
                f"{s.max_alignment_duration * 1e3:>6.1f}ms {s.state_size:>10,} "
                f"{s.in_flight_bytes:>10,} {'yes' if s.unaligned else 'no'}"
            )
        return "\n".join(lines)


class CheckpointStatsTracker:
    """Collects what the coordinator reports."""

    def __init__(self, history_size: int = 100) -> None:
        self.counts = CheckpointCounts()
        self._history: dict[CheckpointId, CheckpointStats] = {}
        self._history_size = history_size
        self._restored_from: str | None = None

    def triggered(self, checkpoint_id: CheckpointId, wall_time: float, savepoint: bool) -> None:
        """A checkpoint was triggered."""
        self.counts.triggered += 1
        self.counts.in_progress += 1
        self._history[checkpoint_id] = CheckpointStats(
            checkpoint_id, wall_time, is_savepoint=savepoint
        )
        while len(self._history) > self._history_size:
            del self._history[next(iter(self._history))]

    def acknowledged(
        self, checkpoint_id: CheckpointId, task: TaskId, metrics: SubtaskCheckpointMetrics
    ) -> None:
        """A subtask reported its measurements."""
        stats = self._history.get(checkpoint_id)
        if stats is not None:
            stats.subtasks[task] = metrics

    def completed(self, checkpoint_id: CheckpointId, duration: float, pointer: str) -> None:
        """A checkpoint completed after ``duration`` seconds."""
        self.counts.in_progress -= 1
        self.counts.completed += 1
        stats = self._history.get(checkpoint_id)
        if stats is not None:
            stats.status = CheckpointStatus.COMPLETED
            stats.end_to_end_duration = duration
            stats.external_pointer = pointer

    def failed(self, checkpoint_id: CheckpointId, duration: float, reason: str) -> None:
        """A checkpoint failed after ``duration`` seconds."""
        self.counts.in_progress -= 1
        self.counts.failed += 1
        stats = self._history.get(checkpoint_id)
        if stats is not None:
            stats.status = CheckpointStatus.FAILED
            stats.end_to_end_duration = duration
            stats.failure = reason

    def restored(self, pointer: str) -> None:
        """The job was restored from ``pointer``."""
        self.counts.restored += 1
        self._restored_from = pointer

    def snapshot(self) -> CheckpointStatistics:
        """A copy of the statistics now."""
        return CheckpointStatistics(
            CheckpointCounts(**{f: getattr(self.counts, f) for f in self.counts.__slots__}),
            [
                CheckpointStats(
                    s.checkpoint_id,
                    s.trigger_time,
                    s.status,
                    s.is_savepoint,
                    s.end_to_end_duration,
                    dict(s.subtasks),
                    s.failure,
                    s.external_pointer,
                )
                for s in self._history.values()
            ],
            self._restored_from,
        )
