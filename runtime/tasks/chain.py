"""``OperatorChain``: operators joined by forward edges, run in one actor.

Operators of equal parallelism joined by a forward edge do not need a channel between
them: the chain hands each buffer from one operator to the next by a function call.
The chain's tail writes to the task's ``RecordWriter``s (none if the tail is a sink).

A chain whose operators are all synchronous runs a buffer with no await at all
(``process_sync``); a chain with an ``async def`` function awaits it (``process``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.tasks.chain_time import ChainTime
from runtime.tasks.operators import SinkOperator, StreamOperator
from runtime.tasks.record_writer import RecordWriter


class OperatorChain:
    """A list of operators, head first, and the writers the tail feeds.

    Args:
        operators: head first; at least one.
        writers: one per outgoing edge of the tail.
    """

    def __init__(self, operators: Sequence[StreamOperator], writers: Sequence[RecordWriter]):
        assert operators, "a chain has at least one operator"
        self.operators = list(operators)
        self.writers = list(writers)
        self.is_async = any(op.is_async for op in self.operators)
        # An async operator that emits records (not a sink): the task runs it record by
        # record, so what it emitted before an await can leave within the buffer timeout.
        self.emits_while_awaiting = any(
            op.is_async and not isinstance(op, SinkOperator) for op in self.operators
        )
        # Record by record while a checkpoint may come: an async operator other than a
        # sink that writes whole buffers (``write_batch``), so that a barrier is handled
        # between two records, not after a buffer of slow awaits. A batch sink's write
        # is one await per buffer (FileSink's: in memory, a thread hop per 256 KiB).
        self.awaits_per_record = any(
            op.is_async and not (isinstance(op, SinkOperator) and op.batch) for op in self.operators
        )
        self._single_writer = self.writers[0] if len(self.writers) == 1 else None
        # Event time: watermarks, timers and side outputs (runtime.tasks.chain_time).
        self.time = ChainTime(self)
        if self.time.routes_side_outputs:
            self._single_writer = None

    @property
    def head(self) -> StreamOperator:
        """The first operator (the one that reads the task's input)."""
        return self.operators[0]

    async def open(self) -> None:
        """Open every operator, tail first (so a sink is ready before data reaches it)."""
        for operator in reversed(self.operators):
            await operator.open()

    def process_sync(self, batch: list[Any]) -> None:
        """Run ``batch`` through a chain of synchronous operators into the writers."""
        for operator in self.operators:
            batch = operator.process_batch(batch)
            if not batch:
                return
        self._write(batch)

    async def process(self, batch: list[Any]) -> None:
        """Run ``batch`` through the chain, awaiting asynchronous operators."""
        for operator in self.operators:
            if operator.is_async:
                batch = await operator.process_batch_async(batch)
            else:
                batch = operator.process_batch(batch)
            if not batch:
                return
        self._write(batch)

    async def end_input(self) -> None:
        """Tell each operator, head first, that its input ended; pass on what it emits."""
        for index, operator in enumerate(self.operators):
            batch = operator.end_input()
            for downstream in self.operators[index + 1 :]:
                if not batch:
                    break
                if downstream.is_async:
                    batch = await downstream.process_batch_async(batch)
                else:
                    batch = downstream.process_batch(batch)
            if batch:
                self._write(batch)
            await operator.finish()

    async def close(self, *, suppress_errors: bool = False) -> None:
        """Close every operator, head first, even if one of them fails to close.

        Args:
            suppress_errors: drop errors of ``close`` (the task is failing already and
                its first error is the one to report).

        Raises:
            OperatorError: the first operator that failed to close, unless suppressed.
        """
        first: BaseException | None = None
        for operator in self.operators:
            try:
                await operator.close()
            except Exception as error:
                if first is None:
                    first = error
        if first is not None and not suppress_errors:
            raise first

    def emit(self, batch: list[Any]) -> None:
        """Hand records the tail emitted outside ``process`` (async I/O results) onward."""
        self._write(batch)

    def _write(self, batch: list[Any]) -> None:
        single = self._single_writer
        if single is not None:
            single.write(batch)
        elif self.time.routes_side_outputs:
            self.time.write_routed(batch)
        else:
            for writer in self.writers:
                writer.write(batch)
