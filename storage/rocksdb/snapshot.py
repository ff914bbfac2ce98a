"""RocksDB snapshots: the asynchronous part of a checkpoint of the RocksDB backend.

:meth:`RocksDBKeyedStateBackend.snapshot()
<storage.rocksdb.backend.RocksDBKeyedStateBackend.snapshot>` (the synchronous part)
takes a RocksDB checkpoint into a folder of hard links and returns a
:class:`RocksDBSnapshot`; in a job it returns at once and the task awaits
:meth:`RocksDBSnapshot.take`, which takes the checkpoint in a worker thread, before it
processes another record. The subtask's checkpoint writer then, while records keep
flowing, either

* calls :meth:`RocksDBSnapshot.upload` with its checkpoint storage, which writes the
  native format: into a file-system checkpoint storage, each SST file not uploaded before
  goes to the job's ``shared/`` folder and the others are referred to (incremental; the
  shared-state registry must still know them, else they are uploaded again, and an SST
  file is known by its name: SST files are immutable, so it is never re-read), and the
  small files go into the checkpoint's folder, all in one worker-thread hop that syncs
  the files after writing them all (``SharedFiles.upload_batch``); into a savepoint's
  folder, every file.
  :meth:`~RocksDBSnapshot.encode_chunks` then yields the handle
  (:mod:`storage.rocksdb.handle`) once per key group of the range; or
* does not (memory storage, canonical savepoints, offline tools): then
  :meth:`~RocksDBSnapshot.encode_chunks` reads the checkpoint folder and encodes the
  state in the common key-group format of the heap backend
  (:mod:`storage.keyed_snapshot`), so a heap job can restore it and vice versa.

:meth:`~RocksDBSnapshot.release` closes what was opened and deletes the folder, or,
with local recovery, keeps it as the local copy of the snapshot (the two newest are kept).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread

from storage.checkpoint.filesystem import FileCheckpointStorage
from storage.checkpoint.layout import validate_state_name
from storage.checkpoint.metadata import SharedFileHandle, crc32_hex
from storage.checkpoint.savepoint import SavepointStorage
from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.format.keyed_format import ENTRIES_DECODER, encode_key_group
from storage.heap.backend import HeapKeyedStateBackend
from storage.keyed_snapshot import HeapSnapshot
from storage.rocksdb.handle import RocksDBFile, RocksDBStateHandle, encode_handle
from storage.rocksdb.keys import decode_key, split_row
from storage.rocksdb.state import row_value_serializer, scan_prefix

if TYPE_CHECKING:
    from storage.checkpoint.storage import CheckpointStorage
    from storage.rocksdb.backend import RocksDBKeyedStateBackend

__all__ = ["LOCAL_COPIES_KEPT", "RocksDBSnapshot", "untyped_descriptor"]

LOCAL_COPIES_KEPT: Final = 2
"""Local copies of snapshots a backend keeps with local recovery (newest first)."""

_READ_BLOCK: Final = 1 << 20


def untyped_descriptor(name: str, kind: StateKind) -> StateDescriptor:
    """A descriptor for a restored state that was never registered (untyped values)."""
    if kind is StateKind.LIST:
        return ListStateDescriptor(name)
    if kind is StateKind.MAP:
        return MapStateDescriptor(name)
    if kind is StateKind.REDUCING:
        return ReducingStateDescriptor(name, lambda _old, new: new)
    return ValueStateDescriptor(name)


def _read_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as reader:
        while block := reader.read(_READ_BLOCK):
            yield block


class RocksDBSnapshot:
    """A RocksDB checkpoint of a backend, written by the asynchronous part.

    Args:
        backend: The backend it was taken of.
        snapshot_id: Its unique id.
        folder: The RocksDB checkpoint (hard links to the instance's files).
        canonical: Whether to encode the common format without pickle.
        taken: Whether the RocksDB checkpoint exists already; if not, :meth:`take`
            creates it.
    """

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        snapshot_id: str,
        folder: Path,
        *,
        canonical: bool = False,
        taken: bool = True,
    ) -> None:
        self.backend = backend
        self.taken = taken
        self.snapshot_id = snapshot_id
        self.folder = folder
        self.canonical = canonical
        self.max_parallelism = backend.max_parallelism
        self.key_group_range = backend.key_group_range
        self.handle: RocksDBStateHandle | None = None
        self.uploaded_bytes = 0
        self._descriptors = backend.descriptors()
        self._heap: HeapSnapshot | None = None
        self._released = False

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    async def take(self) -> None:
        """Create the RocksDB checkpoint in a worker thread (the deferred synchronous part).

        The backend's owner calls it right after ``snapshot()`` of a backend with
        ``defer_snapshots`` set, and must neither process records nor use the backend
        until it returns: the checkpoint is the state as of ``snapshot()`` only if no
        write comes in between, and the instance is not used from two threads at once.
        Does nothing if taken already or released (an aborted checkpoint). Cancellation
        waits for the thread's end, then is delivered.

        Raises:
            Exception: What RocksDB's checkpoint raised (the snapshot stays untaken).
        """
        if self.taken or self._released:
            return
        await anyio.to_thread.run_sync(self.backend.create_checkpoint, self.folder)
        self.taken = True
        if self._released:  # released (aborted) while the thread ran
            threading.Thread(target=_remove_folders, args=([self.folder],), daemon=True).start()

    # -- native format --------------------------------------------------------------------

    async def upload(
        self, storage: CheckpointStorage, checkpoint_id: int
    ) -> list[SharedFileHandle]:
        """Write the native format into ``storage`` (nothing for unsupported storages).

        Does nothing for a canonical snapshot or a storage without files (memory):
        :meth:`encode_chunks` then encodes the common format. May be cancelled; files
        uploaded so far are deleted with the checkpoint.

        Returns:
            The shared files the checkpoint uses (for its metadata).

        Raises:
            StorageNotWritableError: If a file cannot be written; names it.
        """
        if self.canonical or not isinstance(storage, FileCheckpointStorage):
            return []
        self._check_taken()
        if isinstance(storage, SavepointStorage):
            await self._upload_savepoint(storage, checkpoint_id)
            return []
        backend = self.backend
        reusable = backend.incremental and backend.uploaded_job_dir == storage.job_dir
        prefix = self.snapshot_id[:16]
        # Decided on the loop (the registry is the loop's), written in one thread hop.
        plan: list[tuple[str, SharedFileHandle | None]] = []
        copies: list[tuple[Path, str]] = []
        small: list[Path] = []
        reused = False
        for name in sorted(os.listdir(self.folder)):
            if not name.endswith(".sst"):
                small.append(self.folder / name)
                continue
            # SST files are immutable: same name in the same instance lineage, same
            # file, so the name (with the size recorded) identifies it; no re-read.
            previous = backend.uploaded.get(name) if reusable else None
            if previous is not None and storage.shared_files.reuse(checkpoint_id, previous):
                plan.append((name, previous))
                reused = True
            else:
                plan.append((name, None))
                copies.append((self.folder / name, f"{prefix}-{name}"))
        bundle_name = validate_state_name(f"rocksdb-{prefix}-files")
        bundle = (storage.checkpoint_dir(checkpoint_id) / bundle_name, small) if small else None
        new, parts = await storage.shared_files.upload_batch(checkpoint_id, copies, bundle)
        fresh = iter(new)
        files: list[RocksDBFile] = []
        shared: list[SharedFileHandle] = []
        uploaded: dict[str, SharedFileHandle] = {}
        for name, previous in plan:
            handle = previous
            if handle is None:
                handle = next(fresh)
                self.uploaded_bytes += handle.size
            uploaded[name] = handle
            shared.append(handle)
            files.append(
                RocksDBFile(name, f"../shared/{handle.name}", handle.size, handle.checksum, True)
            )
        # MANIFEST, CURRENT, OPTIONS, ...: kilobytes, written as one file.
        offset = 0
        for path, (size, checksum) in zip(small, parts, strict=True):
            files.append(RocksDBFile(path.name, bundle_name, size, checksum, offset=offset))
            offset += size
        self.uploaded_bytes += offset
        backend.uploaded = uploaded
        backend.uploaded_job_dir = storage.job_dir
        kgs = self.key_group_range
        self.handle = RocksDBStateHandle(self.snapshot_id, kgs.start, kgs.end, files, reused)
        return shared

    async def _upload_savepoint(self, storage: SavepointStorage, checkpoint_id: int) -> None:
        """A native savepoint: every file into the savepoint's own folder."""
        files: list[RocksDBFile] = []
        small: list[Path] = []
        for path in sorted(self.folder.iterdir()):
            name = path.name
            if name.endswith(".sst"):
                state = await storage.write_state(
                    checkpoint_id, f"rocksdb-{self.snapshot_id[:16]}-{name}", _read_blocks(path)
                )
                self.uploaded_bytes += state.size
                files.append(RocksDBFile(name, state.path, state.size, state.checksum))
            else:
                small.append(path)
        if small:
            contents = [path.read_bytes() for path in small]
            state = await storage.write_state(
                checkpoint_id, f"rocksdb-{self.snapshot_id[:16]}-files", contents
            )
            self.uploaded_bytes += state.size
            offset = 0
            for path, data in zip(small, contents, strict=True):
                files.append(
                    RocksDBFile(path.name, state.path, len(data), crc32_hex(data), offset=offset)
                )
                offset += len(data)
        kgs = self.key_group_range
        self.handle = RocksDBStateHandle(self.snapshot_id, kgs.start, kgs.end, files, False)

    def _check_taken(self) -> None:
        if not self.taken:
            raise RuntimeError(
                f"RocksDB snapshot {self.snapshot_id} was not taken: the backend defers "
                "its checkpoints (defer_snapshots), so await take() before using it"
            )

    # -- the writer's interface -----------------------------------------------------------

    def encode_chunks(self, chunk_size: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """Yield the snapshot as ``(key group, blob)`` pairs, in bounded steps.

        The native handle once per key group of the range after :meth:`upload`, else
        the common key-group format (see :meth:`HeapSnapshot.encode_chunks`).
        """
        if self.handle is not None:
            blob = encode_handle(self.handle)
            kgs = self.key_group_range
            groups = list(range(kgs.start, kgs.end + 1))
            for start in range(0, len(groups), chunk_size):
                yield [(kg, blob) for kg in groups[start : start + chunk_size]]
            return
        yield from self._encode_common(chunk_size)

    def encode_key_groups(self) -> list[tuple[int, bytes]]:
        """Encode the whole snapshot at once; see :meth:`encode_chunks`."""
        return [blob for chunk in self.encode_chunks() for blob in chunk]

    def _encode_common(self, chunk_size: int) -> Iterator[list[tuple[int, bytes]]]:
        from storage.rocksdb.backend import KIND_ROW, STASH_ROW, open_db, split_stash_row

        self._check_taken()
        backend = self.backend
        heap = HeapKeyedStateBackend(
            self.max_parallelism, self.key_group_range, allow_pickle=backend.allow_pickle
        )
        db = open_db(self.folder, read_only=True)
        try:
            stash = [(split_stash_row(row)[0], data) for row, data in scan_prefix(db, STASH_ROW)]
            if stash:
                heap.restore(
                    (kg, encode_key_group(kg, [ENTRIES_DECODER.decode(data)])) for kg, data in stash
                )
            kinds = {row[1:].decode(): kind.decode() for row, kind in scan_prefix(db, KIND_ROW)}
            for name, kind in kinds.items():
                descriptor = self._descriptors.get(name) or untyped_descriptor(
                    name, StateKind(kind)
                )
                handle: Any = heap.get_state(descriptor)
                serializer = row_value_serializer(descriptor, backend.allow_pickle)
                decode = serializer.decode
                column = db.get_column_family(name)
                pending_key: bytes | None = None
                entries: dict[Any, Any] = {}
                for count, (row, data) in enumerate(scan_prefix(column, b""), 1):
                    _, key, map_key = split_row(row)
                    if descriptor.kind is StateKind.MAP:
                        if key != pending_key and pending_key is not None:
                            heap.set_current_key(decode_key(pending_key))
                            handle.put_all(entries)
                            entries = {}
                        pending_key = key
                        entries[decode_key(map_key)] = decode(data)
                    else:
                        heap.set_current_key(decode_key(key))
                        value = decode(data)
                        if descriptor.kind is StateKind.REDUCING:
                            handle.add(value)
                        else:
                            handle.update(value)
                    if count % chunk_size == 0:
                        yield []
                if pending_key is not None:
                    heap.set_current_key(decode_key(pending_key))
                    handle.put_all(entries)
        finally:
            db.close()
        heap.set_current_key(None)
        self._heap = heap.snapshot(canonical=self.canonical)
        yield from self._heap.encode_chunks(chunk_size)

    def release(self) -> None:
        """Close and delete the checkpoint folder, or keep it as the local copy.

        Idempotent; never blocks: folders are deleted by a background thread.
        """
        if self._released:
            return
        self._released = True
        if self._heap is not None:
            self._heap.release()
        if not self.taken:  # no folder yet; take() deletes it if its thread runs now
            return
        backend = self.backend
        doomed = []
        if self.handle is not None and backend.local_recovery and not self.canonical:
            backend.local_copies.append(self.folder)
            while len(backend.local_copies) > LOCAL_COPIES_KEPT:
                doomed.append(backend.local_copies.pop(0))
        else:
            doomed.append(self.folder)
        # Unlinking the last link of a compacted-away SST frees its blocks: tens of
        # milliseconds for a large state, so not on the event loop.
        threading.Thread(target=_remove_folders, args=(doomed,), daemon=True).start()

    def fold_step(self, max_entries: int = 0) -> bool:
        """Nothing to fold back (RocksDB needs no copy-on-write): always True."""
        return True


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
