"""The shared-state registry: which checkpoints use each file of the ``shared/`` folder.

Incremental checkpoints refer to files uploaded by earlier ones, so a file in the job's
``shared/`` folder may be used by many checkpoints, and may be deleted only when none of
the checkpoints that still matter uses it. A pure, synchronous object (no I/O) owned by
the file-system checkpoint storage (:mod:`storage.checkpoint.shared_files`), which
calls it from the event loop:

* a subtask that uploads a file, or refers to one uploaded before, calls
  :meth:`~SharedStateRegistry.reference` for its pending checkpoint (a refused
  reference means the file is gone or going: upload it again, under a new name);
* ``commit`` calls :meth:`~SharedStateRegistry.register` with the files the checkpoint's
  metadata names (also how the registry is rebuilt after a restart, from the metadata of
  the checkpoints found on disk);
* ``discard`` (of a subsumed or an aborted checkpoint) calls
  :meth:`~SharedStateRegistry.release`, which returns the files no checkpoint uses any
  more; the storage deletes them.

A file is referenced by a set of checkpoint ids (its reference count is the set's size),
so a repeated reference or release changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SharedStateRegistry"]


@dataclass(slots=True)
class SharedStateRegistry:
    """Reference counts of shared files, by the checkpoints that use them."""

    _users: dict[str, set[int]] = field(default_factory=dict)
    _files: dict[int, set[str]] = field(default_factory=dict)
    _committed: set[int] = field(default_factory=set)

    def reference(self, checkpoint_id: int, name: str, *, new: bool = False) -> bool:
        """Record that pending checkpoint ``checkpoint_id`` uses shared file ``name``.

        Args:
            checkpoint_id: The pending checkpoint.
            name: The file's name in the shared folder.
            new: Whether the file was just uploaded by this checkpoint (always accepted);
                otherwise it is an old file, accepted only if some checkpoint still uses
                it (so it has not been deleted and is not being deleted).

        Returns:
            Whether the reference was recorded; False means: upload the file again.
        """
        users = self._users.get(name)
        if users is None:
            if not new:
                return False
            users = self._users[name] = set()
        users.add(checkpoint_id)
        self._files.setdefault(checkpoint_id, set()).add(name)
        return True

    def register(self, checkpoint_id: int, names: Iterable[str]) -> None:
        """Checkpoint ``checkpoint_id`` completed and uses ``names`` (from its metadata)."""
        for name in names:
            self.reference(checkpoint_id, name, new=True)
        self._committed.add(checkpoint_id)

    def release(self, checkpoint_id: int) -> list[str]:
        """Checkpoint ``checkpoint_id`` is discarded: drop its references.

        Returns:
            The files no checkpoint uses any more, sorted; the caller deletes them. Each
            is returned once (the registry forgets it).
        """
        self._committed.discard(checkpoint_id)
        unused = []
        for name in self._files.pop(checkpoint_id, ()):
            users = self._users[name]
            users.discard(checkpoint_id)
            if not users:
                del self._users[name]
                unused.append(name)
        return sorted(unused)

    def unreference(self, checkpoint_id: int, name: str) -> bool:
        """Drop one reference of ``checkpoint_id`` (a changelog backend's pin) to ``name``.

        Returns:
            Whether no checkpoint uses ``name`` any more; the caller deletes it then
            (the registry forgets it).
        """
        files = self._files.get(checkpoint_id)
        if files is not None:
            files.discard(name)
            if not files:
                del self._files[checkpoint_id]
        users = self._users.get(name)
        if users is None:
            return False
        users.discard(checkpoint_id)
        if users:
            return False
        del self._users[name]
        return True

    def users(self, name: str) -> set[int]:
        """The checkpoints that use ``name`` (a copy; empty if unknown)."""
        return set(self._users.get(name, ()))

    def files(self) -> set[str]:
        """Every file some checkpoint uses."""
        return set(self._users)

    def committed(self) -> set[int]:
        """The completed checkpoints registered and not released."""
        return set(self._committed)
