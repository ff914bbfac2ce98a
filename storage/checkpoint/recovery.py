"""Finding the checkpoint to restore from, on disk: the recovery scan.

The job master calls :func:`find_latest_valid` when a job (re)starts from a checkpoint
directory, and :func:`load_metadata_file` when the user names a checkpoint or savepoint
to restore from; :class:`~storage.checkpoint.filesystem.FileCheckpointStorage` uses
:func:`completed_checkpoint_ids` and :func:`load_metadata_file` for ``list_completed`` and
``load``. All three block on file I/O: call them from a worker thread
(``anyio.to_thread.run_sync``) when an event loop is running.

A checkpoint is used only when its ``_metadata`` exists, decodes and verifies
(:func:`~storage.checkpoint.metadata.decode_metadata`), names the checkpoint of its
folder, and every state file it points to exists with the recorded size (checksums are
verified when the files are read). A folder without ``_metadata`` is a checkpoint that
never completed (a leftover ``_metadata.tmp`` included) and is skipped silently: after a
crash that is expected. A folder whose metadata fails is skipped *and reported*: the scan
returns one message per skipped checkpoint in :attr:`CheckpointScan.skipped`, naming the
file and what failed, for the caller to log and show. They are returned rather than
raised as ``warnings.warn``: on the checkpoint path an expected outcome is a result, the
runtime decides where it is shown, and ``warnings.catch_warnings`` is not thread-safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from storage.checkpoint.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StorageError,
)
from storage.checkpoint.layout import (
    METADATA_FILE,
    checkpoint_dir_name,
    checkpoint_folder,
    parse_checkpoint_dir_name,
    state_file_path,
)
from storage.checkpoint.metadata import CheckpointMetadata, decode_metadata

__all__ = [
    "CheckpointScan",
    "completed_checkpoint_ids",
    "find_latest_valid",
    "load_metadata_file",
]


class CheckpointScan(NamedTuple):
    """What :func:`find_latest_valid` found.

    Attributes:
        latest: The newest usable checkpoint's folder and metadata, or None.
        skipped: One message per newer checkpoint that was skipped because its metadata
            failed, newest first; each names the file and what failed.
    """

    latest: tuple[Path, CheckpointMetadata] | None
    skipped: tuple[str, ...]


def load_metadata_file(path: str | os.PathLike[str]) -> CheckpointMetadata:
    """Read and verify the metadata of one checkpoint or savepoint. Blocks on file I/O.

    Args:
        path: The checkpoint's folder (``chk-<n>`` or a savepoint folder), its
            ``_metadata`` file, or either as a ``file://`` URI.

    Returns:
        The metadata.

    Raises:
        CheckpointNotFoundError: If there is no ``_metadata`` file there.
        CorruptCheckpointError: If it fails to decode or verify.
        StorageError: If it cannot be read (e.g. permissions); the ``OSError`` is the
            ``__cause__``.
        ValueError: If ``path`` is a URI that is not a local ``file://`` one.
    """
    metadata_path = checkpoint_folder(path) / METADATA_FILE
    try:
        data = metadata_path.read_bytes()
    except (FileNotFoundError, NotADirectoryError) as error:
        raise CheckpointNotFoundError(str(metadata_path), "checkpoint metadata") from error
    except OSError as error:
        raise StorageError(
            f"cannot read checkpoint metadata {metadata_path}: {error.strerror or error}; "
            f"fix its permissions or restore from another checkpoint"
        ) from error
    return decode_metadata(data, str(metadata_path))


def completed_checkpoint_ids(job_dir: str | os.PathLike[str]) -> list[int]:
    """Return the ids of the ``chk-<n>`` folders that hold a ``_metadata`` file, ascending.

    The metadata is not read: valid or not, a checkpoint with ``_metadata`` is listed.
    Blocks on one directory scan. A missing job folder has no checkpoints.

    Args:
        job_dir: The job's folder, ``<checkpoint dir>/<job id>``.

    Returns:
        The checkpoint ids, ascending.
    """
    ids = []
    try:
        with os.scandir(job_dir) as entries:
            for entry in entries:
                checkpoint_id = parse_checkpoint_dir_name(entry.name)
                if (
                    checkpoint_id is not None
                    and entry.is_dir(follow_symlinks=False)
                    and os.path.isfile(os.path.join(entry.path, METADATA_FILE))
                ):
                    ids.append(checkpoint_id)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(ids)


def _verify(folder: Path, checkpoint_id: int) -> CheckpointMetadata:
    """Load the metadata of ``chk-<n>`` and check it against its folder and files."""
    metadata = load_metadata_file(folder)
    metadata_path = str(folder / METADATA_FILE)
    if metadata.checkpoint_id != checkpoint_id:
        raise CorruptCheckpointError(
            metadata_path,
            f"it describes checkpoint {metadata.checkpoint_id}, but its folder is {folder.name}",
        )
    for operator in metadata.operators:
        for subtask in operator.subtasks:
            if subtask.handle is None:
                continue
            path = state_file_path(folder, subtask.handle.path)
            try:
                size = path.stat().st_size
            except OSError as error:
                raise CorruptCheckpointError(
                    metadata_path,
                    f"state file {path} of operator {operator.uid!r} subtask "
                    f"{subtask.subtask_index} is missing or unreadable ({error.strerror or error})",
                ) from error
            if size != subtask.handle.size:
                raise CorruptCheckpointError(
                    metadata_path,
                    f"state file {path} of operator {operator.uid!r} subtask "
                    f"{subtask.subtask_index} has {size} bytes, the metadata says "
                    f"{subtask.handle.size}",
                )
    return metadata


def find_latest_valid(job_dir: str | os.PathLike[str]) -> CheckpointScan:
    """Find the newest checkpoint of a job that can be restored. Blocks on file I/O.

    Scans the ``chk-<n>`` folders newest first. Skips silently those without
    ``_metadata`` (never completed); skips and reports those whose metadata fails to
    read, decode or verify, or whose state files are missing or have the wrong size.

    Args:
        job_dir: The job's folder, ``<checkpoint dir>/<job id>``.

    Returns:
        The newest usable checkpoint (or None if there is none, or no such folder) and
        a message for each checkpoint skipped on the way to it.
    """
    skipped: list[str] = []
    root = Path(job_dir)
    for checkpoint_id in reversed(completed_checkpoint_ids(root)):
        folder = root / checkpoint_dir_name(checkpoint_id)
        try:
            metadata = _verify(folder, checkpoint_id)
        except CheckpointNotFoundError:
            continue  # deleted since the listing: a concurrent discard
        except StorageError as error:
            skipped.append(f"skipped checkpoint {checkpoint_id}: {error}")
            continue
        return CheckpointScan((folder, metadata), tuple(skipped))
    return CheckpointScan(None, tuple(skipped))
