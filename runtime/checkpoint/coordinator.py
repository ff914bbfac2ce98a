"""``CheckpointCoordinator``: the actor that triggers, tracks and completes checkpoints.

It owns the pure bookkeeping (``TriggerRules``, ``PendingCheckpoint``s,
``FailureCounter``, the ``CompletedCheckpointStore``, ``CheckpointStatsTracker``) and does
only what they decide:

* trigger: periodically (interval, min pause, max concurrent) for as long as any task
  runs, in the job's mode (unaligned included) also while a bounded job drains; on
  request (``JobClient.trigger_checkpoint``); and at once when every task reported
  ``InputEnded``, so that the job's final checkpoint need not wait for the interval.
  Triggering puts ``TriggerCheckpoint`` in every source task's mailbox: a source that
  read all of its input still takes part (FLIP-147, with finished sources acknowledging
  their final state);
* end the job (FLIP-147): the first completed checkpoint that every task acknowledged
  *after the end of its input* holds the effects of every record, and no channel holds
  any; its notification says ``final=True``, and each task ends once it handled it
  (two-phase-commit sinks commit their last data there). A stop-with-savepoint with
  drain makes that final checkpoint its savepoint;
* collect ``CheckpointAcknowledged`` / ``CheckpointDeclined`` from the tasks' reports;
* complete: write ``_metadata`` last and atomically (``CheckpointStorage.commit``),
  discard what retention no longer keeps, abort older pending checkpoints (subsumed),
  and tell every task ``NotifyCheckpointComplete``;
* abort on timeout or decline: tell every task ``NotifyCheckpointAborted``, discard the
  checkpoint's files, count the failure; past ``tolerable_failures`` the coordinator
  raises ``CheckpointFailedError`` and the job fails.

It ends when every task reported ``TaskFinished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from actors import Actor, Mailbox, Waker
from runtime.checkpoint.config import CheckpointConfig, CheckpointingMode
from runtime.checkpoint.events import (
    AwaitFinalCheckpoint,
    CheckpointAcknowledged,
    CheckpointBarrier,
    CheckpointDeclined,
    CheckpointOptions,
    InputEnded,
    NotifyCheckpointAborted,
    NotifyCheckpointComplete,
    StopSource,
    TaskFinished,
    TriggerCheckpoint,
)
from runtime.checkpoint.failures import CheckpointFailureReason, FailureCounter
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.checkpoint.pending import AckResult, PendingCheckpoint
from runtime.checkpoint.stats import CheckpointStatistics, CheckpointStatsTracker
from runtime.checkpoint.trigger_rules import TriggerRules
from runtime.errors import WeirError
from storage.checkpoint import (
    METADATA_VERSION,
    CheckpointMetadata,
    CheckpointStorage,
    CompletedCheckpointStore,
    OperatorStateHandle,
    SavepointStorage,
    SubtaskStateHandle,
    new_savepoint_folder,
)

logger = logging.getLogger("weir.checkpoint")

END_PHASE_RETRY = 1.0
"""Seconds before a failed final checkpoint is triggered again without an interval."""


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


@dataclass(frozen=True, slots=True)
class CompletedCheckpoint:
    """A completed checkpoint: its id and where it lives."""

    checkpoint_id: CheckpointId
    pointer: str
    timestamp: float
    is_savepoint: bool = False


@dataclass(slots=True)
class TriggerRequest:
    """A manual trigger (checkpoint or savepoint) waiting for its outcome."""

    future: asyncio.Future[CompletedCheckpoint]
    options: CheckpointOptions


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """What the coordinator needs to know of an operator to write its metadata."""

    uid: str
    name: str
    parallelism: int
    max_parallelism: int


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
        self.sources = list(sources)
        self.operators = {op.uid: op for op in operators}
        self.job_id = job_id
        self.clock = clock
        self.rules = (
            TriggerRules(config.interval, config.min_pause, config.max_concurrent)
            if config.interval is not None
            else None
        )
        self.failures = FailureCounter(config.tolerable_failures)
        self.store = CompletedCheckpointStore(config.retained)
        self.stats = CheckpointStatsTracker()
        self.pending: dict[CheckpointId, PendingCheckpoint] = {}
        self.completed: list[CompletedCheckpoint] = []
        self._next_id = first_checkpoint_id
        self._requests: dict[CheckpointId, list[TriggerRequest]] = {}
        self._queued_requests: deque[TriggerRequest] = deque()
        self._finished: set[TaskId] = set()
        self._reset_end_phase()
        self._drain: TriggerRequest | None = None
        self._savepoint_storages: dict[CheckpointId, CheckpointStorage] = {}

    def _reset_end_phase(self) -> None:
        # Tasks that processed all of their input (InputEnded).
        self._input_ended: set[TaskId] = set()
        # Checkpoints some task acknowledged before the end of its input: not final.
        self._not_final: set[CheckpointId] = set()
        # Checkpoints triggered once every task had ended its input.
        self._end_phase_ids: set[CheckpointId] = set()
        # When a failed end-phase checkpoint may be triggered again.
        self._end_retry_at = 0.0
        # The job's final checkpoint completed: nothing more is triggered.
        self._final_done = False

    # -- attempts -------------------------------------------------------------------------

    async def prepare_attempt(
        self, tasks: Mapping[TaskId, Mailbox[object]], sources: list[TaskId]
    ) -> None:
        """Get ready for a new attempt of the job (after a restart) with new tasks.

        Pending checkpoints of the failed attempt are aborted (their files discarded);
        completed ones, the statistics and the checkpoint ids carry on.
        """
        for checkpoint_id, pending in list(self.pending.items()):
            pending.discard()
            self.stats.failed(
                checkpoint_id,
                self.clock() - pending.timestamp,
                "aborted: a task failed and the job restarted",
            )
            with contextlib.suppress(Exception):
                await self.storage.discard(checkpoint_id)
            for request in self._requests.pop(checkpoint_id, []):
                if not request.future.done():
                    request.future.set_exception(
                        CheckpointError(
                            f"checkpoint {checkpoint_id} was aborted: the job restarted",
                            checkpoint_id,
                            CheckpointFailureReason.TASK_FAILURE,
                        )
                    )
        self.pending.clear()
        self.tasks = dict(tasks)
        self.sources = list(sources)
        self._finished = set()
        self._reset_end_phase()
        self.waker = Waker()
        self.mailbox = Mailbox(self.waker)
        if self._drain is not None:
            # A stop-with-drain asked before the failure: the new sources stop too.
            self._send_drain()

    # -- public (called from other actors in the loop) ------------------------------------

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
        self._drain = TriggerRequest(
            future,
            CheckpointOptions(is_savepoint=True, target=str(folder), canonical=canonical),
        )
        self._send_drain()
        self.waker.wake()
        return future

    def _send_drain(self) -> None:
        """Sources end their input; every task waits for the final checkpoint."""
        for task, mailbox in self.tasks.items():
            if task not in self._finished:
                mailbox.put(AwaitFinalCheckpoint())
        for source in self.sources:
            if source not in self._finished:
                self.tasks[source].put(StopSource())

    def statistics_snapshot(self) -> CheckpointStatistics:
        """The checkpoint statistics now."""
        return self.stats.snapshot()

    @property
    def latest_completed(self) -> CompletedCheckpoint | None:
        """The newest completed checkpoint."""
        return self.completed[-1] if self.completed else None

    def default_options(self) -> CheckpointOptions:
        """The options of periodic checkpoints."""
        config = self.config
        return CheckpointOptions(
            unaligned=config.unaligned and config.aligned_timeout == 0,
            aligned_timeout=config.aligned_timeout if config.unaligned else 0.0,
            exactly_once=config.mode is CheckpointingMode.EXACTLY_ONCE,
        )

    # -- the actor ------------------------------------------------------------------------

    async def run(self) -> None:
        """Trigger and complete checkpoints until every task has finished."""
        await self.storage.initialize()
        if self.rules is not None:
            self.rules.start(self.clock())
        try:
            while len(self._finished) < len(self.tasks):
                while self.mailbox:
                    await self._handle(self.mailbox.poll())
                if len(self._finished) >= len(self.tasks):
                    break
                now = self.clock()
                await self._expire(now)
                await self._maybe_trigger(now)
                wake_at = self._next_wake(now)
                if self.mailbox:
                    continue
                if wake_at is None:
                    await self.waker.wait()
                else:
                    with anyio.move_on_after(max(0.0, wake_at - self.clock())):
                        await self.waker.wait()
        finally:
            self._fail_requests("the job ended")
        # Every task finished: checkpoints still pending can never complete.
        for checkpoint_id in sorted(self.pending):
            pending = self.pending.pop(checkpoint_id)
            pending.discard()
            self.stats.failed(
                checkpoint_id,
                self.clock() - pending.timestamp,
                f"checkpoint {checkpoint_id} was aborted: "
                f"{CheckpointFailureReason.JOB_ENDED.value}",
            )
            storage = self._savepoint_storages.pop(checkpoint_id, self.storage)
            with contextlib.suppress(Exception):
                await storage.discard(checkpoint_id)

    async def _handle(self, message: object) -> None:
        match message:
            case CheckpointAcknowledged():
                await self._acknowledge(message)
            case CheckpointDeclined():
                await self._abort(
                    message.checkpoint_id,
                    CheckpointFailureReason.SUBSUMED
                    if message.subsumed
                    else CheckpointFailureReason.DECLINED,
                    f"task {message.task} declined checkpoint {message.checkpoint_id}: "
                    f"{message.reason}",
                )
            case TriggerRequest():
                self._queued_requests.append(message)
            case InputEnded():
                self._input_ended.add(message.task)
            case TaskFinished():
                self._finished.add(message.task)
            case _:
                raise TypeError(f"checkpoint coordinator: unexpected message {message!r}")

    def _next_wake(self, now: float) -> float | None:
        times = [p.timestamp + self.config.timeout for p in self.pending.values()]
        if self._final_done:
            pass
        elif self._end_phase:
            if not self._end_phase_pending:
                times.append(self._end_retry_at)
        elif self.rules is not None:
            due = self.rules.next_trigger_time(now, len(self.pending))
            if due is not None:
                times.append(due)
        return min(times) if times else None

    @property
    def _end_phase(self) -> bool:
        """Every running task processed all of its input."""
        return all(t in self._input_ended or t in self._finished for t in self.tasks)

    @property
    def _end_phase_pending(self) -> bool:
        """A checkpoint triggered in the end phase is pending (it will be final)."""
        return any(i in self._end_phase_ids for i in self.pending)

    async def _maybe_trigger(self, now: float) -> None:
        limit = self.config.max_concurrent
        while self._queued_requests and len(self.pending) < limit:
            request = self._queued_requests.popleft()
            if request.future.cancelled():
                continue
            if self._final_done:
                request.future.set_exception(
                    CheckpointError(
                        "the job's final checkpoint completed: the job is ending and "
                        "takes no more checkpoints or savepoints"
                    )
                )
                continue
            await self._trigger_request(now, request)
        if self._final_done or len(self.pending) >= limit:
            return
        if self._end_phase:
            # Every task ended its input: the next checkpoint is the job's final one
            # (each task snapshots after its end). Trigger it now, in the job's mode,
            # or the drain savepoint; after a failure, not before the retry time.
            drain = self._drain
            if drain is not None and not self._drain_triggered(drain):
                # Even beside a pending plain one: only the drain savepoint may end it.
                if now < self._end_retry_at:
                    return
                options = msgspec.structs.replace(drain.options, is_final=True)
                checkpoint_id = await self._trigger_request(now, drain, options)
            elif self._end_phase_pending or now < self._end_retry_at or drain is not None:
                return
            else:
                checkpoint_id = self._trigger(now, self.default_options())
            if checkpoint_id is not None:
                self._end_phase_ids.add(checkpoint_id)
            return
        rules = self.rules
        if rules is not None and rules.should_trigger(now, len(self.pending)):
            self._trigger(now, self.default_options())

    def _drain_triggered(self, drain: TriggerRequest) -> bool:
        return any(request is drain for requests in self._requests.values() for request in requests)

    async def _trigger_request(
        self, now: float, request: TriggerRequest, options: CheckpointOptions | None = None
    ) -> CheckpointId | None:
        options = options or request.options
        storage: CheckpointStorage | None = None
        if options.target is not None:
            storage = SavepointStorage(options.target, self.job_id)
            try:
                await storage.initialize()
            except Exception as error:
                if not request.future.done():
                    request.future.set_exception(
                        CheckpointError(f"cannot write the savepoint: {error}")
                    )
                if request is self._drain:
                    self._drain = None
                return None
        checkpoint_id = self._trigger(now, options)
        if storage is not None:
            self._savepoint_storages[checkpoint_id] = storage
        self._requests.setdefault(checkpoint_id, []).append(request)
        return checkpoint_id

    def _trigger(self, now: float, options: CheckpointOptions) -> CheckpointId:
        checkpoint_id = CheckpointId(self._next_id)
        self._next_id += 1
        tasks = [t for t in self.tasks if t not in self._finished]
        self.pending[checkpoint_id] = PendingCheckpoint.create(checkpoint_id, now, options, tasks)
        self.stats.triggered(checkpoint_id, time.time(), options.is_savepoint)
        if self.rules is not None:
            self.rules.triggered(now)
        barrier = CheckpointBarrier(checkpoint_id, now, options)
        for source in self.sources:
            if source not in self._finished:
                self.tasks[source].put(TriggerCheckpoint(barrier))
        return checkpoint_id

    async def _acknowledge(self, ack: CheckpointAcknowledged) -> None:
        pending = self.pending.get(ack.checkpoint_id)
        if pending is None:
            return  # late: the checkpoint was aborted or subsumed (AckResult.DISCARDED)
        result = pending.acknowledge(ack.task, ack.state, ack.metrics)
        if result is AckResult.SUCCESS:
            self.stats.acknowledged(ack.checkpoint_id, ack.task, ack.metrics)
            if not ack.after_end_of_input:
                self._not_final.add(ack.checkpoint_id)
        if pending.is_fully_acknowledged:
            await self._complete(pending)

    async def _complete(self, pending: PendingCheckpoint) -> None:
        checkpoint_id = pending.checkpoint_id
        metadata = self._metadata(pending)
        storage = self._savepoint_storages.get(checkpoint_id, self.storage)
        try:
            pointer = await storage.commit(metadata)
        except Exception as error:
            await self._abort(
                checkpoint_id,
                CheckpointFailureReason.WRITE_FAILURE,
                f"writing the metadata of checkpoint {checkpoint_id} to "
                f"{storage.description} failed: {error}",
            )
            return
        self._savepoint_storages.pop(checkpoint_id, None)
        pending.discard()
        del self.pending[checkpoint_id]
        self._end_phase_ids.discard(checkpoint_id)
        now = self.clock()
        completed = CompletedCheckpoint(
            checkpoint_id, pointer, pending.timestamp, pending.options.is_savepoint
        )
        if not pending.options.is_savepoint:
            self.completed.append(completed)
            for subsumed in self.store.add(checkpoint_id, pointer):
                with contextlib.suppress(Exception):
                    await self.storage.discard(subsumed)
        self.stats.completed(checkpoint_id, now - pending.timestamp, pointer)
        self.failures.completed()
        if self.rules is not None:
            self.rules.finished(now)
        options = pending.options
        # A plain savepoint is never restored by the job itself: it neither subsumes
        # pending checkpoints nor lets sinks commit (their transactions stay pending
        # until the next checkpoint completes; Flink notifies only for checkpoints and
        # synchronous savepoints).
        notify = not options.is_savepoint or options.terminate or options.is_final
        # The job's final checkpoint: every task took it after the end of its input
        # (while a drain is asked for, only its savepoint may be the final one).
        final = (
            notify
            and not options.terminate
            and checkpoint_id not in self._not_final
            and (self._drain is None or options.is_final)
        )
        self._not_final.discard(checkpoint_id)
        if not options.is_savepoint:
            # Completing n subsumes every older pending checkpoint (Flink aborts them).
            for older in sorted(i for i in self.pending if i < checkpoint_id):
                if not self.pending[older].options.is_savepoint:
                    await self._abort(
                        older,
                        CheckpointFailureReason.SUBSUMED,
                        f"checkpoint {older} was subsumed by {checkpoint_id}",
                    )
        if notify:
            for mailbox in self.tasks.values():
                mailbox.put(NotifyCheckpointComplete(checkpoint_id, final=final))
        if final:
            self._final_done = True
            logger.debug("job %s: checkpoint %d is its final one", self.job_id, checkpoint_id)
        for request in self._requests.pop(checkpoint_id, []):
            if not request.future.done():
                request.future.set_result(completed)
            if request is self._drain:
                self._drain = None

    def _metadata(self, pending: PendingCheckpoint) -> CheckpointMetadata:
        subtasks: dict[str, list[SubtaskStateHandle]] = {}
        for reports in pending.acknowledged.values():
            for report in reports or ():
                subtasks.setdefault(report.uid, []).append(report.subtask)
        operators = []
        for uid, handles in subtasks.items():
            info = self.operators[uid]
            operators.append(
                OperatorStateHandle(
                    uid=uid,
                    name=info.name,
                    parallelism=info.parallelism,
                    max_parallelism=info.max_parallelism,
                    subtasks=sorted(handles, key=lambda h: h.subtask_index),
                )
            )
        return CheckpointMetadata(
            version=METADATA_VERSION,
            job_id=self.job_id,
            checkpoint_id=pending.checkpoint_id,
            # The trigger's wall-clock time (pending.timestamp is monotonic).
            timestamp=time.time() - (self.clock() - pending.timestamp),
            is_savepoint=pending.options.is_savepoint,
            operators=operators,
        )

    async def _expire(self, now: float) -> None:
        for checkpoint_id, pending in list(self.pending.items()):
            if now - pending.timestamp >= self.config.timeout:
                missing = ", ".join(sorted(pending.not_yet_acknowledged)[:5])
                await self._abort(
                    checkpoint_id,
                    CheckpointFailureReason.EXPIRED,
                    f"checkpoint {checkpoint_id} expired after {self.config.timeout:g} s "
                    f"before every task acknowledged (waiting for: {missing})",
                )

    async def _abort(
        self, checkpoint_id: CheckpointId, reason: CheckpointFailureReason, message: str
    ) -> None:
        pending = self.pending.pop(checkpoint_id, None)
        if pending is None:
            return
        pending.discard()
        self._not_final.discard(checkpoint_id)
        if checkpoint_id in self._end_phase_ids:
            self._end_phase_ids.discard(checkpoint_id)
            # Not at once again: a task that declines every time would spin.
            self._end_retry_at = self.clock() + (
                END_PHASE_RETRY if self.config.interval is None else self.config.interval
            )
        now = self.clock()
        self.stats.failed(checkpoint_id, now - pending.timestamp, message)
        # Subsumed checkpoints are routine (a newer one completed); the rest are failures.
        logger.log(
            logging.INFO if reason is CheckpointFailureReason.SUBSUMED else logging.WARNING,
            "job %s: %s",
            self.job_id,
            message,
        )
        if self.rules is not None:
            self.rules.finished(now)
        for mailbox in self.tasks.values():
            mailbox.put(NotifyCheckpointAborted(checkpoint_id, message))
        storage = self._savepoint_storages.pop(checkpoint_id, self.storage)
        with contextlib.suppress(Exception):
            await storage.discard(checkpoint_id)
        drain = self._drain
        if (
            drain is not None
            and checkpoint_id in self._requests
            and any(request is drain for request in self._requests[checkpoint_id])
        ):
            self._drain = None  # the stop-with-savepoint failed: the next final is plain
        for request in self._requests.pop(checkpoint_id, []):
            if not request.future.done():
                request.future.set_exception(CheckpointError(message, checkpoint_id, reason))
        # Savepoints never count toward the tolerable checkpoint failures (as in Flink).
        if not pending.options.is_savepoint and self.failures.failed(reason):
            raise CheckpointFailedError(
                f"{self.failures.consecutive} checkpoints failed in a row, more than "
                f"tolerable_failures={self.config.tolerable_failures}; last: {message}",
                checkpoint_id,
                reason,
            )

    def _fail_requests(self, message: str) -> None:
        if self._drain is not None and not self._drain.future.done():
            self._drain.future.set_exception(CheckpointError(message))
        self._drain = None
        for requests in self._requests.values():
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(CheckpointError(message))
        self._requests.clear()
        while self._queued_requests:
            request = self._queued_requests.popleft()
            if not request.future.done():
                request.future.set_exception(CheckpointError(message))

    def on_cancel(self) -> None:
        """Fail waiting trigger requests: the job is stopping."""
        while self.mailbox:
            message = self.mailbox.poll()
            if isinstance(message, TriggerRequest):
                self._queued_requests.append(message)
        self._fail_requests("the job was cancelled or failed")
