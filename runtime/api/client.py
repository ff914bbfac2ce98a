"""``JobClient``: a handle on a job started with ``env.start``.

``await env.start(name)`` returns a ``JobClient`` at once: the job runs in the background
of the same event loop, and the client reports its status, cancels it, and waits for its
``JobResult`` (``runtime.scheduler.result``).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from runtime.checkpoint.stats import CheckpointStatistics
from runtime.scheduler.result import JobResult, JobStatus, OperatorMetrics, SavepointFormat

if TYPE_CHECKING:
    from runtime.checkpoint.coordinator import CheckpointCoordinator, CompletedCheckpoint
    from runtime.scheduler.executor import JobExecution


class JobClient:
    """A handle on a job started with ``env.start``.

    ``status`` is readable at any time; ``cancel`` asks the job to stop and returns at
    once; ``wait`` returns the ``JobResult`` when the job is over.
    """

    def __init__(self, execution: JobExecution, task: asyncio.Task[JobResult] | None = None):
        self._execution = execution
        self._task = task

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self._execution.job_id

    @property
    def job_name(self) -> str:
        """The job's name."""
        return self._execution.job_name

    @property
    def status(self) -> JobStatus:
        """The job's current status."""
        return self._execution.status

    @property
    def restarts(self) -> int:
        """How many times the job restarted so far."""
        return self._execution.restarts

    def cancel(self) -> None:
        """Cancel the job: every subtask is stopped. Never blocks; ``wait`` for the end."""
        self._execution.cancel()

    async def wait(self) -> JobResult:
        """Wait for the job to end and return its result.

        Raises:
            JobFailedError: the job failed (the error carries the result).
        """
        if self._task is not None:
            return await asyncio.shield(self._task)
        await self._execution.done.wait()
        if self._execution.error is not None:
            raise self._execution.error
        assert self._execution.result is not None
        return self._execution.result

    def metrics(self) -> dict[str, OperatorMetrics]:
        """Records in and out per operator so far."""
        return self._execution.operator_metrics()

    def _coordinator(self) -> CheckpointCoordinator:
        from runtime.checkpoint.coordinator import CheckpointError

        coordinator = self._execution.coordinator
        if coordinator is None or self.status.is_terminal:
            raise CheckpointError(f"job {self.job_name!r} is {self.status.value}")
        if self.status in (JobStatus.FAILING, JobStatus.RESTARTING) or (
            coordinator.state.is_terminal
        ):
            # Failing or restarting: nobody would read the request until the next attempt.
            raise CheckpointError(
                f"job {self.job_name!r} is failing or restarting; try again once it runs"
            )
        return coordinator

    async def trigger_checkpoint(self) -> CompletedCheckpoint:
        """Trigger a checkpoint now and wait until it completes.

        Works without periodic checkpoints too (into the configured storage).

        Raises:
            CheckpointError: the job is over, or this checkpoint failed (says why).
        """
        coordinator = self._coordinator()
        return await coordinator.request_checkpoint(coordinator.default_options())

    async def trigger_savepoint(
        self,
        directory: str | os.PathLike[str],
        *,
        format: SavepointFormat = SavepointFormat.CANONICAL,
    ) -> str:
        """Take a savepoint into a new folder under ``directory``; return its path.

        A savepoint is aligned, self-contained (relative paths: the folder can be
        moved), never deleted by the runtime, and restorable with ``restore_from``.

        Raises:
            CheckpointError: the job is over, or the savepoint failed (says why).
        """
        coordinator = self._coordinator()
        completed = await coordinator.request_savepoint(
            os.fspath(directory), canonical=format is SavepointFormat.CANONICAL
        )
        return completed.pointer

    async def stop_with_savepoint(
        self,
        directory: str | os.PathLike[str],
        *,
        drain: bool = False,
        format: SavepointFormat = SavepointFormat.CANONICAL,
    ) -> str:
        """Stop the job with a savepoint; return the savepoint's path.

        Without ``drain`` the sources stop right after the savepoint and the job ends
        without ending its input (resume it later from the savepoint). With ``drain``
        the sources end their input first, every pending result is flushed, and the
        savepoint is the job's final checkpoint. ``wait()`` returns the finished job.

        Raises:
            CheckpointError: the savepoint failed; the job goes on running.
        """
        coordinator = self._coordinator()
        target = os.fspath(directory)
        canonical = format is SavepointFormat.CANONICAL
        if drain:
            completed = await coordinator.request_drain_savepoint(target, canonical=canonical)
        else:
            completed = await coordinator.request_savepoint(
                target, canonical=canonical, terminate=True
            )
        return completed.pointer

    def checkpoint_stats(self) -> CheckpointStatistics | None:
        """Checkpoint counts and history so far (None if checkpointing is off)."""
        coordinator = self._execution.coordinator
        return None if coordinator is None else coordinator.statistics_snapshot()
