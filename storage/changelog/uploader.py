"""Writing the changelog's files into the job's ``shared/`` folder, one worker-thread hop each.

The :class:`~storage.changelog.backend.ChangelogKeyedStateBackend` hands each closed
segment of its changelog (and each materialized snapshot) to :func:`upload_changelog`
(:func:`upload_blobs`), which encodes it, writes it under a fresh name, syncs the file
and the folder, and computes its crc32, all in one worker-thread hop, like the
file-system checkpoint storage writes its state files: the event loop never waits for
a disk. The written file is pinned in the storage's shared-state registry under the
backend's pin (:class:`SharedPins`) until the backend no longer needs it (a
materialization truncated it, or the backend closed): the registry then deletes it once
no retained checkpoint uses it either.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import anyio.to_thread

from storage.changelog.log import Entry, UploadedFile, encode_entries
from storage.checkpoint.errors import StorageNotWritableError
from storage.checkpoint.shared_files import SharedFiles
from storage.format.serializers import Serializer

__all__ = ["SharedPins", "upload_blobs", "upload_changelog", "write_file"]

logger = logging.getLogger("weir.changelog")

_pins: Final = itertools.count(1)


def write_file(path: Path, data: bytes) -> tuple[int, str]:
    """Write ``data`` to ``path`` durably (file and folder synced). Blocks.

    Raises:
        StorageNotWritableError: Names the file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as error:
        raise StorageNotWritableError(str(path), error) from error
    return len(data), f"{zlib.crc32(data):08x}"


class SharedPins:
    """The files of ``shared/`` one backend needs, pinned in the shared-state registry.

    A pin is a negative id in the registry (checkpoint ids are never negative), so a
    file the backend wrote is not deleted when the only pending checkpoint that used it
    is discarded (an aborted checkpoint), while later checkpoints will use it too.

    Args:
        shared: The storage's ``shared/`` folder.
    """

    def __init__(self, shared: SharedFiles) -> None:
        self.shared = shared
        self.pin = -next(_pins)
        self.names: set[str] = set()

    def add(self, name: str, *, new: bool) -> bool:
        """Pin ``name``; a file not written now is pinned only if the registry knows it."""
        if name in self.names:
            return True
        if self.shared.registry.reference(self.pin, name, new=new):
            self.names.add(name)
            return True
        return False

    async def drop(self, names: Iterable[str]) -> None:
        """Unpin ``names``; delete those no checkpoint uses (one worker-thread hop)."""
        registry = self.shared.registry
        unused: list[str] = []
        for name in names:
            if name in self.names:
                self.names.discard(name)
                if registry.unreference(self.pin, name):
                    unused.append(name)
        if unused:
            await anyio.to_thread.run_sync(_delete, self.shared.folder, unused)

    async def release(self) -> None:
        """Unpin everything (the backend closes); delete what no checkpoint uses."""
        self.names.clear()
        unused = self.shared.registry.release(self.pin)
        if unused:
            await anyio.to_thread.run_sync(_delete, self.shared.folder, unused)


def _delete(folder: Path, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def _fresh_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _encode_and_write(
    path: Path, entries: list[Entry], seq_from: int, max_parallelism: int, keys: Serializer[Any]
) -> tuple[dict[int, list[tuple[int, int]]], int, str]:
    data, index = encode_entries(entries, seq_from, max_parallelism, keys)
    size, checksum = write_file(path, data)
    return index, size, checksum


async def upload_changelog(
    pins: SharedPins,
    entries: list[Entry],
    seq_from: int,
    max_parallelism: int,
    keys: Serializer[Any],
) -> UploadedFile:
    """Encode and write one changelog segment as a new file of ``shared/``; pin it.

    One worker-thread hop. The entries must not change meanwhile (a closed segment's).

    Raises:
        StorageNotWritableError: Names the file.
        SerializationError: A key that does not encode.
    """
    name = _fresh_name("changelog")
    path = pins.shared.folder / name
    pins.add(name, new=True)  # before the write: a crash leaves an orphan, deleted on start
    index, size, checksum = await anyio.to_thread.run_sync(
        _encode_and_write, path, entries, seq_from, max_parallelism, keys
    )
    return UploadedFile(name, size, checksum, index)


async def upload_blobs(pins: SharedPins, blobs: list[tuple[int, bytes]]) -> UploadedFile:
    """Write key-group blobs (a materialized snapshot) as one new file of ``shared/``; pin it.

    One worker-thread hop for the join, the write and the crc32.

    Raises:
        StorageNotWritableError: Names the file.
    """
    name = _fresh_name("materialized")
    index: dict[int, list[tuple[int, int]]] = {}
    offset = 0
    for key_group, blob in blobs:
        index.setdefault(key_group, []).append((offset, len(blob)))
        offset += len(blob)
    pins.add(name, new=True)

    def join_and_write() -> tuple[int, str]:
        return write_file(pins.shared.folder / name, b"".join(blob for _, blob in blobs))

    size, checksum = await anyio.to_thread.run_sync(join_and_write)
    return UploadedFile(name, size, checksum, index)
