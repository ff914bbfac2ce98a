"""The ``shared/`` folder of a file-system checkpoint storage, and its registry.

:class:`SharedFiles` belongs to a :class:`~storage.checkpoint.filesystem.FileCheckpointStorage`
(its ``shared_files`` attribute). Subtasks of RocksDB jobs upload new SST files with
:meth:`~SharedFiles.upload` and refer to files uploaded before with
:meth:`~SharedFiles.reuse`, in the asynchronous part of a checkpoint; the storage's
``commit`` calls :meth:`~SharedFiles.register` and its ``discard``
:meth:`~SharedFiles.release`, which deletes the files that no checkpoint uses any more
(see :mod:`storage.checkpoint.shared_registry`); its ``initialize`` calls
:meth:`~SharedFiles.rebuild`, which registers the checkpoints found on disk (the state of
a restarted process) and deletes files none of them uses (left by a crash).

Names are chosen by the uploader and never reused (a random prefix), so a file that is
being deleted is never confused with a new upload of the same SST. Every blocking step
(copying, checksumming, deleting, reading metadata) runs in one worker-thread hop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zlib
from pathlib import Path
from typing import Final

import anyio.to_thread

from storage.checkpoint.errors import StorageError, StorageNotWritableError
from storage.checkpoint.metadata import CheckpointMetadata, SharedFileHandle
from storage.checkpoint.recovery import completed_checkpoint_ids, load_metadata_file
from storage.checkpoint.shared_registry import SharedStateRegistry

__all__ = ["SharedFiles", "copy_with_crc"]

_COPY_BLOCK: Final = 1 << 20


def copy_with_crc(source: Path, target: Path, *, durable: bool = True) -> tuple[int, str]:
    """Copy ``source`` to ``target``; return its size and crc32. Blocks.

    Args:
        source: The file to copy.
        target: The copy.
        durable: Whether to fsync the copy (uploads); a restore's scratch copy need not.
    """
    size = 0
    crc = 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(_COPY_BLOCK):
            crc = zlib.crc32(block, crc)
            size += len(block)
            writer.write(block)
        if durable:
            writer.flush()
            os.fsync(writer.fileno())
    return size, f"{crc:08x}"


def shared_names(metadata: CheckpointMetadata) -> set[str]:
    """The shared files the checkpoint's metadata names."""
    return {
        shared.name
        for operator in metadata.operators
        for subtask in operator.subtasks
        for shared in subtask.shared
    }


class SharedFiles:
    """The job's ``shared/`` folder and the reference counts of its files.

    Args:
        folder: ``<job dir>/shared``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.registry = SharedStateRegistry()

    async def upload(self, checkpoint_id: int, source: Path, name: str) -> SharedFileHandle:
        """Copy ``source`` into the folder as ``name``, for pending ``checkpoint_id``.

        Raises:
            StorageNotWritableError: If the file cannot be written; names it.
        """
        target = self.folder / name
        # Referenced before the copy: a discard of the checkpoint meanwhile deletes it.
        self.registry.reference(checkpoint_id, name, new=True)
        try:
            size, checksum = await anyio.to_thread.run_sync(copy_with_crc, source, target)
        except OSError as error:
            raise StorageNotWritableError(str(target), error) from error
        return SharedFileHandle(name, size, checksum)

    def reuse(self, checkpoint_id: int, handle: SharedFileHandle) -> bool:
        """Refer to a file uploaded before; False if it is gone (upload it again)."""
        return self.registry.reference(checkpoint_id, handle.name)

    def register(self, metadata: CheckpointMetadata) -> None:
        """A checkpoint completed: it uses the shared files its metadata names."""
        self.registry.register(metadata.checkpoint_id, shared_names(metadata))

    async def release(self, checkpoint_id: int) -> list[str]:
        """A checkpoint was discarded: delete the files no checkpoint uses any more.

        Returns:
            The names of the deleted files.
        """
        unused = self.registry.release(checkpoint_id)
        if unused:
            await anyio.to_thread.run_sync(self._delete, unused)
        return unused

    def _delete(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()

    async def rebuild(self, job_dir: Path) -> list[str]:
        """Register every completed checkpoint under ``job_dir``; delete unused files.

        A checkpoint whose metadata does not load is skipped (it is never restored);
        files only it used are deleted. Call when no checkpoint is pending.

        Returns:
            The names of the files deleted.
        """
        return await anyio.to_thread.run_sync(self._rebuild, job_dir)

    def _rebuild(self, job_dir: Path) -> list[str]:
        for checkpoint_id in completed_checkpoint_ids(job_dir):
            if checkpoint_id in self.registry.committed():
                continue
            try:
                metadata = load_metadata_file(job_dir / f"chk-{checkpoint_id}")
            except StorageError:
                continue
            self.register(metadata)
        if not self.folder.is_dir():
            return []
        used = self.registry.files()
        orphans = sorted(name for name in os.listdir(self.folder) if name not in used)
        self._delete(orphans)
        return orphans


def remove_tree(folder: Path) -> None:
    """Delete ``folder`` and everything in it, if it exists. Blocks."""
    shutil.rmtree(folder, ignore_errors=True)
