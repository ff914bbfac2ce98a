"""What the ``CheckpointPlanner`` decides, for the ``CheckpointCoordinator`` actor to do.

The planner (``runtime.checkpoint.planner``) returns a list of these actions; the actor
(``runtime.checkpoint.coordinator``) performs them in order and reports the outcome of
each storage operation back. Also the plain values both sides share: a client's
``Request``, a ``CompletedCheckpoint`` and the ``OperatorInfo`` the metadata needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.checkpoint.errors import CheckpointError, CheckpointFailedError
from runtime.checkpoint.events import CheckpointOptions
from runtime.checkpoint.ids import CheckpointId, TaskId
from storage.checkpoint import CheckpointMetadata


@dataclass(frozen=True, slots=True)
class CompletedCheckpoint:
    """A completed checkpoint: its id and where it lives."""

    checkpoint_id: CheckpointId
    pointer: str
    timestamp: float
    is_savepoint: bool = False


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """What the coordinator needs to know of an operator to write its metadata."""

    uid: str
    name: str
    parallelism: int
    max_parallelism: int


@dataclass(eq=False, slots=True)
class Request:
    """A client's checkpoint or savepoint, waiting for its outcome.

    ``token`` is the caller's (the coordinator keeps its future there); the planner only
    hands it back in ``ResolveRequest`` / ``FailRequest``.
    """

    options: CheckpointOptions
    token: Any = None


@dataclass(frozen=True, slots=True)
class SendToTasks:
    """Put ``message`` in the control mailbox of each of ``tasks``."""

    tasks: tuple[TaskId, ...]
    message: object


@dataclass(frozen=True, slots=True)
class PrepareSavepointFolder:
    """Create the savepoint folder ``request.options.target``; report the outcome."""

    request: Request
    options: CheckpointOptions


@dataclass(frozen=True, slots=True)
class WriteMetadata:
    """Commit ``metadata`` (``_metadata`` last, atomically); report the outcome.

    ``target``: a savepoint's own folder, or None for the job's checkpoint storage.
    """

    metadata: CheckpointMetadata
    target: str | None


@dataclass(frozen=True, slots=True)
class Discard:
    """Delete checkpoint ``checkpoint_id``'s files (a failure is logged, never raised)."""

    checkpoint_id: CheckpointId
    target: str | None = None


@dataclass(frozen=True, slots=True)
class RecordNotified:
    """The tasks are told ``checkpoint_id`` completed: record it in the job's storage.

    Recovery never goes back past a notified checkpoint silently (its output may be
    committed by two-phase-commit sinks); a failure to record is logged.
    """

    checkpoint_id: CheckpointId
    pointer: str


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """``request`` completed as ``completed``."""

    request: Request
    completed: CompletedCheckpoint


@dataclass(frozen=True, slots=True)
class FailRequest:
    """``request`` failed with ``error``."""

    request: Request
    error: CheckpointError


@dataclass(frozen=True, slots=True)
class FailJob:
    """Too many checkpoints failed in a row: the job fails with ``error``."""

    error: CheckpointFailedError


Action = (
    SendToTasks
    | PrepareSavepointFolder
    | WriteMetadata
    | Discard
    | RecordNotified
    | ResolveRequest
    | FailRequest
    | FailJob
)
"""What the planner may ask the coordinator actor to do."""
