"""The functions a windowed stream applies: ``AggregateFunction`` and ``ProcessWindowFunction``.

``AggregateFunction`` is Flink's incremental aggregation (``create_accumulator``,
``add``, ``get_result``, ``merge`` for session windows). ``ProcessWindowFunction``
gets a window's key, a ``WindowContext`` and its elements (or the one pre-aggregated
value when combined with ``reduce``/``aggregate``), and returns an iterable of records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from runtime.tasks.functions import Function

__all__ = ["AggregateFunction", "ProcessWindowFunction", "WindowContext"]

IN = TypeVar("IN")
ACC = TypeVar("ACC")
OUT = TypeVar("OUT")


class AggregateFunction(Function, Generic[IN, ACC, OUT]):
    """Incremental aggregation of a window's records (plain ``def`` methods)."""

    def create_accumulator(self) -> ACC:
        """A new, empty accumulator."""
        raise NotImplementedError

    def add(self, value: IN, accumulator: ACC) -> ACC:
        """Add one record; return the accumulator (may be the same object)."""
        raise NotImplementedError

    def get_result(self, accumulator: ACC) -> OUT:
        """The window's result."""
        raise NotImplementedError

    def merge(self, a: ACC, b: ACC) -> ACC:
        """Merge two accumulators (session windows)."""
        raise NotImplementedError


class WindowContext:
    """What a ``ProcessWindowFunction`` sees besides the elements.

    Attributes:
        window: the ``(start, end)`` of the window firing.
        current_watermark: the operator's event time.
        current_processing_time: ``time.time()`` at the firing.
    """

    __slots__ = ("current_processing_time", "current_watermark", "window")

    def __init__(self, window: tuple[float, float], watermark: float, now: float) -> None:
        self.window = window
        self.current_watermark = watermark
        self.current_processing_time = now


class ProcessWindowFunction(Function, Generic[IN, OUT]):
    """Called once per window firing with all of the window's elements."""

    def process(self, key: Any, context: WindowContext, elements: list[IN]) -> Iterable[OUT] | None:
        """Return the records for this window."""
        raise NotImplementedError
