"""The checkpoint path's errors, as clients and the job master see them.

``CheckpointError`` (a manual checkpoint or savepoint failed: its future raises it)
and its child ``CheckpointFailedError`` (more checkpoints failed in a row than
``tolerable_failures`` allows: the job fails with it). Both are ``WeirError`` s.
"""

from __future__ import annotations

from runtime.checkpoint.failures import CheckpointFailureReason
from runtime.errors import WeirError


class CheckpointError(WeirError):
    """A checkpoint failed (returned to a manual trigger's caller).

    Attributes:
        checkpoint_id: the checkpoint, if one was triggered.
        reason: why it failed.
    """

    def __init__(
        self,
        message: str,
        checkpoint_id: int | None = None,
        reason: CheckpointFailureReason | None = None,
    ) -> None:
        super().__init__(message)
        self.checkpoint_id = checkpoint_id
        self.reason = reason


class CheckpointFailedError(CheckpointError):
    """More checkpoints failed in a row than ``tolerable_failures`` allows: the job fails."""
