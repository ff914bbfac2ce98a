"""Turning the ``storage`` option of checkpointing into a :class:`CheckpointStorage`.

The job master calls :func:`resolve_storage` with ``CheckpointConfig.storage`` when it
builds a job, before :meth:`~storage.checkpoint.storage.CheckpointStorage.initialize`.
Accepted forms (Flink's ``state.checkpoints.dir`` and ``jobmanager`` storage):

=========================  ==============================================
``None`` or ``"memory"``   :class:`~storage.checkpoint.memory.MemoryCheckpointStorage`
``"file:///abs/dir"``      :class:`~storage.checkpoint.filesystem.FileCheckpointStorage`
a plain path               the same, relative paths against the working directory
=========================  ==============================================
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urlsplit

from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.memory import MemoryCheckpointStorage
from storage.checkpoint.storage import CheckpointStorage

__all__ = ["resolve_storage"]

_ACCEPTED: Final = "'memory', 'file:///absolute/dir' or a plain directory path"


def _reject(spec: str, why: str) -> ValueError:
    return ValueError(f"checkpoint storage {spec!r} {why}; use {_ACCEPTED}")


def resolve_storage(spec: str | None, job_id: str) -> CheckpointStorage:
    """Return the checkpoint storage that ``spec`` names, for job ``job_id``.

    Pure: nothing is created or checked on disk (that is ``initialize``).

    Args:
        spec: ``None`` or ``"memory"``, a ``file://`` URI with an absolute path and no
            host (or ``localhost``), or a plain path.
        job_id: The job's id.

    Returns:
        The storage.

    Raises:
        ValueError: If ``spec`` is empty, has another scheme, or is a ``file://`` URI with
            a host or a relative path; the message lists the accepted forms. Also if
            ``job_id`` cannot name a folder.
    """
    if spec is None or spec == "memory":
        return MemoryCheckpointStorage(job_id)
    if not isinstance(spec, str) or not spec.strip():
        raise _reject(str(spec), "is not a storage")
    if "://" not in spec:
        return FileCheckpointStorage(spec, job_id)
    parts = urlsplit(spec)
    if parts.scheme != "file":
        raise _reject(spec, f"has an unsupported scheme {parts.scheme!r}")
    if parts.netloc not in {"", "localhost"}:
        raise _reject(spec, f"names host {parts.netloc!r}; file:// URIs must be local")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise _reject(spec, "has no absolute path")
    return FileCheckpointStorage(path, job_id)
