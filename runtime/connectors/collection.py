"""``CollectionSource``: a bounded, non-parallel source over an in-memory sequence.

``env.from_collection(items)`` uses it. One split holds the index of the next item,
so a checkpoint stores a single integer and a restored reader resumes after it. The
reader reports its split (``runtime.tasks.source.SplitAwareReader``), so a watermark
strategy on it works as on any source with splits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from runtime.tasks.source import SplitListener


class CollectionSplit(msgspec.Struct):
    """The one split of a collection: the index of the next item to read."""

    split_id: str
    next_index: int = 0


class CollectionSource:
    """Reads ``items`` in order, in one subtask.

    Args:
        items: any iterable; it is copied into a list when the source is made.
    """

    max_source_parallelism = 1

    def __init__(self, items: Iterable[Any]) -> None:
        self.items: list[Any] = list(items)

    def create_enumerator(self) -> _CollectionEnumerator:
        """The enumerator giving the single split to subtask 0."""
        return _CollectionEnumerator()

    def create_reader(self, subtask_index: int) -> CollectionReader:
        """A reader over the items."""
        return CollectionReader(self.items)


class _CollectionEnumerator:
    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        assignment[0].append(CollectionSplit("collection-0"))
        return assignment


class CollectionReader:
    """Reads a list from the position its split holds."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items
        self._split: CollectionSplit | None = None
        self.current_split: str | None = None
        self._listener: SplitListener | None = None

    def set_split_listener(self, listener: SplitListener) -> None:
        """Report the split (if any)."""
        self._listener = listener
        if self._split is not None:
            listener.split_added(self._split.split_id)

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Take the collection's split (at most one)."""
        for split in splits:
            self._split = msgspec.structs.replace(split)
            self.current_split = split.split_id
            if self._listener is not None:
                self._listener.split_added(split.split_id)

    def read(self, max_records: int) -> list[Any] | None:
        """The next ``max_records`` items, or None when all were read."""
        split = self._split
        if split is None or split.next_index >= len(self._items):
            return None
        start = split.next_index
        end = min(start + max_records, len(self._items))
        split.next_index = end
        return self._items[start:end]

    def snapshot_state(self) -> list[Any]:
        """The split with the index of the next item."""
        return [] if self._split is None else [msgspec.structs.replace(self._split)]

    def close(self) -> None:
        """Nothing to release."""
