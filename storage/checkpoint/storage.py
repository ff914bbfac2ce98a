"""``CheckpointStorage``: where checkpoints are written, completed, discarded and read.

The seam between the checkpointing runtime and the place checkpoints live (Flink's
``CheckpointStorage`` and ``CheckpointStorageLocation``, folded into one object). The job
master creates one per job (:func:`~storage.checkpoint.resolve.resolve_storage`) and
calls :meth:`~CheckpointStorage.initialize`; the subtasks' checkpoint writers call
:meth:`~CheckpointStorage.write_state` in the asynchronous part of a checkpoint; the
checkpoint coordinator calls :meth:`~CheckpointStorage.commit` when every subtask has
acknowledged, and :meth:`~CheckpointStorage.discard` for aborted and subsumed
checkpoints; restore calls :meth:`~CheckpointStorage.load` and
:meth:`~CheckpointStorage.read_state`. Two implementations:
:class:`~storage.checkpoint.memory.MemoryCheckpointStorage` and
:class:`~storage.checkpoint.filesystem.FileCheckpointStorage`.

The life of checkpoint ``n``: state files are written into it (pending); ``commit``
writes its metadata last and atomically (complete, immutable, restorable); ``discard``
deletes it (aborted or subsumed). A checkpoint without metadata is never restored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from storage.checkpoint.metadata import CheckpointMetadata, StateHandle

__all__ = ["CheckpointStorage", "check_commit"]


@runtime_checkable
class CheckpointStorage(Protocol):
    """Where a job's checkpoints live.

    Calls are made from the event loop; ``async`` ones may wait on worker threads, and
    plain ones never block for long. Different checkpoints may be written concurrently,
    and different state files of one checkpoint too; ``commit`` and ``discard`` of one
    checkpoint are called by the coordinator alone, after its writes have finished.

    Attributes:
        job_id: The job whose checkpoints this stores.
        description: Where they are, for messages: ``"memory"`` or the job's folder.
    """

    job_id: str
    description: str

    async def initialize(self) -> None:
        """Prepare the storage (the job's folders), before the first checkpoint.

        Raises:
            StorageNotWritableError: If the storage cannot be written; names the path.
        """
        ...

    async def write_state(
        self, checkpoint_id: int, name: str, chunks: Iterable[bytes]
    ) -> StateHandle:
        """Write one state file of pending checkpoint ``checkpoint_id``.

        Writes ``chk-<n>/<name>`` from ``chunks`` in few large writes. If cancelled, a
        partial file may remain; it is deleted with the checkpoint by ``discard``.

        Args:
            checkpoint_id: The checkpoint the state belongs to.
            name: The file's name, unique within the checkpoint; writing a name again
                replaces the file.
            chunks: The file's bytes, in order (e.g. encoded state frames).

        Returns:
            The file's handle: path relative to the checkpoint's folder, size, crc32.

        Raises:
            StorageNotWritableError: If the file cannot be written; names it.
            ValueError: If ``name`` is not a plain file name.
        """
        ...

    async def commit(self, metadata: CheckpointMetadata) -> str:
        """Complete a checkpoint: write its metadata, last and atomically.

        Args:
            metadata: The checkpoint's metadata, referring to files written by
                ``write_state``.

        Returns:
            The checkpoint's external pointer, for ``load`` and ``read_state``.

        Raises:
            StorageError: If the checkpoint is already complete, or (as
                :class:`StorageNotWritableError`) the metadata cannot be written.
            ValueError: If the metadata is of another job or another format version.
        """
        ...

    async def discard(self, checkpoint_id: int) -> None:
        """Delete checkpoint ``checkpoint_id`` entirely, pending or complete. Idempotent.

        Raises:
            StorageNotWritableError: If it cannot be deleted; names the folder.
        """
        ...

    async def record_notified(self, checkpoint_id: int, pointer: str) -> None:
        """Record that the tasks were told checkpoint ``checkpoint_id`` completed.

        Recovery never goes back past it silently (two-phase-commit sinks may have
        committed its output). Monotonic; best effort (errors are not raised).
        """
        ...

    async def read_state(self, pointer: str, handle: StateHandle) -> bytes | memoryview:
        """Read one state file of a completed checkpoint, verified by size and crc32.

        Args:
            pointer: The checkpoint's pointer (from ``commit``, or a savepoint's path).
            handle: The file's handle, from the checkpoint's metadata.

        Returns:
            The file's bytes (a read-only memoryview where that saves a copy).

        Raises:
            CheckpointNotFoundError: If the file does not exist; names it.
            CorruptCheckpointError: If its size or checksum does not match; names it.
        """
        ...

    async def load(self, pointer: str) -> CheckpointMetadata:
        """Read and verify the metadata of a completed checkpoint or savepoint.

        Raises:
            CheckpointNotFoundError: If there is no metadata at ``pointer``.
            CorruptCheckpointError: If it fails to decode or verify; names the file.
        """
        ...

    def list_completed(self) -> list[int]:
        """Return the ids of the checkpoints that have metadata (valid or not), ascending.

        The file storage scans the job's folder: a short blocking call, meant for
        startup and recovery, not for the hot path.
        """
        ...


def check_commit(metadata: CheckpointMetadata, job_id: str) -> None:
    """Check that ``metadata`` may be committed to the storage of job ``job_id``.

    Raises:
        ValueError: If the metadata belongs to another job.
    """
    if metadata.job_id != job_id:
        raise ValueError(
            f"cannot commit checkpoint {metadata.checkpoint_id} of job {metadata.job_id!r} "
            f"to the checkpoint storage of job {job_id!r}; use that job's storage"
        )
