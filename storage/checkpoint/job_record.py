"""What a job folder says about its job: how it ended, what it notified, who restored it.

Two small msgspec (JSON) files beside the ``chk-<n>`` folders of a job's folder, so that
a later run (and ``weir checkpoints``) can tell a stale "latest" from a live one:

* ``_job`` (:class:`JobRecord`), written by the job's own process: the newest checkpoint
  whose completion was notified to the tasks (two-phase-commit sinks commit then), and
  how the job ended (finished, canceled, failed). The file storage writes it
  (:meth:`~storage.checkpoint.filesystem.FileCheckpointStorage.record_notified`,
  :meth:`~storage.checkpoint.filesystem.FileCheckpointStorage.record_job_end`).
* ``_restored_by`` (:class:`RestoredBy`), written by later runs: each run that restored
  from a checkpoint of this folder, with the checkpoint.

Both are written atomically (temporary file, fsync, rename) and read leniently: a
missing or undecodable record reads as no record (it informs warnings and refusals; the
checkpoints themselves are the data). Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Final, Literal

import msgspec

__all__ = [
    "JOB_RECORD_FILE",
    "RESTORED_BY_FILE",
    "JobRecord",
    "RestoreRecord",
    "RestoredBy",
    "add_restored_by",
    "read_job_record",
    "read_restored_by",
    "write_job_record",
]

JOB_RECORD_FILE: Final = "_job"
RESTORED_BY_FILE: Final = "_restored_by"
RECORD_VERSION: Final = 1

JobStatusName = Literal["running", "finished", "canceled", "failed"]


class JobRecord(msgspec.Struct, kw_only=True):
    """The ``_job`` file of a job's folder.

    Attributes:
        version: The record's format version.
        job_id: The job.
        status: ``running`` until the job ends, then ``finished``, ``canceled`` or
            ``failed``.
        notified: The newest checkpoint whose completion was notified to the tasks
            (two-phase-commit sinks committed its transactions), or None.
        notified_pointer: Where that checkpoint (or synchronous savepoint) was written.
        ended_at: When the job ended, seconds since the epoch.
    """

    version: int = RECORD_VERSION
    job_id: str
    status: JobStatusName = "running"
    notified: int | None = None
    notified_pointer: str | None = None
    ended_at: float | None = None


class RestoreRecord(msgspec.Struct, kw_only=True):
    """One later run that restored from a checkpoint of the folder.

    Attributes:
        job_id: The later run's job id.
        checkpoint_id: The checkpoint it restored.
        pointer: That checkpoint's folder.
        at: When, seconds since the epoch.
        job_folder: The later run's own checkpoint folder, if it has one.
    """

    job_id: str
    checkpoint_id: int
    pointer: str
    at: float
    job_folder: str | None = None


class RestoredBy(msgspec.Struct, kw_only=True):
    """The ``_restored_by`` file of a job's folder."""

    version: int = RECORD_VERSION
    restores: list[RestoreRecord] = []


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as writer:
            writer.write(data)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_job_record(job_dir: str | os.PathLike[str]) -> JobRecord | None:
    """The ``_job`` record of a job's folder, or None (missing or undecodable)."""
    try:
        return msgspec.json.decode(Path(job_dir, JOB_RECORD_FILE).read_bytes(), type=JobRecord)
    except (OSError, msgspec.DecodeError):
        return None


def write_job_record(job_dir: str | os.PathLike[str], record: JobRecord) -> None:
    """Write the ``_job`` record atomically.

    Raises:
        OSError: It cannot be written.
    """
    _write_atomically(Path(job_dir, JOB_RECORD_FILE), msgspec.json.encode(record))


def read_restored_by(job_dir: str | os.PathLike[str]) -> list[RestoreRecord]:
    """The later runs that restored from the folder, oldest first (empty if none)."""
    try:
        data = Path(job_dir, RESTORED_BY_FILE).read_bytes()
        return msgspec.json.decode(data, type=RestoredBy).restores
    except (OSError, msgspec.DecodeError):
        return []


def add_restored_by(
    job_dir: str | os.PathLike[str],
    job_id: str,
    checkpoint_id: int,
    pointer: str,
    job_folder: str | None = None,
) -> None:
    """Record that run ``job_id`` restored from checkpoint ``checkpoint_id`` of the folder.

    Raises:
        OSError: It cannot be written (a read-only folder, say).
    """
    restores = read_restored_by(job_dir)
    restores.append(
        RestoreRecord(
            job_id=job_id,
            checkpoint_id=checkpoint_id,
            pointer=pointer,
            at=time.time(),
            job_folder=job_folder,
        )
    )
    _write_atomically(
        Path(job_dir, RESTORED_BY_FILE), msgspec.json.encode(RestoredBy(restores=restores))
    )
