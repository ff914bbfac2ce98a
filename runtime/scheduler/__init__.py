"""Running a job: deployment of its subtasks, the executor, restarts and recovery.

``JobExecution`` (``executor.py``) deploys a ``JobGraph`` as one ``Deployment`` per
attempt, restarts it by its ``RestartStrategy``, and restores it from the checkpoint the
recovery planner chooses (``recovery.py``, ``restore.py``). It ends with a ``JobResult``
(``result.py``) or raises ``JobFailedError``.
"""

from __future__ import annotations

from runtime.scheduler.deployment import Deployment
from runtime.scheduler.executor import JobExecution
from runtime.scheduler.recovery import RestoreFromError, RestoreWarning
from runtime.scheduler.restart import (
    ExponentialDelayRestart,
    FailureRateRestart,
    FixedDelayRestart,
    NoRestart,
    RestartStrategy,
)
from runtime.scheduler.restore import RestoredCheckpoint, load_checkpoint
from runtime.scheduler.result import (
    JobFailedError,
    JobResult,
    JobStatus,
    OperatorMetrics,
    SavepointFormat,
)

__all__ = [
    "Deployment",
    "ExponentialDelayRestart",
    "FailureRateRestart",
    "FixedDelayRestart",
    "JobExecution",
    "JobFailedError",
    "JobResult",
    "JobStatus",
    "NoRestart",
    "OperatorMetrics",
    "RestartStrategy",
    "RestoreFromError",
    "RestoreWarning",
    "RestoredCheckpoint",
    "SavepointFormat",
    "load_checkpoint",
]
