"""The RocksDB keyed state backend: all keyed state of one subtask, on local disk.

A keyed operator's subtask owns one :class:`RocksDBKeyedStateBackend` when the job sets
``state_backend="rocksdb"``. It has the public face of the heap backend
(:class:`~storage.heap.backend.HeapKeyedStateBackend`): ``set_current_key``,
``get_state``, ``state_names``, ``keys``, ``num_keys``, ``snapshot`` and ``restore``;
the runtime cannot tell them apart. Each state is a column family of one RocksDB
instance (rocksdict, raw mode) in a private folder under the state directory; rows are
laid out key group first (:mod:`storage.rocksdb.keys`). The write-ahead log is off:
durability comes from checkpoints, as in Flink.

At a checkpoint :meth:`~RocksDBKeyedStateBackend.snapshot` (the synchronous part) takes a
RocksDB checkpoint: a memtable flush and hard links to the live files, 10-30 ms for a
large state. In a job the owning task sets ``defer_snapshots``: ``snapshot()`` is then
O(1) and :meth:`RocksDBSnapshot.take() <storage.rocksdb.snapshot.RocksDBSnapshot.take>`
creates the checkpoint in a worker thread while the task waits, before its next record
(see :meth:`~RocksDBKeyedStateBackend.create_checkpoint` for how the GIL is kept free
meanwhile). The asynchronous part (:mod:`storage.rocksdb.snapshot`) then uploads the
files not uploaded before, or encodes the state in the common key-group format.
Restore (:mod:`storage.rocksdb.restore`) takes either format; in a job it is deferred
to :meth:`~RocksDBKeyedStateBackend.prepare`, which runs it in a worker thread.

Key-group-format state restored before its state is registered is kept, still encoded,
in the default column family ("stash" rows) until ``get_state`` registers it, and is
carried into every snapshot until then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import time
import uuid
import weakref
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
import msgspec
from rocksdict import (
    Checkpoint,
    DBCompactionStyle,
    Options,
    Rdict,
    UniversalCompactOptions,
    WriteOptions,
)

from storage.descriptors import StateDescriptor, StateKind
from storage.errors import StateError
from storage.format.keyed_format import (
    ENTRIES_DECODER,
    KeyedStateEntries,
    decode_columns,
    value_columns,
)
from storage.key_hash import stable_hash
from storage.keygroups import KeyGroupRange, validate_max_parallelism
from storage.rocksdb.keys import decode_key, row_prefix, split_row
from storage.rocksdb.state import make_handle, scan_prefix

__all__ = ["RocksDBKeyedStateBackend", "default_state_dir", "open_db"]

KIND_ROW: Final = b"k"
"""Default column family: ``k<name>`` -> the state's kind."""

STASH_ROW: Final = b"s"
"""Default column family: ``s<key group><name length><name><seq>`` -> encoded entries."""

ROW_CACHE: Final = 1 << 16
"""Keys whose row key a backend remembers."""

FLUSH_POLL_INTERVAL: Final = 0.0005
"""Seconds between two looks at a requested memtable flush (see ``create_checkpoint``)."""

FLUSH_WAIT_LIMIT: Final = 60.0
"""Seconds a checkpoint polls for its flushes before it lets RocksDB's checkpoint wait."""

_MEMTABLE_ENTRIES: Final = "rocksdb.num-entries-active-mem-table"
_IMMUTABLE_MEMTABLES: Final = "rocksdb.num-immutable-mem-table"
_FLUSH_PENDING: Final = "rocksdb.mem-table-flush-pending"
_BACKGROUND_ERRORS: Final = "rocksdb.background-errors"

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_entries_encoder: Final = msgspec.msgpack.Encoder()


def default_state_dir() -> Path:
    """The folder under which backends keep their instances: ``$TMPDIR/weir-state``."""
    return Path(tempfile.gettempdir()) / "weir-state"


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(16 << 20)
    options.set_target_file_size_base(16 << 20)
    options.set_max_background_jobs(2)
    # Universal compaction merges sorted runs of similar size: the small files that each
    # checkpoint's flush adds are merged among themselves, and the big run is rewritten
    # only when the small ones outgrow it. With levelled compaction every L0 -> L1
    # compaction rewrites the whole of L1 (the changed keys of an interval are spread
    # over every key group), so an incremental checkpoint after it uploads everything.
    options.set_compaction_style(DBCompactionStyle.universal())
    universal = UniversalCompactOptions()
    universal.max_size_amplification_percent = 200
    options.set_universal_compaction_options(universal)
    return options


def open_db(path: Path, *, read_only: bool = False) -> Rdict:
    """Open (or create) the RocksDB instance at ``path`` with every column family.

    Blocks on RocksDB's open (milliseconds); meant for construction and restore.
    """
    columns: dict[str, Options] = {}
    if (path / "CURRENT").exists():
        columns = {name: _options() for name in Rdict.list_cf(str(path)) if name != "default"}
    if read_only:
        from rocksdict import AccessType

        return Rdict(str(path), _options(), columns, AccessType.read_only())
    db = Rdict(str(path), _options(), columns)
    db.set_write_options(_no_wal())
    return db


def _no_wal() -> WriteOptions:
    options = WriteOptions()
    # A property at run time; the stub declares it as a method.
    options.disable_wal = True  # type: ignore[method-assign,assignment]
    return options


def stash_row(key_group: int, name: str, seq: int) -> bytes:
    """The default-column-family row of one stashed batch."""
    encoded = name.encode()
    return STASH_ROW + _U16.pack(key_group) + _U16.pack(len(encoded)) + encoded + _U32.pack(seq)


def split_stash_row(row: bytes) -> tuple[int, str]:
    """Return ``(key group, state name)`` of a stash row."""
    (length,) = _U16.unpack_from(row, 3)
    return _U16.unpack_from(row, 1)[0], row[5 : 5 + length].decode()


class _Registered:
    __slots__ = ("column", "descriptor", "handle")

    def __init__(self, descriptor: StateDescriptor, handle: Any, column: Rdict) -> None:
        self.descriptor = descriptor
        self.handle = handle
        self.column = column


def _close(db: Rdict, folder: Path) -> None:
    with contextlib.suppress(Exception):
        db.close()
    shutil.rmtree(folder, ignore_errors=True)


class RocksDBKeyedStateBackend:
    """Keyed state of one subtask in a RocksDB instance, with incremental snapshots.

    Owned by one subtask and used from its task only (not thread safe: the worker
    threads of :meth:`prepare` and ``RocksDBSnapshot.take`` use it while the task
    waits). State accesses never block for long; the constructor, :meth:`restore` and
    :meth:`snapshot` block on RocksDB's open, restore and checkpoint calls, unless
    deferred (``defer_snapshots``, :meth:`defer_restore`).

    Args:
        max_parallelism: The job's number of key groups.
        key_group_range: The key groups this subtask owns.
        allow_pickle: Whether state values of undeclared types may be pickled.
        state_dir: The folder for the instance; :func:`default_state_dir` if None.
        incremental: Whether checkpoints upload only new files (else every file).
        local_recovery: Whether to keep a local copy of the latest snapshots and
            restore from it when it is present and valid.

    Attributes:
        current_key: The key the state handles act on; set by the runtime before each
            user call. None means no key (state access then raises StateError).
    """

    def __init__(
        self,
        max_parallelism: int,
        key_group_range: KeyGroupRange,
        *,
        allow_pickle: bool = True,
        state_dir: str | os.PathLike[str] | None = None,
        incremental: bool = True,
        local_recovery: bool = False,
    ) -> None:
        validate_max_parallelism(max_parallelism)
        if not key_group_range.is_empty and key_group_range.end >= max_parallelism:
            raise ValueError(
                f"key group range [{key_group_range.start}, {key_group_range.end}] exceeds "
                f"max_parallelism={max_parallelism}; use KeyGroupRange.for_operator"
            )
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self.allow_pickle = allow_pickle
        self.incremental = incremental
        self.local_recovery = local_recovery
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.instance_dir = Path(tempfile.mkdtemp(prefix="rocksdb-", dir=self.state_dir))
        self.current_key: Hashable | None = None
        self._row_key: Any = None
        self._row: bytes | None = None
        self._rows: dict[Hashable, bytes] = {}
        self._registered: dict[str, _Registered] = {}
        self._stash_seq = 0
        # Local SST name -> its file in the job's shared folder, from the last snapshot
        # uploaded (or restored); the registry says whether each may still be reused.
        self.uploaded: dict[str, Any] = {}
        self.uploaded_job_dir: Path | None = None
        self.local_copies: list[Path] = []
        # Set by the task that owns the backend (runtime.tasks.task): snapshot() then
        # leaves the RocksDB checkpoint to RocksDBSnapshot.take(), which the task awaits
        # (in a worker thread) before it processes another record.
        self.defer_snapshots = False
        # Blobs and pointer of a restore left to prepare() (see defer_restore).
        self.pending_restore: tuple[list[tuple[int, bytes | memoryview]], str | None] | None = None
        self.db = open_db(self.instance_dir)
        self._finalizer = weakref.finalize(self, _close, self.db, self.instance_dir)

    # -- the hot path ---------------------------------------------------------------------

    def set_current_key(self, key: Hashable | None) -> None:
        """Set the key that state handles act on (an attribute write)."""
        self.current_key = key

    def current_row(self, descriptor: StateDescriptor) -> bytes:
        """The row key of the current key (computed once per key)."""
        key = self.current_key
        if key is None:
            raise StateError(
                f"{descriptor.kind} state {descriptor.name!r} was accessed with no current "
                "key; keyed state can only be used while a keyed record (or timer) is "
                "processed, and None cannot be a key"
            )
        return self.row_of(key)

    def row_of(self, key: Hashable) -> bytes:
        """The row key of ``key``: key group, length, stable encoding.

        Remembered for the last :data:`ROW_CACHE` keys seen (hashing and encoding a key
        costs more than the RocksDB lookup); keys that compare equal have equal rows, so
        the cache cannot confuse them.
        """
        if key is self._row_key and self._row is not None:
            return self._row
        rows = self._rows
        row = rows.get(key)
        if row is None:
            if len(rows) >= ROW_CACHE:
                rows.clear()
            row = rows[key] = row_prefix(stable_hash(key) % self.max_parallelism, key)
        self._row_key, self._row = key, row
        return row

    # -- states ---------------------------------------------------------------------------

    def get_state(self, descriptor: StateDescriptor) -> Any:
        """Return the handle of the state ``descriptor`` names, registering it on first use.

        Raises:
            StateError: If the name is registered, or was restored, with another kind.
            SerializationError: If restored values do not decode with the descriptor's type.
        """
        registered = self._registered.get(descriptor.name)
        if self.pending_restore is not None:
            self._restore_pending()
        if registered is not None:
            if registered.descriptor.kind != descriptor.kind:
                raise StateError(
                    f"state {descriptor.name!r} is registered as {registered.descriptor.kind}"
                    f" state and cannot be registered again as {descriptor.kind} state; give "
                    "the new state another name"
                )
            return registered.handle
        kind = self.db.get(KIND_ROW + descriptor.name.encode())
        if kind is not None and kind.decode() != descriptor.kind:
            raise StateError(
                f"state {descriptor.name!r} was restored as {kind.decode()} state but is "
                f"registered as {descriptor.kind} state; register it with its old kind, or "
                "give the new state another name"
            )
        column = self.column(descriptor.name)
        self.db.put(KIND_ROW + descriptor.name.encode(), str(descriptor.kind).encode())
        handle = make_handle(self, column, descriptor)
        self._registered[descriptor.name] = _Registered(descriptor, handle, column)
        self._unstash(descriptor, column)
        return handle

    def column(self, name: str) -> Rdict:
        """The column family of state ``name``, created if missing."""
        try:
            return self.db.get_column_family(name)
        except Exception:
            return self.db.create_column_family(name, _options())

    def descriptors(self) -> dict[str, StateDescriptor]:
        """The descriptors of the registered states, by name."""
        return {name: r.descriptor for name, r in self._registered.items()}

    def restored_kinds(self) -> dict[str, StateKind]:
        """The kind of every state in the instance (registered or restored), by name."""
        if self.pending_restore is not None:
            self._restore_pending()
        return {
            row[1:].decode(): StateKind(kind.decode())
            for row, kind in scan_prefix(self.db, KIND_ROW)
        }

    def stashed(self) -> Iterator[tuple[int, KeyedStateEntries]]:
        """Yield ``(key group, batch)`` of restored states not registered yet."""
        for row, data in scan_prefix(self.db, STASH_ROW):
            yield split_stash_row(row)[0], ENTRIES_DECODER.decode(data)

    @property
    def state_names(self) -> list[str]:
        """The names of registered states, then of restored states not registered yet."""
        names = list(self._registered)
        names += [name for name in self.restored_kinds() if name not in self._registered]
        for _, batch in self.stashed():
            if batch.name not in names:
                names.append(batch.name)
        return names

    def keys(self, state_name: str) -> Iterator[Hashable]:
        """Yield the keys that have an entry in state ``state_name``.

        Raises:
            StateError: If no state of that name is registered.
        """
        registered = self._registered.get(state_name)
        if registered is None:
            raise StateError(
                f"no state named {state_name!r} is registered; registered states: "
                f"{sorted(self._registered)}"
            )
        return self._keys(registered.column)

    def _keys(self, column: Rdict) -> Iterator[Hashable]:
        last = None
        for row in column.keys():  # noqa: SIM118 (an Rdict iterates its keys only so)
            _, key, _ = split_row(bytes(row))  # type: ignore[arg-type]
            if key != last:  # a map state has one row per map entry
                last = key
                yield decode_key(key)

    def num_keys(self, state_name: str | None = None) -> int:
        """Return the number of keys with an entry in one state, or in all states summed.

        Counts by iterating the rows: O(rows), meant for tests and tools.
        """
        if state_name is None:
            return sum(self.num_keys(name) for name in self.state_names)
        if state_name in self.restored_kinds():
            return sum(1 for _ in self._keys(self.column(state_name)))
        return sum(batch.count for _, batch in self.stashed() if batch.name == state_name)

    # -- snapshots and restore ------------------------------------------------------------

    def snapshot(self, *, canonical: bool = False) -> Any:
        """Take a RocksDB checkpoint: the synchronous part of a snapshot.

        Flushes the memtables and hard-links the live files into a new folder (under
        the state directory, kept as the local copy with local recovery). O(files), not
        O(keys); blocks for the flush of at most one memtable (16 MiB). With
        ``defer_snapshots`` set it does neither and never blocks: the caller must await
        the snapshot's ``take()`` before it writes state or uses the backend again.

        Args:
            canonical: encode the state in the common key-group format without pickle
                (canonical savepoints), whatever the storage.

        Returns:
            A :class:`~storage.rocksdb.snapshot.RocksDBSnapshot`.
        """
        from storage.rocksdb.snapshot import RocksDBSnapshot

        if self.pending_restore is not None:
            self._restore_pending()
        snapshot_id = uuid.uuid4().hex
        folder = self.state_dir / ("local-" + snapshot_id)
        if self.defer_snapshots:
            return RocksDBSnapshot(self, snapshot_id, folder, canonical=canonical, taken=False)
        self.create_checkpoint(folder)
        return RocksDBSnapshot(self, snapshot_id, folder, canonical=canonical)

    def create_checkpoint(self, folder: Path) -> None:
        """Flush the memtables and hard-link the live files into ``folder``. Blocks.

        Milliseconds to tens of milliseconds (the flush writes and syncs one SST file
        per column family with changes). May run in a worker thread, provided nothing
        else uses the instance meanwhile (rocksdict objects are not shared across
        threads here): :meth:`RocksDBSnapshot.take()
        <storage.rocksdb.snapshot.RocksDBSnapshot.take>` runs it so while its task waits.

        rocksdict holds the GIL for the whole of a call, so a waiting flush (or a
        checkpoint that flushes) would stall every thread, the event loop too, however
        it is called. Hence the flushes are only requested here (RocksDB's background
        thread writes them, without the GIL) and waited for by polling with sleeps, which
        release it; RocksDB's checkpoint then finds the memtables empty and only links
        files (about a millisecond with the GIL held). Column families whose memtable is
        empty are not flushed.
        """
        columns = [self.db] + [self.db.get_column_family(name) for name in self.restored_kinds()]
        flushing = []
        for column in columns:
            if column.property_int_value(_MEMTABLE_ENTRIES):
                column.flush(False)
                flushing.append(column)
        deadline = time.monotonic() + FLUSH_WAIT_LIMIT
        while flushing and time.monotonic() < deadline:
            if self.db.property_int_value(_BACKGROUND_ERRORS):
                break  # the checkpoint's own flush below raises it
            flushing = [
                column
                for column in flushing
                if column.property_int_value(_IMMUTABLE_MEMTABLES)
                or column.property_int_value(_FLUSH_PENDING)
            ]
            if flushing:
                time.sleep(FLUSH_POLL_INTERVAL)
        Checkpoint(self.db).create_checkpoint(str(folder))

    def restore(
        self, key_group_blobs: Iterable[tuple[int, bytes | memoryview]], pointer: str | None = None
    ) -> None:
        """Load the key groups of this backend's range, from either snapshot format.

        Call before any record is processed. Native blobs (RocksDB files) are fetched
        from the local copy when it is present and valid, else from ``pointer``'s
        folder, and opened; key-group blobs are written row by row.

        Args:
            key_group_blobs: ``(key group, blob)`` pairs of one or more old subtasks.
            pointer: The checkpoint's or savepoint's folder (needed by native blobs).

        Raises:
            SerializationError: If a blob is corrupt or a value does not decode.
            CheckpointNotFoundError: If a file of a native snapshot is missing.
            CorruptCheckpointError: If a file of a native snapshot fails to verify.
        """
        from storage.rocksdb.restore import restore_backend

        if self.pending_restore is not None:
            self._restore_pending()
        restore_backend(self, key_group_blobs, pointer)

    def defer_restore(
        self, key_group_blobs: Iterable[tuple[int, bytes | memoryview]], pointer: str | None
    ) -> None:
        """Keep the blobs of a restore for :meth:`prepare` (never blocks).

        The runtime's deployment calls this while it builds the subtask, and the task
        awaits :meth:`prepare` before it opens its operators, so hard links, copies,
        crc32 checks, the open and a rescale's row copy run in a worker thread. A
        synchronous use of the backend before then (``get_state``, ``snapshot``,
        ``restore``, ``state_names``...) restores on the spot instead.
        """
        pending = self.pending_restore
        blobs = list(key_group_blobs)
        if pending is not None:  # a second call: both sets of blobs, restored together
            if pending[1] != pointer:
                self._restore_pending()
            else:
                blobs = pending[0] + blobs
        self.pending_restore = (blobs, pointer)

    async def prepare(self) -> None:
        """Run a restore left by :meth:`defer_restore`, in a worker thread.

        Call from the owning task before it uses the backend; nothing else may use the
        backend meanwhile. Cancellation waits for the thread's end (the restore cannot
        be interrupted half way), then is delivered; the backend is then unusable.

        Raises:
            The errors of :meth:`restore`.
        """
        pending, self.pending_restore = self.pending_restore, None
        if pending is None:
            return
        from storage.rocksdb.restore import restore_backend

        await anyio.to_thread.run_sync(restore_backend, self, *pending)

    def _restore_pending(self) -> None:
        from storage.rocksdb.restore import restore_backend

        pending, self.pending_restore = self.pending_restore, None
        if pending is not None:
            restore_backend(self, *pending)

    def reopen(self, folder: Path) -> None:
        """Replace the (empty) instance by the one in ``folder`` (a restored copy)."""
        self.db.close()
        self._finalizer.detach()
        shutil.rmtree(self.instance_dir, ignore_errors=True)
        self.instance_dir = folder
        self.db = open_db(folder)
        self._finalizer = weakref.finalize(self, _close, self.db, self.instance_dir)

    def stash(self, key_group: int, batch: KeyedStateEntries) -> None:
        """Keep a restored batch of a state not registered yet (or write it if it is)."""
        registered = self._registered.get(batch.name)
        if registered is not None:
            self._load(registered.descriptor, registered.column, key_group, batch)
            return
        self._stash_seq += 1
        self.db.put(
            stash_row(key_group, batch.name, self._stash_seq), _entries_encoder.encode(batch)
        )

    def _unstash(self, descriptor: StateDescriptor, column: Rdict) -> None:
        rows = []
        for row, data in scan_prefix(self.db, STASH_ROW):
            key_group, name = split_stash_row(row)
            if name == descriptor.name:
                self._load(descriptor, column, key_group, ENTRIES_DECODER.decode(data))
                rows.append(row)
        for row in rows:
            self.db.delete(row)

    def _load(
        self, descriptor: StateDescriptor, column: Rdict, key_group: int, batch: KeyedStateEntries
    ) -> None:
        if batch.kind != descriptor.kind:
            raise StateError(
                f"state {batch.name!r} was restored as {batch.kind} state but is registered "
                f"as {descriptor.kind} state; register it with its old kind, or give the new "
                "state another name"
            )
        keys, values = decode_columns(batch, value_columns(descriptor, self.allow_pickle))
        handle = self._registered[descriptor.name].handle
        saved = self.current_key
        try:
            for key, value in zip(keys, values, strict=True):
                self.current_key = key
                _put_stored(handle, descriptor.kind, value)
        finally:
            self.current_key = saved

    async def close(self) -> None:
        """Close the instance and delete its folder, in a worker thread; idempotent.

        The local copies stay (a restarted subtask may recover from them).
        """
        await anyio.to_thread.run_sync(self._release_instance)

    def _release_instance(self) -> None:
        self._finalizer()
        # Drop the column families' handles here, not in a later garbage collection of
        # the task's objects: freed there, RocksDB's teardown took about a second, in
        # whatever code happened to run that collection.
        for registered in self._registered.values():
            registered.column = None  # type: ignore[assignment]
            registered.handle._column = None

    def dispose(self) -> None:
        """Close the instance and delete its folder (and the local copies)."""
        self._finalizer()
        for copy in self.local_copies:
            shutil.rmtree(copy, ignore_errors=True)
        self.local_copies.clear()


def _put_stored(handle: Any, kind: StateKind, value: Any) -> None:
    """Write a value in the form the heap backend stores it (value, list or dict)."""
    if kind is StateKind.LIST:
        handle.update(value)
    elif kind is StateKind.MAP:
        handle.clear()
        handle.put_all(value)
    elif kind is StateKind.REDUCING:
        handle.clear()
        handle.add(value)
    else:
        handle.update(value)
