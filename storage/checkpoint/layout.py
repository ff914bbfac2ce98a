"""The on-disk layout of a job's checkpoints (Flink's), and the names in it.

::

    <checkpoint dir>/<job id>/
        shared/        files shared by incremental checkpoints, reference-counted
        taskowned/     files owned by the tasks
        chk-<n>/       one folder per checkpoint; _metadata is written last

:class:`~storage.checkpoint.filesystem.FileCheckpointStorage` writes this layout and the
recovery scan (:mod:`storage.checkpoint.recovery`) reads it. Everything here is pure:
names, parsing and path arithmetic, no I/O. A checkpoint's *pointer* is the path of its
folder (a savepoint's pointer is its own folder, wherever it was moved); ``file://`` URIs
and the path of the ``_metadata`` file itself are accepted wherever a pointer is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

from storage.checkpoint.errors import CorruptCheckpointError

__all__ = [
    "CHECKPOINT_DIR_PREFIX",
    "METADATA_FILE",
    "METADATA_TMP_FILE",
    "SHARED_DIR",
    "TASK_OWNED_DIR",
    "checkpoint_dir_name",
    "checkpoint_folder",
    "parse_checkpoint_dir_name",
    "state_file_path",
    "validate_job_id",
    "validate_state_name",
]

METADATA_FILE: Final = "_metadata"
METADATA_TMP_FILE: Final = "_metadata.tmp"
SHARED_DIR: Final = "shared"
TASK_OWNED_DIR: Final = "taskowned"
CHECKPOINT_DIR_PREFIX: Final = "chk-"

_CHECKPOINT_DIR: Final = re.compile(r"chk-(0|[1-9][0-9]*)")
_RESERVED_NAMES: Final = frozenset({METADATA_FILE, METADATA_TMP_FILE})


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name


def validate_job_id(job_id: str) -> str:
    """Check that ``job_id`` can name the job's folder.

    Args:
        job_id: The job's id.

    Returns:
        ``job_id``.

    Raises:
        ValueError: If it is empty, ``.`` or ``..``, or contains a path separator.
    """
    if not isinstance(job_id, str) or not _is_plain_name(job_id) or "\0" in job_id:
        raise ValueError(
            f"job id {job_id!r} cannot name a checkpoint folder; use a non-empty id "
            f"without '/', '\\' or NUL that is not '.' or '..'"
        )
    return job_id


def validate_state_name(name: str) -> str:
    """Check that ``name`` can name a state file inside a checkpoint's folder.

    Args:
        name: The file name a subtask asked for, e.g. ``op-uid-3``.

    Returns:
        ``name``.

    Raises:
        ValueError: If it is not a plain file name or is reserved for the metadata.
    """
    if not isinstance(name, str) or not _is_plain_name(name) or "\0" in name:
        raise ValueError(
            f"state file name {name!r} is not a plain file name; use a non-empty name "
            f"without '/', '\\' or NUL"
        )
    if name in _RESERVED_NAMES:
        raise ValueError(
            f"state file name {name!r} is reserved for the checkpoint metadata; choose another name"
        )
    return name


def checkpoint_dir_name(checkpoint_id: int) -> str:
    """Return the folder name of checkpoint ``checkpoint_id``: ``chk-<n>``.

    Raises:
        ValueError: If the id is negative.
    """
    if checkpoint_id < 0:
        raise ValueError(f"checkpoint id must be >= 0, got {checkpoint_id}")
    return f"{CHECKPOINT_DIR_PREFIX}{checkpoint_id}"


def parse_checkpoint_dir_name(name: str) -> int | None:
    """Return ``n`` for a folder named ``chk-<n>`` (canonical decimal), else None."""
    match = _CHECKPOINT_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def checkpoint_folder(pointer: str | os.PathLike[str]) -> Path:
    """Return the folder a checkpoint pointer designates.

    Args:
        pointer: A checkpoint's or savepoint's folder, its ``_metadata`` file, or either
            as a ``file://`` URI.

    Returns:
        The folder's path (not checked to exist).

    Raises:
        ValueError: If ``pointer`` is a URI of another scheme, or a ``file://`` URI with a
            host or a relative path.
    """
    text = os.fspath(pointer)
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme != "file" or parts.netloc not in {"", "localhost"}:
            raise ValueError(
                f"checkpoint pointer {text!r} is not a local path; pass a folder path or "
                f"a file:///absolute/path URI"
            )
        text = unquote(parts.path)
    path = Path(text)
    return path.parent if path.name == METADATA_FILE else path


def state_file_path(folder: Path, handle_path: str) -> Path:
    """Return where the state file of a handle lives inside a checkpoint's folder.

    Args:
        folder: The checkpoint's folder.
        handle_path: :attr:`StateHandle.path <storage.checkpoint.metadata.StateHandle>`.

    Returns:
        ``folder / handle_path``.

    Raises:
        CorruptCheckpointError: If ``handle_path`` is absolute, empty, or climbs out of
            the folder (the metadata was tampered with); names the metadata file.
    """
    relative = PurePosixPath(handle_path)
    if (
        not handle_path
        or relative.is_absolute()
        or any(part in {"..", ""} for part in relative.parts)
        or "\\" in handle_path
        or "\0" in handle_path
    ):
        raise CorruptCheckpointError(
            str(folder / METADATA_FILE),
            f"state handle path {handle_path!r} is not a relative path inside the "
            f"checkpoint folder",
        )
    return folder.joinpath(*relative.parts)
