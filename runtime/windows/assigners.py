"""Window assigners: which windows a record with a given timestamp belongs to.

As Flink's ``WindowAssigner``: ``TumblingEventTimeWindows.of(size, offset)``,
``SlidingEventTimeWindows.of(size, slide, offset)``,
``EventTimeSessionWindows.with_gap(gap)`` (a merging assigner) and their
processing-time twins. A ``TimeWindow`` is the half-open interval ``[start, end)``; it
is complete once the watermark reaches ``end`` (no record below ``end`` can come).
Sizes, slides, offsets and gaps are in the unit of the event timestamps (processing
time: seconds). Assigners are pure and validated when built (``ConfigError``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from runtime.errors import ConfigError
from runtime.time.watermarks import check_duration

__all__ = [
    "EventTimeSessionWindows",
    "GlobalWindows",
    "ProcessingTimeSessionWindows",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeWindow",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "WindowAssigner",
    "merge_windows",
    "window_start",
]


class TimeWindow(NamedTuple):
    """The window ``[start, end)`` (a tuple: cheap, hashable, and state-friendly)."""

    start: float
    end: float

    def intersects(self, other: TimeWindow) -> bool:
        """Whether the windows overlap or touch (Flink merges touching sessions)."""
        return self.start <= other.end and other.start <= self.end

    def cover(self, other: TimeWindow) -> TimeWindow:
        """The smallest window holding both."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


def window_start(timestamp: float, offset: float, size: float) -> float:
    """The start of the window of ``size`` (aligned to ``offset``) holding ``timestamp``."""
    return timestamp - (timestamp - offset) % size


class WindowAssigner:
    """Base of the assigners.

    Attributes:
        is_event_time: windows complete on watermarks (else on the processing clock).
        is_merging: windows of a key may merge (sessions).
    """

    is_event_time = True
    is_merging = False

    def assign(self, timestamp: float) -> list[TimeWindow]:
        """The windows ``timestamp`` belongs to."""
        raise NotImplementedError


def _check_offset(what: str, size: float, offset: float) -> float:
    if isinstance(offset, bool) or not isinstance(offset, int | float) or offset != offset:
        raise ConfigError(f"{what}: offset must be a number, got {offset!r}")
    if abs(offset) >= size:
        raise ConfigError(
            f"{what}: offset {offset!r} must be smaller than the size {size!r} "
            f"(-size < offset < size)"
        )
    return offset


class TumblingEventTimeWindows(WindowAssigner):
    """Fixed-size, non-overlapping windows aligned to ``offset`` (epoch 0 by default)."""

    def __init__(self, size: float, offset: float) -> None:
        self.size = size
        self.offset = offset

    @classmethod
    def of(cls, size: float, offset: float = 0) -> TumblingEventTimeWindows:
        """Windows of ``size``, shifted by ``offset``.

        Raises:
            ConfigError: size not a positive number, or ``|offset| >= size``.
        """
        what = f"{cls.__name__}.of"
        size = check_duration(f"{what}: size", size)
        return cls(size, _check_offset(what, size, offset))

    def assign(self, timestamp: float) -> list[TimeWindow]:  # noqa: D102
        start = window_start(timestamp, self.offset, self.size)
        return [TimeWindow(start, start + self.size)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size!r}, {self.offset!r})"


class TumblingProcessingTimeWindows(TumblingEventTimeWindows):
    """Tumbling windows on the processing clock (``time.time()`` seconds)."""

    is_event_time = False


class SlidingEventTimeWindows(WindowAssigner):
    """Windows of ``size`` starting every ``slide``; a record is in ``size/slide`` of them."""

    def __init__(self, size: float, slide: float, offset: float) -> None:
        self.size = size
        self.slide = slide
        self.offset = offset

    @classmethod
    def of(cls, size: float, slide: float, offset: float = 0) -> SlidingEventTimeWindows:
        """Windows of ``size`` every ``slide``, shifted by ``offset``.

        Raises:
            ConfigError: size or slide not positive numbers, or ``|offset| >= slide``.
        """
        what = f"{cls.__name__}.of"
        size = check_duration(f"{what}: size", size)
        slide = check_duration(f"{what}: slide", slide)
        return cls(size, slide, _check_offset(what, slide, offset))

    def assign(self, timestamp: float) -> list[TimeWindow]:  # noqa: D102
        out = []
        start = window_start(timestamp, self.offset, self.slide)
        lowest = timestamp - self.size
        while start > lowest:
            out.append(TimeWindow(start, start + self.size))
            start -= self.slide
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}.of({self.size!r}, {self.slide!r}, {self.offset!r})"


class SlidingProcessingTimeWindows(SlidingEventTimeWindows):
    """Sliding windows on the processing clock."""

    is_event_time = False


class EventTimeSessionWindows(WindowAssigner):
    """Sessions: a record opens ``[t, t + gap)``; overlapping or touching ones merge."""

    is_merging = True

    def __init__(self, gap: float) -> None:
        self.gap = gap

    @classmethod
    def with_gap(cls, gap: float) -> EventTimeSessionWindows:
        """Sessions closed by ``gap`` without records.

        Raises:
            ConfigError: gap not a positive number.
        """
        return cls(check_duration(f"{cls.__name__}.with_gap: gap", gap))

    def assign(self, timestamp: float) -> list[TimeWindow]:  # noqa: D102
        return [TimeWindow(timestamp, timestamp + self.gap)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}.with_gap({self.gap!r})"


class ProcessingTimeSessionWindows(EventTimeSessionWindows):
    """Sessions on the processing clock."""

    is_event_time = False


class GlobalWindows(WindowAssigner):
    """One window per key, ``(-inf, inf)``: it fires only by a ``CountTrigger``."""

    is_event_time = False

    @classmethod
    def create(cls) -> GlobalWindows:
        """The assigner."""
        return cls()

    def assign(self, timestamp: float) -> list[TimeWindow]:  # noqa: D102
        return [_GLOBAL]

    def __repr__(self) -> str:
        return "GlobalWindows.create()"


_GLOBAL = TimeWindow(-math.inf, math.inf)


def merge_windows(
    existing: Iterable[TimeWindow], new: TimeWindow
) -> tuple[TimeWindow, list[TimeWindow]]:
    """Merge ``new`` into a key's session windows (which never intersect each other).

    Returns:
        The merged window, and the existing windows it absorbed (to be merged into it).
    """
    merged = new
    absorbed: list[TimeWindow] = []
    # Absorbing one window may make the cover intersect another: loop until stable.
    pending = list(existing)
    changed = True
    while changed:
        changed = False
        rest = []
        for window in pending:
            if window.intersects(merged):
                merged = merged.cover(window)
                absorbed.append(window)
                changed = True
            else:
                rest.append(window)
        pending = rest
    return merged, absorbed
