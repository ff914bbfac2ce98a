"""The ``Source`` protocol: splits, an enumerator that assigns them, readers that read them.

After Flink's FLIP-27 sources, reduced to what an in-process runtime needs:

* A **split** is a piece of the input with a position: a file and a byte offset, a
  range of numbers and the next one. It has a ``split_id``. Splits are msgspec
  Structs where possible, so checkpoints can store them without pickle.
* The source's **enumerator** assigns the splits to the reader subtasks when the job
  starts (``assign_splits(parallelism)``).
* A **reader** (one per source subtask) is given its splits, returns records in batches
  (``read(max_records)``: a non-empty list, ``[]`` when nothing is available yet, or
  None at the end of its input; plain or ``async def``), and reports its position
  (``snapshot_state()``: its splits with their current offsets). A checkpoint stores
  that position, and a restored reader is given those splits back.

A source subtask calls ``read`` between control messages, so a checkpoint trigger is
always handled between two batches: the position it snapshots is exact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class SourceSplit(Protocol):
    """A piece of a source's input with its own position."""

    @property
    def split_id(self) -> str:
        """Unique within the source."""
        ...


@runtime_checkable
class SourceReader(Protocol[T_co]):
    """Reads the splits assigned to one source subtask."""

    def add_splits(self, splits: Sequence[Any]) -> None:
        """Take ownership of ``splits`` (at start, or restored from a checkpoint)."""
        ...

    def read(self, max_records: int) -> list[Any] | Awaitable[list[Any] | None] | None:
        """Up to ``max_records`` records; ``[]`` if none yet; None at the end of input."""
        ...

    def snapshot_state(self) -> list[Any]:
        """The reader's splits with their current positions (for a checkpoint)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class SplitEnumerator(Protocol):
    """Assigns a source's splits to its reader subtasks."""

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        """The splits of each reader subtask, indexed by subtask."""
        ...


@runtime_checkable
class Source(Protocol[T_co]):
    """A source of records: creates the enumerator and the readers.

    Attributes a source may define (read with ``getattr``):
        max_source_parallelism: int, the most subtasks it can use (1 for non-parallel).
        records_per_second: float, a rate limit over all its subtasks.
    """

    def create_enumerator(self) -> SplitEnumerator:
        """Make the enumerator (once per job run)."""
        ...

    def create_reader(self, subtask_index: int) -> SourceReader[T_co]:
        """Make the reader of one subtask."""
        ...
