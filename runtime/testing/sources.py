"""``TaggedSequenceSource``: a real ``Source`` of self-checking, numbered records.

The source has ``splits`` splits named ``<name>/0``, ``<name>/1``...; split ``i`` holds
the sequence numbers ``0..records_per_split-1`` and its records are
``Tagged(split, seq, key, payload)`` (``runtime.testing.tagged``). It is a source like
any other (``runtime.tasks.source``): the enumerator deals the splits round robin
over the reader subtasks; a reader reads one batch of one split per ``read``, taking
turns between its splits, and reports each split's next sequence number as its
position (``snapshot_state``), which checkpoints store and restores give back. So after
a restore a split resumes exactly where the checkpoint left it, and every record the
source emits can be told apart and checked for loss, duplication and order downstream.

``expected()`` is the multiset of record ids the source emits in a run without
failures: what the validating sinks compare their output with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from runtime.errors import ConfigError
from runtime.testing.tagged import RecordId, make_tagged


class TaggedSplit(msgspec.Struct):
    """One split and its position: the next sequence number and the end (exclusive)."""

    split_id: str
    next: int
    end: int


class TaggedSplitEnumerator:
    """Deals the splits round robin: split ``i`` goes to reader ``i % parallelism``."""

    def __init__(self, split_ids: Sequence[str], records_per_split: int) -> None:
        self._split_ids = list(split_ids)
        self._end = records_per_split

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        """The splits of each reader subtask."""
        assignment: list[list[Any]] = [[] for _ in range(parallelism)]
        for index, split_id in enumerate(self._split_ids):
            assignment[index % parallelism].append(TaggedSplit(split_id, 0, self._end))
        return assignment


class TaggedSequenceReader:
    """Reads its splits in turns, one batch of one split per ``read``."""

    def __init__(self, keys: int) -> None:
        self._keys = keys
        self._splits: list[TaggedSplit] = []
        self._turn = 0

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Take the splits (fresh from the enumerator, or restored with positions)."""
        for split in splits:
            if isinstance(split, TaggedSplit):
                self._splits.append(msgspec.structs.replace(split))
            else:  # decoded without its type: a mapping or a sequence of the fields
                fields = (
                    (split["split_id"], split["next"], split["end"])
                    if isinstance(split, dict)
                    else tuple(split)
                )
                self._splits.append(TaggedSplit(*fields))

    def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` records of the next split with records left."""
        live = [split for split in self._splits if split.next < split.end]
        if not live:
            return None
        split = live[self._turn % len(live)]
        self._turn += 1
        lo = split.next
        hi = min(lo + max_records, split.end)
        split.next = hi
        keys, split_id = self._keys, split.split_id
        return [make_tagged(split_id, seq, keys) for seq in range(lo, hi)]

    def snapshot_state(self) -> list[Any]:
        """Every split with its next sequence number (read-out splits too)."""
        return [msgspec.structs.replace(split) for split in self._splits]

    def close(self) -> None:
        """Nothing to release."""


class TaggedSequenceSource:
    """``splits`` splits of ``records_per_split`` numbered, self-checking records each.

    Args:
        splits: how many splits (>= 1); more splits than subtasks give a subtask
            several, which it reads in turns.
        records_per_split: records in each split (>= 0).
        keys: how many distinct keys the records spread over (>= 1).
        name: the prefix of the split ids; give each tagged source of a job its own.
        records_per_second: a rate limit over all subtasks (None: as fast as it goes).
            A limit makes the input last long enough for checkpoints to happen
            between its records.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        splits: int,
        records_per_split: int,
        *,
        keys: int = 8,
        name: str = "s",
        records_per_second: float | None = None,
    ) -> None:
        for option, value, minimum in (
            ("splits", splits, 1),
            ("records_per_split", records_per_split, 0),
            ("keys", keys, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(
                    f"TaggedSequenceSource: {option} must be an int >= {minimum}, got {value!r}"
                )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"TaggedSequenceSource: name must be a non-empty str, got {name!r}")
        if records_per_second is not None and (
            isinstance(records_per_second, bool)
            or not isinstance(records_per_second, int | float)
            or not records_per_second > 0
        ):
            raise ConfigError(
                f"TaggedSequenceSource: records_per_second must be a number > 0 or None, "
                f"got {records_per_second!r}"
            )
        self.splits = splits
        self.records_per_split = records_per_split
        self.keys = keys
        self.name = name
        self.records_per_second = records_per_second

    @property
    def split_ids(self) -> list[str]:
        """The ids of the splits, in order."""
        return [f"{self.name}/{index}" for index in range(self.splits)]

    @property
    def total_records(self) -> int:
        """How many records a run without failures emits."""
        return self.splits * self.records_per_split

    def expected(self, copies: int = 1) -> Counter[RecordId]:
        """Each record id once, for each copy number in ``0..copies-1``."""
        return Counter(
            {
                (split_id, seq, copy): 1
                for split_id in self.split_ids
                for seq in range(self.records_per_split)
                for copy in range(copies)
            }
        )

    def create_enumerator(self) -> TaggedSplitEnumerator:
        """Deals the splits round robin over the subtasks."""
        return TaggedSplitEnumerator(self.split_ids, self.records_per_split)

    def create_reader(self, subtask_index: int) -> TaggedSequenceReader:
        """A reader of tagged splits."""
        return TaggedSequenceReader(self.keys)
