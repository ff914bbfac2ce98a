"""Hypothesis state machines over ``BarrierHandler``: one per barrier mode, one mixing them.

The machine plays the subtask's upstreams and its input gate. Each channel delivers
barriers in increasing order of checkpoint id; the handler's ``BlockChannel`` and
``UnblockAll`` actions drive a model of the gate, and a blocked channel delivers nothing
from its data lane (no aligned barrier, no end) until it is unblocked. Priority events
(announcements, cancellation markers, unaligned barriers) still arrive on a blocked
channel, as ``InputGate.poll`` delivers them. A channel that announced barrier ``n``
(aligned with timeout, queued in its data lane) delivers ``n`` as its next barrier, and
does not end before it. Time only moves forward, and ``on_time`` is called after it does.

Per checkpoint id, the options are drawn once (the mode of the machine, or any mode in
the mixed machine); the barrier's timestamp is at most one second before the moment the
subtask first hears of it. An upstream that timed out forwards the barrier as unaligned,
which can only happen once the alignment deadline has passed.

Every action the handler returns is checked as it happens, against DESIGN.md ("A
barrier") and the handler's contract:

* a snapshot (``TriggerSnapshot``) at most once per checkpoint id, only of the newest
  checkpoint the subtask heard of, never of an aborted one (older and aborted barriers
  produce nothing);
* an aligned snapshot only once every open (not ended) channel delivered the barrier;
  and once they all did, the newest checkpoint is snapshotted and complete;
* at-least-once never blocks a channel;
* after ``InputStateComplete`` or ``AbortCheckpoint`` no channel stays blocked: only
  channels that delivered the barrier of the alignment in progress are ever blocked (a
  newer barrier that aborts the old alignment blocks its own channel), and the gate
  model and the handler's ``blocked`` set agree after every event;
* an ``AbortCheckpoint`` asks the task to decline to the coordinator exactly when the
  abort started at this subtask (a newer barrier or announcement overtook the checkpoint,
  or the abort of a newer checkpoint superseded it), not when the checkpoint itself was
  aborted by the coordinator or upstream; each checkpoint is aborted once;
* unaligned: ``StartRecording`` names exactly the open channels that had not delivered
  the barrier at the snapshot; each gets exactly one ``StopRecording``, on its barrier or
  its end, unless the checkpoint is aborted; ``InputStateComplete`` comes exactly when the
  last recording stopped; ``is_recording`` agrees;
* aligned with timeout: no unaligned snapshot before ``timestamp + aligned_timeout``;
  ``on_time`` at or after the deadline of a pending alignment snapshots unaligned exactly
  once, promoting the barrier of every channel that announced it and has not delivered
  it; ``deadline`` is that time while the alignment is pending, else None.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from runtime.checkpoint.barriers import (
    AbortCheckpoint,
    Action,
    BarrierHandler,
    BlockChannel,
    InputStateComplete,
    PromoteBarrier,
    StartRecording,
    StopRecording,
    TriggerSnapshot,
    UnblockAll,
)
from runtime.checkpoint.events import CheckpointBarrier, CheckpointOptions
from runtime.checkpoint.ids import CheckpointId

ALIGNED = CheckpointOptions()
AT_LEAST_ONCE = CheckpointOptions(exactly_once=False)
UNALIGNED = CheckpointOptions(unaligned=True)
WITH_TIMEOUT = tuple(CheckpointOptions(unaligned=False, aligned_timeout=t) for t in (1.0, 2.0, 4.0))

# Which checkpoint id an event is about, relative to the newest one the subtask heard of.
TARGETS = {"newest": 0, "next": 1, "skip one": 2, "older": -1}
barrier_targets = st.sampled_from(["newest", "next", "skip one", "older"])
targets = st.sampled_from(["newest", "newest", "next", "skip one", "older"])
channels = st.integers(0, 3)  # taken modulo the machine's channel count


def times_out(options: CheckpointOptions) -> bool:
    """Whether barriers with ``options`` start aligned and may switch to unaligned."""
    return options.exactly_once and not options.unaligned and options.aligned_timeout > 0


def of_type(actions: list[Action], kind: type) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


class BarrierMachine(RuleBasedStateMachine):
    """The model; subclasses choose the modes of their checkpoints (``MODES``)."""

    MODES: tuple[CheckpointOptions, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.handler: BarrierHandler | None = None

    @initialize(num_channels=st.integers(1, 4))
    def create(self, num_channels: int) -> None:
        self.n = num_channels
        self.handler = BarrierHandler(num_channels)
        self.now = 0.0
        self.options: dict[int, CheckpointOptions] = {}
        self.timestamps: dict[int, float] = {}
        # The options of the barrier (or announcement) that began the handler's alignment.
        self.first_options: dict[int, CheckpointOptions] = {}
        self.last_barrier = [0] * num_channels
        self.ended: set[int] = set()
        self.announced: dict[int, int] = {}  # channel -> announced id, not yet delivered
        self.blocked: set[int] = set()  # the gate model
        self.delivered: defaultdict[int, set[int]] = defaultdict(set)
        self.newest = 0  # the newest id the handler heard of (barrier, announcement, abort)
        self.aborted: set[int] = set()  # every AbortCheckpoint the handler emitted
        self.snapshots: dict[int, TriggerSnapshot] = {}
        self.completed: set[int] = set()  # InputStateComplete
        self.recording_id: int | None = None  # the unaligned checkpoint being recorded
        self.recording: set[int] = set()
        self.promoted: defaultdict[int, set[int]] = defaultdict(set)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def h(self) -> BarrierHandler:
        assert self.handler is not None
        return self.handler

    def target(self, which: str) -> int:
        return self.newest + TARGETS[which]

    def define(self, checkpoint_id: int, pick: int, lag: int, modes: tuple) -> None:
        """Draw the options and timestamp of a checkpoint the first time it is mentioned."""
        if checkpoint_id not in self.options:
            self.options[checkpoint_id] = modes[pick % len(modes)]
            self.timestamps[checkpoint_id] = self.now - lag

    def barrier(self, checkpoint_id: int) -> CheckpointBarrier:
        return CheckpointBarrier(
            CheckpointId(checkpoint_id),
            self.timestamps[checkpoint_id],
            self.options[checkpoint_id],
        )

    def heard_of(self, checkpoint_id: int, options: CheckpointOptions | None) -> None:
        if checkpoint_id > self.newest:
            self.newest = checkpoint_id
            if options is not None:
                self.first_options[checkpoint_id] = options

    def open_missing(self, checkpoint_id: int) -> set[int]:
        """Open channels that have not delivered barrier ``checkpoint_id``."""
        return {
            c
            for c in range(self.n)
            if c not in self.ended and c not in self.delivered[checkpoint_id]
        }

    def announced_missing(self, checkpoint_id: int) -> set[int]:
        return {
            c
            for c, n in self.announced.items()
            if n == checkpoint_id and c not in self.delivered[checkpoint_id]
        }

    # -- checking what the handler did ------------------------------------------------------

    def check(
        self,
        actions: list[Action],
        *,
        barrier_on: tuple[int, int] | None = None,
        ended: int | None = None,
        aborting: int | None = None,
    ) -> None:
        was_recording_id, was_recording = self.recording_id, set(self.recording)
        unaligned_snapshot: int | None = None
        aligned_snapshot: int | None = None
        started_recording = False
        for action in actions:
            match action:
                case BlockChannel(channel=c):
                    assert barrier_on is not None and barrier_on[0] == c, (
                        f"blocked channel {c}, which delivered no barrier now"
                    )
                    assert self.options[barrier_on[1]].exactly_once, "at-least-once blocked"
                    assert c not in self.blocked, f"channel {c} blocked twice"
                    self.blocked.add(c)
                case UnblockAll():
                    assert self.blocked, "UnblockAll with nothing blocked"
                    self.blocked.clear()
                case TriggerSnapshot(barrier=b, unaligned=unaligned):
                    n = b.checkpoint_id
                    assert n not in self.snapshots, f"second snapshot of checkpoint {n}"
                    assert n == self.newest, f"snapshot of {n}, older than {self.newest}"
                    assert n not in self.aborted, f"snapshot of aborted checkpoint {n}"
                    assert b.timestamp == self.timestamps[n]
                    options = self.options[n]
                    if unaligned:
                        assert options.exactly_once and b.options.unaligned
                        assert b.options.aligned_timeout == 0
                        if not options.unaligned:
                            assert times_out(options)
                            deadline = b.timestamp + options.aligned_timeout
                            assert self.now >= deadline, (
                                f"unaligned snapshot of {n} at {self.now}, before the "
                                f"alignment deadline {deadline}"
                            )
                        unaligned_snapshot = n
                        self.recording_id, self.recording = n, set()
                        self.expected_recording = self.open_missing(n)
                        self.expected_promoted = self.announced_missing(n)
                    else:
                        assert not options.unaligned
                        assert b.options == self.first_options[n]
                        missing = self.open_missing(n)
                        assert not missing, f"aligned snapshot of {n}; {missing} did not deliver"
                        aligned_snapshot = n
                    self.snapshots[n] = action
                case StartRecording(checkpoint_id=n, channels=chs):
                    assert unaligned_snapshot == n and not started_recording
                    assert len(set(chs)) == len(chs), f"duplicate channels in {chs}"
                    assert set(chs) == self.expected_recording, (
                        f"recording {chs}, but {self.expected_recording} had not delivered {n}"
                    )
                    started_recording = True
                    self.recording = set(chs)
                case StopRecording(checkpoint_id=n, channel=c):
                    assert n == self.recording_id and c in self.recording, (
                        f"StopRecording({n}, {c}) of a channel not recording"
                    )
                    assert barrier_on == (c, n) or ended == c, (
                        f"channel {c} stopped recording {n} without its barrier or its end"
                    )
                    self.recording.discard(c)
                case PromoteBarrier(checkpoint_id=n, channel=c, barrier=b):
                    assert n == self.recording_id, f"promoted {n}, not taken unaligned"
                    assert self.announced.get(c) == n, f"channel {c} never announced {n}"
                    assert c not in self.delivered[n]
                    assert c not in self.promoted[n], f"channel {c} promoted {n} twice"
                    assert b == self.barrier(n)
                    self.promoted[n].add(c)
                case InputStateComplete(checkpoint_id=n):
                    assert n in self.snapshots and n not in self.completed
                    if n == self.recording_id:
                        assert not self.recording, f"{n} complete while {self.recording} record"
                        self.recording_id = None
                    self.completed.add(n)
                case AbortCheckpoint(checkpoint_id=n, decline=decline):
                    assert n not in self.aborted, f"checkpoint {n} aborted twice"
                    if n != aborting:
                        assert n < self.newest, f"aborted {n} although nothing superseded it"
                        assert n not in self.completed
                    # Declined to the coordinator exactly when nobody else reports it:
                    # a newer barrier (or announcement) overtook it here, or the abort of
                    # a newer checkpoint superseded it; an abort of the checkpoint itself
                    # (from the coordinator or upstream) is reported by others.
                    assert decline == (n != aborting), f"{action} on abort of {aborting}"
                    self.aborted.add(n)
                    if n == self.recording_id:
                        self.recording_id, self.recording = None, set()
                case _:
                    raise AssertionError(f"unknown action {action!r}")

        if unaligned_snapshot is not None:
            n = unaligned_snapshot
            assert started_recording == bool(self.expected_recording)
            assert self.promoted[n] == self.expected_promoted, (
                f"promoted {self.promoted[n]}; announced and missing: {self.expected_promoted}"
            )
        if aligned_snapshot is not None:
            assert aligned_snapshot in self.completed, "aligned snapshot without its input state"
        # Exactly one StopRecording per recording channel, on its barrier or its end.
        if was_recording_id is not None and was_recording_id not in self.aborted:
            done = {ended} if ended is not None else set()
            if barrier_on is not None and barrier_on[1] == was_recording_id:
                done.add(barrier_on[0])
            stuck = (done & was_recording) & self.recording
            assert not stuck, f"{stuck} delivered or ended but still record {was_recording_id}"
        # InputStateComplete exactly when the last recording stopped.
        if self.recording_id is not None:
            assert self.recording, f"every recording of {self.recording_id} stopped, not complete"
        # After a completion or an abort nothing stays blocked, except channels that
        # delivered the barrier of a newer checkpoint that began in the same event.
        current = self.h.in_progress
        if of_type(actions, InputStateComplete):
            assert not self.blocked, f"{self.blocked} still blocked after completion"
        if current is None or current in self.snapshots:
            assert not self.blocked, f"{self.blocked} blocked with no alignment pending"
        else:
            assert self.blocked <= self.delivered[current], (
                f"{self.blocked} blocked; only {self.delivered[current]} delivered {current}"
            )
        assert self.h.blocked == self.blocked, f"handler {self.h.blocked}, gate {self.blocked}"
        for c in range(self.n):
            assert self.h.is_recording(c) == (c in self.recording)

    # -- rules ------------------------------------------------------------------------------

    def deliver(self, c: int, n: int, pick: int, *, promoted: bool = False) -> None:
        """Channel ``c`` delivers barrier ``n``, if the model of its upstream allows."""
        if c in self.ended or n < 1 or n <= self.last_barrier[c]:
            return
        announced = self.announced.get(c)
        if announced is not None and announced != n:
            return  # the announced barrier is the next one queued in the data lane
        self.define(n, pick, pick % 2, self.MODES)
        barrier = self.barrier(n)
        if promoted:
            # Upstream timed out: it forwards the barrier unaligned (never announced).
            options = self.options[n]
            if not times_out(options) or announced is not None:
                return
            if self.now < barrier.timestamp + options.aligned_timeout:
                return
            barrier = barrier.as_unaligned()
        if c in self.blocked and not barrier.options.unaligned:
            return  # aligned barriers travel in the data lane, which is held back
        self.last_barrier[c] = n
        self.announced.pop(c, None)
        self.delivered[n].add(c)
        self.heard_of(n, barrier.options)
        actions = self.h.on_barrier(c, barrier, self.now)
        self.check(actions, barrier_on=(c, n))

    @rule(channel=channels, pick=st.integers(0, 11))
    def deliver_newest_barrier(self, channel: int, pick: int) -> None:
        """The common case: a flowing channel catches up with the alignment in progress."""
        flowing = [c for c in range(self.n) if c not in self.ended and c not in self.blocked]
        behind = [c for c in flowing if c not in self.delivered[self.newest]]
        candidates = behind or flowing
        if not candidates:
            return
        c = candidates[channel % len(candidates)]
        n = self.announced.get(c, self.newest)
        self.deliver(c, n if n > self.last_barrier[c] else n + 1, pick)

    @rule(
        channel=channels,
        which=barrier_targets,
        pick=st.integers(0, 11),
        promoted=st.booleans(),
        _=st.just(None),  # sorts this rule after the common ones (Hypothesis orders by arity)
    )
    def deliver_barrier(self, channel: int, which: str, pick: int, promoted: bool, _: None) -> None:
        """Any channel, blocked or not, delivers a barrier of any id."""
        self.deliver(channel % self.n, self.target(which), pick, promoted=promoted)

    @precondition(lambda self: any(times_out(m) for m in self.MODES))
    @rule(channel=channels, which=targets, pick=st.integers(0, 11), lag=st.integers(0, 1))
    def announce(self, channel: int, which: str, pick: int, lag: int) -> None:
        c = channel % self.n
        n = self.target(which)
        if c in self.ended or c in self.announced or n < 1 or n <= self.last_barrier[c]:
            return
        self.define(n, pick, lag, tuple(m for m in self.MODES if times_out(m)))
        if not times_out(self.options[n]):
            return  # only barriers that may time out are announced
        barrier = self.barrier(n)
        recording_before = self.h.in_progress == n and n in self.snapshots
        self.announced[c] = n
        self.heard_of(n, barrier.options)
        actions = self.h.on_announcement(c, barrier, self.now)
        self.check(actions)
        if recording_before:
            assert actions == [PromoteBarrier(CheckpointId(n), c, barrier)]

    @rule(which=targets, from_coordinator=st.booleans(), dice=st.integers(0, 2))
    def abort(self, which: str, from_coordinator: bool, dice: int) -> None:
        n = self.target(which)
        if n < 1 or dice != 0:
            return  # aborts are rarer than barriers, or few checkpoints would complete
        effective = n not in self.aborted and n >= self.newest
        self.heard_of(n, None)
        if from_coordinator:
            actions = self.h.on_abort(CheckpointId(n), "declined by a task")
        else:
            actions = self.h.on_cancel_marker(CheckpointId(n))
        self.check(actions, aborting=n)
        aborts = [a for a in of_type(actions, AbortCheckpoint) if a.checkpoint_id == n]
        assert len(aborts) == (1 if effective else 0)
        if not effective:
            assert actions == []

    @rule(channel=channels, dice=st.integers(0, 3))
    def end_channel(self, channel: int, dice: int) -> None:
        c = channel % self.n
        if dice != 0 or c in self.ended or c in self.blocked or c in self.announced:
            return  # ends are rarer than barriers; an end is queued behind held-back data
        self.ended.add(c)
        actions = self.h.on_end_of_channel(c, self.now)
        self.check(actions, ended=c)

    @rule(seconds=st.integers(0, 3))
    def advance_time(self, seconds: int) -> None:
        self.now += seconds
        current = self.h.in_progress
        due = False
        if current is not None and current not in self.snapshots:
            first = self.first_options[current]
            due = times_out(first) and self.now >= self.timestamps[current] + first.aligned_timeout
        announced = self.announced_missing(current) if current is not None else set()
        actions = self.h.on_time(self.now)
        self.check(actions)
        snapshots = of_type(actions, TriggerSnapshot)
        if due:
            assert len(snapshots) == 1, f"timed-out alignment of {current}: {actions}"
            assert snapshots[0].unaligned and snapshots[0].barrier.checkpoint_id == current
            assert {p.channel for p in of_type(actions, PromoteBarrier)} == announced
        else:
            assert actions == [], f"on_time before any deadline did {actions}"

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def no_deadlock(self) -> None:
        if self.handler is None or not self.blocked:
            return
        open_channels = set(range(self.n)) - self.ended
        assert open_channels - self.blocked, f"every open channel blocked: {self.blocked}"

    @invariant()
    def newest_checkpoint_completes_once_every_barrier_arrived(self) -> None:
        if self.handler is None:
            return
        n = self.newest
        if n == 0 or n in self.aborted or not self.delivered[n]:
            return
        if not self.open_missing(n):
            assert n in self.completed, f"every open channel delivered {n}; not complete"
            assert self.h.in_progress is None

    @invariant()
    def in_progress_is_the_newest(self) -> None:
        if self.handler is None:
            return
        current = self.h.in_progress
        if current is not None:
            assert current == self.newest
            assert current not in self.aborted and current not in self.completed

    @invariant()
    def deadline_is_the_alignment_timeout(self) -> None:
        if self.handler is None:
            return
        current = self.h.in_progress
        expected = None
        if current is not None and current not in self.snapshots:
            first = self.first_options[current]
            if times_out(first):
                expected = self.timestamps[current] + first.aligned_timeout
        assert self.h.deadline == expected


MACHINE_SETTINGS = settings(max_examples=120, stateful_step_count=40, deadline=None, database=None)


class AlignedMachine(BarrierMachine):
    MODES = (ALIGNED,)


class AtLeastOnceMachine(BarrierMachine):
    MODES = (AT_LEAST_ONCE,)


class UnalignedMachine(BarrierMachine):
    MODES = (UNALIGNED,)


class AlignedTimeoutMachine(BarrierMachine):
    MODES = WITH_TIMEOUT


class MixedModesMachine(BarrierMachine):
    MODES = (ALIGNED, AT_LEAST_ONCE, UNALIGNED, *WITH_TIMEOUT)


for machine in (
    AlignedMachine,
    AtLeastOnceMachine,
    UnalignedMachine,
    AlignedTimeoutMachine,
    MixedModesMachine,
):
    machine.TestCase.settings = MACHINE_SETTINGS

TestAligned = AlignedMachine.TestCase
TestAtLeastOnce = AtLeastOnceMachine.TestCase
TestUnaligned = UnalignedMachine.TestCase
TestAlignedWithTimeout = AlignedTimeoutMachine.TestCase
TestMixedModes = MixedModesMachine.TestCase
