"""``WindowOperator``: keyed windows with incremental state, fired by timers.

Built by ``WindowedStream`` (``runtime.api.windowed``) and run in a keyed subtask like
any keyed operator. Per record: its key, its timestamp (the stream's timestamp
assigner; processing time: ``time.time()``), its windows (the assigner). The
accumulators of a key's windows live in its keyed value state ``"window-contents"``: a
dict under the plain tuple ``(start, end)``, read and written back once per record (one
state access per record, like the keyed reduce, on either backend). An accumulator is
the reduced value, an ``AggregateFunction`` accumulator, or the list of elements for a
``ProcessWindowFunction``. Session windows merge in that dict: the
accumulators of the windows a new one touches are merged into the covering window
(``reduce``, ``AggregateFunction.merge``, or list concatenation), so no separate
merging-window set is needed and the dict is all the state there is.

Triggering is Flink's default: event-time windows fire when the watermark reaches their
end (an event-time timer at ``end``, ``runtime.time.timers``), processing-time windows
when the clock does. Records for a window that already fired but is within
``allowed_lateness`` fire it again at once; the window's state is dropped when the
watermark reaches ``end + allowed_lateness``. A record all of whose windows are past
that is late: it goes to the ``side_output_late_data`` tag if one is set, else it is
counted in ``late_records_dropped``. Window results are records without a timestamp
field; their event time, if a later operator needs one, is up to its assigner (e.g.
``end`` of the window carried in the result).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import Any

from runtime.errors import ConfigError
from runtime.tasks.operators import _NO_KEY, StreamOperator, explain_key_error
from runtime.tasks.time_operators import OutputTag, SideRecord, schedule_on_loop
from runtime.time.timers import TimerService
from runtime.time.watermarks import check_timestamp
from runtime.windows.assigners import (
    GlobalWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    WindowAssigner,
    merge_windows,
)
from runtime.windows.functions import WindowContext
from storage import KeyGroupAssigner, ValueStateDescriptor

__all__ = ["WINDOW_CONTENTS", "WindowFunctions", "WindowOperator"]

WINDOW_CONTENTS = "window-contents"
"""The keyed value state of window accumulators: a dict ``(start, end) -> accumulator``."""

WINDOW_COUNTS = "window-counts"
"""With a count trigger: the keyed value state of counts, ``(start, end) -> records``."""

_MISSING = object()
_OPEN, _FIRED, _LATE = "open", "fired", "late"  # a window's status for a record


class WindowFunctions:
    """How a window's records become its accumulator and its output.

    Args:
        create: a new accumulator, or None for "the first record".
        add: ``(accumulator, record) -> accumulator``.
        merge: ``(a, b) -> accumulator`` (session windows).
        result: ``accumulator -> value``.
        process: ``ProcessWindowFunction.process`` over ``[value]`` (or the elements),
            or None to emit ``value``.
        owners: function objects with ``open``/``close`` hooks.
    """

    def __init__(
        self,
        create: Callable[[], Any] | None,
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any],
        result: Callable[[Any], Any],
        process: Callable[[Any, WindowContext, list[Any]], Any] | None,
        owners: list[Any],
        *,
        elements: bool = False,
    ) -> None:
        self.create = create
        self.add = add
        self.merge = merge
        self.result = result
        self.process = process
        self.owners = owners
        self.elements = elements


class WindowOperator(StreamOperator):
    """Keyed windows (see the module docstring).

    Args:
        name: the operator's name.
        uid: its stable id.
        assigner: the window assigner.
        key_selector: the keyed stream's key.
        timestamp: the stream's timestamp assigner (event time).
        functions: what the window computes.
        allowed_lateness: how long after its end a window keeps its state.
        late_tag: the side output of late records, or None.
        side_tags: the side output tags that have consumers.
    """

    def __init__(
        self,
        name: str,
        uid: str,
        assigner: WindowAssigner,
        key_selector: Callable[[Any], Any],
        timestamp: Callable[[Any], Any] | None,
        functions: WindowFunctions,
        allowed_lateness: float,
        late_tag: OutputTag | None,
        side_tags: set[OutputTag],
        count: int | None = None,
        purge: bool = False,
    ) -> None:
        super().__init__(name, uid)
        if isinstance(assigner, GlobalWindows) and count is None:
            raise ConfigError(
                f"operator {name!r}: GlobalWindows never fire by time; give them a "
                f"trigger, e.g. .trigger(PurgingTrigger.of(CountTrigger.of(100))), or use "
                f"count_window(100)"
            )
        if assigner.is_event_time and timestamp is None:
            raise ConfigError(
                f"operator {name!r}: event-time windows need timestamps; call "
                f"assign_timestamps_and_watermarks() before key_by(), or give window() a "
                f"timestamp= function"
            )
        self.assigner = assigner
        self.key_selector = key_selector
        self.timestamp = timestamp
        self.functions = functions
        self.lateness = allowed_lateness
        self.late_tag = late_tag if late_tag in side_tags else None
        self.late_records_dropped = 0
        # The trigger: fire every ``count`` records (None: on time); purge after firing.
        self.count = count
        self.purge = purge
        self._counts: Any = None
        self.post: Callable[[], None] | None = None
        self.timers: TimerService | None = None
        self._state: Any = None
        self._assigner_kg: KeyGroupAssigner | None = None

    def setup(self, ctx: Any) -> None:  # noqa: D102
        super().setup(ctx)
        assert ctx.keyed_backend is not None, "window operator without a keyed backend"
        self._state = ctx.keyed_backend.get_state(ValueStateDescriptor(WINDOW_CONTENTS))
        if self.count is not None:
            self._counts = ctx.keyed_backend.get_state(ValueStateDescriptor(WINDOW_COUNTS))
        self._assigner_kg = KeyGroupAssigner(ctx.max_parallelism, ctx.parallelism)

    async def open(self) -> None:  # noqa: D102
        schedule = schedule_on_loop(self.post) if self.post is not None else None
        self.timers = TimerService(self.context.keyed_backend, schedule)
        self.timers.restore()
        for owner in self.functions.owners:
            if hasattr(owner, "open"):
                try:
                    result = owner.open(self.context)
                    if result is not None and hasattr(result, "__await__"):
                        await result
                except Exception as error:
                    raise self.phase_error(error, "open()") from error

    async def close(self) -> None:  # noqa: D102
        for owner in self.functions.owners:
            if hasattr(owner, "close"):
                try:
                    result = owner.close()
                    if result is not None and hasattr(result, "__await__"):
                        await result
                except Exception as error:
                    raise self.phase_error(error, "close()") from error

    # -- records --------------------------------------------------------------------------

    def process_batch(self, batch: list[Any]) -> list[Any]:  # noqa: D102
        assigner = self.assigner
        if assigner.__class__ is TumblingEventTimeWindows and self.count is None and not self.purge:
            return self._process_tumbling(batch, assigner.size, assigner.offset)
        return self._process_general(batch)

    def _process_tumbling(self, batch: list[Any], size: float, offset: float) -> list[Any]:
        """``_process_general`` for event-time tumbling windows, in fewer steps per record.

        Consecutive records mostly fall in the same window: the last window computed is
        kept with its bounds and its status (open, fired but within the lateness, or
        past it) for the batch, whose watermark does not change; a record in it skips
        the arithmetic, the checks and the allocation of its bounds.
        """
        timers = self.timers
        assert timers is not None and self._assigner_kg is not None
        backend: Any = self.context.keyed_backend
        state = self._state
        get_for, put_for = state.get_for, state.put_for
        key_group = self._assigner_kg.key_group
        key_selector = self.key_selector
        stamp = self.timestamp
        functions = self.functions
        create, add = functions.create, functions.add
        lateness = self.lateness
        watermark = timers.current_watermark
        register = timers.register_event_time_timer
        out: list[Any] = []
        low, high = math.inf, -math.inf  # the cached window [low, high): none yet
        bounds: tuple[float, float] = (low, high)
        status = _OPEN
        record = key = timestamp = None
        try:
            for record in batch:
                key = _NO_KEY
                key = key_selector(record)
                timestamp = stamp(record)  # type: ignore[misc]
                if not low <= timestamp < high:  # NaN lands here too
                    if (
                        timestamp.__class__ is not float and timestamp.__class__ is not int
                    ) or timestamp != timestamp:
                        timestamp = check_timestamp(timestamp)
                    low = timestamp - (timestamp - offset) % size
                    high = low + size
                    bounds = (low, high)
                    if high + lateness <= watermark:
                        status = _LATE
                    elif high <= watermark:
                        status = _FIRED
                    else:
                        status = _OPEN
                if status is _LATE:
                    if self.late_tag is not None:
                        out.append(SideRecord(self.late_tag, record))
                    else:
                        self.late_records_dropped += 1
                    continue
                windows = get_for(key)
                if windows is None:
                    key_group(key)  # a key without windows: validate it (None is no key)
                    if key is None:
                        raise explain_key_error(ValueError(), None)
                    windows = {}
                acc = windows.get(bounds, _MISSING)
                if acc is _MISSING:
                    windows[bounds] = acc = record if create is None else add(create(), record)
                    backend.current_key = key
                    if status is _OPEN:
                        register(high)
                    if lateness:
                        register(high + lateness)
                else:
                    windows[bounds] = acc = add(acc, record)
                put_for(key, windows)
                if status is _FIRED:
                    out.extend(self._emit(key, bounds, acc))  # late but allowed: fire again
        except Exception as error:
            cause: BaseException = explain_key_error(error, key)
            if isinstance(error, TypeError) and not isinstance(timestamp, int | float):
                try:
                    check_timestamp(timestamp)
                except (TypeError, ValueError) as clearer:
                    cause = clearer
            raise self.error(cause, record) from cause
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    def _process_general(self, batch: list[Any]) -> list[Any]:
        timers = self.timers
        assert timers is not None and self._assigner_kg is not None
        backend: Any = self.context.keyed_backend
        state = self._state
        get_for, put_for = state.get_for, state.put_for
        key_group = self._assigner_kg.key_group
        key_selector = self.key_selector
        stamp = self.timestamp
        assigner = self.assigner
        assign = assigner.assign
        event_time = assigner.is_event_time
        merging = assigner.is_merging
        # Tumbling windows: the window's start computed inline (the hot path).
        size = getattr(assigner, "size", None) if not hasattr(assigner, "slide") else None
        offset = getattr(assigner, "offset", 0)
        functions = self.functions
        create, add = functions.create, functions.add
        lateness = self.lateness
        watermark = timers.current_watermark
        register = (
            timers.register_event_time_timer
            if event_time
            else timers.register_processing_time_timer
        )
        count = self.count
        out: list[Any] = []
        now = time.time()
        record = key = None
        try:
            for record in batch:
                key = _NO_KEY
                key = key_selector(record)
                if event_time:
                    timestamp = stamp(record)  # type: ignore[misc]
                    if (
                        timestamp.__class__ is not float and timestamp.__class__ is not int
                    ) or timestamp != timestamp:
                        timestamp = check_timestamp(timestamp)
                else:
                    timestamp = now
                windows = get_for(key)
                if windows is None:
                    # A key without windows: validate it (None is no key).
                    key_group(key)
                    if key is None:
                        raise explain_key_error(ValueError(), None)
                    windows = {}
                if size is not None and not merging:
                    start = timestamp - (timestamp - offset) % size
                    assigned: Any = ((start, start + size),)
                else:
                    assigned = assign(timestamp)
                accepted = False
                for window in assigned:
                    end = window[1]
                    if event_time and end + lateness <= watermark:
                        continue  # late: the window's state is gone
                    accepted = True
                    if merging:
                        window = self._merge(key, windows, TimeWindow(window[0], end))
                        end = window[1]
                    bounds = (window[0], end)
                    acc = windows.get(bounds, _MISSING)
                    if acc is _MISSING:
                        windows[bounds] = acc = record if create is None else add(create(), record)
                        backend.current_key = key
                        if count is None:
                            if not (event_time and end <= watermark):
                                register(end)
                            if lateness and event_time:
                                register(end + lateness)
                        elif end != math.inf:
                            register(end + lateness)  # the count trigger's cleanup only
                    else:
                        windows[bounds] = acc = add(acc, record)
                    if count is not None:
                        if self._count(key, bounds, count):
                            out.extend(self._emit(key, bounds, acc))
                            if self.purge:
                                del windows[bounds]
                    elif event_time and end <= watermark:
                        # Late but allowed: fire again with the new record (Flink).
                        out.extend(self._emit(key, bounds, acc))
                        if self.purge:
                            del windows[bounds]
                if accepted:
                    if windows:
                        put_for(key, windows)
                    else:
                        backend.current_key = key
                        state.clear()
                elif self.late_tag is not None:
                    out.append(SideRecord(self.late_tag, record))
                else:
                    self.late_records_dropped += 1
        except Exception as error:
            cause = explain_key_error(error, key)
            raise self.error(cause, record) from cause
        self.records_in += len(batch)
        self.records_out += len(out)
        return out

    def _merge(self, key: Hashable, windows: dict[Any, Any], window: TimeWindow) -> TimeWindow:
        existing = [TimeWindow(*bounds) for bounds in windows]
        merged, absorbed = merge_windows(existing, window)
        if not absorbed or (len(absorbed) == 1 and absorbed[0] == merged):
            return merged
        timers = self.timers
        assert timers is not None
        self.context.keyed_backend.current_key = key  # type: ignore[union-attr]
        event_time = self.assigner.is_event_time
        acc: Any = _MISSING
        for old in absorbed:
            value = windows.pop((old[0], old[1]))
            if event_time:
                timers.delete_event_time_timer(old[1])
                if self.lateness:
                    timers.delete_event_time_timer(old[1] + self.lateness)
            else:
                timers.delete_processing_time_timer(old[1])
            acc = value if acc is _MISSING else self.functions.merge(acc, value)
        windows[(merged[0], merged[1])] = acc
        if event_time:
            timers.register_event_time_timer(merged[1])
            if self.lateness:
                timers.register_event_time_timer(merged[1] + self.lateness)
        else:
            timers.register_processing_time_timer(merged[1])
        return merged

    # -- firing ---------------------------------------------------------------------------

    def _emit(self, key: Any, bounds: tuple[float, float], acc: Any) -> list[Any]:
        functions = self.functions
        value = functions.result(acc)
        if functions.process is None:
            return [value]
        timers = self.timers
        assert timers is not None
        context = WindowContext(bounds, timers.current_watermark, time.time())
        elements = value if functions.elements else [value]
        result = functions.process(key, context, elements)
        return [] if result is None else list(result)

    def _fire(self, due: list[tuple[float, Hashable]]) -> list[Any]:
        out: list[Any] = []
        backend: Any = self.context.keyed_backend
        state = self._state
        lateness = self.lateness if self.assigner.is_event_time else 0
        for timestamp, key in due:
            windows = state.get_for(key)
            if not windows:
                continue
            changed = False
            for bounds, acc in list(windows.items()):
                end = bounds[1]
                try:
                    if end == timestamp and self.count is None:
                        out.extend(self._emit(key, (bounds[0], end), acc))
                        if self.purge and end + lateness != timestamp:
                            del windows[bounds]
                            changed = True
                except Exception as error:
                    raise self.phase_error(
                        error, f"firing window {tuple(bounds)!r} of key {key!r}"
                    ) from error
                if end + lateness == timestamp and bounds in windows:
                    del windows[bounds]
                    changed = True
                    if self._counts is not None:
                        self._drop_count(key, bounds)
            if changed:
                if windows:
                    state.put_for(key, windows)
                else:
                    backend.current_key = key
                    state.clear()
        self.records_out += len(out)
        return out

    def _count(self, key: Hashable, bounds: tuple[float, float], count: int) -> bool:
        """Count a record of window ``bounds``; whether the count trigger fires."""
        counts = self._counts.get_for(key) or {}
        seen = counts.get(bounds, 0) + 1
        fire: bool = seen >= count
        if fire:
            counts.pop(bounds, None)
        else:
            counts[bounds] = seen
        if counts:
            self._counts.put_for(key, counts)
        else:
            self.context.keyed_backend.current_key = key  # type: ignore[union-attr]
            self._counts.clear()
        return fire

    def _drop_count(self, key: Hashable, bounds: tuple[float, float]) -> None:
        counts = self._counts.get_for(key)
        if counts and bounds in counts:
            del counts[bounds]
            if counts:
                self._counts.put_for(key, counts)
            else:
                self.context.keyed_backend.current_key = key  # type: ignore[union-attr]
                self._counts.clear()

    def process_watermark(self, watermark: float) -> tuple[list[Any], float | None]:
        """Fire the windows the watermark completed; drop those past their lateness."""
        timers = self.timers
        if timers is None:
            return [], watermark
        return self._fire(timers.advance_watermark(watermark)), watermark

    def fire_processing_timers(self) -> list[Any]:
        """Fire the processing-time windows whose end came."""
        if self.timers is None:
            return []
        return self._fire(self.timers.due_processing_timers())
