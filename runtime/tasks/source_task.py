"""``SourceTask``: a source subtask. It reads its ``SourceReader`` and feeds its chain.

Its loop, per turn: control messages first (so a checkpoint trigger is handled between
two batches, at an exact reader position), then one ``read`` of up to ``buffer_size``
records, which goes through the chain (``Task.process``). A reader with nothing to give
now returns ``[]``: the task sends its partial buffers and polls again after
``IDLE_POLL_INTERVAL``. A rate-limited source waits between batches the same way, so
control messages are still handled while it waits.

Checkpoints: ``TriggerCheckpoint`` snapshots the reader's split positions and the chain's
state, then emits the barrier on every output (aligned or unaligned, as the barrier's
options say). A trigger that arrives while the task waits for room in a full output is
handled there, between two buffers: the buffers not yet sent were produced before the
snapshot, so they go before an aligned barrier, or into the output channel state of an
unaligned one.

End of input with checkpointing on (``Task.take_part_until_final``): the source ends its
chain's input, sends ``EndOfData``, reports ``InputEnded`` and keeps taking checkpoints
in the job's mode (its snapshot then holds the reader at its end) until the job's final
checkpoint has completed; only then does it end its output, so that every record's
effects are in a completed checkpoint and two-phase-commit sinks can commit them. A
source subtask without splits (more subtasks than splits, or after a rescale) takes the
same path at once.

Per-split watermarks (Flink's FLIP-27 ``SourceOutput`` per split): when a watermark
strategy is chained right after the source (``from_source(...,
watermark_strategy=)``) and the reader reports its splits
(``runtime.tasks.source.SplitAwareReader``), the task gives the strategy's operator a
``SplitWatermarkGenerator`` (one generator and idleness clock per split, combined as
the minimum over the active splits: ``runtime.time.split_watermarks``), makes it the
reader's split listener, and tells it each batch's split before the batch runs
through the chain. Other sources keep one generator for the subtask and their loop
does nothing more per batch.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import anyio

from runtime.checkpoint.events import StopSource, TriggerCheckpoint
from runtime.tasks.chain import OperatorChain
from runtime.tasks.operators import OperatorSnapshot, StreamOperator
from runtime.tasks.source import SourceReader
from runtime.tasks.task import Task
from runtime.tasks.time_operators import TimestampsAndWatermarksOperator
from runtime.time.split_watermarks import SplitWatermarkGenerator
from storage.checkpoint.splits import encode_splits

IDLE_POLL_INTERVAL = 0.01
"""Seconds between two polls of a reader that had nothing to give."""


class SourceOperator(StreamOperator):
    """The head of a source chain: passes the reader's batches on and counts them.

    Its snapshot is the reader's split positions.
    """

    reader: SourceReader[Any] | None = None
    allow_pickle = True

    def __init__(self, name: str, uid: str) -> None:
        super().__init__(name, uid)
        self._snapshotted: dict[int, list[Any]] = {}

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Count the records read; emit them unchanged."""
        self.records_out += len(batch)
        return batch

    def snapshot_state(self, checkpoint_id: int, *, canonical: bool = False) -> OperatorSnapshot:
        """Snapshot the reader's splits with their positions."""
        snapshot = super().snapshot_state(checkpoint_id, canonical=canonical)
        if self.reader is not None:
            splits = self.reader.snapshot_state()
            allow_pickle = self.allow_pickle and not canonical
            snapshot.frames.append(("splits", encode_splits(splits, allow_pickle)))
            if hasattr(self.reader, "notify_checkpoint_complete"):
                self._snapshotted[checkpoint_id] = splits
        return snapshot

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Hand a completed checkpoint's positions to a reader that asks for them.

        A reader with ``notify_checkpoint_complete(checkpoint_id, splits)`` gets the
        splits it snapshotted for that checkpoint (a Redis consumer group moves there).
        """
        snapshotted = self._snapshotted
        if not snapshotted or self.reader is None:
            return
        done = [n for n in snapshotted if n <= checkpoint_id]
        splits = snapshotted.get(checkpoint_id)
        for n in done:
            del snapshotted[n]
        if splits is not None:
            self.reader.notify_checkpoint_complete(checkpoint_id, splits)  # type: ignore[attr-defined]


class SourceTask(Task):
    """A source subtask.

    Args:
        name: ``"<chain name> (i/p)"``.
        chain: head is a ``SourceOperator``.
        reader: the subtask's reader, already given its splits.
        buffer_size: records per read.
        buffer_timeout: seconds a partial output buffer may wait.
        records_per_second: this subtask's rate limit, or None.
    """

    def __init__(
        self,
        name: str,
        chain: OperatorChain,
        reader: SourceReader[Any],
        *,
        buffer_size: int,
        buffer_timeout: float,
        records_per_second: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, chain, buffer_timeout=buffer_timeout, **kwargs)
        self.reader = reader
        head = chain.head
        if isinstance(head, SourceOperator):
            head.reader = reader
        self.buffer_size = buffer_size
        self.records_per_second = records_per_second
        self.end_of_input = False
        self._stop_requested = False
        self.split_watermarks = self._per_split_watermarks(chain, reader)

    @staticmethod
    def _per_split_watermarks(
        chain: OperatorChain, reader: SourceReader[Any]
    ) -> SplitWatermarkGenerator | None:
        """Install per-split watermark generation if the chain and the reader allow it.

        The strategy's operator must come right after the source (it then sees every
        batch exactly as the reader returned it) and the reader must report its splits.
        """
        operators = chain.operators
        if len(operators) < 2 or not isinstance(operators[1], TimestampsAndWatermarksOperator):
            return None
        set_listener = getattr(reader, "set_split_listener", None)
        if not callable(set_listener):
            return None
        operator = operators[1]
        generator = SplitWatermarkGenerator.for_strategy(operator.strategy, time.monotonic)
        operator.generator = generator
        set_listener(generator)
        return generator

    async def run_loop(self) -> None:
        """Read until the reader reports the end of its input."""
        reader = self.reader
        mailbox = self.mailbox
        process = self.process
        rate = self.records_per_second
        batch_size = self.buffer_size
        if rate is not None:
            # At most ~10 ms worth of records per batch, so a slow rate trickles.
            batch_size = max(1, min(batch_size, int(rate / 100)))
        started = time.monotonic()
        emitted = 0
        # Per-split watermarks: each batch's split, from the reader, before the chain.
        splits = self.split_watermarks
        select = None if splits is None else splits.select
        try:
            while True:
                if mailbox:
                    self.poll_mailbox()
                    if self.timers_due:
                        await self.after_buffer()  # processing-time timers left to the loop
                if self.suspend_after is not None:
                    # Stop-with-savepoint: read nothing more until it completes (then
                    # end without ending the input) or is aborted (then go on).
                    await self.flush_all()
                    while self.suspend_after is not None and not self.suspended:
                        await self.wait_idle()
                        self.poll_mailbox()
                    if self.suspended:
                        return
                    continue
                if self._stop_requested:
                    self.end_of_input = True
                    return
                try:
                    batch = reader.read(batch_size)
                    if inspect.isawaitable(batch):
                        batch = await batch
                except Exception as error:
                    raise self.chain.head.phase_error(error, "reading the source") from error
                if batch is None:
                    self.end_of_input = True
                    return
                if not batch:
                    await self.idle(IDLE_POLL_INTERVAL)
                    continue
                if select is not None:
                    select(reader.current_split)  # type: ignore[attr-defined]
                await process(batch)
                if rate is not None:
                    emitted += len(batch)
                    # A wake-up (room in an output, a control message) may end the wait
                    # early: wait again until the rate allows the next batch.
                    while (delay := started + emitted / rate - time.monotonic()) > 0:
                        await self.idle(delay)
        finally:
            reader.close()

    async def serve_after_end(self) -> bool:
        """Serve checkpoint triggers and notifications (nothing is left to read)."""
        if self.mailbox:
            self.poll_mailbox()
        if self.job_final or self.suspended:
            return True
        if self.holds_output():
            await self.flush_all()
        elif not self.mailbox:
            await self.wait_idle()
        return False

    async def idle(self, seconds: float) -> None:
        """Send partial buffers, then wait up to ``seconds`` (or until woken).

        Watermark generators are polled first: an idle source may turn idle (idleness).
        """
        chain_time = self.chain.time
        if chain_time.generators:
            await chain_time.poll_generators(time.monotonic())
        await self.flush_all()
        with anyio.move_on_after(seconds):
            await self.wait_idle()
        if self.mailbox:
            self.poll_mailbox()

    def handle_control(self, message: object) -> None:
        """Checkpoint triggers, then the common control messages."""
        if isinstance(message, TriggerCheckpoint):
            self.trigger_checkpoint(message)
        elif isinstance(message, StopSource):
            # Stop-with-savepoint with drain: end the input now; the final checkpoint
            # (a savepoint) follows once every subtask ended its input.
            self._stop_requested = True
        else:
            super().handle_control(message)

    def trigger_checkpoint(self, trigger: TriggerCheckpoint) -> None:
        """Snapshot the reader and the chain, emit the barrier, persist in the background."""
        checkpointing = self.checkpointing
        if checkpointing is None:
            return
        barrier = trigger.barrier
        if barrier.options.terminate:
            self.suspend_after = barrier.checkpoint_id
        unaligned = barrier.options.unaligned and barrier.options.exactly_once
        start_delay = max(0.0, time.monotonic() - barrier.timestamp)
        if not self.begin_snapshot(barrier, unaligned=unaligned, start_delay=start_delay):
            if barrier.options.terminate:
                self.suspend_after = None
            return
        self.forward_barrier(barrier, unaligned)
        checkpointing.complete(barrier.checkpoint_id)
