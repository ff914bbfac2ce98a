"""``ChainTime``: event time inside one operator chain (one per ``OperatorChain``).

It moves watermarks through the chain's operators in order, so that what an operator
emits when a watermark fires its timers passes through the operators after it before
they see the watermark; it sends the chain's output watermark and status to the writers
as ordered events (``RecordWriter.emit_event``, behind the data written before them,
held by backpressure like a buffer); it polls the chain's watermark generators after a
buffer (``TimestampsAndWatermarksOperator``); it fires processing-time timers when the
task's mailbox says their time came; and it routes side outputs: when the chain's
writers include consumers of ``get_side_output(tag)``, a ``SideRecord`` goes only to
the writers of its tag, and other records only to the main writers.

Who calls it: the task (``Task``, ``StreamTask``, ``SourceTask``) on its own loop. Every
method that runs operators is ``async`` because chained operators after a firing one
may be ``async def``; a chain without time-aware operators never calls it on the hot
path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.tasks.time_operators import SideRecord
from runtime.time.watermarks import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    Watermark,
    WatermarkStatus,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from runtime.tasks.chain import OperatorChain

__all__ = ["FIRE_PROCESSING_TIMERS", "ChainTime", "FireProcessingTimers"]


class FireProcessingTimers:
    """Control message a task sends itself: processing-time timers may be due."""

    __slots__ = ()


FIRE_PROCESSING_TIMERS = FireProcessingTimers()


class ChainTime:
    """See the module docstring.

    Attributes:
        output_watermark: the last watermark sent to the writers.
        idle: whether the last status sent was idle.
    """

    def __init__(self, chain: OperatorChain) -> None:
        self.chain = chain
        ops = chain.operators
        self.generators = [(i, op) for i, op in enumerate(ops) if hasattr(op, "poll_watermark")]
        self.timer_operators = [
            (i, op) for i, op in enumerate(ops) if hasattr(op, "fire_processing_timers")
        ]
        # Timer callbacks that are ``async def``: they fire in the task's loop, awaited.
        self.async_timers = any(getattr(op, "timers_async", False) for op in ops)
        self.output_watermark = MIN_WATERMARK
        self.idle = False
        self.writer_tags = [getattr(w, "side_tag", None) for w in chain.writers]
        self.routes_side_outputs = any(tag is not None for tag in self.writer_tags)

    def attach(self, post: Callable[[], None]) -> None:
        """Give timer-owning operators ``post()``, which wakes the task for its timers."""
        for _, operator in self.timer_operators:
            operator.post = post  # type: ignore[attr-defined]

    async def advance(self, watermark: float, start: int = 0) -> None:
        """Move ``watermark`` through the operators from ``start``, then to the writers."""
        operators = self.chain.operators
        current: float | None = watermark
        for index in range(start, len(operators)):
            operator: Any = operators[index]
            if getattr(operator, "busy", False) and hasattr(operator, "bind_host"):
                # Async I/O (ordered or not): a watermark is an order boundary, so the
                # results of every record before it go out first (Flink). The task
                # reads no input meanwhile and still serves checkpoints.
                await operator.host.wait_operator(operator._drained)
            if getattr(operator, "timers_async", False):
                out, current = await operator.process_watermark_async(current)
                if out:
                    await self.push(out, index + 1)
                if current is None:
                    return
                continue
            hook = getattr(operator, "process_watermark", None)
            if hook is None:
                continue
            out, current = hook(current)
            if out:
                await self.push(out, index + 1)
            if current is None:
                return
        if current is not None and current > self.output_watermark:
            self.output_watermark = current
            if self.idle and current != MAX_WATERMARK:
                await self.status(WatermarkStatus(False))
            for writer in self.chain.writers:
                writer.emit_event(Watermark(current))

    async def status(self, status: WatermarkStatus) -> None:
        """Send an idle or active status to the writers (only changes)."""
        if status.idle == self.idle:
            return
        self.idle = status.idle
        for writer in self.chain.writers:
            writer.emit_event(status)

    async def poll_generators(self, now: float, *, force: bool = False) -> None:
        """Emit what the chain's watermark generators give (after a buffer, when idle)."""
        for index, operator in self.generators:
            produced = operator.poll_watermark(now, force=force)
            if produced is None:
                continue
            if produced.__class__ is WatermarkStatus:
                await self.status(produced)
            else:
                await self.advance(produced, index + 1)

    async def fire_processing_timers(self) -> None:
        """Run the processing-time timers that are due, in chain order."""
        for index, timed in self.timer_operators:
            operator: Any = timed
            if getattr(operator, "timers_async", False):
                out = await operator.fire_processing_timers_async()
            else:
                out = operator.fire_processing_timers()
            if out:
                await self.push(out, index + 1)

    def fire_processing_timers_sync(self) -> None:
        """``fire_processing_timers`` for a chain without ``async def`` operators."""
        for index, operator in self.timer_operators:
            out = operator.fire_processing_timers()
            for downstream in self.chain.operators[index + 1 :]:
                if not out:
                    break
                out = downstream.process_batch(out)
            if out:
                self.chain.emit(out)

    async def push(self, batch: list[Any], start: int) -> None:
        """Run ``batch`` through the operators from ``start`` into the writers."""
        for operator in self.chain.operators[start:]:
            if operator.is_async:
                batch = await operator.process_batch_async(batch)
            else:
                batch = operator.process_batch(batch)
            if not batch:
                return
        self.chain.emit(batch)

    def write_routed(self, batch: list[Any]) -> None:
        """Main records to the main writers, side records to their tag's writers."""
        main = [r for r in batch if r.__class__ is not SideRecord]
        for writer, tag in zip(self.chain.writers, self.writer_tags, strict=True):
            if tag is None:
                if main:
                    writer.write(main)
            else:
                side = [r for r in batch if r.__class__ is SideRecord and r.tag == tag]
                if side:
                    writer.write(side)
