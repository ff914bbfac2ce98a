"""In-memory checkpoint storage: checkpoints that live as long as the process.

The default storage (``storage="memory"``), for tests, examples and jobs that only need
to survive a task failure, not a process crash. The job master creates one per job and
hands it to the checkpoint coordinator (which commits, discards and loads) and to the
subtasks' checkpoint writers (which write state); restore reads it back. It has the
semantics of :class:`~storage.checkpoint.filesystem.FileCheckpointStorage`: the metadata
is kept encoded (and decoded on :meth:`load`), state is verified by size and checksum on
read, a committed checkpoint is immutable, discard is idempotent. Nothing here blocks.
Pointers look like ``memory://<job id>/<n>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from storage.checkpoint.errors import CheckpointNotFoundError, StorageError
from storage.checkpoint.layout import validate_job_id, validate_state_name
from storage.checkpoint.metadata import (
    CheckpointMetadata,
    StateHandle,
    crc32_hex,
    decode_metadata,
    encode_metadata,
    verify_state,
)
from storage.checkpoint.storage import check_commit

__all__ = ["MEMORY_POINTER_SCHEME", "MemoryCheckpointStorage"]

MEMORY_POINTER_SCHEME: Final = "memory://"


class MemoryCheckpointStorage:
    """Checkpoint storage in the process's memory; same contract as the file storage.

    Attributes:
        job_id: The job whose checkpoints it stores.
        description: ``"memory"``, for messages.
    """

    def __init__(self, job_id: str) -> None:
        """Create an empty storage for one job.

        Args:
            job_id: The job's id.

        Raises:
            ValueError: If ``job_id`` is empty or contains a path separator.
        """
        self.job_id = validate_job_id(job_id)
        self.description = "memory"
        self._states: dict[int, dict[str, bytes]] = {}
        self._metadata: dict[int, bytes] = {}

    def pointer(self, checkpoint_id: int) -> str:
        """Return the external pointer of checkpoint ``checkpoint_id``."""
        return f"{MEMORY_POINTER_SCHEME}{self.job_id}/{checkpoint_id}"

    async def initialize(self) -> None:
        """Nothing to create; present for the :class:`CheckpointStorage` protocol."""

    async def write_state(
        self, checkpoint_id: int, name: str, chunks: Iterable[bytes]
    ) -> StateHandle:
        """Store one state file of a pending checkpoint; replaces one of the same name.

        Args:
            checkpoint_id: The checkpoint the state belongs to.
            name: The file's name, unique within the checkpoint.
            chunks: The file's bytes, in order.

        Returns:
            The handle to put in the checkpoint's metadata.

        Raises:
            ValueError: If ``name`` is not a plain file name.
        """
        validate_state_name(name)
        data = b"".join(chunks)
        self._states.setdefault(checkpoint_id, {})[name] = data
        return StateHandle(path=name, size=len(data), checksum=crc32_hex(data))

    async def commit(self, metadata: CheckpointMetadata) -> str:
        """Complete a checkpoint by storing its metadata.

        Args:
            metadata: The checkpoint's metadata.

        Returns:
            The checkpoint's pointer, ``memory://<job id>/<n>``.

        Raises:
            StorageError: If the checkpoint is already complete.
            ValueError: If the metadata belongs to another job or has another version.
        """
        check_commit(metadata, self.job_id)
        checkpoint_id = metadata.checkpoint_id
        if checkpoint_id in self._metadata:
            raise StorageError(
                f"checkpoint {self.pointer(checkpoint_id)} is already complete; a completed "
                f"checkpoint is immutable, commit under a new checkpoint id"
            )
        self._metadata[checkpoint_id] = encode_metadata(metadata)
        return self.pointer(checkpoint_id)

    async def discard(self, checkpoint_id: int) -> None:
        """Forget a checkpoint, pending or completed, and its state. Idempotent."""
        self._metadata.pop(checkpoint_id, None)
        self._states.pop(checkpoint_id, None)

    async def record_notified(self, checkpoint_id: int, pointer: str) -> None:
        """Nothing to keep: memory checkpoints do not outlive the process."""

    async def read_state(self, pointer: str, handle: StateHandle) -> bytes:
        """Return the bytes of one state file of a checkpoint, verified.

        Args:
            pointer: The checkpoint's pointer.
            handle: The state file's handle, from the checkpoint's metadata.

        Returns:
            The file's bytes.

        Raises:
            CheckpointNotFoundError: If the checkpoint or the file does not exist.
            CorruptCheckpointError: If the size or checksum does not match the handle.
        """
        checkpoint_id = self._parse(pointer)
        location = f"{self.pointer(checkpoint_id)}/{handle.path}"
        data = self._states.get(checkpoint_id, {}).get(handle.path)
        if data is None:
            raise CheckpointNotFoundError(location, "checkpoint state file")
        verify_state(handle, len(data), crc32_hex(data), location)
        return data

    async def load(self, pointer: str) -> CheckpointMetadata:
        """Return the metadata of a completed checkpoint.

        Raises:
            CheckpointNotFoundError: If there is no completed checkpoint at ``pointer``.
            CorruptCheckpointError: If its metadata fails to verify.
        """
        checkpoint_id = self._parse(pointer)
        data = self._metadata.get(checkpoint_id)
        if data is None:
            raise CheckpointNotFoundError(pointer, "checkpoint")
        return decode_metadata(data, pointer)

    def list_completed(self) -> list[int]:
        """Return the ids of the completed checkpoints, ascending. Never blocks."""
        return sorted(self._metadata)

    def _parse(self, pointer: str) -> int:
        """Return the checkpoint id of one of this storage's pointers."""
        prefix = f"{MEMORY_POINTER_SCHEME}{self.job_id}/"
        number = pointer.removeprefix(prefix) if pointer.startswith(prefix) else ""
        if not number.isascii() or not number.isdigit():
            raise CheckpointNotFoundError(pointer, "checkpoint")
        return int(number)
