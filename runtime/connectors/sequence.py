"""Generated sources: ``NumberSequenceSource`` and ``GeneratorSource``.

``NumberSequenceSource(start, end)`` emits the integers ``start..end`` (inclusive, as in
Flink's ``fromSequence``), split into one range per subtask.

``GeneratorSource(generator, count, records_per_second)`` emits ``generator(i)`` for
``i`` in ``0..count-1`` (or forever if ``count`` is None), like Flink's
``DataGeneratorSource``; ``records_per_second`` limits the rate over all subtasks.

Both keep their position in a ``RangeSplit`` (the next index and the end), so a
checkpoint stores two integers per split.

A reader holds one range per subtask at first, and may hold several after a rescale
(it reads them one after another): it reports them to a split listener for per-split
watermarks (``runtime.tasks.source.SplitAwareReader``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from runtime.tasks.source import SplitListener


class RangeSplit(msgspec.Struct):
    """A range of indices ``[next, end)``."""

    split_id: str
    next: int
    end: int


UNBOUNDED_END = 2**63 - 1
"""An unbounded generator counts up to this (as Flink's does, to Long.MAX_VALUE)."""


def _split_range(start: int, end: int | None, parallelism: int) -> list[list[Any]]:
    if end is None:
        end = UNBOUNDED_END
    total = end - start
    assignment: list[list[Any]] = []
    for i in range(parallelism):
        lo = start + total * i // parallelism
        hi = start + total * (i + 1) // parallelism
        assignment.append([RangeSplit(f"range-{i}", lo, hi)] if hi > lo else [])
    return assignment


class _RangeEnumerator:
    def __init__(self, start: int, end: int | None) -> None:
        self._start = start
        self._end = end

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        return _split_range(self._start, self._end, parallelism)


class _RangeReader:
    """Reads ``RangeSplit``s one after another, mapping indices through ``fn`` if given."""

    def __init__(self, fn: Callable[[int], Any] | None) -> None:
        self._fn = fn
        self._splits: list[RangeSplit] = []
        self.current_split: str | None = None
        self._listener: SplitListener | None = None

    def set_split_listener(self, listener: SplitListener) -> None:
        """Report each split when reading it starts and when it ends.

        One at a time, as Flink's readers are handed splits: queued ranges do not hold
        the watermark back.
        """
        self._listener = listener

    def add_splits(self, splits: Sequence[Any]) -> None:
        for split in splits:
            self._splits.append(msgspec.structs.replace(split))

    def read(self, max_records: int) -> list[Any] | None:
        while self._splits:
            split = self._splits[0]
            if split.next >= split.end:
                self._splits.pop(0)
                if self._listener is not None:
                    self._listener.split_finished(split.split_id)
                continue
            lo = split.next
            hi = min(lo + max_records, split.end)
            split.next = hi
            if self.current_split != split.split_id:
                self.current_split = split.split_id
                if self._listener is not None:
                    self._listener.split_added(split.split_id)
            if self._fn is None:
                return list(range(lo, hi))
            return list(map(self._fn, range(lo, hi)))
        return None

    def snapshot_state(self) -> list[Any]:
        return [msgspec.structs.replace(s) for s in self._splits]

    def close(self) -> None:
        pass


class NumberSequenceSource:
    """The integers from ``start`` to ``end``, both inclusive, spread over the subtasks."""

    def __init__(self, start: int, end: int) -> None:
        for option, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"from_sequence: {option} must be an int, got {value!r}")
        if end < start:
            raise ConfigError(f"from_sequence: end ({end}) must be >= start ({start})")
        self.start = start
        self.end = end

    def create_enumerator(self) -> _RangeEnumerator:
        """Splits ``[start, end]`` into one contiguous range per subtask."""
        return _RangeEnumerator(self.start, self.end + 1)

    def create_reader(self, subtask_index: int) -> _RangeReader:
        """A reader of integer ranges."""
        return _RangeReader(None)


class GeneratorSource:
    """``generator(i)`` for ``i`` in ``0..count-1``, optionally rate limited.

    Args:
        generator: maps an index to a record; must be deterministic for exactly-once
            replay (it is called again for the same index after a restore).
        count: how many records; None for an unbounded source.
        records_per_second: a rate limit over all subtasks; None for no limit.
    """

    def __init__(
        self,
        generator: Callable[[int], Any],
        count: int | None = None,
        records_per_second: float | None = None,
    ) -> None:
        if not callable(generator):
            raise ConfigError(f"generate: generator must be callable, got {generator!r}")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise ConfigError(f"generate: count must be an int >= 0 or None, got {count!r}")
        if records_per_second is not None and (
            isinstance(records_per_second, bool)
            or not isinstance(records_per_second, int | float)
            or not records_per_second > 0
        ):
            raise ConfigError(
                f"generate: records_per_second must be a number > 0 or None, "
                f"got {records_per_second!r}"
            )
        self.generator = generator
        self.count = count
        self.records_per_second = records_per_second

    def create_enumerator(self) -> _RangeEnumerator:
        """Splits ``[0, count)`` into one contiguous range per subtask."""
        return _RangeEnumerator(0, self.count)

    def create_reader(self, subtask_index: int) -> _RangeReader:
        """A reader calling the generator for each index of its ranges."""
        return _RangeReader(self.generator)
