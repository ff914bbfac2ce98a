"""Checkpointing: configuration, barriers, the coordinator and its bookkeeping, statistics.

The barrier path and the checkpoint path of DESIGN.md. The decisions are pure objects
(``BarrierHandler``, ``TriggerRules``, ``PendingCheckpoint``, ``FailureCounter``); the
``CheckpointCoordinator`` actor and the tasks (``runtime.tasks``) perform them.
"""

from __future__ import annotations

from runtime.checkpoint.config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
)
from runtime.checkpoint.coordinator import (
    CheckpointCoordinator,
    CheckpointError,
    CheckpointFailedError,
    CompletedCheckpoint,
)
from runtime.checkpoint.failures import CheckpointFailureReason
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
    "CheckpointStatistics",
    "CheckpointStats",
    "CheckpointStatus",
    "CheckpointingMode",
    "CompletedCheckpoint",
    "ExternalizedCheckpointRetention",
]
