"""Errors of the checkpoint storage: what went wrong with a checkpoint's files.

The checkpoint storages (:mod:`storage.checkpoint.memory`,
:mod:`storage.checkpoint.filesystem`), the metadata and state-file codecs and the
recovery scan raise them; the checkpoint coordinator and the restore path of the runtime
catch them. Everything the checkpoint storage raises on purpose derives from one root::

    StorageError                    a checkpoint could not be stored, found or read
    ├── CheckpointNotFoundError     a checkpoint, its metadata or one of its state files
    │                               does not exist
    ├── CorruptCheckpointError      a checkpoint file exists but fails to decode or verify
    │                               (magic, version, checksum, size, truncation); it is
    │                               never used
    └── StorageNotWritableError     the checkpoint directory cannot be written (permissions,
                                    a read-only or full disk, a path through a file)

:class:`StorageError` derives from nothing else in ``storage`` on purpose, so that this
sub-package stands alone. Messages are lowercase, name the path or checkpoint involved,
and say what to do. An ``OSError`` behind an error is kept as its ``__cause__``.
"""

from __future__ import annotations

import errno
from typing import Final

__all__ = [
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "StorageError",
    "StorageNotWritableError",
]

_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageError(Exception):
    """Root of every error the checkpoint storage raises on purpose."""


class CheckpointNotFoundError(StorageError):
    """A checkpoint, its metadata file or one of its state files does not exist.

    Attributes:
        path: The path (or ``memory://`` pointer) that was looked up.
    """

    def __init__(self, path: str, what: str = "checkpoint") -> None:
        """Build the error.

        Args:
            path: The path or pointer that does not exist.
            what: What was looked up, e.g. ``"checkpoint metadata"``; starts the message.
        """
        self.path = path
        self.what = what
        super().__init__(
            f"{what} {path} does not exist; pass the pointer of a completed checkpoint "
            f"or savepoint, or restore from another one"
        )

    def __reduce__(self) -> tuple[type[CheckpointNotFoundError], tuple[str, str]]:
        return (type(self), (self.path, self.what))


class CorruptCheckpointError(StorageError):
    """A checkpoint file exists but fails to decode or verify; it is never used.

    Attributes:
        path: The file (or ``memory://`` pointer) that is corrupt.
        reason: What failed, e.g. ``"checksum mismatch"``.
    """

    def __init__(self, path: str, reason: str, what: str = "checkpoint metadata") -> None:
        """Build the error.

        Args:
            path: The corrupt file.
            reason: What failed, lowercase, without a final period.
            what: What the file is, e.g. ``"checkpoint state file"``; starts the message.
        """
        self.path = path
        self.reason = reason
        self.what = what
        super().__init__(f"{what} {path} is corrupt: {reason}; it will not be used")

    def __reduce__(self) -> tuple[type[CorruptCheckpointError], tuple[str, str, str]]:
        return (type(self), (self.path, self.reason, self.what))


class StorageNotWritableError(StorageError):
    """The checkpoint directory, or a file in it, cannot be created or written.

    Raised with the ``OSError`` as ``__cause__`` (permission denied, read-only file
    system, no space left, a path through a regular file).

    Attributes:
        path: The directory or file that could not be written.
    """

    def __init__(self, path: str, error: OSError | None = None) -> None:
        """Build the error.

        Args:
            path: The directory or file that could not be written.
            error: The ``OSError`` behind it, if any; its text is part of the message.
        """
        self.path = path
        self.error = error
        detail = f": {error.strerror or error}" if error is not None else ""
        if error is not None and error.errno in _NO_SPACE:
            action = "free some space or choose another checkpoint directory"
        else:
            action = "fix its permissions or choose another checkpoint directory"
        super().__init__(f"cannot write checkpoint storage at {path}{detail}; {action}")

    def __reduce__(self) -> tuple[type[StorageNotWritableError], tuple[str, OSError | None]]:
        return (type(self), (self.path, self.error))
