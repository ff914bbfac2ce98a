"""The checkpoint's messages: events in channels, commands to tasks, reports back.

Events travel in channels with the data (``runtime.tasks`` puts them there):

* ``CheckpointBarrier``: separates the records before checkpoint ``n`` from those after.
  Aligned barriers go in the data lane, in order; unaligned ones on the priority lane.
* ``BarrierAnnouncement``: on the priority lane, tells the consumer that an aligned
  barrier is queued in the data lane, so that an alignment timeout can promote it
  (Flink's ``EventAnnouncement``).
* ``CancelCheckpointMarker``: checkpoint ``n`` was aborted upstream; stop aligning it.
* ``EndOfData``: the producing subtask emitted its last record (Flink's ``EndOfData``).
  The channel stays open: barriers still follow it until the job's final checkpoint.

Commands go to a task's control mailbox (``TriggerCheckpoint`` to sources,
``NotifyCheckpointComplete`` and ``NotifyCheckpointAborted`` to every task); reports go
to the coordinator's mailbox (``CheckpointAcknowledged``, ``CheckpointDeclined``, and the
task lifecycle reports ``InputEnded`` and ``TaskFinished``).

All are msgspec Structs: frozen, cheap, and ready to be sent across processes later.
"""

from __future__ import annotations

import msgspec

from runtime.checkpoint.ids import CheckpointId, TaskId
from storage.checkpoint import SubtaskStateHandle


class CheckpointOptions(msgspec.Struct, frozen=True):
    """How a checkpoint is taken.

    Attributes:
        unaligned: barriers overtake in-flight data from the start.
        aligned_timeout: seconds after the trigger when an aligned barrier becomes
            unaligned; 0 for never (or, with ``unaligned``, from the start).
        exactly_once: align (or capture in-flight data); False is at-least-once.
        is_savepoint: a savepoint (always aligned, never subsumed).
        is_final: a stop-with-savepoint with drain: triggered once every subtask ended
            its input, it is the job's final checkpoint.
        target: a savepoint's own folder (its files go there, not to ``chk-<n>``).
        canonical: a savepoint in the canonical (msgspec only) format, else native.
        terminate: stop-with-savepoint: sources stop after it, and no operator ends its
            input (the job is suspended, to be resumed from the savepoint).
    """

    unaligned: bool = False
    aligned_timeout: float = 0.0
    exactly_once: bool = True
    is_savepoint: bool = False
    is_final: bool = False
    target: str | None = None
    canonical: bool = False
    terminate: bool = False


class CheckpointBarrier(msgspec.Struct, frozen=True):
    """Barrier ``checkpoint_id``, triggered at ``timestamp`` (``time.monotonic()``)."""

    checkpoint_id: CheckpointId
    timestamp: float
    options: CheckpointOptions

    def as_unaligned(self) -> CheckpointBarrier:
        """The same barrier, marked unaligned (after an alignment timeout)."""
        return CheckpointBarrier(
            self.checkpoint_id,
            self.timestamp,
            msgspec.structs.replace(self.options, unaligned=True, aligned_timeout=0.0),
        )


class BarrierAnnouncement(msgspec.Struct, frozen=True):
    """An aligned barrier is queued in this channel's data lane (priority lane event)."""

    barrier: CheckpointBarrier


class EndOfData(msgspec.Struct, frozen=True):
    """The producer emitted its last record on this channel (data lane, in order).

    Unlike the end of the channel, barriers may still follow: the producer keeps taking
    part in checkpoints until the job's final checkpoint completed (FLIP-147).
    """


END_OF_DATA = EndOfData()
"""The one ``EndOfData`` instance (it carries nothing)."""


class CancelCheckpointMarker(msgspec.Struct, frozen=True):
    """Checkpoint ``checkpoint_id`` was aborted upstream."""

    checkpoint_id: CheckpointId


class TriggerCheckpoint(msgspec.Struct, frozen=True):
    """Command to a source task: snapshot now and emit the barrier."""

    barrier: CheckpointBarrier


class NotifyCheckpointComplete(msgspec.Struct, frozen=True):
    """Command to every task: checkpoint ``checkpoint_id`` completed (commit side effects).

    ``final``: every subtask took this checkpoint after the end of its input, so it holds
    the effects of every record: the job's final checkpoint. Each task ends once it has
    handled this notification (its two-phase-commit sinks committed their last data).
    """

    checkpoint_id: CheckpointId
    final: bool = False


class StopSource(msgspec.Struct, frozen=True):
    """Command to a source task: end the input now (stop-with-savepoint with drain)."""


class AwaitFinalCheckpoint(msgspec.Struct, frozen=True):
    """Command to every task: at the end of input, wait for the job's final checkpoint.

    Sent with a stop-with-savepoint with drain, for jobs without periodic checkpoints
    (with them, every task waits anyway): the drain savepoint is the final checkpoint.
    """


class NotifyCheckpointAborted(msgspec.Struct, frozen=True):
    """Command to every task: checkpoint ``checkpoint_id`` was aborted."""

    checkpoint_id: CheckpointId
    reason: str = ""


class SubtaskCheckpointMetrics(msgspec.Struct, frozen=True):
    """What one subtask measured for one checkpoint (Flink's checkpoint statistics).

    Attributes:
        sync_duration: seconds of the synchronous part (processing stopped).
        async_duration: seconds of the asynchronous part (serialize and write).
        alignment_duration: seconds from the first barrier to the snapshot.
        start_delay: seconds from the trigger to the first barrier at this subtask.
        state_size: bytes of state written.
        in_flight_bytes: bytes of channel state (unaligned) written.
        unaligned: whether this subtask took the checkpoint unaligned.
    """

    sync_duration: float = 0.0
    async_duration: float = 0.0
    alignment_duration: float = 0.0
    start_delay: float = 0.0
    state_size: int = 0
    in_flight_bytes: int = 0
    unaligned: bool = False


class SubtaskStateReport(msgspec.Struct, frozen=True):
    """One operator's part of a task's acknowledgement: its state in the task's file."""

    uid: str
    subtask: SubtaskStateHandle


class CheckpointAcknowledged(msgspec.Struct, frozen=True):
    """Report: ``task`` persisted its state for ``checkpoint_id``.

    Attributes:
        state: one report per operator of the task's chain, for the metadata.
        after_end_of_input: the snapshot was taken after the task had processed all of
            its input and ended its chain's input. A checkpoint every task acknowledged
            this way is the job's final checkpoint: no channel holds a record then.
    """

    checkpoint_id: CheckpointId
    task: TaskId
    metrics: SubtaskCheckpointMetrics
    state: list[SubtaskStateReport] = []
    after_end_of_input: bool = False


class CheckpointDeclined(msgspec.Struct, frozen=True):
    """Report: ``task`` could not take checkpoint ``checkpoint_id``, and why.

    ``subsumed``: a newer checkpoint overtook it at the task (does not count as a failure).
    """

    checkpoint_id: CheckpointId
    task: TaskId
    reason: str
    subsumed: bool = False


class InputEnded(msgspec.Struct, frozen=True):
    """Report: ``task`` processed all of its input and sent ``EndOfData`` downstream.

    Its chain's input was ended; it takes part in checkpoints until the job's final one.
    """

    task: TaskId


class TaskFinished(msgspec.Struct, frozen=True):
    """Report: ``task`` finished; it acknowledges no later checkpoint."""

    task: TaskId
