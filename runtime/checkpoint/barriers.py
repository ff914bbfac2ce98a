"""The barrier handler: a subtask's decisions about barriers, as a pure state machine.

One ``BarrierHandler`` per ``StreamTask``. The task feeds it what arrives on its inputs
(barriers, announcements, cancellation markers, ends of channels), what the coordinator
says (aborted checkpoints) and the passing of time; the handler returns the actions the
task must perform, in order. It does no I/O and never awaits, so tests drive it
directly, with Hypothesis state machines.

Per checkpoint the barrier's ``CheckpointOptions`` choose the behaviour (Flink's
``SingleCheckpointBarrierHandler`` with its alignment states):

* **aligned** (exactly-once): a channel that delivered barrier ``n`` is blocked; when
  every open channel has delivered it, snapshot (the barrier is forwarded in the data
  lane) and unblock all.
* **at-least-once**: nothing is blocked; snapshot when the last channel delivers ``n``.
* **unaligned**: snapshot on the first barrier ``n`` (it overtakes the outputs' queued
  data, which becomes output channel state); from then on, records read from channels
  that have not delivered ``n`` are recorded as input channel state, until they do.
* **aligned with timeout**: aligned, until ``barrier.timestamp + aligned_timeout``
  passes; then switch to unaligned at once: snapshot, unblock, record the channels still
  missing ``n``, and promote the barriers that announced themselves queued in a
  channel (their overtaken buffers become input channel state).

A channel that ends needs no barrier. A barrier of a newer checkpoint aborts an older
one in progress; barriers of older or aborted checkpoints are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from runtime.checkpoint.events import CheckpointBarrier
from runtime.checkpoint.ids import ChannelIndex, CheckpointId

# -- actions ----------------------------------------------------------------------------


class BlockChannel(msgspec.Struct, frozen=True, tag=True):
    """Hold back data from ``channel`` (it delivered the barrier; aligned)."""

    channel: ChannelIndex


class UnblockAll(msgspec.Struct, frozen=True, tag=True):
    """Let every channel's data flow again."""


class TriggerSnapshot(msgspec.Struct, frozen=True, tag=True):
    """Snapshot the subtask's state now and forward the barrier.

    Attributes:
        barrier: the barrier to forward (``unaligned`` says in which lane).
        unaligned: capture the outputs' in-flight data and put the barrier on the
            priority lane; else forward it in the data lane after all data.
        alignment_duration: seconds from the first barrier to now.
        start_delay: seconds from the trigger to the first barrier here.
    """

    barrier: CheckpointBarrier
    unaligned: bool
    alignment_duration: float
    start_delay: float


class StartRecording(msgspec.Struct, frozen=True, tag=True):
    """Record data read from ``channels`` as input channel state of ``checkpoint_id``."""

    checkpoint_id: CheckpointId
    channels: tuple[ChannelIndex, ...]


class StopRecording(msgspec.Struct, frozen=True, tag=True):
    """``channel`` delivered its barrier: its input channel state is complete."""

    checkpoint_id: CheckpointId
    channel: ChannelIndex


class PromoteBarrier(msgspec.Struct, frozen=True, tag=True):
    """Move ``barrier`` from ``channel``'s data lane to its priority lane.

    The buffers it overtakes are recorded as ``channel``'s input channel state.
    """

    checkpoint_id: CheckpointId
    channel: ChannelIndex
    barrier: CheckpointBarrier


class InputStateComplete(msgspec.Struct, frozen=True, tag=True):
    """Every channel's input state of ``checkpoint_id`` is recorded: persist it."""

    checkpoint_id: CheckpointId


class AbortCheckpoint(msgspec.Struct, frozen=True, tag=True):
    """Drop what this subtask holds for ``checkpoint_id`` and tell downstream.

    ``decline`` asks the task to tell the coordinator too: the abort started here (a
    newer barrier arrived first), so nobody else will.
    """

    checkpoint_id: CheckpointId
    reason: str
    decline: bool = False


Action = (
    BlockChannel
    | UnblockAll
    | TriggerSnapshot
    | StartRecording
    | StopRecording
    | PromoteBarrier
    | InputStateComplete
    | AbortCheckpoint
)


@dataclass(slots=True)
class _Alignment:
    """What the handler knows about the checkpoint in progress."""

    barrier: CheckpointBarrier
    first_seen: float
    received: set[int] = field(default_factory=set)
    announced: dict[int, CheckpointBarrier] = field(default_factory=dict)
    unaligned: bool = False
    snapshotted: bool = False
    recording: set[int] = field(default_factory=set)
    started: bool = False  # a barrier (not only an announcement) arrived

    @property
    def checkpoint_id(self) -> CheckpointId:
        return self.barrier.checkpoint_id


class BarrierHandler:
    """Decides when a subtask with ``num_channels`` inputs snapshots and what it records.

    Args:
        num_channels: the number of input channels (>= 1).
    """

    def __init__(self, num_channels: int) -> None:
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.num_channels = num_channels
        self.ended: set[int] = set()
        self.latest_id: CheckpointId = CheckpointId(0)
        self.aborted: set[int] = set()
        self.current: _Alignment | None = None
        self.blocked: set[int] = set()

    # -- queries --------------------------------------------------------------------------

    @property
    def in_progress(self) -> CheckpointId | None:
        """The checkpoint being aligned or recorded, if any."""
        return None if self.current is None else self.current.checkpoint_id

    def is_recording(self, channel: int) -> bool:
        """Whether data read from ``channel`` belongs to the input state in progress."""
        current = self.current
        return current is not None and channel in current.recording

    @property
    def deadline(self) -> float | None:
        """When ``on_time`` must be called next (an alignment timeout), if ever."""
        current = self.current
        if current is None or current.snapshotted:
            return None
        options = current.barrier.options
        if options.unaligned or options.aligned_timeout <= 0 or not options.exactly_once:
            return None
        return current.barrier.timestamp + options.aligned_timeout

    # -- events ---------------------------------------------------------------------------

    def on_barrier(self, channel: int, barrier: CheckpointBarrier, now: float) -> list[Action]:
        """Barrier ``barrier.checkpoint_id`` arrived on ``channel``."""
        actions: list[Action] = []
        current = self._begin(barrier, now, actions)
        if current is None or channel in current.received:
            return actions
        current.started = True
        current.received.add(channel)
        current.announced.pop(channel, None)
        if current.snapshotted:
            # Unaligned (from the start or after a timeout): this channel's state is done.
            if channel in current.recording:
                current.recording.discard(channel)
                actions.append(StopRecording(current.checkpoint_id, ChannelIndex(channel)))
            self._maybe_complete(current, actions)
            return actions
        options = current.barrier.options
        if options.unaligned and options.exactly_once:
            self._snapshot_unaligned(current, now, actions)
            return actions
        if self._all_arrived(current):
            self._snapshot_aligned(current, now, actions)
            return actions
        if options.exactly_once:
            self.blocked.add(channel)
            actions.append(BlockChannel(ChannelIndex(channel)))
            deadline = self.deadline
            if deadline is not None and now >= deadline:
                self._switch_to_unaligned(current, now, actions)
        return actions

    def on_announcement(self, channel: int, barrier: CheckpointBarrier, now: float) -> list[Action]:
        """An aligned barrier is queued in ``channel``'s data lane."""
        actions: list[Action] = []
        current = self._begin(barrier, now, actions)
        if current is None or channel in current.received:
            return actions
        current.announced[channel] = barrier
        if current.snapshotted and current.unaligned:
            actions.append(PromoteBarrier(current.checkpoint_id, ChannelIndex(channel), barrier))
            del current.announced[channel]
        elif barrier.options.unaligned and barrier.options.exactly_once:
            # An unaligned barrier queued behind data (a network channel's receiver
            # announces it): snapshot now and promote it, as if it had arrived.
            self._snapshot_unaligned(current, now, actions)
        else:
            deadline = self.deadline
            if deadline is not None and now >= deadline:
                self._switch_to_unaligned(current, now, actions)
        return actions

    def on_cancel_marker(self, checkpoint_id: CheckpointId) -> list[Action]:
        """Upstream aborted ``checkpoint_id`` (a ``CancelCheckpointMarker`` arrived)."""
        return self.on_abort(checkpoint_id, "cancelled upstream")

    def on_abort(self, checkpoint_id: CheckpointId, reason: str) -> list[Action]:
        """Checkpoint ``checkpoint_id`` was aborted (by the coordinator or upstream)."""
        actions: list[Action] = []
        if checkpoint_id in self.aborted or checkpoint_id < self.latest_id:
            return actions
        self.aborted.add(checkpoint_id)
        current = self.current
        if checkpoint_id > self.latest_id:
            if current is not None:
                # Nobody else tells the coordinator that this older one will not come.
                self._abort_current(
                    current,
                    f"superseded by the abort of {checkpoint_id}",
                    actions,
                    decline=True,
                )
            self.latest_id = checkpoint_id
            actions.append(AbortCheckpoint(checkpoint_id, reason))
            return actions
        # checkpoint_id == latest_id
        if current is not None and current.checkpoint_id == checkpoint_id:
            self._abort_current(current, reason, actions)
        else:
            actions.append(AbortCheckpoint(checkpoint_id, reason))
        return actions

    def on_end_of_channel(self, channel: int, now: float) -> list[Action]:
        """``channel`` ended: it will deliver no more barriers."""
        actions: list[Action] = []
        self.ended.add(channel)
        self.blocked.discard(channel)
        current = self.current
        if current is None:
            return actions
        current.announced.pop(channel, None)
        if current.snapshotted:
            if channel in current.recording:
                current.recording.discard(channel)
                actions.append(StopRecording(current.checkpoint_id, ChannelIndex(channel)))
            self._maybe_complete(current, actions)
        elif current.started and self._all_arrived(current):
            self._snapshot_aligned(current, now, actions)
        elif len(self.ended) == self.num_channels:
            # Only announced, never started, and everything ended: nothing will come.
            self.current = None
        return actions

    def on_time(self, now: float) -> list[Action]:
        """Time passed: switch a timed-out alignment to unaligned."""
        actions: list[Action] = []
        current = self.current
        deadline = self.deadline
        if current is not None and deadline is not None and now >= deadline:
            self._switch_to_unaligned(current, now, actions)
        return actions

    # -- transitions ----------------------------------------------------------------------

    def _begin(
        self, barrier: CheckpointBarrier, now: float, actions: list[Action]
    ) -> _Alignment | None:
        n = barrier.checkpoint_id
        if n in self.aborted or n < self.latest_id:
            return None
        current = self.current
        if current is not None and current.checkpoint_id == n:
            return current
        if n == self.latest_id and current is None:
            return None  # checkpoint n already done here; a late duplicate
        if current is not None:
            self._abort_current(
                current,
                f"barrier {n} arrived before checkpoint {current.checkpoint_id} completed here",
                actions,
                decline=True,
            )
        self.latest_id = n
        self.aborted = {a for a in self.aborted if a >= n}
        self.current = _Alignment(barrier, first_seen=now)
        return self.current

    def _all_arrived(self, current: _Alignment) -> bool:
        return len(current.received | self.ended) >= self.num_channels

    def _snapshot_aligned(self, current: _Alignment, now: float, actions: list[Action]) -> None:
        actions.append(
            TriggerSnapshot(
                current.barrier,
                unaligned=False,
                alignment_duration=now - current.first_seen,
                start_delay=max(0.0, current.first_seen - current.barrier.timestamp),
            )
        )
        if self.blocked:
            self.blocked.clear()
            actions.append(UnblockAll())
        actions.append(InputStateComplete(current.checkpoint_id))
        self.current = None

    def _snapshot_unaligned(self, current: _Alignment, now: float, actions: list[Action]) -> None:
        current.unaligned = True
        current.snapshotted = True
        barrier = current.barrier
        if not barrier.options.unaligned:
            barrier = barrier.as_unaligned()
            current.barrier = barrier
        actions.append(
            TriggerSnapshot(
                barrier,
                unaligned=True,
                alignment_duration=now - current.first_seen,
                start_delay=max(0.0, current.first_seen - barrier.timestamp),
            )
        )
        if self.blocked:
            self.blocked.clear()
            actions.append(UnblockAll())
        missing = tuple(
            ChannelIndex(c)
            for c in range(self.num_channels)
            if c not in current.received and c not in self.ended
        )
        current.recording = set(missing)
        if missing:
            actions.append(StartRecording(current.checkpoint_id, missing))
        for channel, announced in sorted(current.announced.items()):
            actions.append(PromoteBarrier(current.checkpoint_id, ChannelIndex(channel), announced))
        current.announced.clear()
        self._maybe_complete(current, actions)

    def _switch_to_unaligned(self, current: _Alignment, now: float, actions: list[Action]) -> None:
        if current.snapshotted:
            return
        self._snapshot_unaligned(current, now, actions)

    def _maybe_complete(self, current: _Alignment, actions: list[Action]) -> None:
        if not current.recording and self._all_arrived(current):
            actions.append(InputStateComplete(current.checkpoint_id))
            self.current = None

    def _abort_current(
        self, current: _Alignment, reason: str, actions: list[Action], *, decline: bool = False
    ) -> None:
        self.aborted.add(current.checkpoint_id)
        if self.blocked:
            self.blocked.clear()
            actions.append(UnblockAll())
        actions.append(AbortCheckpoint(current.checkpoint_id, reason, decline))
        self.current = None
