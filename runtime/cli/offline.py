"""Offline commands on checkpoint folders: ``weir checkpoints``, ``info`` and ``dispose``.

Nothing runs a job here: these read the files that jobs left (``storage.checkpoint``)
and return plain JSON-able dicts, which ``runtime.cli.render`` shows as tables or
``--json`` prints as they are.

* :func:`scan_checkpoints` lists the checkpoints and savepoints under a folder (a
  checkpoint folder ``<dir>/<job id>/...``, one job's folder, a folder of savepoints, or
  one checkpoint) with whether each can be restored. "Valid" is the check recovery makes
  (metadata decodes and verifies, names its folder's checkpoint, every state file is
  there with its recorded size), plus, with ``verify``, every state file's crc32. The
  newest valid checkpoint of each job is marked: the one a restore from the job's
  folder would use.
* :func:`describe_checkpoint` reads one checkpoint or savepoint
  (:func:`~storage.checkpoint.read_checkpoint`): operators, parallelism, per subtask the
  key-group range, state size, keys per state, in-flight bytes, and the records of
  channel state per channel.
* :func:`dispose` deletes a savepoint, and refuses a checkpoint.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from runtime.cli.errors import CliError, UsageError
from storage.checkpoint import (
    METADATA_FILE,
    SAVEPOINT_PREFIX,
    CheckpointContents,
    CheckpointMetadata,
    CheckpointNotFoundError,
    StorageError,
    checkpoint_folder,
    dispose_savepoint,
    find_latest_valid,
    read_checkpoint,
    verify_checkpoint,
)
from storage.checkpoint.job_record import read_job_record, read_restored_by
from storage.checkpoint.layout import parse_checkpoint_dir_name
from storage.checkpoint.shared_files import find_orphans
from storage.errors import PickleForbiddenError, WeirStorageError

__all__ = ["describe_checkpoint", "dispose", "scan_checkpoints"]


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _folder(path: str) -> Path:
    try:
        return checkpoint_folder(path).absolute()
    except ValueError as error:
        raise UsageError(str(error)) from None


# -- weir checkpoints -----------------------------------------------------------------------


def _check(folder: Path, expected_id: int | None, verify: bool) -> CheckpointMetadata:
    """Verify one checkpoint as recovery does (``verify``: every checksum, as a restore).

    Without ``verify``: metadata, and every state and ``shared/`` file there with its
    recorded size. With it: what a restore checks before it uses a checkpoint, the
    crc32 of every state and ``shared/`` file and the frames of the state files too
    (:func:`~storage.checkpoint.verify_checkpoint`).
    """
    return verify_checkpoint(folder, expected_id, checksums=verify, shared_checksums=verify)


def _entry(folder: Path, job_dir: Path | None, verify: bool) -> dict[str, Any]:
    checkpoint_id = parse_checkpoint_dir_name(folder.name)
    entry: dict[str, Any] = {
        "path": str(folder),
        "job_folder": None if job_dir is None else str(job_dir),
        "kind": "checkpoint" if checkpoint_id is not None else "savepoint",
        "checkpoint_id": checkpoint_id,
        "job_id": None,
        "valid": False,
        "status": "corrupt",
        "reason": None,
        "timestamp": None,
        "size_on_disk": _folder_size(folder),
        "state_size": None,
        "in_flight_bytes": None,
        "latest": False,
    }
    if not (folder / METADATA_FILE).exists():
        entry["status"] = "incomplete"
        entry["reason"] = "no _metadata: it never completed"
        return entry
    try:
        metadata = _check(folder, checkpoint_id, verify)
    except (StorageError, WeirStorageError, OSError) as error:
        entry["reason"] = str(error)
        return entry
    subtasks = [s for op in metadata.operators for s in op.subtasks]
    entry.update(
        kind="savepoint" if metadata.is_savepoint else "checkpoint",
        checkpoint_id=metadata.checkpoint_id,
        job_id=metadata.job_id,
        valid=True,
        status="valid",
        timestamp=metadata.timestamp,
        state_size=sum(s.state_size for s in subtasks),
        in_flight_bytes=sum(s.in_flight_bytes for s in subtasks),
    )
    return entry


_SCAN_DEPTH = 3
"""How deep ``scan_checkpoints`` looks: ``<dir>/<job id>/chk-<n>`` is depth 2 from ``<dir>``."""


def _find(root: Path) -> tuple[dict[Path, list[Path]], list[Path]]:
    """The ``chk-<n>`` folders under ``root`` by job folder, and the savepoint folders."""
    jobs: dict[Path, list[tuple[int, Path]]] = {}
    savepoints: list[Path] = []
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.is_symlink())
        except OSError:
            continue
        for child in children:
            checkpoint_id = parse_checkpoint_dir_name(child.name)
            if checkpoint_id is not None:
                jobs.setdefault(folder, []).append((checkpoint_id, child))
            elif child.name.startswith(SAVEPOINT_PREFIX):
                savepoints.append(child)
            elif depth + 1 < _SCAN_DEPTH:
                pending.append((child, depth + 1))
    by_job = {job: [path for _, path in sorted(found)] for job, found in sorted(jobs.items())}
    return by_job, savepoints


def scan_checkpoints(path: str, *, verify: bool = False) -> dict[str, Any]:
    """List the checkpoints and savepoints under ``path``, with their validity.

    Args:
        path: a checkpoint folder (``<dir>`` of ``<dir>/<job id>/chk-<n>``), a job's
            folder, a folder holding savepoints (or any folder up to three levels above
            them), or one checkpoint or savepoint.
        verify: also read every state file and check its crc32.

    Returns:
        ``{"path", "checkpoints": [...]}``, one entry per checkpoint, by job folder and
        by id within a job; then the savepoints, oldest first.

    Raises:
        UsageError: ``path`` is not a folder.
    """
    root = _folder(path)
    if not root.is_dir():
        raise UsageError(f"no such folder: {path}")
    if (root / METADATA_FILE).exists() or parse_checkpoint_dir_name(root.name) is not None:
        return {"path": str(root), "checkpoints": [_entry(root, None, verify)]}
    jobs, savepoint_dirs = _find(root)
    entries: list[dict[str, Any]] = []
    job_notes: list[dict[str, Any]] = []
    for job_dir, folders in jobs.items():
        job_entries = [_entry(chk, job_dir, verify) for chk in folders]
        for entry in job_entries:
            entry["job_id"] = entry["job_id"] or job_dir.name
        valid = [e for e in job_entries if e["valid"]]
        if valid:
            valid[-1]["latest"] = True
        entries += job_entries
        job_notes.append(_job_notes(job_dir))
    savepoints = [_entry(folder, None, verify) for folder in savepoint_dirs]
    savepoints.sort(key=lambda entry: (entry["timestamp"] or 0.0, entry["path"]))
    return {"path": str(root), "checkpoints": entries + savepoints, "jobs": job_notes}


def _job_notes(job_dir: Path) -> dict[str, Any]:
    """What a job folder says of its job (``_job``, ``_restored_by``), and its orphans.

    Orphans are what a killed run left: ``shared/`` files no checkpoint uses and
    ``chk-<n>`` folders without ``_metadata``. They are listed with a command that
    removes them, to run once no job writes to the folder (a running job's pending
    checkpoint is such a folder too).
    """
    record = read_job_record(job_dir)
    orphans = [str(path) for path in find_orphans(job_dir)]
    return {
        "job_folder": str(job_dir),
        "status": None if record is None else record.status,
        "ended_at": None if record is None else record.ended_at,
        "notified": None if record is None else record.notified,
        "restored_by": [
            {"job_id": r.job_id, "checkpoint_id": r.checkpoint_id, "at": r.at}
            for r in read_restored_by(job_dir)
        ],
        "orphans": orphans,
        "remove_orphans": (
            "rm -rf -- " + " ".join(shlex.quote(path) for path in orphans) if orphans else None
        ),
    }


# -- weir info ------------------------------------------------------------------------------


def _resolve_one(path: str) -> tuple[Path, str | None]:
    """The checkpoint ``path`` names; a job's folder names its newest valid one."""
    folder = _folder(path)
    if (folder / METADATA_FILE).exists():
        return folder, None
    if folder.is_dir():
        scan = find_latest_valid(folder)
        if scan.latest is not None:
            chosen = scan.latest[0]
            return chosen, f"{folder} is a job's folder: showing its newest valid checkpoint"
    raise CliError(
        f"no checkpoint or savepoint at {path}: give a chk-<n> or savepoint folder (with a "
        f"_metadata file) or a job's checkpoint folder"
    )


def _channels(contents: Any) -> list[dict[str, Any]]:
    rows = []
    for direction, channels in (
        ("input", contents.input_channels),
        ("output", contents.output_channels),
    ):
        for (peer_uid, peer_subtask), records in sorted(channels.items()):
            rows.append(
                {
                    "direction": direction,
                    "peer_uid": peer_uid,
                    "peer_subtask": peer_subtask,
                    "records": len(records),
                }
            )
    return rows


def _describe(
    folder: Path, metadata: CheckpointMetadata, contents: CheckpointContents | None
) -> dict[str, Any]:
    operators = []
    for op in metadata.operators:
        decoded = None if contents is None else contents.operators.get(op.uid)
        subtasks = []
        for handle in op.subtasks:
            sub = None if decoded is None else decoded.subtasks.get(handle.subtask_index)
            file_size = None if handle.handle is None else handle.handle.size
            key_groups = (
                None
                if handle.key_group_start is None or handle.key_group_end is None
                else [handle.key_group_start, handle.key_group_end]
            )
            row: dict[str, Any] = {
                "index": handle.subtask_index,
                "key_groups": key_groups,
                "state_size": handle.state_size,
                "in_flight_bytes": handle.in_flight_bytes,
                "state_file": None if handle.handle is None else handle.handle.path,
                "file_size": file_size,
                "keyed_states": None,
                "operator_states": None,
                "splits": None,
                "channels": None,
            }
            if sub is not None:
                row["keyed_states"] = {
                    name: {"kind": str(sub.state_kinds.get(name, "")), "keys": len(entries)}
                    for name, entries in sub.keyed.items()
                }
                row["operator_states"] = {name: len(items) for name, items in sub.operator.items()}
                row["splits"] = None if sub.splits is None else len(sub.splits)
                row["channels"] = _channels(sub)
            subtasks.append(row)
        operators.append(
            {
                "uid": op.uid,
                "name": op.name,
                "parallelism": op.parallelism,
                "max_parallelism": op.max_parallelism,
                "state_size": sum(s.state_size for s in op.subtasks),
                "in_flight_bytes": sum(s.in_flight_bytes for s in op.subtasks),
                "subtasks": subtasks,
            }
        )
    return {
        "path": str(folder),
        "kind": "savepoint" if metadata.is_savepoint else "checkpoint",
        "checkpoint_id": metadata.checkpoint_id,
        "job_id": metadata.job_id,
        "timestamp": metadata.timestamp,
        "format_version": metadata.version,
        "properties": dict(metadata.properties),
        "state_size": sum(o["state_size"] for o in operators),
        "in_flight_bytes": sum(o["in_flight_bytes"] for o in operators),
        "size_on_disk": _folder_size(folder),
        "decoded": contents is not None,
        "operators": operators,
        "notes": [],
    }


def describe_checkpoint(path: str, *, allow_pickle: bool = False) -> dict[str, Any]:
    """What one checkpoint or savepoint holds, operator by operator, subtask by subtask.

    Args:
        path: a ``chk-<n>`` or savepoint folder, its ``_metadata``, a ``file://`` URI of
            either, or a job's folder (its newest valid checkpoint).
        allow_pickle: unpickle values written with pickle (runs code the files name).

    Returns:
        The description; ``decoded`` is False (and record and key counts are None) if
        the state needs pickle and ``allow_pickle`` is False.

    Raises:
        CliError: no checkpoint there, or its metadata or a state file fails to verify
            (names the file). State that verifies but does not decode is described from
            the metadata alone, with a note saying why.
    """
    folder, note = _resolve_one(path)
    notes = [] if note is None else [note]
    try:
        # Checksums first: a file that fails them is corrupt, which is an error; state
        # that verifies but does not decode here is shown from its metadata alone.
        metadata = _check(folder, parse_checkpoint_dir_name(folder.name), verify=True)
    except (StorageError, WeirStorageError, OSError) as error:
        raise CliError(f"cannot read {folder}: {error}") from None
    contents: CheckpointContents | None = None
    try:
        contents = read_checkpoint(folder, allow_pickle=allow_pickle)
    except PickleForbiddenError:
        notes.append(
            "some state was written with pickle: key and record counts need "
            "--allow-pickle (it runs code the files name: only for checkpoints you trust)"
        )
    except (StorageError, WeirStorageError) as error:
        notes.append(
            f"the state could not be decoded, so keys and records are not counted: {error}"
        )
    description = _describe(folder, metadata, contents)
    description["notes"] = notes
    return description


# -- weir dispose ---------------------------------------------------------------------------


def dispose(path: str) -> str:
    """Delete the savepoint at ``path``; return the folder deleted.

    Raises:
        CliError: no savepoint there, it is a checkpoint (the runtime manages those), or
            its metadata does not verify (delete it by hand).
    """
    folder = _folder(path)
    try:
        return str(dispose_savepoint(folder))
    except CheckpointNotFoundError:
        raise CliError(f"no savepoint at {path} (no _metadata file there)") from None
    except ValueError as error:
        raise CliError(f"refusing to dispose: {error}") from None
    except StorageError as error:
        raise CliError(f"cannot dispose {path}: {error}") from None
