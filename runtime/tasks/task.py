"""``Task``: the actor that runs one subtask's operator chain.

The two kinds of task share this base: ``SourceTask`` (reads a source reader) and
``StreamTask`` (reads an ``InputGate``). The base owns what they have in common:

* opening and closing the chain;
* ``drain_outputs``: hand queued buffers to the output channels, waiting on the
  actor's waker while a channel is full (backpressure), control messages handled
  meanwhile;
* the buffer timeout: a partial buffer older than ``buffer_timeout`` is sent; an idle
  task sends its partial buffers before it waits;
* fairness: a task that never has to wait yields to the event loop every
  ``YIELD_INTERVAL`` seconds, so one busy chain cannot starve the others;
* end of input: ``end_input`` through the chain, flush, close the output channels.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio

from actors import Actor
from runtime.tasks.chain import OperatorChain

YIELD_INTERVAL = 0.002
"""Seconds a task may run without giving other actors a turn."""


class Task(Actor):
    """Base of the subtask actors.

    Args:
        name: ``"<chain name> (i/p)"``.
        chain: the operators this subtask runs.
        buffer_timeout: seconds a partial output buffer may wait.
    """

    def __init__(self, name: str, chain: OperatorChain, *, buffer_timeout: float) -> None:
        super().__init__(name)
        self.chain = chain
        self.writers = chain.writers
        self.buffer_timeout = buffer_timeout
        self._last_yield = time.perf_counter()
        for writer in self.writers:
            for channel in writer.channels:
                channel.set_producer_waker(self.waker)

    async def run(self) -> None:
        """Open the chain, run the input loop, then end the input and close.

        The operators' ``close`` runs whatever happens (end of input, failure,
        cancellation), shielded from cancellation, as Flink calls ``close`` always.
        """
        try:
            await self.chain.open()
            await self.run_loop()
            await self.chain.end_input()
            await self.flush_all()
            for writer in self.writers:
                writer.close()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.chain.close(suppress_errors=True)
            raise
        await self.chain.close()

    async def run_loop(self) -> None:
        """Read input until it ends. Implemented by the task kinds."""
        raise NotImplementedError

    def handle_control(self, message: object) -> None:
        """Handle one control message. Subclasses extend this (checkpoint triggers...)."""
        raise TypeError(f"task {self.name!r}: unexpected control message {message!r}")

    def poll_mailbox(self) -> None:
        """Handle every queued control message (they go before data)."""
        mailbox = self.mailbox
        while mailbox:
            self.handle_control(mailbox.poll())

    async def process(self, batch: list[Any]) -> None:
        """Run one input buffer through the chain and send what it produced."""
        chain = self.chain
        if chain.is_async:
            await chain.process(batch)
        else:
            chain.process_sync(batch)
        await self.drain_outputs()
        now = time.perf_counter()
        if self.buffer_timeout >= 0:
            self.check_buffer_timeout(time.monotonic())
        if now - self._last_yield >= YIELD_INTERVAL:
            self._last_yield = now
            await asyncio.sleep(0)

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
            await self.wait_backpressured()
            self.poll_mailbox()

    async def flush_all(self) -> None:
        """Send every buffer, partial ones too (idle, end of input)."""
        for writer in self.writers:
            writer.seal_partial()
        await self.drain_outputs()

    def records_in(self) -> int:
        """Records the chain's head took in."""
        return self.chain.head.records_in
