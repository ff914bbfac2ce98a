"""``CheckpointCoordinator``: the actor that performs what the ``CheckpointPlanner`` decides.

Every decision of the checkpoint path lives in the pure ``CheckpointPlanner``
(``runtime.checkpoint.planner``): when to trigger (periodically, on request, the job's
final checkpoint once every task ended its input, the drain savepoint), what an
acknowledgement or a decline means, when a checkpoint completes, what it subsumes, who is
told, when the job must fail. This actor only

* receives messages in its mailbox (task reports, client requests) and moves the clock,
  feeding each to the planner;
* performs the actions the planner returns, in order: puts commands in task mailboxes,
  creates savepoint folders, commits ``_metadata`` (``CheckpointStorage.commit``,
  written last and atomically), discards files (a failure is logged on ``weir.checkpoint``,
  never swallowed silently), resolves or fails the clients' futures, and raises
  ``CheckpointFailedError`` when the planner says the job must fail;
* reports the outcome of each storage operation back to the planner.

Clients call ``request_checkpoint`` / ``request_savepoint`` / ``request_drain_savepoint``,
which only put a message in the mailbox: no state changes outside it. The actor ends
when every task reported ``TaskFinished``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from actors import Actor, Mailbox, Waker
from runtime.checkpoint.actions import (
    Action,
    CompletedCheckpoint,
    Discard,
    FailJob,
    FailRequest,
    OperatorInfo,
    PrepareSavepointFolder,
    RecordNotified,
    Request,
    ResolveRequest,
    SendToTasks,
    WriteMetadata,
)
from runtime.checkpoint.config import CheckpointConfig
from runtime.checkpoint.errors import CheckpointError, CheckpointFailedError
from runtime.checkpoint.events import CheckpointOptions
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.checkpoint.pending import PendingCheckpoint
from runtime.checkpoint.planner import CheckpointPlanner
from runtime.checkpoint.stats import CheckpointStatistics, CheckpointStatsTracker
from storage.checkpoint import (
    CheckpointStorage,
    CompletedCheckpointStore,
    SavepointStorage,
    new_savepoint_folder,
)

__all__ = [
    "CheckpointCoordinator",
    "CheckpointError",
    "CheckpointFailedError",
    "CompletedCheckpoint",
    "OperatorInfo",
    "TriggerRequest",
]

logger = logging.getLogger("weir.checkpoint")


@dataclass(slots=True)
class TriggerRequest:
    """Mailbox message: a manual checkpoint or savepoint, with the future of its outcome."""

    future: asyncio.Future[CompletedCheckpoint]
    options: CheckpointOptions
    drain: bool = False


class CheckpointCoordinator(Actor):
    """The job's checkpoint coordinator actor.

    Args:
        config: the checkpointing options (validated).
        storage: where checkpoints are written.
        tasks: every task's control mailbox, by task id.
        sources: the ids of the source tasks (they receive the triggers).
        operators: every operator of the job, for the metadata.
        job_id: the job's id.
        clock: monotonic seconds (injectable for tests).
        first_checkpoint_id: the id of the first checkpoint.
    """

    def __init__(
        self,
        config: CheckpointConfig,
        storage: CheckpointStorage,
        tasks: Mapping[TaskId, Mailbox[object]],
        sources: list[TaskId],
        operators: list[OperatorInfo],
        job_id: str,
        *,
        clock: Any = time.monotonic,
        first_checkpoint_id: int = 1,
    ) -> None:
        super().__init__("checkpoint coordinator")
        self.config = config
        self.storage = storage
        self.tasks = dict(tasks)
        self.job_id = job_id
        self.clock = clock
        self.planner = CheckpointPlanner(
            config, job_id, self.tasks, sources, operators, first_checkpoint_id=first_checkpoint_id
        )

    # -- views (read-only) ----------------------------------------------------------------

    @property
    def pending(self) -> dict[CheckpointId, PendingCheckpoint]:
        """The pending checkpoints (the planner's)."""
        return self.planner.pending

    @property
    def completed(self) -> list[CompletedCheckpoint]:
        """Every checkpoint completed so far, oldest first (savepoints not included)."""
        return self.planner.completed

    @property
    def store(self) -> CompletedCheckpointStore:
        """The retained completed checkpoints."""
        return self.planner.store

    @property
    def stats(self) -> CheckpointStatsTracker:
        """The statistics tracker."""
        return self.planner.stats

    @property
    def sources(self) -> list[TaskId]:
        """The source tasks of the current attempt."""
        return self.planner.sources

    @property
    def input_ended(self) -> frozenset[TaskId]:
        """The tasks of the current attempt that processed all of their input."""
        return frozenset(self.planner.end.input_ended)

    @property
    def next_checkpoint_id(self) -> int:
        """The id the next checkpoint will get."""
        return self.planner.next_id

    @property
    def latest_completed(self) -> CompletedCheckpoint | None:
        """The newest completed checkpoint."""
        completed = self.planner.completed
        return completed[-1] if completed else None

    def statistics_snapshot(self) -> CheckpointStatistics:
        """The checkpoint statistics now."""
        return self.planner.stats.snapshot()

    def default_options(self) -> CheckpointOptions:
        """The options of periodic checkpoints."""
        return self.planner.default_options()

    # -- attempts -------------------------------------------------------------------------

    async def prepare_attempt(
        self,
        tasks: Mapping[TaskId, Mailbox[object]],
        sources: list[TaskId],
        operators: Iterable[OperatorInfo] | None = None,
    ) -> None:
        """Get ready for a new attempt of the job with new tasks (called between attempts).

        Pending checkpoints of the failed attempt are aborted (their files discarded);
        completed ones, the statistics and the checkpoint ids carry on.
        """
        self.tasks = dict(tasks)
        if operators is not None:
            self.planner.operators = {op.uid: op for op in operators}
        self.waker = Waker()
        self.mailbox = Mailbox(self.waker)
        actions = self.planner.prepare_attempt(self.tasks, sources, self.clock())
        await self._perform(actions)

    def record_restore(self, pointer: str) -> None:
        """The attempt restores ``pointer`` (statistics; called before it runs)."""
        self.planner.stats.restored(pointer)

    # -- requests (from clients in the loop; only put messages in the mailbox) ------------

    def request_checkpoint(self, options: CheckpointOptions) -> asyncio.Future[CompletedCheckpoint]:
        """Ask for a checkpoint (or savepoint) now; the future resolves when it completes.

        Never blocks. The future fails with ``CheckpointError`` if the checkpoint fails.
        """
        future: asyncio.Future[CompletedCheckpoint] = asyncio.get_running_loop().create_future()
        self.mailbox.put(TriggerRequest(future, options))
        return future

    def request_savepoint(
        self, directory: str, *, canonical: bool = True, terminate: bool = False
    ) -> asyncio.Future[CompletedCheckpoint]:
        """Ask for a savepoint in a new folder under ``directory``.

        Savepoints are always aligned and exactly-once. With ``terminate`` the sources
        stop after it and the job ends without ending its input (stop-with-savepoint).
        """
        folder = new_savepoint_folder(directory, self.job_id)
        options = CheckpointOptions(
            is_savepoint=True, target=str(folder), canonical=canonical, terminate=terminate
        )
        return self.request_checkpoint(options)

    def request_drain_savepoint(
        self, directory: str, *, canonical: bool = True
    ) -> asyncio.Future[CompletedCheckpoint]:
        """Stop-with-savepoint with drain.

        Every source ends its input; the job's final checkpoint, triggered once every
        task ended its input, is a savepoint in a new folder under ``directory``.
        """
        future: asyncio.Future[CompletedCheckpoint] = asyncio.get_running_loop().create_future()
        folder = new_savepoint_folder(directory, self.job_id)
        options = CheckpointOptions(is_savepoint=True, target=str(folder), canonical=canonical)
        self.mailbox.put(TriggerRequest(future, options, drain=True))
        return future

    # -- the actor ------------------------------------------------------------------------

    async def run(self) -> None:
        """Trigger and complete checkpoints until every task has finished."""
        planner = self.planner
        await self.storage.initialize()
        planner.start(self.clock())
        try:
            await self._loop()
        except BaseException:
            for action in planner.fail_requests("the job ended"):
                self._settle(action)
            raise
        # Every task finished: checkpoints still pending can never complete.
        await self._perform(planner.end_of_job(self.clock()))

    async def _loop(self) -> None:
        planner = self.planner
        while not planner.all_finished:
            while self.mailbox:
                await self._perform(self._receive(self.mailbox.poll()))
            if planner.all_finished:
                break
            actions = planner.tick(self.clock())
            if actions:
                await self._perform(actions)
                continue  # what was done may let more be due
            wake_at = planner.next_wake(self.clock())
            if self.mailbox:
                continue
            if wake_at is None:
                await self.waker.wait()
            else:
                with anyio.move_on_after(max(0.0, wake_at - self.clock())):
                    await self.waker.wait()

    def _receive(self, message: object) -> list[Action]:
        if isinstance(message, TriggerRequest):
            request = Request(message.options, message.future)
            if message.drain:
                return self.planner.request_drain(request)
            self.planner.request(request)
            return []
        return self.planner.handle(message, self.clock())

    def on_cancel(self) -> None:
        """Fail waiting trigger requests: the job is stopping."""
        while self.mailbox:
            message = self.mailbox.poll()
            if isinstance(message, TriggerRequest):
                self.planner.request(Request(message.options, message.future))
        for action in self.planner.fail_requests("the job was cancelled or failed"):
            self._settle(action)

    # -- performing -----------------------------------------------------------------------

    async def _perform(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order, feeding storage outcomes back to the planner."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            match action:
                case SendToTasks(tasks=tasks, message=message):
                    for task in tasks:
                        mailbox = self.tasks.get(task)
                        if mailbox is not None:
                            mailbox.put(message)
                case PrepareSavepointFolder(request=request, options=options):
                    queue[:0] = await self._prepare_folder(request, options)
                case WriteMetadata():
                    queue[:0] = await self._write_metadata(action)
                case Discard(checkpoint_id=checkpoint_id, target=target):
                    await self._discard(checkpoint_id, target)
                case RecordNotified(checkpoint_id=checkpoint_id, pointer=pointer):
                    await self._record_notified(checkpoint_id, pointer)
                case ResolveRequest() | FailRequest():
                    self._settle(action)
                case FailJob(error=error):
                    raise error

    def _settle(self, action: ResolveRequest | FailRequest) -> None:
        future = action.request.token
        if future is None or future.done():
            return
        if isinstance(action, ResolveRequest):
            future.set_result(action.completed)
        else:
            future.set_exception(action.error)

    def _storage(self, target: str | None) -> CheckpointStorage:
        return self.storage if target is None else SavepointStorage(target, self.job_id)

    async def _prepare_folder(self, request: Request, options: CheckpointOptions) -> list[Action]:
        assert options.target is not None
        try:
            await SavepointStorage(options.target, self.job_id).initialize()
        except Exception as error:
            logger.warning("job %s: cannot write the savepoint: %s", self.job_id, error)
            return self.planner.savepoint_folder_failed(request, error)
        return self.planner.savepoint_folder_ready(request, options, self.clock())

    async def _write_metadata(self, action: WriteMetadata) -> list[Action]:
        storage = self._storage(action.target)
        checkpoint_id = CheckpointId(action.metadata.checkpoint_id)
        try:
            pointer = await storage.commit(action.metadata)
        except Exception as error:
            return self.planner.metadata_failed(
                checkpoint_id,
                f"writing the metadata of checkpoint {checkpoint_id} to "
                f"{storage.description} failed: {error}",
                self.clock(),
            )
        return self.planner.metadata_written(checkpoint_id, pointer, self.clock())

    async def _record_notified(self, checkpoint_id: CheckpointId, pointer: str) -> None:
        try:
            await self.storage.record_notified(checkpoint_id, pointer)
        except Exception as error:
            logger.warning(
                "job %s: could not record that checkpoint %d was notified in %s: %s",
                self.job_id,
                checkpoint_id,
                self.storage.description,
                error,
            )

    async def _discard(self, checkpoint_id: CheckpointId, target: str | None) -> None:
        storage = self._storage(target)
        try:
            await storage.discard(checkpoint_id)
        except Exception as error:
            # Nothing depends on it (the checkpoint is not used), but leftovers are
            # worth knowing: weir checkpoints lists orphans and removes them.
            logger.warning(
                "job %s: could not discard checkpoint %d in %s: %s",
                self.job_id,
                checkpoint_id,
                storage.description,
                error,
            )
