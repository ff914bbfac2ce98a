"""Restore of the RocksDB backend: from native handles or from key-group blobs.

Called by :meth:`RocksDBKeyedStateBackend.restore()
<storage.rocksdb.backend.RocksDBKeyedStateBackend.restore>` before the subtask
processes any record, with the ``(key group, blob)`` pairs of its range:

* **Native, same range** (the common case: a restart without rescaling): the one
  handle's files are fetched into a new instance folder, by hard links from the local
  copy when it is present and valid (every file there with its size), else from the
  checkpoint's folder (and the job's ``shared/`` folder): SST files by hard links where
  the storage is on the same file system (copies otherwise), every file read once to
  check its crc32, two at a time; then the instance is opened on them. No key is
  decoded.
* **Native, rescaled** (the range differs from the handle's, or several old subtasks
  contribute): each handle's instance is fetched into a temporary folder and opened, and
  the rows of the key groups of the new range (contiguous, key group first) are copied
  into the backend's instance.
* **Key-group blobs** (heap checkpoints, canonical savepoints): each state's entries are
  decoded and written; a state not registered yet is stashed, still encoded.

Blocks on file copies and RocksDB calls. In a job it runs in a worker thread: the
deployment defers it (``RocksDBKeyedStateBackend.defer_restore``) and the subtask awaits
``prepare()`` before it opens its operators, while other subtasks and the coordinator
run. Links, reads and crc32 release the GIL; RocksDB's open and a rescale's row copy
hold it in bursts (rocksdict holds it for each call).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from storage.checkpoint.errors import CheckpointNotFoundError
from storage.checkpoint.layout import checkpoint_folder
from storage.checkpoint.metadata import SharedFileHandle, StateHandle, crc32_hex, verify_state
from storage.checkpoint.shared_files import copy_with_crc
from storage.format.keyed_format import decode_key_group
from storage.rocksdb.backend import (
    KIND_ROW,
    STASH_ROW,
    RocksDBKeyedStateBackend,
    open_db,
    split_stash_row,
)
from storage.rocksdb.handle import RocksDBStateHandle, decode_handle, is_native
from storage.rocksdb.keys import key_group_prefix
from storage.rocksdb.state import scan_prefix

__all__ = ["FETCH_THREADS", "fetch_handle", "local_copy_valid", "restore_backend"]

FETCH_THREADS: Final = 2
"""Files fetched and checksummed at once (zlib and file reads release the GIL)."""

_READ_BLOCK: Final = 4 << 20


def restore_backend(
    backend: RocksDBKeyedStateBackend,
    key_group_blobs: Iterable[tuple[int, bytes | memoryview]],
    pointer: str | None,
) -> None:
    """Restore ``backend`` from blobs of either format; see the module docstring."""
    kgs = backend.key_group_range
    handles: dict[str, RocksDBStateHandle] = {}
    for key_group, blob in key_group_blobs:
        if key_group not in kgs:
            continue
        if is_native(blob):
            handle = decode_handle(blob, f"{pointer} (key group {key_group})")
            handles.setdefault(handle.snapshot_id, handle)
            continue
        for batch in decode_key_group(key_group, blob).states:
            backend.stash(key_group, batch)
    if not handles:
        return
    if pointer is None:
        raise ValueError(
            "restoring a native RocksDB snapshot needs the checkpoint's pointer; pass "
            "pointer= to restore()"
        )
    folder = checkpoint_folder(pointer)
    (only,) = handles.values() if len(handles) == 1 else (None,)
    fresh = not backend.restored_kinds() and next(scan_prefix(backend.db, STASH_ROW), None) is None
    if (
        only is not None
        and fresh
        and (only.key_group_start, only.key_group_end) == (kgs.start, kgs.end)
    ):
        target = Path(tempfile.mkdtemp(prefix="rocksdb-", dir=backend.state_dir))
        if fetch_handle(only, folder, target, backend.state_dir) and backend.local_recovery:
            # Adopt the local copy: deleted once two newer snapshots are kept.
            backend.local_copies.append(backend.state_dir / f"local-{only.snapshot_id}")
        backend.reopen(target)
        _remember_uploads(backend, only, folder)
        return
    for handle in handles.values():
        with tempfile.TemporaryDirectory(prefix="rescale-", dir=backend.state_dir) as scratch:
            fetch_handle(handle, folder, Path(scratch), backend.state_dir)
            _copy_range(backend, Path(scratch))


def _remember_uploads(
    backend: RocksDBKeyedStateBackend, handle: RocksDBStateHandle, folder: Path
) -> None:
    # The restored instance has the same SST files: the next checkpoint may refer to
    # their shared copies (if the registry still knows them) instead of uploading.
    backend.uploaded = {
        file.name: SharedFileHandle(Path(file.path).name, file.size, file.checksum)
        for file in handle.files
        if file.shared
    }
    backend.uploaded_job_dir = folder.parent


def _fetch(source: Path, target: Path) -> tuple[int, str]:
    """Link (or, across file systems, copy) one immutable file; return its size and crc32.

    SST files are never written after they are created, in the checkpoint storage or in
    an instance (RocksDB deletes them, which only unlinks its own name), so a hard link
    is a copy that costs nothing; the crc32 is still computed, by reading the file.
    """
    try:
        os.link(source, target)
    except FileNotFoundError as error:
        raise CheckpointNotFoundError(str(source), "RocksDB state file") from error
    except OSError:
        return copy_with_crc(source, target, durable=False)
    crc = 0
    size = 0
    with open(target, "rb") as reader:
        while block := reader.read(_READ_BLOCK):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, f"{crc:08x}"


def local_copy_valid(handle: RocksDBStateHandle, local: Path) -> bool:
    """Whether the local copy ``local`` has every file of ``handle``, with its size."""
    try:
        return all((local / file.name).stat().st_size == file.size for file in handle.files)
    except OSError:
        return False


def fetch_handle(handle: RocksDBStateHandle, folder: Path, target: Path, state_dir: Path) -> bool:
    """Put the files of ``handle`` into ``target``; return whether the local copy was used.

    Raises:
        CheckpointNotFoundError: If a file is missing in the checkpoint; names it.
        CorruptCheckpointError: If a copied file's size or crc32 differs; names it.
    """
    target.mkdir(parents=True, exist_ok=True)
    local = state_dir / f"local-{handle.snapshot_id}"
    if local.is_dir() and local_copy_valid(handle, local):
        for file in handle.files:
            try:
                os.link(local / file.name, target / file.name)
            except OSError:
                shutil.copyfile(local / file.name, target / file.name)
        return True
    bundles: dict[str, bytes] = {}
    whole = [file for file in handle.files if file.offset < 0]
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        fetched = pool.map(lambda file: _fetch(folder / file.path, target / file.name), whole)
        for file, (size, checksum) in zip(whole, fetched, strict=True):
            verify_state(
                StateHandle(file.path, file.size, file.checksum),
                size,
                checksum,
                str(folder / file.path),
            )
    for file in handle.files:
        if file.offset < 0:
            continue
        source = folder / file.path  # one of the small files written together
        try:
            if file.path not in bundles:
                bundles[file.path] = source.read_bytes()
        except FileNotFoundError as error:
            raise CheckpointNotFoundError(str(source), "RocksDB state file") from error
        data = bundles[file.path][file.offset : file.offset + file.size]
        (target / file.name).write_bytes(data)
        verify_state(
            StateHandle(file.path, file.size, file.checksum),
            len(data),
            crc32_hex(data),
            str(source),
        )
    return False


def _copy_range(backend: RocksDBKeyedStateBackend, source: Path) -> None:
    """Copy the rows of the backend's key groups from the instance in ``source``."""
    kgs = backend.key_group_range
    db = open_db(source)
    try:
        low = key_group_prefix(kgs.start)
        for row, kind in scan_prefix(db, KIND_ROW):
            name = row[1:].decode()
            backend.db.put(row, kind)
            column = backend.column(name)
            it = db.get_column_family(name).iter()
            it.seek(low)
            while it.valid():
                key = it.key()
                if int.from_bytes(key[:2], "big") > kgs.end:
                    break
                column.put(key, it.value())
                it.next()
        for row, data in scan_prefix(db, STASH_ROW):
            if split_stash_row(row)[0] in kgs:
                backend.db.put(row, data)
    finally:
        with contextlib.suppress(Exception):
            db.close()
