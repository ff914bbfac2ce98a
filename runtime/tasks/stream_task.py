"""``StreamTask``: a subtask that reads its input channels through an ``InputGate``.

Its loop, per turn: control messages first; then one element from the gate. A buffer
goes through the chain (``Task.process``); an event goes to ``handle_event``; the end
of a channel (or ``EndOfData`` on it: its producer emitted its last record) is noted;
when every channel has given its last record the loop returns and ``Task.run`` ends the
input. With nothing to read, the task sends its partial buffers (an idle task holds no
data back) and waits on its waker. With checkpoints on, the task then goes on reading
the gate for barriers (``serve_after_end``) until the job's final checkpoint completed.

Checkpoints: events go to the ``BarrierHandler`` (``runtime.checkpoint.barriers``), a
pure state machine, and the task performs the actions it returns: block and unblock
channels, snapshot and forward the barrier, record input channel state, promote a
queued barrier, persist, abort. Priority events are also handled while the task waits
for room in a full output, so an unaligned barrier is never stuck behind backpressure.
An ``async def`` chain checks for priority events between records: the unprocessed rest
of its input buffer then becomes input channel state.
"""

from __future__ import annotations

import math
import time
from typing import Any

from actors import END_OF_CHANNEL, InputGate
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
from runtime.checkpoint.events import (
    BarrierAnnouncement,
    CancelCheckpointMarker,
    CheckpointBarrier,
    CheckpointDeclined,
    EndOfData,
)
from runtime.checkpoint.ids import CheckpointId
from runtime.tasks.chain import OperatorChain
from runtime.tasks.snapshot import ChannelStateKey
from runtime.tasks.task import Task
from runtime.time.valve import WatermarkValve
from runtime.time.watermarks import Watermark, WatermarkStatus


class StreamTask(Task):
    """A subtask with input channels.

    Args:
        name: ``"<chain name> (i/p)"``.
        chain: the operators this subtask runs.
        gate: its input channels.
        buffer_timeout: seconds a partial output buffer may wait.
        input_sources: per input channel, the producing operator's uid and subtask
            (the key of its input channel state).
    """

    def __init__(
        self,
        name: str,
        chain: OperatorChain,
        gate: InputGate[Any],
        *,
        buffer_timeout: float,
        input_sources: list[tuple[str, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, chain, buffer_timeout=buffer_timeout, **kwargs)
        self.gate = gate
        gate.waker = self.waker
        for channel in gate.channels:
            channel.set_consumer_waker(self.waker)
        self.barriers = BarrierHandler(gate.num_channels)
        self.input_sources = input_sources or [("", i) for i in range(gate.num_channels)]
        self._recording: dict[int, CheckpointId] = {}
        # Restored input channel state: records per original channel, in order,
        # processed before any input.
        self.restored_input: list[list[Any]] = []
        self._replaying = False
        # The buffer being processed, for an async chain interrupted by a barrier.
        self._in_progress: tuple[int, list[Any], int] | None = None
        # Per input channel: whether it gave its last record (EndOfData or its end).
        self._data_ended = [False] * gate.num_channels
        self._channels_with_data = gate.num_channels
        # Event time: the subtask's watermark is the minimum over its active inputs.
        self.valve = WatermarkValve(gate.num_channels)

    async def replay_restored_input(self) -> None:
        """Process restored input channel state, per channel in order, before any input.

        Priority events wait meanwhile: a snapshot taken in the middle of the replay
        would have to record the rest of it as channel state again.
        """
        if not self.restored_input:
            return
        self._replaying = True
        size = 512
        try:
            for records in self.restored_input:
                for start in range(0, len(records), size):
                    await self.process(records[start : start + size])
        finally:
            self._replaying = False
            self.restored_input = []

    async def run_loop(self) -> None:
        """Read the gate until every input channel ended."""
        await self.replay_restored_input()
        gate = self.gate
        mailbox = self.mailbox
        process = self.process
        recording = self._recording
        while True:
            if mailbox:
                self.poll_mailbox()
                if self.timers_due:
                    await self.after_buffer()  # processing-time timers left to the loop
            polled = gate.poll()
            if polled is None:
                if gate.finished:
                    return
                if self.holds_output():
                    # An idle task holds no data back. Flushing may wait for room, and
                    # that wait consumes the wake-ups of input arriving meanwhile: poll
                    # the gate again before waiting idle.
                    await self.flush_all()
                    continue
                await self.wait_for(self.wait_idle)
                continue
            index, item = polled
            if item.__class__ is list:
                if recording and index in recording:
                    self._record(index, item)
                if self.chain.emits_while_awaiting or (
                    self.checkpointing is not None and self.chain.awaits_per_record
                ):
                    await self.process_interruptible(index, item)
                else:
                    await process(item)
                if self.deadline != math.inf:
                    self.on_deadline(time.monotonic())
            elif item is END_OF_CHANNEL:
                self.perform(self.barriers.on_end_of_channel(index, time.monotonic()))
                if self._end_of_data(index):
                    return
            elif item.__class__ is EndOfData:
                if self._end_of_data(index):
                    return
            elif item.__class__ is Watermark or item.__class__ is WatermarkStatus:
                await self.on_time_event(index, item)
            else:
                self.handle_event(index, item)

    async def on_time_event(self, channel: int, event: Watermark | WatermarkStatus) -> None:
        """A watermark or status of input ``channel``: through the valve into the chain.

        Timers a watermark fires change state, so a snapshot whose synchronous part
        runs in a worker thread (RocksDB) is waited for first, as for records.
        """
        if event.__class__ is Watermark:
            outputs = self.valve.on_watermark(channel, event.timestamp)
        else:
            outputs = self.valve.on_status(channel, event)  # type: ignore[arg-type]
        if not outputs:
            return
        await self.wait_snapshots_taken()
        chain_time = self.chain.time
        for output in outputs:
            if output.__class__ is WatermarkStatus:
                await chain_time.status(output)
            else:
                await chain_time.advance(output)  # type: ignore[arg-type]
        await self.after_buffer()

    def _end_of_data(self, channel: int) -> bool:
        """Input ``channel`` gave its last record; returns whether every channel has."""
        if not self._data_ended[channel]:
            self._data_ended[channel] = True
            self._channels_with_data -= 1
        return self._channels_with_data == 0

    async def serve_after_end(self) -> bool:
        """Read the gate for barriers and the ends of the channels; no record may come."""
        if self.mailbox:
            self.poll_mailbox()
        if self.job_final or self.suspended:
            return True
        gate = self.gate
        polled = gate.poll()
        if polled is None:
            if gate.finished:
                return True
            if self.holds_output():
                await self.flush_all()
            else:
                await self.wait_for(self.wait_idle)
            return False
        index, item = polled
        if item.__class__ is list:
            # Our invariant, not the user's: EndOfData follows a producer's last record.
            raise AssertionError(
                f"task {self.name!r}: records on input {index} after the end of its data"
            )
        if item is END_OF_CHANNEL:
            self.perform(self.barriers.on_end_of_channel(index, time.monotonic()))
        elif item.__class__ is Watermark or item.__class__ is WatermarkStatus:
            pass  # event time ended with the input (MAX_WATERMARK came before EndOfData)
        elif item.__class__ is not EndOfData:
            self.handle_event(index, item)
        if self.deadline != math.inf:
            self.on_deadline(time.monotonic())
        return False

    async def process_interruptible(self, index: int, batch: list[Any]) -> None:
        """Run an async chain record by record, handling priority events in between.

        What the chain emitted before an await goes out within the buffer timeout
        (``flushing_while_awaiting``); an async I/O operator waiting for a free slot
        handles priority events itself (``Task.wait_operator``).
        """
        gate = self.gate
        with self.flushing_while_awaiting():
            for position in range(len(batch)):
                self._in_progress = (index, batch, position + 1)
                await self.chain.process(batch[position : position + 1])
                if gate.has_priority or self.mailbox:
                    self.handle_urgent()
                if self.deadline != math.inf:
                    self.on_deadline(time.monotonic())
        self._in_progress = None
        await self.after_buffer()

    def handle_urgent(self) -> None:
        """Control messages, then priority events (unaligned barriers, announcements)."""
        if self.mailbox:
            self.poll_mailbox()
        if self._replaying:
            return
        gate = self.gate
        while gate.has_priority:
            polled = gate.poll_priority()
            if polled is None:
                break
            self.handle_event(*polled)

    def handle_event(self, channel: int, event: object) -> None:
        """Feed an event of input ``channel`` to the barrier handler."""
        now = time.monotonic()
        match event:
            case CheckpointBarrier():
                actions = self.barriers.on_barrier(channel, event, now)
            case BarrierAnnouncement(barrier=barrier):
                actions = self.barriers.on_announcement(channel, barrier, now)
            case CancelCheckpointMarker(checkpoint_id=checkpoint_id):
                actions = self.barriers.on_cancel_marker(checkpoint_id)
            case _:
                raise TypeError(
                    f"task {self.name!r}: unexpected event {event!r} on input {channel}"
                )
        self.perform(actions)

    def on_deadline(self, now: float) -> None:
        """Let the barrier handler switch a timed-out alignment to unaligned."""
        if now >= self.deadline:
            self.perform(self.barriers.on_time(now))

    def on_checkpoint_aborted(self, checkpoint_id: CheckpointId, reason: str) -> None:
        """The coordinator aborted ``checkpoint_id``."""
        self.perform(self.barriers.on_abort(checkpoint_id, reason))
        super().on_checkpoint_aborted(checkpoint_id, reason)

    # -- actions --------------------------------------------------------------------------

    def perform(self, actions: list[Action]) -> None:
        """Carry out the barrier handler's decisions, in order."""
        gate = self.gate
        checkpointing = self.checkpointing
        for action in actions:
            match action:
                case BlockChannel(channel=channel):
                    gate.block(channel)
                case UnblockAll():
                    gate.unblock_all()
                case TriggerSnapshot():
                    self._snapshot(action)
                case StartRecording(checkpoint_id=checkpoint_id, channels=channels):
                    for channel in channels:
                        self._recording[channel] = checkpoint_id
                case StopRecording(channel=channel):
                    self._recording.pop(channel, None)
                case PromoteBarrier(checkpoint_id=checkpoint_id, channel=channel, barrier=b):
                    overtaken = gate.channels[channel].promote(b)
                    if overtaken and checkpointing is not None:
                        records: list[Any] = []
                        for item in overtaken:
                            if item.__class__ is list:
                                records.extend(item)
                        uid, subtask = self.input_sources[channel]
                        checkpointing.add_channel_state(
                            checkpoint_id, ChannelStateKey.input(uid, subtask), records
                        )
                case InputStateComplete(checkpoint_id=checkpoint_id):
                    if checkpointing is not None:
                        checkpointing.complete(checkpoint_id)
                case AbortCheckpoint(checkpoint_id=checkpoint_id, reason=reason, decline=decline):
                    if decline and self.coordinator is not None:
                        self.coordinator.put(
                            CheckpointDeclined(checkpoint_id, self.task_id, reason, subsumed=True)
                        )
                    for recorded_channel, recorded in list(self._recording.items()):
                        if recorded == checkpoint_id:
                            del self._recording[recorded_channel]
                    if checkpointing is not None:
                        checkpointing.abort(checkpoint_id)
                    self.forward_cancel_marker(checkpoint_id)
        deadline = self.barriers.deadline
        self.deadline = math.inf if deadline is None else deadline

    def _snapshot(self, action: TriggerSnapshot) -> None:
        barrier = action.barrier
        checkpointing = self.checkpointing
        if checkpointing is None:
            # No checkpointing configured here: still forward, so downstream aligns.
            self.forward_barrier(barrier, action.unaligned)
            return
        if not self.begin_snapshot(
            barrier,
            unaligned=action.unaligned,
            alignment_duration=action.alignment_duration,
            start_delay=action.start_delay,
        ):
            return
        if barrier.options.terminate:
            self.suspend_after = barrier.checkpoint_id
        if action.unaligned and self._in_progress is not None:
            channel, batch, position = self._in_progress
            uid, subtask = self.input_sources[channel]
            checkpointing.add_channel_state(
                barrier.checkpoint_id, ChannelStateKey.input(uid, subtask), batch[position:]
            )
        self.forward_barrier(barrier, action.unaligned)

    def _record(self, channel: int, buffer: list[Any]) -> None:
        checkpointing = self.checkpointing
        if checkpointing is not None:
            uid, subtask = self.input_sources[channel]
            checkpointing.add_channel_state(
                self._recording[channel], ChannelStateKey.input(uid, subtask), buffer
            )
