"""Operators of event time: timestamp and watermark assignment, side outputs, timers.

* ``TimestampsAndWatermarksOperator``: ``assign_timestamps_and_watermarks`` (and a
  source's ``watermark_strategy``): checks each record's timestamp, feeds the subtask's
  ``WatermarkGenerator`` once per buffer, and gives the chain a watermark to emit at
  most every ``emit_interval`` (``poll_watermark``). It swallows watermarks from
  upstream except ``MAX_WATERMARK`` (as Flink's ``TimestampsAndWatermarksOperator``).
* ``SideRecord`` and ``SideOutputOperator``: ``ctx.output(tag, value)`` emits a
  ``SideRecord`` in the operator's output; the chain routes it to the consumers of
  ``get_side_output(tag)`` only (``OperatorChain``), where ``SideOutputOperator``
  unwraps it.
* ``TimedKeyedProcessOperator``: ``KeyedProcessOperator`` with a ``TimerService`` for a
  function that defines ``on_timer(timestamp, ctx)``, and side outputs.

Records carry no timestamp field in Weir: an event-time operator computes a record's
timestamp with the timestamp assigner of its stream (``DataStream.timestamp_assigner``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Hashable
from typing import Any

from runtime.tasks.keyed_operators import KeyedProcessOperator
from runtime.tasks.operators import StreamOperator, UserFunctionOperator
from runtime.time.side_output import OutputTag, SideRecord
from runtime.time.timers import EVENT_TIMERS, PROCESSING_TIMERS, TimerService
from runtime.time.watermarks import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    WatermarkStatus,
    WatermarkStrategy,
    check_timestamp,
)

_NUMBERS = frozenset({int, float})

__all__ = [
    "OutputTag",
    "SideOutputOperator",
    "SideRecord",
    "TimedKeyedProcessOperator",
    "TimerContext",
    "TimestampsAndWatermarksOperator",
]


class SideOutputOperator(StreamOperator):
    """The head of ``get_side_output(tag)``: keeps the tag's side records, unwrapped."""

    def __init__(self, name: str, uid: str, tag: OutputTag) -> None:
        super().__init__(name, uid)
        self.tag = tag

    def process_batch(self, batch: list[Any]) -> list[Any]:  # noqa: D102
        tag = self.tag
        out = [r.value for r in batch if r.__class__ is SideRecord and r.tag == tag]
        self.records_in += len(batch)
        self.records_out += len(out)
        return out


class TimestampsAndWatermarksOperator(StreamOperator):
    """Timestamps checked per record, watermarks generated per buffer (see module)."""

    def __init__(self, name: str, uid: str, strategy: WatermarkStrategy) -> None:
        super().__init__(name, uid)
        self.strategy = strategy
        self.generator = strategy.create_generator(time.monotonic)
        self.assigner = strategy.timestamp_assigner
        self.interval = strategy.emit_interval
        self._next_emit = 0.0
        self._last: float = MIN_WATERMARK

    def process_batch(self, batch: list[Any]) -> list[Any]:  # noqa: D102
        assigner = self.assigner
        if assigner is not None:
            record = None
            try:
                timestamps = list(map(assigner, batch))
                if not set(map(type, timestamps)) <= _NUMBERS:
                    for record, timestamp in zip(batch, timestamps, strict=True):  # noqa: B007
                        check_timestamp(timestamp)
            except Exception as error:
                if record is None:
                    # map() stopped at the failing record: find it for the message.
                    for record in batch:
                        try:
                            assigner(record)
                        except Exception:
                            break
                raise self.error(error, record) from error
            self.generator.on_batch(timestamps)
        self.records_in += len(batch)
        self.records_out += len(batch)
        return batch

    def poll_watermark(self, now: float, *, force: bool = False) -> float | WatermarkStatus | None:
        """A watermark (or status) to emit now, at most one per ``emit_interval``."""
        if now < self._next_emit and not force:
            return None
        self._next_emit = now + self.interval
        out = self.generator.on_periodic_emit(now)
        if out is None or out.__class__ is WatermarkStatus:
            return out
        if out > self._last:  # type: ignore[operator]
            self._last = out  # type: ignore[assignment]
            return out
        return None

    def process_watermark(self, watermark: float) -> tuple[list[Any], float | None]:
        """Upstream watermarks stop here, except the end of input's."""
        return [], (watermark if watermark == MAX_WATERMARK else None)


class TimerContext:
    """``ctx.timer_service`` of a keyed process function (Flink's ``TimerService``)."""

    def __init__(self, service: TimerService) -> None:
        self._service = service

    def register_event_time_timer(self, timestamp: float) -> None:
        """Call ``on_timer`` for the current key once the watermark reaches ``timestamp``."""
        self._service.register_event_time_timer(check_timestamp(timestamp))

    def delete_event_time_timer(self, timestamp: float) -> None:
        """Delete the current key's event-time timer at ``timestamp``."""
        self._service.delete_event_time_timer(timestamp)

    def register_processing_time_timer(self, timestamp: float) -> None:
        """Call ``on_timer`` for the current key at processing time ``timestamp``."""
        self._service.register_processing_time_timer(check_timestamp(timestamp))

    def delete_processing_time_timer(self, timestamp: float) -> None:
        """Delete the current key's processing-time timer at ``timestamp``."""
        self._service.delete_processing_time_timer(timestamp)

    def current_watermark(self) -> float:
        """The operator's event time (``-inf`` before the first watermark)."""
        return self._service.current_watermark

    def current_processing_time(self) -> float:
        """``time.time()``."""
        return time.time()


def schedule_on_loop(post: Callable[[], None]) -> Callable[[float], None]:
    """A ``TimerService.schedule`` that calls ``post()`` on the loop at a wall-clock time."""

    def schedule(timestamp: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, timestamp - time.time())
        loop.call_later(delay, post)

    return schedule


class TimedKeyedProcessOperator(KeyedProcessOperator):
    """``process`` on a keyed stream, with timers and side outputs (see module).

    The function's ``on_timer(timestamp, ctx)`` (``def`` or ``async def``) returns an
    iterable of records or None; during it ``ctx.current_key`` is the timer's key and
    ``ctx.timer_domain`` is ``"event"`` or ``"processing"``.
    """

    def __init__(
        self,
        name: str,
        uid: str,
        function: Any,
        key_selector: Callable[[Any], Any],
        side_tags: set[OutputTag],
    ) -> None:
        super().__init__(name, uid, function, key_selector)
        self.side_tags = side_tags
        self.timers: TimerService | None = None
        owner = function.owner
        self.on_timer = getattr(owner, "on_timer", None) if owner is not None else None
        # An ``async def on_timer`` is awaited: the chain calls the *_async twins.
        self.timers_async = self.on_timer is not None and inspect.iscoroutinefunction(self.on_timer)
        self._side: list[Any] = []
        self.post: Callable[[], None] | None = None

    def setup(self, ctx: Any) -> None:  # noqa: D102
        super().setup(ctx)
        ctx.output = self._output
        ctx.timer_service = None

    async def open(self) -> None:  # noqa: D102
        ctx: Any = self.context
        backend: Any = ctx.keyed_backend
        restored = {EVENT_TIMERS, PROCESSING_TIMERS} & set(backend.state_names)
        if self.on_timer is not None or restored:
            schedule = schedule_on_loop(self.post) if self.post is not None else None
            self.timers = TimerService(backend, schedule)
            self.timers.restore()
            ctx.timer_service = TimerContext(self.timers)
        await super().open()

    def _output(self, tag: OutputTag, value: Any) -> None:
        if tag in self.side_tags:
            self._side.append(SideRecord(tag, value))

    def process_batch(self, batch: list[Any]) -> list[Any]:  # noqa: D102
        out = super().process_batch(batch)
        if self._side:
            out = out + self._side
            self._side = []
        return out

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:  # noqa: D102
        out = await super().process_batch_async(batch)
        if self._side:
            out = out + self._side
            self._side = []
        return out

    def process_watermark(self, watermark: float) -> tuple[list[Any], float | None]:
        """Fire the event-time timers the watermark reached."""
        if self.timers is None:
            return [], watermark
        return self._fire(self.timers.advance_watermark(watermark), "event"), watermark

    def fire_processing_timers(self) -> list[Any]:
        """Fire the processing-time timers whose time came."""
        if self.timers is None:
            return []
        return self._fire(self.timers.due_processing_timers(), "processing")

    async def process_watermark_async(self, watermark: float) -> tuple[list[Any], float | None]:
        """``process_watermark`` for an ``async def on_timer``."""
        if self.timers is None:
            return [], watermark
        due = self.timers.advance_watermark(watermark)
        return await self._fire_async(due, "event"), watermark

    async def fire_processing_timers_async(self) -> list[Any]:
        """``fire_processing_timers`` for an ``async def on_timer``."""
        if self.timers is None:
            return []
        return await self._fire_async(self.timers.due_processing_timers(), "processing")

    async def _fire_async(self, due: list[tuple[float, Hashable]], domain: str) -> list[Any]:
        ctx: Any = self.context
        backend: Any = ctx.keyed_backend
        on_timer: Any = self.on_timer
        out: list[Any] = []
        for timestamp, key in due:
            # Set again per timer: nothing else runs in this task during the await, but
            # the key must be the timer's when on_timer resumes and touches state.
            backend.current_key = key
            ctx.timer_domain = domain
            try:
                result = await on_timer(timestamp, ctx)
            except Exception as error:
                raise self.phase_error(error, f"on_timer({timestamp!r}) of key {key!r}") from error
            if result is not None:
                out.extend(result)
        if self._side:
            out.extend(self._side)
            self._side = []
        return out

    def _fire(self, due: list[tuple[float, Hashable]], domain: str) -> list[Any]:
        if not due:
            return []
        ctx: Any = self.context
        backend: Any = ctx.keyed_backend
        on_timer = self.on_timer
        out: list[Any] = []
        ctx.timer_domain = domain
        for timestamp, key in due:
            backend.current_key = key
            if on_timer is None:
                continue
            try:
                result = on_timer(timestamp, ctx)
            except Exception as error:
                raise self.phase_error(error, f"on_timer({timestamp!r}) of key {key!r}") from error
            if result is not None:
                out.extend(result)
        if self._side:
            out.extend(self._side)
            self._side = []
        return out


def keyed_process_operator(
    name: str,
    uid: str,
    function: Any,
    key_selector: Callable[[Any], Any],
    side_tags: set[OutputTag],
) -> UserFunctionOperator:
    """The operator of ``KeyedStream.process``: timed when the function has ``on_timer``."""
    return TimedKeyedProcessOperator(name, uid, function, key_selector, side_tags)
