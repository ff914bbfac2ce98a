"""Windows: assigners, window functions and the window operator (``key_by().window()``)."""

from runtime.windows.assigners import (
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WindowAssigner,
)
from runtime.windows.functions import AggregateFunction, ProcessWindowFunction, WindowContext

__all__ = [
    "AggregateFunction",
    "EventTimeSessionWindows",
    "ProcessWindowFunction",
    "ProcessingTimeSessionWindows",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeWindow",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "WindowAssigner",
    "WindowContext",
]
