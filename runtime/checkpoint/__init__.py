"""Checkpointing: configuration, barriers, the coordinator and its bookkeeping, statistics.

The barrier path and the checkpoint path of DESIGN.md. The decisions are pure objects:
the ``BarrierHandler`` (one per subtask) and the ``CheckpointPlanner`` (one per job, with
``TriggerRules``, ``PendingCheckpoint``, ``FailureCounter``); the tasks
(``runtime.tasks``) and the ``CheckpointCoordinator`` actor perform what they decide.
"""

from __future__ import annotations

from runtime.checkpoint.actions import CompletedCheckpoint
from runtime.checkpoint.config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
)
from runtime.checkpoint.coordinator import CheckpointCoordinator
from runtime.checkpoint.errors import CheckpointError, CheckpointFailedError
from runtime.checkpoint.failures import CheckpointFailureReason
from runtime.checkpoint.planner import CheckpointPlanner
from runtime.checkpoint.stats import (
    CheckpointCounts,
    CheckpointStatistics,
    CheckpointStats,
    CheckpointStatus,
)

__all__ = [
    "CheckpointConfig",
    "CheckpointCoordinator",
    "CheckpointCounts",
    "CheckpointError",
    "CheckpointFailedError",
    "CheckpointFailureReason",
    "CheckpointPlanner",
    "CheckpointStatistics",
    "CheckpointStats",
    "CheckpointStatus",
    "CheckpointingMode",
    "CompletedCheckpoint",
    "ExternalizedCheckpointRetention",
]
