"""Savepoints: self-contained, movable checkpoint folders owned by the user.

A savepoint is written like a checkpoint (state files, then ``_metadata`` last and
atomically) but into its own folder ``<target>/savepoint-<short job id>-<random>/``
instead of the job's ``chk-<n>``. Its metadata names files by paths relative to that
folder, so the folder can be moved or copied and still restores. The runtime never
deletes a completed savepoint (it is not subsumed by later checkpoints);
``dispose_savepoint`` deletes one on the user's request.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import anyio

from storage.checkpoint.errors import CheckpointNotFoundError, StorageNotWritableError
from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.layout import METADATA_FILE
from storage.checkpoint.recovery import load_metadata_file

SAVEPOINT_PREFIX = "savepoint-"


def new_savepoint_folder(target: str | os.PathLike[str], job_id: str) -> Path:
    """A fresh folder name ``<target>/savepoint-<first 6 of job id>-<12 hex>``."""
    return Path(target).absolute() / f"{SAVEPOINT_PREFIX}{job_id[:6]}-{secrets.token_hex(6)}"


class SavepointStorage(FileCheckpointStorage):
    """Writes one savepoint into ``folder`` (state files and ``_metadata``).

    Args:
        folder: the savepoint's own folder (created by ``initialize``).
        job_id: the job whose state it holds.
    """

    def __init__(self, folder: str | os.PathLike[str], job_id: str) -> None:
        folder = Path(folder).absolute()
        super().__init__(folder.parent, job_id)
        self.folder = folder
        self.description = str(folder)

    def checkpoint_dir(self, checkpoint_id: int) -> Path:
        """Every file of the savepoint goes into its own folder."""
        return self.folder

    async def initialize(self) -> None:
        """Create the savepoint's folder and check it is writable.

        Raises:
            StorageNotWritableError: names the folder.
        """
        await anyio.to_thread.run_sync(_make_folder, self.folder)

    async def discard(self, checkpoint_id: int) -> None:
        """Delete the (failed) savepoint's folder."""
        await anyio.to_thread.run_sync(_remove_folder, self.folder)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except OSError as error:
        raise StorageNotWritableError(str(folder), error) from error


def _remove_folder(folder: Path) -> None:
    try:
        (folder / METADATA_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        raise StorageNotWritableError(str(folder), error) from error


def dispose_savepoint(path: str | os.PathLike[str]) -> Path:
    """Delete a savepoint folder after checking it is one. Blocks on file I/O.

    Args:
        path: the savepoint's folder or its ``_metadata`` file.

    Returns:
        The folder that was deleted.

    Raises:
        CheckpointNotFoundError: no savepoint there.
        CorruptCheckpointError: its metadata does not verify (delete it by hand).
        ValueError: it is a checkpoint, not a savepoint (the runtime manages those).
    """
    folder = Path(path)
    if folder.name == METADATA_FILE:
        folder = folder.parent
    if not (folder / METADATA_FILE).exists():
        raise CheckpointNotFoundError(str(folder), "savepoint")
    metadata = load_metadata_file(folder)
    if not metadata.is_savepoint:
        raise ValueError(
            f"{folder} is a checkpoint, not a savepoint; the runtime deletes checkpoints "
            f"by its retention policy"
        )
    _remove_folder(folder)
    return folder
