"""``CheckpointPlanner``: every decision of the checkpoint coordinator, with no I/O.

The planner is a plain synchronous object. The ``CheckpointCoordinator`` actor feeds it
every input — a report from a task, a request from a client, the clock moving, the
outcome of a storage operation — and performs the actions it returns, in order. The
planner never awaits, never touches a mailbox or a file, and keeps all the state of the
checkpoint path: pending checkpoints (``PendingCheckpoint``), the periodic trigger rules
(``TriggerRules``), the failure counter, the completed-checkpoint store, statistics, the
end of the job (FLIP-147) and the stop-with-savepoint with drain. That makes it testable
without an event loop, with Hypothesis state machines (as the barrier handler is).

Inputs (methods) and what they decide:

* ``tick(now)``: expire pending checkpoints past the timeout; trigger queued requests,
  periodic checkpoints, and, once every task ended its input, the job's final checkpoint
  (or the drain savepoint).
* ``request(request)`` / ``request_drain(request)``: a client's checkpoint, savepoint or
  stop-with-savepoint with drain.
* ``handle(message, now)``: ``CheckpointAcknowledged``, ``CheckpointDeclined``,
  ``InputEnded``, ``TaskFinished`` from the tasks.
* ``savepoint_folder_ready`` / ``savepoint_folder_failed``: the outcome of
  ``PrepareSavepointFolder``; ``metadata_written`` / ``metadata_failed``: the outcome of
  ``WriteMetadata``.
* ``prepare_attempt``, ``end_of_job`` and ``cancel``: the job's life.

Actions (returned): ``SendToTasks`` (a trigger, a notification, a drain command),
``PrepareSavepointFolder``, ``WriteMetadata``, ``Discard``, ``RecordNotified``,
``ResolveRequest``,
``FailRequest`` and ``FailJob`` (more failures in a row than ``tolerable_failures``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

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
from runtime.checkpoint.config import CheckpointConfig, CheckpointingMode
from runtime.checkpoint.errors import CheckpointError, CheckpointFailedError
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
from runtime.checkpoint.stats import CheckpointStatsTracker
from runtime.checkpoint.trigger_rules import TriggerRules
from storage.checkpoint import (
    METADATA_VERSION,
    CheckpointMetadata,
    CompletedCheckpointStore,
    OperatorStateHandle,
    SubtaskStateHandle,
)
from storage.checkpoint.metadata import CANONICAL_FORMAT, FORMAT_PROPERTY, NATIVE_FORMAT

logger = logging.getLogger("weir.checkpoint")

END_PHASE_RETRY = 1.0
"""Seconds before a failed final checkpoint is triggered again without an interval."""


@dataclass(slots=True)
class _EndOfJob:
    """The end of the job (FLIP-147) for one attempt."""

    # Tasks that processed all of their input (InputEnded).
    input_ended: set[TaskId] = field(default_factory=set)
    # Checkpoints some task acknowledged before the end of its input: not final.
    not_final: set[CheckpointId] = field(default_factory=set)
    # Checkpoints triggered once every task had ended its input.
    end_phase_ids: set[CheckpointId] = field(default_factory=set)
    # When a failed end-phase checkpoint may be triggered again.
    retry_at: float = 0.0
    # The job's final checkpoint completed: nothing more is triggered.
    final_done: bool = False


class CheckpointPlanner:
    """The checkpoint coordinator's decisions (see the module docstring).

    Args:
        config: the checkpointing options (validated).
        job_id: the job's id (in the metadata).
        tasks: every task of the attempt.
        sources: the source tasks (they receive the triggers).
        operators: every operator of the job, for the metadata.
        first_checkpoint_id: the id of the first checkpoint.
        wall_clock: wall-clock seconds for statistics and metadata (injectable).
    """

    def __init__(
        self,
        config: CheckpointConfig,
        job_id: str,
        tasks: Iterable[TaskId],
        sources: Iterable[TaskId],
        operators: Iterable[OperatorInfo],
        *,
        first_checkpoint_id: int = 1,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.job_id = job_id
        self.tasks = list(tasks)
        self.sources = list(sources)
        self.operators = {op.uid: op for op in operators}
        self.wall_clock = wall_clock
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
        self.next_id = first_checkpoint_id
        self.finished: set[TaskId] = set()
        self.end = _EndOfJob()
        self._requests: dict[CheckpointId, list[Request]] = {}
        self._queued: deque[Request] = deque()
        self._preparing: list[Request] = []  # savepoint folders being created
        self._drain: Request | None = None

    # -- the job's life -------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The first attempt starts: the interval counts from now."""
        if self.rules is not None:
            self.rules.start(now)

    def prepare_attempt(
        self, tasks: Iterable[TaskId], sources: Iterable[TaskId], now: float
    ) -> list[Action]:
        """A new attempt (after a restart) with new tasks.

        Pending checkpoints of the failed attempt are aborted (their files discarded);
        completed ones, the statistics and the checkpoint ids carry on.
        """
        actions: list[Action] = []
        for checkpoint_id, pending in list(self.pending.items()):
            pending.discard()
            self.stats.failed(
                checkpoint_id,
                now - pending.timestamp,
                "aborted: a task failed and the job restarted",
            )
            actions.append(Discard(checkpoint_id, pending.options.target))
            for request in self._requests.pop(checkpoint_id, []):
                error = CheckpointError(
                    f"checkpoint {checkpoint_id} was aborted: the job restarted",
                    checkpoint_id,
                    CheckpointFailureReason.TASK_FAILURE,
                )
                actions.append(FailRequest(request, error))
        self.pending.clear()
        self.tasks = list(tasks)
        self.sources = list(sources)
        self.finished = set()
        self.end = _EndOfJob()
        if self._drain is not None:
            # A stop-with-drain asked before the failure: the new sources stop too.
            actions.extend(self._drain_commands())
        return actions

    @property
    def all_finished(self) -> bool:
        """Every task of the attempt reported ``TaskFinished``."""
        return len(self.finished) >= len(self.tasks)

    def end_of_job(self, now: float) -> list[Action]:
        """Every task finished (or the coordinator stops): pending ones never complete."""
        actions: list[Action] = [*self.fail_requests("the job ended")]
        for checkpoint_id in sorted(self.pending):
            pending = self.pending.pop(checkpoint_id)
            pending.discard()
            self.stats.failed(
                checkpoint_id,
                now - pending.timestamp,
                f"checkpoint {checkpoint_id} was aborted: "
                f"{CheckpointFailureReason.JOB_ENDED.value}",
            )
            actions.append(Discard(checkpoint_id, pending.options.target))
        return actions

    def fail_requests(self, message: str) -> list[FailRequest]:
        """Fail every waiting request (the job ended, was cancelled or failed)."""
        requests = [r for rs in self._requests.values() for r in rs]
        requests += [*self._queued, *self._preparing]
        if self._drain is not None and self._drain not in requests:
            requests.append(self._drain)
        self._requests.clear()
        self._queued.clear()
        self._preparing.clear()
        self._drain = None
        return [FailRequest(r, CheckpointError(message)) for r in requests]

    # -- requests -------------------------------------------------------------------------

    def request(self, request: Request) -> None:
        """Queue a checkpoint or savepoint request; the next ``tick`` triggers it."""
        self._queued.append(request)

    def request_drain(self, request: Request) -> list[Action]:
        """Stop-with-savepoint with drain: sources end their input, every task waits.

        The job's final checkpoint, triggered once every task ended its input, is the
        savepoint ``request`` asks for.
        """
        self._drain = request
        return self._drain_commands()

    def _drain_commands(self) -> list[Action]:
        running = tuple(t for t in self.tasks if t not in self.finished)
        sources = tuple(t for t in self.sources if t not in self.finished)
        return [SendToTasks(running, AwaitFinalCheckpoint()), SendToTasks(sources, StopSource())]

    def default_options(self) -> CheckpointOptions:
        """The options of periodic checkpoints."""
        config = self.config
        return CheckpointOptions(
            unaligned=config.unaligned and config.aligned_timeout == 0,
            aligned_timeout=config.aligned_timeout if config.unaligned else 0.0,
            exactly_once=config.mode is CheckpointingMode.EXACTLY_ONCE,
        )

    # -- reports from the tasks -----------------------------------------------------------

    def handle(self, message: object, now: float) -> list[Action]:
        """A report from a task.

        Raises:
            TypeError: a message the coordinator does not know (our own bug).
        """
        match message:
            case CheckpointAcknowledged():
                return self._acknowledge(message, now)
            case CheckpointDeclined():
                reason = (
                    CheckpointFailureReason.SUBSUMED
                    if message.subsumed
                    else CheckpointFailureReason.DECLINED
                )
                return self._abort(
                    message.checkpoint_id,
                    reason,
                    f"task {message.task} declined checkpoint {message.checkpoint_id}: "
                    f"{message.reason}",
                    now,
                )
            case InputEnded():
                self.end.input_ended.add(message.task)
            case TaskFinished():
                self.finished.add(message.task)
            case _:
                raise TypeError(f"checkpoint coordinator: unexpected message {message!r}")
        return []

    def _acknowledge(self, ack: CheckpointAcknowledged, now: float) -> list[Action]:
        pending = self.pending.get(ack.checkpoint_id)
        if pending is None:
            return []  # late: the checkpoint was aborted or subsumed (AckResult.DISCARDED)
        result = pending.acknowledge(ack.task, ack.state, ack.metrics)
        if result is not AckResult.SUCCESS:
            return []  # a duplicate or unknown task: nothing changes
        self.stats.acknowledged(ack.checkpoint_id, ack.task, ack.metrics)
        if not ack.after_end_of_input:
            self.end.not_final.add(ack.checkpoint_id)
        if pending.is_fully_acknowledged:
            return [WriteMetadata(self._metadata(pending, now), pending.options.target)]
        return []

    # -- triggering -----------------------------------------------------------------------

    def next_wake(self, now: float) -> float | None:
        """When ``tick`` has something to do next, or None (only a message can tell)."""
        times = [p.timestamp + self.config.timeout for p in self.pending.values()]
        if self.end.final_done:
            pass
        elif self._end_phase:
            if not self._end_phase_pending:
                times.append(self.end.retry_at)
        elif self.rules is not None:
            due = self.rules.next_trigger_time(now, len(self.pending))
            if due is not None:
                times.append(due)
        return min(times) if times else None

    @property
    def _end_phase(self) -> bool:
        """Every running task processed all of its input."""
        ended, finished = self.end.input_ended, self.finished
        return all(t in ended or t in finished for t in self.tasks)

    @property
    def _end_phase_pending(self) -> bool:
        """A checkpoint triggered in the end phase is pending (it will be final)."""
        return any(i in self.end.end_phase_ids for i in self.pending)

    def tick(self, now: float) -> list[Action]:
        """Expire, then trigger what is due (see the module docstring)."""
        actions = self._expire(now)
        if any(isinstance(a, FailJob) for a in actions):
            return actions
        limit = self.config.max_concurrent
        while self._queued and len(self.pending) + len(self._preparing) < limit:
            request = self._queued.popleft()
            if self.end.final_done:
                error = CheckpointError(
                    "the job's final checkpoint completed: the job is ending and "
                    "takes no more checkpoints or savepoints"
                )
                actions.append(FailRequest(request, error))
                continue
            actions.extend(self._trigger_request(now, request, request.options))
        if self.end.final_done or len(self.pending) + len(self._preparing) >= limit:
            return actions
        if self._end_phase:
            actions.extend(self._trigger_final(now))
            return actions
        rules = self.rules
        if rules is not None and rules.should_trigger(now, len(self.pending)):
            actions.append(self._trigger(now, self.default_options())[1])
        return actions

    def _trigger_final(self, now: float) -> list[Action]:
        """Every task ended its input: the next checkpoint is the job's final one.

        Triggered now, in the job's mode (each task snapshots after its end), or the
        drain savepoint; after a failure, not before the retry time.
        """
        drain = self._drain
        if drain is not None and not self._drain_started(drain):
            # Even beside a pending plain one: only the drain savepoint may end the job.
            if now < self.end.retry_at:
                return []
            return self._trigger_request(
                now, drain, msgspec.structs.replace(drain.options, is_final=True)
            )
        if self._end_phase_pending or now < self.end.retry_at or drain is not None:
            return []
        checkpoint_id, action = self._trigger(now, self.default_options())
        self.end.end_phase_ids.add(checkpoint_id)
        return [action]

    def _drain_started(self, drain: Request) -> bool:
        if any(request is drain for request in self._preparing):
            return True
        return any(request is drain for rs in self._requests.values() for request in rs)

    def _trigger_request(
        self, now: float, request: Request, options: CheckpointOptions
    ) -> list[Action]:
        if options.target is not None:
            # A savepoint: its folder first (savepoint_folder_ready triggers it).
            self._preparing.append(request)
            return [PrepareSavepointFolder(request, options)]
        checkpoint_id, action = self._trigger(now, options)
        self._requests.setdefault(checkpoint_id, []).append(request)
        return [action]

    def savepoint_folder_ready(
        self, request: Request, options: CheckpointOptions, now: float
    ) -> list[Action]:
        """The savepoint folder of ``request`` exists: trigger the savepoint."""
        if request not in self._preparing:
            return []  # failed meanwhile (the job ended)
        self._preparing.remove(request)
        checkpoint_id, action = self._trigger(now, options)
        self._requests.setdefault(checkpoint_id, []).append(request)
        if request is self._drain:
            self.end.end_phase_ids.add(checkpoint_id)
        return [action]

    def savepoint_folder_failed(self, request: Request, error: BaseException) -> list[Action]:
        """The savepoint folder of ``request`` could not be created."""
        if request in self._preparing:
            self._preparing.remove(request)
        if request is self._drain:
            self._drain = None
        return [FailRequest(request, CheckpointError(f"cannot write the savepoint: {error}"))]

    def _trigger(self, now: float, options: CheckpointOptions) -> tuple[CheckpointId, SendToTasks]:
        checkpoint_id = CheckpointId(self.next_id)
        self.next_id += 1
        tasks = [t for t in self.tasks if t not in self.finished]
        self.pending[checkpoint_id] = PendingCheckpoint.create(checkpoint_id, now, options, tasks)
        self.stats.triggered(checkpoint_id, self.wall_clock(), options.is_savepoint)
        if self.rules is not None:
            self.rules.triggered(now)
        barrier = CheckpointBarrier(checkpoint_id, now, options)
        sources = tuple(s for s in self.sources if s not in self.finished)
        return checkpoint_id, SendToTasks(sources, TriggerCheckpoint(barrier))

    # -- completing -----------------------------------------------------------------------

    def metadata_written(
        self, checkpoint_id: CheckpointId, pointer: str, now: float
    ) -> list[Action]:
        """Checkpoint ``checkpoint_id``'s ``_metadata`` is committed: it completed."""
        pending = self.pending.pop(checkpoint_id, None)
        if pending is None:  # aborted meanwhile (the actor writes inline: not today)
            return [Discard(checkpoint_id)]
        pending.discard()
        self.end.end_phase_ids.discard(checkpoint_id)
        options = pending.options
        completed = CompletedCheckpoint(
            checkpoint_id, pointer, pending.timestamp, options.is_savepoint
        )
        actions: list[Action] = []
        if not options.is_savepoint:
            self.completed.append(completed)
            for subsumed in self.store.add(checkpoint_id, pointer):
                actions.append(Discard(CheckpointId(subsumed)))
        self.stats.completed(checkpoint_id, now - pending.timestamp, pointer)
        self.failures.completed()
        if self.rules is not None:
            self.rules.finished(now)
        # A plain savepoint is never restored by the job itself: it neither subsumes
        # pending checkpoints nor lets sinks commit (their transactions stay pending
        # until the next checkpoint completes; Flink notifies only for checkpoints and
        # synchronous savepoints).
        notify = not options.is_savepoint or options.terminate or options.is_final
        # The job's final checkpoint: every task took it after the end of its input
        # (while a drain is asked for, only its savepoint may be the final one).
        final = (
            notify
            and not self.end.final_done
            and not options.terminate
            and checkpoint_id not in self.end.not_final
            and (self._drain is None or options.is_final)
        )
        self.end.not_final.discard(checkpoint_id)
        if not options.is_savepoint:
            actions.extend(self._subsume_older(checkpoint_id, now))
        if notify:
            actions.append(RecordNotified(checkpoint_id, pointer))
            message = NotifyCheckpointComplete(checkpoint_id, final=final)
            actions.append(SendToTasks(tuple(self.tasks), message))
        if final:
            self.end.final_done = True
            logger.debug("job %s: checkpoint %d is its final one", self.job_id, checkpoint_id)
        for request in self._requests.pop(checkpoint_id, []):
            actions.append(ResolveRequest(request, completed))
            if request is self._drain:
                self._drain = None
        return actions

    def _subsume_older(self, checkpoint_id: CheckpointId, now: float) -> list[Action]:
        """Completing checkpoint n subsumes every older pending one (Flink aborts them)."""
        actions: list[Action] = []
        for older in sorted(i for i in self.pending if i < checkpoint_id):
            if not self.pending[older].options.is_savepoint:
                actions.extend(
                    self._abort(
                        older,
                        CheckpointFailureReason.SUBSUMED,
                        f"checkpoint {older} was subsumed by {checkpoint_id}",
                        now,
                    )
                )
        return actions

    def metadata_failed(
        self, checkpoint_id: CheckpointId, message: str, now: float
    ) -> list[Action]:
        """Writing checkpoint ``checkpoint_id``'s ``_metadata`` failed: abort it."""
        return self._abort(checkpoint_id, CheckpointFailureReason.WRITE_FAILURE, message, now)

    def _metadata(self, pending: PendingCheckpoint, now: float) -> CheckpointMetadata:
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
            timestamp=self.wall_clock() - (now - pending.timestamp),
            is_savepoint=pending.options.is_savepoint,
            operators=operators,
            # A savepoint declares its format: restore honours it (a canonical one is
            # never unpickled, whatever the restoring job allows).
            properties=(
                {FORMAT_PROPERTY: CANONICAL_FORMAT if pending.options.canonical else NATIVE_FORMAT}
                if pending.options.is_savepoint
                else {}
            ),
        )

    # -- aborting -------------------------------------------------------------------------

    def _expire(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for checkpoint_id, pending in list(self.pending.items()):
            if now - pending.timestamp >= self.config.timeout:
                missing = ", ".join(sorted(pending.not_yet_acknowledged)[:5])
                actions.extend(
                    self._abort(
                        checkpoint_id,
                        CheckpointFailureReason.EXPIRED,
                        f"checkpoint {checkpoint_id} expired after {self.config.timeout:g} s "
                        f"before every task acknowledged (waiting for: {missing})",
                        now,
                    )
                )
                if actions and isinstance(actions[-1], FailJob):
                    break
        return actions

    def _abort(
        self,
        checkpoint_id: CheckpointId,
        reason: CheckpointFailureReason,
        message: str,
        now: float,
    ) -> list[Action]:
        pending = self.pending.pop(checkpoint_id, None)
        if pending is None:
            return []
        pending.discard()
        end = self.end
        end.not_final.discard(checkpoint_id)
        if checkpoint_id in end.end_phase_ids:
            end.end_phase_ids.discard(checkpoint_id)
            # Not at once again: a task that declines every time would spin.
            interval = self.config.interval
            end.retry_at = now + (END_PHASE_RETRY if interval is None else interval)
        self.stats.failed(checkpoint_id, now - pending.timestamp, message)
        # Subsumed checkpoints are routine (a newer one completed); the rest are failures.
        level = logging.INFO if reason is CheckpointFailureReason.SUBSUMED else logging.WARNING
        logger.log(level, "job %s: %s", self.job_id, message)
        if self.rules is not None:
            self.rules.finished(now)
        actions: list[Action] = [
            SendToTasks(tuple(self.tasks), NotifyCheckpointAborted(checkpoint_id, message)),
            Discard(checkpoint_id, pending.options.target),
        ]
        requests = self._requests.pop(checkpoint_id, [])
        if self._drain is not None and any(r is self._drain for r in requests):
            self._drain = None  # the stop-with-savepoint failed: the next final is plain
        error = CheckpointError(message, checkpoint_id, reason)
        actions.extend(FailRequest(request, error) for request in requests)
        # Savepoints never count toward the tolerable checkpoint failures (as in Flink).
        if not pending.options.is_savepoint and self.failures.failed(reason):
            actions.append(
                FailJob(
                    CheckpointFailedError(
                        f"{self.failures.consecutive} checkpoints failed in a row, more than "
                        f"tolerable_failures={self.config.tolerable_failures}; last: {message}",
                        checkpoint_id,
                        reason,
                    )
                )
            )
        return actions
