"""Verifying a checkpoint on disk: every file it references, before it is restored.

:func:`verify_checkpoint` is the one check that both recovery
(:mod:`storage.checkpoint.recovery`, the job master's restore and restarts) and
``weir checkpoints --verify`` make, so that what the command line calls valid is what a
restore accepts. A checkpoint is valid when

* its ``_metadata`` exists, decodes and verifies, and names the checkpoint of its
  ``chk-<n>`` folder;
* every state file it names (in its folder) exists with the recorded size and, with
  ``checksums``, the recorded crc32, and its frames decode;
* every file of the job's ``shared/`` folder it uses (RocksDB incremental checkpoints)
  exists with the recorded size and crc32 (always read: a restore copies them without
  reading them first, and a damaged one would only be found by the subtask restoring it).

Every failing file is reported, not only the first: the error lists them all, each with
its path and what failed. Blocks on file I/O: call it from a worker thread when an event
loop runs.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Final

from storage.checkpoint.errors import CorruptCheckpointError, StorageError
from storage.checkpoint.layout import (
    METADATA_FILE,
    SHARED_DIR,
    parse_checkpoint_dir_name,
    state_file_path,
)
from storage.checkpoint.metadata import CheckpointMetadata
from storage.checkpoint.scan import load_metadata_file
from storage.checkpoint.state_file import iter_frames

__all__ = ["CheckpointVerificationError", "verify_checkpoint"]

_READ_BLOCK: Final = 1 << 20


class CheckpointVerificationError(CorruptCheckpointError):
    """A checkpoint's metadata is sound but files it references are missing or damaged.

    Attributes:
        folder: The checkpoint's folder.
        problems: One line per failing file, naming it and what failed.
    """

    def __init__(self, folder: str, problems: list[str]) -> None:
        """Build the error.

        Args:
            folder: The checkpoint's folder.
            problems: One line per failing file (at least one).
        """
        self.folder = folder
        self.problems = list(problems)
        super().__init__(folder, "; ".join(problems), "checkpoint")

    def __reduce__(self) -> tuple[type[CheckpointVerificationError], tuple[str, list[str]]]:  # type: ignore[override]
        return (type(self), (self.folder, self.problems))


def _crc_of(path: Path) -> tuple[int, str]:
    size = 0
    crc = 0
    with open(path, "rb") as reader:
        while block := reader.read(_READ_BLOCK):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, f"{crc:08x}"


def _check_file(path: Path, size: int, checksum: str, where: str, checksums: bool) -> str | None:
    """One problem line for a file that is missing or differs from its handle, or None."""
    try:
        actual = path.stat().st_size
    except OSError as error:
        return f"{where} is missing or unreadable ({error.strerror or error})"
    if actual != size:
        return f"{where} has {actual} bytes, the metadata says {size}"
    if checksums:
        try:
            _, crc = _crc_of(path)
        except OSError as error:
            return f"{where} cannot be read ({error.strerror or error})"
        if crc != checksum:
            return (
                f"{where} is corrupt: checksum mismatch: crc32 is {crc}, the metadata "
                f"says {checksum}"
            )
    return None


def _check_frames(path: Path, where: str) -> str | None:
    try:
        data = path.read_bytes()
        for _ in iter_frames(data, str(path)):
            pass
    except CorruptCheckpointError as error:
        return f"{where}: {error.reason}"
    except OSError as error:
        return f"{where} cannot be read ({error.strerror or error})"
    return None


def verify_checkpoint(
    folder: str | Path,
    expected_id: int | None = None,
    *,
    checksums: bool = True,
    state_files: bool = True,
    shared_checksums: bool = True,
) -> CheckpointMetadata:
    """Check a checkpoint and every file it references; return its metadata. Blocks.

    Args:
        folder: The checkpoint's folder (``chk-<n>`` or a savepoint folder).
        expected_id: The checkpoint id its folder names; read from a ``chk-<n>`` name
            when None.
        checksums: Also read each state file and check its crc32 and frames (a restore
            does that while it reads them; ``weir checkpoints --verify`` here). Files of
            the ``shared/`` folder are checked whole unless ``shared_checksums`` is
            False.
        state_files: Check the state files at all; a restore passes False and reads
            them right after (each verified by size, crc32 and frames as it is read).
        shared_checksums: Read the ``shared/`` files and check their crc32 (a restore
            does: it links them without reading them); False checks their sizes only
            (a quick listing).

    Returns:
        The checkpoint's metadata.

    Raises:
        CheckpointNotFoundError: There is no ``_metadata``.
        CorruptCheckpointError: The metadata fails to decode or verify, or names another
            checkpoint; as :class:`CheckpointVerificationError`, files it references are
            missing or damaged (every one is named).
        StorageError: The metadata cannot be read.
    """
    folder = Path(folder)
    metadata = load_metadata_file(folder)
    if expected_id is None:
        expected_id = parse_checkpoint_dir_name(folder.name)
    if expected_id is not None and metadata.checkpoint_id != expected_id:
        raise CorruptCheckpointError(
            str(folder / METADATA_FILE),
            f"it describes checkpoint {metadata.checkpoint_id}, but its folder is {folder.name}",
        )
    problems: list[str] = []
    seen: set[str] = set()
    shared_seen: set[str] = set()
    shared_dir = folder.parent / SHARED_DIR
    for operator in metadata.operators:
        for subtask in operator.subtasks:
            owner = f"of operator {operator.uid!r} subtask {subtask.subtask_index}"
            handle = subtask.handle
            if state_files and handle is not None and handle.path not in seen:
                seen.add(handle.path)
                try:
                    path = state_file_path(folder, handle.path)
                except StorageError as error:
                    problems.append(str(error))
                    continue
                where = f"state file {path} {owner}"
                problem = _check_file(path, handle.size, handle.checksum, where, checksums)
                if problem is None and checksums:
                    problem = _check_frames(path, where)
                if problem is not None:
                    problems.append(problem)
            for shared in subtask.shared:
                if shared.name in shared_seen:
                    continue
                shared_seen.add(shared.name)
                if not shared.name or "/" in shared.name or shared.name in {".", ".."}:
                    problems.append(f"shared file name {shared.name!r} {owner} is not a plain name")
                    continue
                where = f"shared file {shared_dir / shared.name} {owner}"
                problem = _check_file(
                    shared_dir / shared.name,
                    shared.size,
                    shared.checksum,
                    where,
                    shared_checksums,
                )
                if problem is not None:
                    problems.append(problem)
    if problems:
        raise CheckpointVerificationError(str(folder), problems)
    return metadata
