"""Listing a job's completed checkpoints and reading one's metadata: the scan primitives.

:func:`completed_checkpoint_ids` lists the ``chk-<n>`` folders of a job's folder that hold
a ``_metadata`` file; :func:`load_metadata_file` reads and verifies one checkpoint's or
savepoint's metadata. Recovery (:mod:`storage.checkpoint.recovery`), verification
(:mod:`storage.checkpoint.verification`), the file storage and the shared-state registry
build on them. Both block on file I/O.
"""

from __future__ import annotations

import os

from storage.checkpoint.errors import CheckpointNotFoundError, StorageError
from storage.checkpoint.layout import (
    METADATA_FILE,
    checkpoint_folder,
    parse_checkpoint_dir_name,
)
from storage.checkpoint.metadata import CheckpointMetadata, decode_metadata

__all__ = ["completed_checkpoint_ids", "load_metadata_file"]


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
