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

**Per-split watermarks** (Flink's ``SourceOutput`` per split): a reader that reads
several splits may say which split each batch came from, so that each split gets its
own watermark generator (``runtime.time.split_watermarks``). Such a reader is a
``SplitAwareReader``: every batch ``read`` returns holds records of one split, named by
``current_split`` after the read; given a ``SplitListener`` (``set_split_listener``), it
reports every split that counts for the watermark from now on (``split_added``: splits
it reads side by side at once; splits it reads one after another, as files, when it
starts each, as Flink hands its readers one split at a time) and every split whose
last record it handed out (``split_finished``). A reader without it keeps one
generator for the whole subtask. The source subtask asks for the listener only when a
watermark strategy is chained after the source, so a reader pays nothing per record
either way.
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


class SplitListener(Protocol):
    """Told which splits a reader holds (Flink's ``ReaderOutput`` split outputs)."""

    def split_added(self, split_id: str) -> None:
        """``split_id`` counts for the watermark from now on (the reader reads it)."""
        ...

    def split_finished(self, split_id: str) -> None:
        """The reader handed out ``split_id``'s last record."""
        ...


@runtime_checkable
class SplitAwareReader(Protocol):
    """The optional part of a reader that reports its splits (see the module docstring).

    Attributes:
        current_split: the split id of the records the last ``read`` returned.
    """

    current_split: str | None

    def set_split_listener(self, listener: SplitListener) -> None:
        """Report the splits held now to ``listener``, and later changes as they happen.

        Called once, before the first ``read``, on the subtask's loop.
        """
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
