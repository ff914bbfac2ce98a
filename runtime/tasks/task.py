"""``Task``: the actor that runs one subtask's operator chain.

The two kinds of task share this base: ``SourceTask`` (reads a source reader) and
``StreamTask`` (reads an ``InputGate``). The base owns what they have in common:

* opening and closing the chain, and, after a restore, decoding the restored keyed
  state that the chain's operators registered in bounded steps in the background
  (``HeapKeyedStateBackend.restore_step``; a key's own group is decoded on first access);
* ``drain_outputs``: hand queued buffers to the output channels, waiting on the
  actor's waker while a channel is full (backpressure); control messages and priority
  events (unaligned barriers) are handled meanwhile, so a backpressured task still
  takes part in a checkpoint;
* the buffer timeout: a partial buffer older than ``buffer_timeout`` is sent; an idle
  task sends its partial buffers before it waits; while an ``async def`` operator of
  the chain awaits, a timer sends them (``flushing_while_awaiting``);
* async I/O (``runtime.tasks.async_wait``): an ``async_map`` operator wakes the task
  when a call completes; the task emits its results between buffers and when idle, and
  ``wait_operator`` waits for a free slot while handling urgent events;
* fairness: a task that never has to wait yields to the event loop every
  ``YIELD_INTERVAL`` seconds, so one busy chain cannot starve the others, nor the
  worker threads that write checkpoints (``runtime.tasks.fairness``);
* checkpoints (when the job has them): forwarding barriers, aligned (in the data lane,
  after all data) or unaligned (on the priority lane, recording what they overtake as
  output channel state), notifications to the operators;
* end of input: ``end_input`` through the chain, flush, close the output channels.
  With checkpoints on, a task that has processed all of its input (FLIP-147) ends its
  chain's input, sends ``EndOfData`` downstream, reports ``InputEnded`` and goes on
  taking part in checkpoints (barriers keep flowing through it) until the job's final
  checkpoint completed: the first one that every subtask took after the end of its
  input, so it holds the effects of every record and no channel holds any. Only then
  does it close its outputs and end, so two-phase-commit sinks commit their last data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from anyio.abc import TaskGroup

from actors import Mailbox
from actors.actor import Actor
from runtime.checkpoint.events import (
    END_OF_DATA,
    AwaitFinalCheckpoint,
    BarrierAnnouncement,
    CancelCheckpointMarker,
    CheckpointBarrier,
    CheckpointDeclined,
    InputEnded,
    NotifyCheckpointAborted,
    NotifyCheckpointComplete,
    TaskFinished,
)
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.tasks.chain import OperatorChain
from runtime.tasks.chain_time import FIRE_PROCESSING_TIMERS, FireProcessingTimers
from runtime.tasks.fairness import yield_turn
from runtime.tasks.snapshot import ChannelStateKey, TaskCheckpointing
from runtime.time.watermarks import MAX_WATERMARK
from storage.backend import (
    DeferringBackend,
    LazilyRestoringBackend,
    close_keyed_backend,
    prepare_keyed_backend,
)

YIELD_INTERVAL = 0.002
"""Seconds a task may run without giving other actors a turn."""

logger = logging.getLogger("weir.tasks")


class Task(Actor):
    """Base of the subtask actors.

    Args:
        name: ``"<chain name> (i/p)"``.
        chain: the operators this subtask runs.
        buffer_timeout: seconds a partial output buffer may wait.
        task_id: the subtask's id (checkpoint reports name it).
    """

    def __init__(
        self,
        name: str,
        chain: OperatorChain,
        *,
        buffer_timeout: float,
        task_id: TaskId | None = None,
    ) -> None:
        super().__init__(name)
        self.chain = chain
        self.writers = chain.writers
        self.buffer_timeout = buffer_timeout
        self.task_id = task_id if task_id is not None else TaskId(name)
        self.checkpointing: TaskCheckpointing | None = None
        self.coordinator: Mailbox[object] | None = None
        # Per writer: the consuming operator's uid and the subtask of each channel.
        self.output_targets: list[tuple[str, list[int]]] = []
        self.completed_checkpoint: CheckpointId = CheckpointId(0)
        # With checkpoints on: at the end of its input the task goes on taking part in
        # checkpoints until the job's final checkpoint completed (FLIP-147).
        self.wait_for_final = False
        # The chain's input was ended (every later snapshot holds all of its effects).
        self.input_ended = False
        # The job's final checkpoint completed: the task may close its outputs and end.
        self.job_final = False
        # Stop-with-savepoint (no drain): the savepoint after which this task ends
        # without ending its input; cleared if that savepoint is aborted.
        self.suspend_after: CheckpointId | None = None
        self.deadline = math.inf
        self._last_yield = time.perf_counter()
        self._group: TaskGroup | None = None
        for writer in self.writers:
            for channel in writer.channels:
                channel.set_producer_waker(self.waker)
        # Async I/O operators (runtime.tasks.async_wait): they wake the task when a call
        # completes; the task emits their results between buffers and while it waits.
        self.async_operators: list[Any] = [op for op in chain.operators if hasattr(op, "bind_host")]
        for operator in self.async_operators:
            operator.bind_host(self)
        self._flush_timer: asyncio.TimerHandle | None = None
        # Event time: timer-owning operators wake the task through its mailbox.
        self.timers_due = False
        chain.time.attach(lambda: self.mailbox.put(FIRE_PROCESSING_TIMERS))

    def enable_checkpointing(
        self,
        checkpointing: TaskCheckpointing,
        coordinator: Mailbox[object],
        output_targets: list[tuple[str, list[int]]],
    ) -> None:
        """Take part in checkpoints: snapshots go through ``checkpointing``.

        Args:
            checkpointing: the task's snapshot taker.
            coordinator: where reports go.
            output_targets: per writer, the consuming operator's uid and the consumer
                subtask of each of its channels (the key of output channel state).
        """
        self.checkpointing = checkpointing
        self.coordinator = coordinator
        self.output_targets = output_targets
        # A RocksDB backend's checkpoint (flush, hard links: 10-30 ms for a large state)
        # then runs in a worker thread while this task waits in process() (see
        # TaskCheckpointing.wait_taken). A chain that awaits record by record
        # processes them between priority events without passing through process()
        # (StreamTask's process_interruptible), so it keeps taking them on the loop.
        for operator in self.chain.operators:
            backend = operator.context.keyed_backend
            if isinstance(backend, DeferringBackend):
                backend.defer_snapshots = not (
                    self.chain.emits_while_awaiting or self.chain.awaits_per_record
                )

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the chain, run the input loop, then end the input and close.

        The operators' ``close`` runs whatever happens (end of input, failure,
        cancellation), shielded from cancellation, as Flink calls ``close`` always.
        """
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                for operator in self.chain.operators:
                    # A deferred RocksDB restore, in a worker thread (heap: no-op).
                    await prepare_keyed_backend(operator.context.keyed_backend)
                await self.chain.open()
                self._decode_restored_state()
                await self.run_loop()
                await self.wait_snapshots_taken()
                if not self.suspended:
                    # The end of input is the end of event time (Flink's MAX_WATERMARK):
                    # event-time windows and timers fire before EndOfData.
                    await self.wait_snapshots_taken()
                    await self.chain.time.advance(MAX_WATERMARK)
                    await self.chain.end_input()
                    self.input_ended = True
                    if self.checkpointing is not None:
                        self.checkpointing.input_ended = True
                await self.flush_all()
                if self.mailbox:
                    self.poll_mailbox()  # an AwaitFinalCheckpoint (a drain) just sent
                if self.wait_for_final and not self.suspended and self.coordinator is not None:
                    await self.take_part_until_final()
                for writer in self.writers:
                    writer.close()
            self._group = None
        except BaseException:
            if self.checkpointing is not None:
                self.checkpointing.abort_all()
            with anyio.CancelScope(shield=True):
                await self.chain.close(suppress_errors=True)
                await self._close_backends()
            raise
        await self.chain.close()
        await self._close_backends()
        if self.coordinator is not None:
            self.coordinator.put(TaskFinished(self.task_id))

    @property
    def suspended(self) -> bool:
        """Whether the task stops for a completed stop-with-savepoint (no end of input)."""
        return self.suspend_after is not None and self.completed_checkpoint >= self.suspend_after

    async def run_loop(self) -> None:
        """Read input until it ends. Implemented by the task kinds."""
        raise NotImplementedError

    async def take_part_until_final(self) -> None:
        """After the end of input: checkpoints go on until the job's final one completed.

        Sends ``EndOfData`` on every output (after every record, so a consumer that saw
        it on all of its inputs has processed everything) and reports ``InputEnded``;
        then serves checkpoint triggers, barriers and notifications until the final
        checkpoint's notification, a completed stop-with-savepoint, or (a consumer) the
        end of every input channel.
        """
        for writer in self.writers:
            writer.broadcast_event(END_OF_DATA)
        assert self.coordinator is not None
        self.coordinator.put(InputEnded(self.task_id))
        while not (self.job_final or self.suspended):
            if await self.serve_after_end():
                break

    async def serve_after_end(self) -> bool:
        """One turn of the loop after the end of input. Implemented by the task kinds.

        Returns:
            True when nothing more can arrive (the task may end).
        """
        raise NotImplementedError

    async def _close_backends(self) -> None:
        """Release the operators' keyed state backends (a RocksDB instance: off the loop).

        Runs after the task group ended, so no snapshot thread uses them any more.
        """
        for operator in self.chain.operators:
            try:
                await close_keyed_backend(operator.context.keyed_backend)
            except Exception as error:  # the task's outcome stands; a leak is worth a line
                logger.warning(
                    "task %r: closing the state backend of %r failed: %s",
                    self.name,
                    operator.name,
                    error,
                )

    def _decode_restored_state(self) -> None:
        """Decode restored keyed state in the background, a bounded step per turn."""
        for operator in self.chain.operators:
            backend = operator.context.keyed_backend
            if isinstance(backend, LazilyRestoringBackend) and backend.restoring:
                self.spawn(_restore_steps, backend)

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the background, within this task's life."""
        assert self._group is not None, "spawn() outside run()"
        self._group.start_soon(fn, *args)

    # -- control --------------------------------------------------------------------------

    def handle_control(self, message: object) -> None:
        """Handle one control message. Subclasses extend this (checkpoint triggers...)."""
        match message:
            case NotifyCheckpointComplete(checkpoint_id=checkpoint_id, final=final):
                self.completed_checkpoint = max(self.completed_checkpoint, checkpoint_id)
                for operator in self.chain.operators:
                    operator.notify_checkpoint_complete(checkpoint_id)
                if final:
                    self.job_final = True
            case AwaitFinalCheckpoint():
                self.wait_for_final = True
            case FireProcessingTimers():
                self.timers_due = True
                checkpointing = self.checkpointing
                chain = self.chain
                if not (chain.is_async or chain.time.async_timers) and not (
                    checkpointing and checkpointing.taking
                ):
                    self.timers_due = False
                    self.chain.time.fire_processing_timers_sync()
            case NotifyCheckpointAborted(checkpoint_id=checkpoint_id, reason=reason):
                self.on_checkpoint_aborted(checkpoint_id, reason)
                for operator in self.chain.operators:
                    operator.notify_checkpoint_aborted(checkpoint_id)
            case _:
                raise TypeError(f"task {self.name!r}: unexpected control message {message!r}")

    def on_checkpoint_aborted(self, checkpoint_id: CheckpointId, reason: str) -> None:
        """The coordinator aborted ``checkpoint_id``: drop what is held for it."""
        if self.suspend_after == checkpoint_id:
            self.suspend_after = None  # the stop-with-savepoint failed: carry on
        if self.checkpointing is not None:
            self.checkpointing.abort(checkpoint_id)

    def poll_mailbox(self) -> None:
        """Handle every queued control message (they go before data)."""
        mailbox = self.mailbox
        while mailbox:
            self.handle_control(mailbox.poll())

    def handle_urgent(self) -> None:
        """Handle what must not wait for the outputs to drain (control messages)."""
        if self.mailbox:
            self.poll_mailbox()

    # -- data -----------------------------------------------------------------------------

    async def process(self, batch: list[Any]) -> None:
        """Run one input buffer through the chain and send what it produced.

        Waits first for the synchronous part of a snapshot still running in a worker
        thread (a RocksDB checkpoint): no record may change state before it exists.
        """
        checkpointing = self.checkpointing
        if checkpointing is not None and checkpointing.taking:
            await checkpointing.wait_taken()
        chain = self.chain
        if chain.emits_while_awaiting:
            # Record by record, so that what the chain emitted before an await is in the
            # writers, where the flush timer sends it within the buffer timeout.
            with self.flushing_while_awaiting():
                for position in range(len(batch)):
                    await chain.process(batch[position : position + 1])
        elif chain.is_async:  # an async sink: whole buffers (write_batch)
            await chain.process(batch)
        else:
            chain.process_sync(batch)
        await self.after_buffer()

    async def wait_snapshots_taken(self) -> None:
        """Wait until no synchronous part of a snapshot runs in a worker thread."""
        if self.checkpointing is not None:
            await self.checkpointing.wait_taken()

    async def after_buffer(self) -> None:
        """Send what a buffer produced; honour the buffer timeout; yield now and then."""
        if self.async_operators:
            self.emit_async_results()
        chain_time = self.chain.time
        if chain_time.generators:
            await chain_time.poll_generators(time.monotonic())
        if self.timers_due:
            await self.wait_snapshots_taken()
            self.timers_due = False
            await chain_time.fire_processing_timers()
        await self.drain_outputs()
        now = time.perf_counter()
        self.check_buffer_timeout(time.monotonic())
        if now - self._last_yield >= YIELD_INTERVAL:
            self._last_yield = now
            await yield_turn()

    def check_buffer_timeout(self, now: float) -> None:
        """Seal partial buffers older than the buffer timeout (they go out next drain)."""
        for writer in self.writers:
            since = writer.partial_since
            if since is not None and now - since >= self.buffer_timeout:
                writer.seal_partial()

    async def drain_outputs(self) -> None:
        """Send every queued full buffer, waiting while a channel is full."""
        writers = self.writers
        while True:
            done = True
            for writer in writers:
                if writer.has_full_buffers and not writer.try_flush():
                    done = False
            if done:
                return
            await self.wait_for(self.wait_backpressured)
            self.handle_urgent()

    async def wait_for(self, wait: Any) -> None:
        """Wait on the waker with ``wait``, but no later than the task's deadline."""
        deadline = self.deadline
        if deadline == math.inf:
            await wait()
            return
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await wait()
        self.on_deadline(time.monotonic())

    def on_deadline(self, now: float) -> None:
        """The task's deadline (an alignment timeout) may have passed."""

    def holds_output(self) -> bool:
        """Whether a writer holds records not yet handed to a channel."""
        for writer in self.writers:
            if writer.has_full_buffers or writer.partial_since is not None:
                return True
        # Results of completed async calls count as held output (an idle task emits them).
        return any(op.has_ready for op in self.async_operators)

    async def flush_all(self) -> None:
        """Send every buffer, partial ones too (idle, end of input)."""
        if self.async_operators:
            self.emit_async_results()
        for writer in self.writers:
            writer.seal_partial()
        await self.drain_outputs()

    # -- barriers -------------------------------------------------------------------------

    def forward_barrier(self, barrier: CheckpointBarrier, unaligned: bool) -> None:
        """Send ``barrier`` on every output channel.

        Aligned: after every buffer produced so far (forced past a full channel: the
        overshoot is bounded by what the writer holds), followed by an announcement on
        the priority lane when the barrier may time out. Unaligned: on the priority lane,
        ahead of the queued buffers, which (with what the writer still holds) are
        recorded as output channel state.
        """
        if not unaligned:
            announce = barrier.options.aligned_timeout > 0
            for writer in self.writers:
                writer.broadcast_event(barrier)
                if announce:
                    announcement = BarrierAnnouncement(barrier)
                    for channel in writer.channels:
                        channel.send_priority(announcement)
            return
        checkpointing = self.checkpointing
        for writer, (uid, targets) in zip(self.writers, self.output_targets, strict=False):
            for index, channel in enumerate(writer.channels):
                if checkpointing is not None:
                    records: list[Any] = []
                    for item in channel.queued():
                        if item.__class__ is list:
                            records.extend(item)
                    for buffer in writer.pending_buffers(index):
                        records.extend(buffer)
                    checkpointing.add_channel_state(
                        barrier.checkpoint_id, ChannelStateKey.output(uid, targets[index]), records
                    )
                channel.send_priority(barrier)

    def begin_snapshot(self, barrier: CheckpointBarrier, **kwargs: Any) -> bool:
        """Take the synchronous part; on an error decline the checkpoint (as Flink does).

        Returns:
            Whether the snapshot was taken. If not, the coordinator was told why (the
            error names the subtask) and downstream gets a cancellation marker; the
            task goes on running.
        """
        checkpointing = self.checkpointing
        assert checkpointing is not None
        try:
            checkpointing.begin(barrier, **kwargs)
        except Exception as error:
            if self.coordinator is not None:
                self.coordinator.put(
                    CheckpointDeclined(
                        barrier.checkpoint_id,
                        self.task_id,
                        f"subtask {self.name!r} failed to snapshot its state: "
                        f"{type(error).__name__}: {error}",
                    )
                )
            self.forward_cancel_marker(barrier.checkpoint_id)
            return False
        return True

    def forward_cancel_marker(self, checkpoint_id: CheckpointId) -> None:
        """Tell downstream that ``checkpoint_id`` was aborted (priority lane)."""
        marker = CancelCheckpointMarker(checkpoint_id)
        for writer in self.writers:
            for channel in writer.channels:
                if not channel.closed:
                    channel.send_priority(marker)

    # -- async I/O and awaits in the chain ----------------------------------------------

    def emit_async_results(self) -> bool:
        """Hand the results of completed async calls to the writers (never blocks).

        Returns:
            Whether anything was emitted.

        Raises:
            OperatorError: a call failed (the operator names itself, subtask, record).
        """
        emitted = False
        for operator in self.async_operators:
            out = operator.poll()
            if out:
                self.chain.emit(out)
                emitted = True
        return emitted

    async def wait_operator(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``: an async I/O operator waits for a free slot or its end.

        Meanwhile the task emits completed results and sends them (waiting for room in
        a full output: backpressure), sends partial buffers older than the buffer
        timeout, and handles control messages and priority events at once (an unaligned
        barrier is snapshotted while the calls are in flight). Called from within the
        chain, so the input is not read meanwhile.
        """
        while True:
            self.emit_async_results()
            await self.drain_outputs()
            if ready():
                return
            now = time.monotonic()
            self.check_buffer_timeout(now)
            if any(writer.has_full_buffers for writer in self.writers):
                continue
            delay = math.inf
            for writer in self.writers:
                since = writer.partial_since
                if since is not None:
                    delay = min(delay, since + self.buffer_timeout - now)
            if delay == math.inf:
                await self.wait_for(self.waker.wait)
            else:
                with anyio.move_on_after(max(delay, 0.0)):
                    await self.wait_for(self.waker.wait)
            self.handle_urgent()

    @contextlib.contextmanager
    def flushing_while_awaiting(self) -> Iterator[None]:
        """While the chain awaits inside a buffer, send partial buffers on time.

        A timer seals every partial buffer older than the buffer timeout and hands
        queued buffers to channels with room (``try_flush`` never blocks; a full
        channel keeps them for the next drain), so records an ``async def`` operator
        emitted before its await go out within ``buffer_timeout``.
        """
        loop = asyncio.get_running_loop()
        interval = max(self.buffer_timeout, 0.001)
        self._flush_timer = loop.call_later(interval, self._flush_on_timer, loop, interval)
        try:
            yield
        finally:
            timer, self._flush_timer = self._flush_timer, None
            if timer is not None:
                timer.cancel()

    def _flush_on_timer(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        # Runs while the task is suspended at an await of its chain: writers are never
        # in the middle of a write then (writing is synchronous).
        self.check_buffer_timeout(time.monotonic())
        for writer in self.writers:
            if writer.has_full_buffers:
                writer.try_flush()
        if self._flush_timer is not None:
            self._flush_timer = loop.call_later(interval, self._flush_on_timer, loop, interval)


async def _restore_steps(backend: LazilyRestoringBackend) -> None:
    """Decode a keyed backend's restored state, yielding to the event loop between steps.

    Each step decodes whole key groups of a few thousand entries (a millisecond or two),
    so records keep flowing meanwhile; a key whose group is still encoded when a record
    needs it is decoded then, by the state handle.
    """
    while True:
        await yield_turn()
        if backend.restore_step():
            return
