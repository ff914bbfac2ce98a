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
from storage.checkpoint.layout import (
    METADATA_FILE,
    SHARED_DIR,
    TASK_OWNED_DIR,
    parse_checkpoint_dir_name,
)
from storage.checkpoint.metadata import CheckpointMetadata, SharedFileHandle
from storage.checkpoint.scan import completed_checkpoint_ids, load_metadata_file
from storage.checkpoint.shared_registry import SharedStateRegistry

__all__ = [
    "SharedFiles",
    "copy_with_crc",
    "find_orphans",
    "incomplete_checkpoints",
    "remove_orphans",
    "write_batch",
]

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


def _copy_into_folder(source: Path, target: Path) -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)  # created by the first upload
    return copy_with_crc(source, target)


def write_batch(
    copies: list[tuple[Path, Path]],
    bundle: tuple[Path, list[Path]] | None,
    folder: Path,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Copy files and write a bundle of small files, then sync them all. Blocks.

    Each file is written without a sync, then every one is ``fsync``-ed and, if any
    copy was made, ``folder`` (the copies' folder) too: one pass of waits at the end
    instead of one per file, while the kernel writes the earlier files back during the
    later writes.

    Returns:
        ``(size, crc32)`` of each copy, and of each small file of the bundle.

    Raises:
        StorageNotWritableError: If a file cannot be written; names it.
    """
    written: list[Path] = []
    copied: list[tuple[int, str]] = []
    parts: list[tuple[int, str]] = []
    target = folder
    try:
        if copies:
            folder.mkdir(parents=True, exist_ok=True)  # created by the first upload
        for source, target in copies:
            copied.append(copy_with_crc(source, target, durable=False))
            written.append(target)
        if bundle is not None:
            target, smalls = bundle
            contents = [path.read_bytes() for path in smalls]
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as writer:
                for data in contents:
                    writer.write(data)
                    parts.append((len(data), f"{zlib.crc32(data):08x}"))
            written.append(target)
        for target in written:
            descriptor = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if copies:
            target = folder
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(descriptor)  # the copies' names
            finally:
                os.close(descriptor)
    except OSError as error:
        raise StorageNotWritableError(str(target), error) from error
    return copied, parts


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
            size, checksum = await anyio.to_thread.run_sync(_copy_into_folder, source, target)
        except OSError as error:
            raise StorageNotWritableError(str(target), error) from error
        return SharedFileHandle(name, size, checksum)

    async def upload_batch(
        self,
        checkpoint_id: int,
        sources: list[tuple[Path, str]],
        bundle: tuple[Path, list[Path]] | None = None,
    ) -> tuple[list[SharedFileHandle], list[tuple[int, str]]]:
        """Copy several files into the folder, and write a bundle, in one worker-thread hop.

        Every file is written first and synced after (:func:`write_batch`), so the
        writes of the later files overlap the write-back of the earlier ones, and the
        folder is synced once: the files are durable when this returns (the checkpoint's
        ``_metadata`` is written after).

        Args:
            checkpoint_id: The pending checkpoint that uses the files.
            sources: ``(file to copy, name in the folder)`` pairs.
            bundle: ``(target, small files)``: the small files' contents, one after the
                other, written to ``target`` (in the checkpoint's folder; the storage's
                ``commit`` syncs that folder).

        Returns:
            The handles of the copies, and ``(size, crc32)`` of each small file.

        Raises:
            StorageNotWritableError: If a file cannot be written; names it.
        """
        for _, name in sources:
            # Referenced before the copy: a discard of the checkpoint meanwhile deletes it.
            self.registry.reference(checkpoint_id, name, new=True)
        copies = [(source, self.folder / name) for source, name in sources]
        copied, parts = await anyio.to_thread.run_sync(write_batch, copies, bundle, self.folder)
        handles = [
            SharedFileHandle(name, size, checksum)
            for (_, name), (size, checksum) in zip(sources, copied, strict=True)
        ]
        return handles, parts

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
        for folder in incomplete_checkpoints(job_dir):
            remove_tree(folder)  # no checkpoint is pending when the storage starts
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


def incomplete_checkpoints(job_dir: Path) -> list[Path]:
    """The ``chk-<n>`` folders of a job's folder without ``_metadata``. Blocks."""
    try:
        children = list(job_dir.iterdir())
    except OSError:
        return []
    return sorted(
        child
        for child in children
        if parse_checkpoint_dir_name(child.name) is not None
        and child.is_dir()
        and not child.is_symlink()
        and not (child / METADATA_FILE).exists()
    )


def find_orphans(job_dir: Path) -> list[Path]:
    """What a killed run left in a job's folder that no retained checkpoint uses. Blocks.

    Files of ``shared/`` that no checkpoint with a loadable ``_metadata`` names, and
    ``chk-<n>`` folders without ``_metadata`` (never completed). Only safe to delete
    while no job writes to the folder (``weir checkpoints --remove-orphans``).

    Returns:
        Their paths, sorted.
    """
    used: set[str] = set()
    for checkpoint_id in completed_checkpoint_ids(job_dir):
        try:
            metadata = load_metadata_file(job_dir / f"chk-{checkpoint_id}")
        except StorageError:
            continue  # never restored: the files only it names are unused
        used |= shared_names(metadata)
    shared = job_dir / SHARED_DIR
    try:
        names = sorted(os.listdir(shared))
    except OSError:
        names = []
    orphans = [shared / name for name in names if name not in used]
    return sorted(orphans + incomplete_checkpoints(job_dir))


def remove_orphans(job_dir: Path) -> list[Path]:
    """Delete :func:`find_orphans` and empty ``shared/``/``taskowned/``; return them."""
    orphans = find_orphans(job_dir)
    for path in orphans:
        if path.is_dir():
            remove_tree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    for name in (SHARED_DIR, TASK_OWNED_DIR):
        with contextlib.suppress(OSError):
            (job_dir / name).rmdir()
    return orphans


def remove_tree(folder: Path) -> None:
    """Delete ``folder`` and everything in it, if it exists. Blocks."""
    shutil.rmtree(folder, ignore_errors=True)
