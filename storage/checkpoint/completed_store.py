"""The completed-checkpoint store: which completed checkpoints are retained.

The checkpoint coordinator adds each checkpoint it completes (after
:meth:`CheckpointStorage.commit <storage.checkpoint.storage.CheckpointStorage.commit>`
returned its pointer) and discards, through the storage, the ids that :meth:`add`
returns: Flink's subsumption, which keeps the ``max_retained`` newest. On recovery the job
master asks it for :meth:`~CompletedCheckpointStore.latest`. A pure, synchronous object
(no I/O, no event loop); only the coordinator's actor touches it.

"Newest" means highest id, so the store stays right even if checkpoints are added out of
order (e.g. when it is rebuilt from the folders found on disk): a checkpoint older than
every retained one, added to a full store, is subsumed at once and returned.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

__all__ = ["CompletedCheckpointStore", "RetainedCheckpoint"]


class RetainedCheckpoint(NamedTuple):
    """A completed checkpoint the store retains.

    Attributes:
        checkpoint_id: The checkpoint's id.
        pointer: Its external pointer, as returned by ``commit``.
    """

    checkpoint_id: int
    pointer: str


class CompletedCheckpointStore:
    """Keeps the ``max_retained`` newest completed checkpoints; says which to discard."""

    __slots__ = ("_ids", "_max_retained", "_pointers")

    def __init__(self, max_retained: int) -> None:
        """Create an empty store.

        Args:
            max_retained: How many completed checkpoints to keep, >= 1 (Flink's
                ``state.checkpoints.num-retained``).

        Raises:
            ValueError: If ``max_retained`` is not an int >= 1.
        """
        if isinstance(max_retained, bool) or not isinstance(max_retained, int):
            raise ValueError(f"max_retained must be an int >= 1, got {max_retained!r}")
        if max_retained < 1:
            raise ValueError(f"max_retained must be >= 1, got {max_retained}")
        self._max_retained = max_retained
        self._ids: list[int] = []  # ascending
        self._pointers: dict[int, str] = {}

    @property
    def max_retained(self) -> int:
        """How many completed checkpoints the store keeps."""
        return self._max_retained

    def add(self, checkpoint_id: int, pointer: str) -> list[int]:
        """Record a completed checkpoint and return the ids it subsumes.

        Adding the same id with the same pointer again changes nothing (a repeated
        completion notice) and returns ``[]``.

        Args:
            checkpoint_id: The completed checkpoint's id.
            pointer: Its external pointer, as returned by ``commit``.

        Returns:
            The ids no longer retained, oldest first; the caller discards them, each is
            returned exactly once. May include ``checkpoint_id`` itself if it is older
            than every retained checkpoint and the store is full.

        Raises:
            ValueError: If ``checkpoint_id`` is already retained with another pointer.
        """
        known = self._pointers.get(checkpoint_id)
        if known is not None:
            if known == pointer:
                return []
            raise ValueError(
                f"checkpoint {checkpoint_id} is already retained at {known!r}, not "
                f"{pointer!r}; a completed checkpoint is immutable, use a new checkpoint id"
            )
        bisect.insort(self._ids, checkpoint_id)
        self._pointers[checkpoint_id] = pointer
        excess = len(self._ids) - self._max_retained
        if excess <= 0:
            return []
        subsumed = self._ids[:excess]
        del self._ids[:excess]
        for old in subsumed:
            del self._pointers[old]
        return subsumed

    def latest(self) -> RetainedCheckpoint | None:
        """Return the newest retained checkpoint, or None if there is none."""
        if not self._ids:
            return None
        newest = self._ids[-1]
        return RetainedCheckpoint(newest, self._pointers[newest])

    def all(self) -> list[RetainedCheckpoint]:
        """Return the retained checkpoints, oldest first."""
        return [RetainedCheckpoint(i, self._pointers[i]) for i in self._ids]

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"CompletedCheckpointStore(max_retained={self._max_retained}, ids={self._ids})"
