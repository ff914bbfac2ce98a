"""Unaligned checkpoints capture exactly the records between the barrier positions.

A pure simulation of one subtask (no asyncio): N input channels, each a queue of data
items with barrier ``n`` at some position (or no barrier: its upstream finished before
the checkpoint, so every item precedes it), then the end of the channel. The subtask
reads like ``InputGate.poll``: priority items first, then data from channels that are not
blocked. Hypothesis draws the positions and the interleaving of reads, announcements
(aligned with timeout: the barrier announces itself on the priority lane once queued,
before it can be read) and the passing of time.

The subtask performs the ``BarrierHandler``'s actions as ``StreamTask.perform`` does:
block and unblock channels, snapshot (the state is every item processed so far), record
items read from a channel while ``is_recording`` says so, and on ``PromoteBarrier`` move
the queued barrier to the priority lane, recording the items it overtakes.

DESIGN.md ("A barrier"): upstream output state and downstream input state together
cover, for every channel, exactly the records between the upstream's snapshot and the
downstream's. Here the upstream snapshot is the barrier's position, so for each channel:
the recorded items are exactly the items before its barrier that were read after the
snapshot, in order; the snapshot holds none after a barrier; and state plus recorded
items are every item before the barriers, each once. Aligned checkpoints record nothing;
at-least-once loses nothing (its snapshot may hold items after a barrier: duplicates on
replay, which the mode allows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.checkpoint.barriers import (
    AbortCheckpoint,
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

BARRIER = "barrier"
END = "end"
MAX_TICKS = 6

MODES = {
    "unaligned": CheckpointOptions(unaligned=True),
    "aligned with timeout": CheckpointOptions(unaligned=False, aligned_timeout=2.0),
    "aligned": CheckpointOptions(),
    "at-least-once": CheckpointOptions(exactly_once=False),
}


@dataclass
class Channel:
    """One input channel: its items in order, as the upstream produced them."""

    before: list[tuple[int, int]]  # items preceding the barrier
    after: list[tuple[int, int]]  # items following it
    has_barrier: bool
    data: deque[object] = field(default_factory=deque)
    priority: deque[object] = field(default_factory=deque)
    announced: bool = False
    ended: bool = False

    def __post_init__(self) -> None:
        self.data.extend(self.before)
        if self.has_barrier:
            self.data.append(BARRIER)
        self.data.extend(self.after)
        self.data.append(END)


@st.composite
def channel_layouts(draw: st.DrawFn) -> list[Channel]:
    n = draw(st.integers(1, 4))
    channels = []
    for c in range(n):
        has_barrier = draw(st.integers(0, 4)) > 0  # mostly: the upstream is still running
        before = draw(st.integers(0, 4))
        after = draw(st.integers(0, 3)) if has_barrier else 0
        items = [(c, i) for i in range(before + after)]
        channels.append(Channel(items[:before], items[before:], has_barrier))
    if not any(ch.has_barrier for ch in channels):
        ch = channels[0]
        channels[0] = Channel(ch.before, [], True)
    return channels


class Subtask:
    """The simulated subtask: the gate, the handler, the state and the channel state."""

    def __init__(self, channels: list[Channel], options: CheckpointOptions) -> None:
        self.channels = channels
        self.options = options
        self.barrier = CheckpointBarrier(CheckpointId(1), 0.0, options)
        self.handler = BarrierHandler(len(channels))
        self.now = 0.0
        self.ticks = 0
        self.blocked: set[int] = set()
        self.processed: list[tuple[int, int]] = []
        self.snapshot: list[tuple[int, int]] | None = None
        self.snapshot_unaligned = False
        self.recorded: list[list[tuple[int, int]]] = [[] for _ in channels]
        self.recording: set[int] = set()
        self.complete = False

    @property
    def announces(self) -> bool:
        return self.options.aligned_timeout > 0

    def steps(self) -> list[tuple[str, int]]:
        """What may happen next, as the gate and the upstreams allow."""
        if any(ch.priority for ch in self.channels):
            return [("read priority", c) for c, ch in enumerate(self.channels) if ch.priority]
        steps: list[tuple[str, int]] = []
        for c, ch in enumerate(self.channels):
            if ch.ended:
                continue
            barrier_queued = BARRIER in ch.data
            if self.announces and barrier_queued and not ch.announced:
                steps.append(("announce", c))
            if c in self.blocked or not ch.data:
                continue
            if ch.data[0] is BARRIER and self.announces and not ch.announced:
                continue  # the announcement is on the priority lane, read first
            steps.append(("read", c))
        if self.announces and self.ticks < MAX_TICKS:
            steps.append(("tick", 0))
        return steps

    def do(self, step: tuple[str, int]) -> None:
        kind, c = step
        ch = self.channels[c]
        if kind == "announce":
            ch.announced = True
            self.perform(self.handler.on_announcement(c, self.barrier, self.now))
        elif kind == "tick":
            self.ticks += 1
            self.now += 1.0
            self.perform(self.handler.on_time(self.now))
        elif kind == "read priority":
            item = ch.priority.popleft()
            assert item is BARRIER
            self.perform(self.handler.on_barrier(c, self.barrier, self.now))
        else:
            item = ch.data.popleft()
            if item is BARRIER:
                self.perform(self.handler.on_barrier(c, self.barrier, self.now))
            elif item is END:
                ch.ended = True
                self.perform(self.handler.on_end_of_channel(c, self.now))
            else:
                assert isinstance(item, tuple)
                if self.handler.is_recording(c):
                    self.recorded[c].append(item)
                self.processed.append(item)

    def perform(self, actions: list) -> None:
        for action in actions:
            match action:
                case BlockChannel(channel=c):
                    self.blocked.add(c)
                case UnblockAll():
                    self.blocked.clear()
                case TriggerSnapshot(unaligned=unaligned):
                    assert self.snapshot is None, "snapshot taken twice"
                    self.snapshot = list(self.processed)
                    self.snapshot_unaligned = unaligned
                case StartRecording(channels=chs):
                    self.recording.update(chs)
                case StopRecording(channel=c):
                    self.recording.remove(c)
                case PromoteBarrier(channel=c):
                    data = self.channels[c].data
                    assert BARRIER in data, f"promoted the barrier of channel {c} twice"
                    position = data.index(BARRIER)
                    overtaken = [data[i] for i in range(position)]  # they stay queued
                    del data[position]
                    self.channels[c].priority.append(BARRIER)
                    self.recorded[c].extend(overtaken)  # type: ignore[arg-type]
                case InputStateComplete():
                    assert not self.recording
                    self.complete = True
                case AbortCheckpoint():
                    raise AssertionError(f"nothing aborts this checkpoint: {action}")
        assert self.recording == {
            c for c in range(len(self.channels)) if self.handler.is_recording(c)
        }


@settings(max_examples=300, deadline=None, database=None)
@given(mode=st.sampled_from(sorted(MODES)), channels=channel_layouts(), data=st.data())
def test_channel_state_is_exactly_the_records_between_the_barriers(
    mode: str, channels: list[Channel], data: st.DataObject
) -> None:
    subtask = Subtask(channels, MODES[mode])
    while not all(ch.ended for ch in channels):
        steps = subtask.steps()
        assert steps, f"the subtask is stuck: blocked {subtask.blocked}"
        subtask.do(data.draw(st.sampled_from(steps)))

    assert subtask.snapshot is not None and subtask.complete
    snapshot = subtask.snapshot
    before_all = [item for ch in channels for item in ch.before]
    if mode == "at-least-once":
        assert set(before_all) <= set(snapshot), "at-least-once lost records"
        assert not any(subtask.recorded)
        return
    if not subtask.snapshot_unaligned:
        assert not any(subtask.recorded), "an aligned snapshot recorded channel state"
    for c, ch in enumerate(channels):
        in_state = [item for item in snapshot if item[0] == c]
        assert in_state == ch.before[: len(in_state)], (
            f"channel {c}: the state holds {in_state}, not a prefix of {ch.before}"
        )
        assert subtask.recorded[c] == ch.before[len(in_state) :], (
            f"channel {c}: recorded {subtask.recorded[c]}, but the items before its barrier "
            f"read after the snapshot are {ch.before[len(in_state) :]}"
        )
    recorded_all = [item for rec in subtask.recorded for item in rec]
    assert sorted(snapshot + recorded_all) == sorted(before_all)


def test_promotion_records_the_overtaken_items_once() -> None:
    # Channel 0 delivers its barrier; channel 1 announced its barrier behind two items;
    # the alignment times out: the barrier jumps the two items, which become its state.
    channels = [Channel([(0, 0)], [(0, 1)], True), Channel([(1, 0), (1, 1)], [], True)]
    subtask = Subtask(channels, MODES["aligned with timeout"])
    for step in [("read", 0), ("read", 0), ("announce", 1), ("tick", 0), ("tick", 0)]:
        subtask.do(step)
    assert subtask.snapshot == [(0, 0)] and subtask.snapshot_unaligned
    assert subtask.recorded[1] == [(1, 0), (1, 1)]
    assert list(channels[1].priority) == [BARRIER]
    subtask.do(("read priority", 1))
    assert subtask.complete
    while not all(ch.ended for ch in channels):
        subtask.do(subtask.steps()[0])
    assert subtask.recorded == [[], [(1, 0), (1, 1)]]  # read again, but recorded once


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_lone_channel_snapshots_at_its_barrier(mode: str) -> None:
    channels = [Channel([(0, 0), (0, 1)], [(0, 2)], True)]
    subtask = Subtask(channels, MODES[mode])
    while not all(ch.ended for ch in channels):
        subtask.do(next(s for s in subtask.steps() if s[0] != "tick"))
    assert subtask.snapshot == [(0, 0), (0, 1)]
    assert subtask.recorded == [[]]
