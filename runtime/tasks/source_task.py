"""``SourceTask``: a source subtask. It reads its ``SourceReader`` and feeds its chain.

Its loop, per turn: control messages first (so a checkpoint trigger is handled between
two batches, at an exact reader position), then one ``read`` of up to ``buffer_size``
records, which goes through the chain (``Task.process``). A reader with nothing to give
now returns ``[]``: the task sends its partial buffers and polls again after
``IDLE_POLL_INTERVAL``. A rate-limited source waits between batches the same way, so
control messages are still handled while it waits.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import anyio

from runtime.connectors.source import SourceReader
from runtime.tasks.chain import OperatorChain
from runtime.tasks.operators import StreamOperator
from runtime.tasks.task import Task

IDLE_POLL_INTERVAL = 0.01
"""Seconds between two polls of a reader that had nothing to give."""


class SourceOperator(StreamOperator):
    """The head of a source chain: passes the reader's batches on and counts them."""

    def process_batch(self, batch: list[Any]) -> list[Any]:
        """Count the records read; emit them unchanged."""
        self.records_out += len(batch)
        return batch


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
    ) -> None:
        super().__init__(name, chain, buffer_timeout=buffer_timeout)
        self.reader = reader
        self.buffer_size = buffer_size
        self.records_per_second = records_per_second
        self.end_of_input = False

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
        try:
            while True:
                if mailbox:
                    self.poll_mailbox()
                batch = reader.read(batch_size)
                if inspect.isawaitable(batch):
                    batch = await batch
                if batch is None:
                    self.end_of_input = True
                    return
                if not batch:
                    await self.idle(IDLE_POLL_INTERVAL)
                    continue
                await process(batch)
                if rate is not None:
                    emitted += len(batch)
                    # A wake-up (room in an output, a control message) may end the wait
                    # early: wait again until the rate allows the next batch.
                    while (delay := started + emitted / rate - time.monotonic()) > 0:
                        await self.idle(delay)
        finally:
            reader.close()

    async def idle(self, seconds: float) -> None:
        """Send partial buffers, then wait up to ``seconds`` (or until woken)."""
        await self.flush_all()
        with anyio.move_on_after(seconds):
            await self.wait_idle()
        if self.mailbox:
            self.poll_mailbox()
