"""``TimerService``: one keyed operator's event-time and processing-time timers.

As Flink's ``InternalTimerService``: a timer is a key and a timestamp, at most one per
both (registering it again does nothing). Timers are keyed state: a value state per time
domain (``"_timers/event"``, ``"_timers/processing"``: the sorted tuple of the key's
timer timestamps; a tuple of numbers, which the cyclic collector does not track and
which encodes without pickle), so they live in the keyed backend (heap or RocksDB) by
key group, go into every checkpoint and savepoint with the operator's other keyed
state, are redistributed with their key groups when a job is rescaled, and can be read
and written with the State Processor API under those names. The service keeps a priority queue of
``(timestamp, key)`` beside the state, rebuilt from it when the operator opens; a
deleted timer leaves a stale queue entry, skipped when it comes up.

Event-time timers fire when the operator's watermark reaches them (``advance_watermark``);
processing-time timers when the processing clock (``time.time()``) reaches them: the
service asks its task to wake it then (``schedule``), and after a restore the ones
whose time passed fire at once. Owned by its operator, used on the task's loop only.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from typing import Any

from runtime.time.watermarks import MIN_WATERMARK
from storage import ValueStateDescriptor

__all__ = ["EVENT_TIMERS", "PROCESSING_TIMERS", "TimerService"]

EVENT_TIMERS = "_timers/event"
"""The keyed value state of event-time timers (a sorted tuple of timestamps)."""

PROCESSING_TIMERS = "_timers/processing"
"""The keyed value state of processing-time timers (a sorted tuple of timestamps)."""


class TimerService:
    """Timers of one keyed operator; see the module docstring.

    Args:
        backend: the operator's keyed state backend.
        schedule: asks the task to call ``fire_processing_timers`` at a processing time.
    """

    def __init__(self, backend: Any, schedule: Callable[[float], None] | None = None) -> None:
        self.backend = backend
        self.schedule = schedule
        self.current_watermark = MIN_WATERMARK
        self._event_state = backend.get_state(ValueStateDescriptor(EVENT_TIMERS))
        self._processing_state = backend.get_state(ValueStateDescriptor(PROCESSING_TIMERS))
        self._event: list[tuple[float, int, Hashable]] = []
        self._processing: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._scheduled: float | None = None

    def restore(self) -> int:
        """Rebuild the queues from the timer state (at open). Returns the timers found."""
        found = 0
        backend = self.backend
        saved = backend.current_key
        for name, state, queue in (
            (EVENT_TIMERS, self._event_state, self._event),
            (PROCESSING_TIMERS, self._processing_state, self._processing),
        ):
            for key in list(backend.keys(name)):
                for timestamp in state.get_for(key) or ():
                    queue.append((timestamp, next(self._seq), key))
                    found += 1
            heapq.heapify(queue)
        backend.current_key = saved
        self._reschedule()
        return found

    @property
    def num_event_timers(self) -> int:
        """Queued event-time timers (deleted ones included until they come up)."""
        return len(self._event)

    # -- the current key's timers (what a user function calls) ---------------------------

    def register_event_time_timer(self, timestamp: float) -> None:
        """Fire ``on_timer(timestamp)`` for the current key once the watermark reaches it."""
        key = self.backend.current_key
        if _add(self._event_state, key, timestamp):
            heapq.heappush(self._event, (timestamp, next(self._seq), key))

    def delete_event_time_timer(self, timestamp: float) -> None:
        """Forget the current key's event-time timer at ``timestamp`` (if any)."""
        _remove(self._event_state, self.backend.current_key, timestamp)

    def register_processing_time_timer(self, timestamp: float) -> None:
        """Fire ``on_timer(timestamp)`` for the current key at processing time ``timestamp``."""
        key = self.backend.current_key
        if _add(self._processing_state, key, timestamp):
            heapq.heappush(self._processing, (timestamp, next(self._seq), key))
            if self._scheduled is None or timestamp < self._scheduled:
                self._reschedule()

    def delete_processing_time_timer(self, timestamp: float) -> None:
        """Forget the current key's processing-time timer at ``timestamp`` (if any)."""
        _remove(self._processing_state, self.backend.current_key, timestamp)

    # -- firing ---------------------------------------------------------------------------

    def advance_watermark(self, watermark: float) -> list[tuple[float, Hashable]]:
        """Take the event-time timers at or below ``watermark``, in timestamp order.

        Each is removed from state, and the backend's current key is left unset; the
        caller sets it per timer before calling the user's ``on_timer``.
        """
        if watermark > self.current_watermark:
            self.current_watermark = watermark
        return self._due(self._event, self._event_state, watermark)

    def due_processing_timers(self, now: float | None = None) -> list[tuple[float, Hashable]]:
        """Take the processing-time timers at or below ``now``, in timestamp order."""
        now = time.time() if now is None else now
        due = self._due(self._processing, self._processing_state, now)
        self._scheduled = None
        self._reschedule()
        return due

    def _due(
        self, queue: list[tuple[float, int, Hashable]], state: Any, limit: float
    ) -> list[tuple[float, Hashable]]:
        out: list[tuple[float, Hashable]] = []
        backend = self.backend
        while queue and queue[0][0] <= limit:
            timestamp, _, key = heapq.heappop(queue)
            backend.current_key = key
            if _remove(state, key, timestamp):  # else deleted (or a duplicate)
                out.append((timestamp, key))
        return out

    def _reschedule(self) -> None:
        if self.schedule is None or not self._processing:
            return
        first = self._processing[0][0]
        if self._scheduled is None or first < self._scheduled:
            self._scheduled = first
            self.schedule(first)


def _add(state: Any, key: Hashable, timestamp: float) -> bool:
    """Add ``timestamp`` to ``key``'s timers; False if it was there."""
    if key is None:
        raise ValueError("timers need a current key (register them while handling a record)")
    timestamps = state.get_for(key)
    if timestamps is None:
        state.put_for(key, (timestamp,))
        return True
    if timestamp in timestamps:
        return False
    state.put_for(key, tuple(sorted((*timestamps, timestamp))))
    return True


def _remove(state: Any, key: Hashable, timestamp: float) -> bool:
    """Remove ``timestamp`` from ``key``'s timers; False if it was not there."""
    timestamps = state.get_for(key)
    if not timestamps or timestamp not in timestamps:
        return False
    rest = tuple(t for t in timestamps if t != timestamp)
    if rest:
        state.put_for(key, rest)
    else:
        state.clear()  # the backend's current key is ``key`` (set by the caller)
    return True
