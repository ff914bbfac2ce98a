"""The changelog keyed state backend (Flink's FLIP-158): checkpoints that cost what changed.

:class:`ChangelogKeyedStateBackend` wraps a heap or RocksDB keyed state backend (the
*wrapped* backend). Its state handles (:mod:`storage.changelog.states`) write to the
wrapped backend's and record every write through one choke point, :meth:`record`, in
the in-memory :class:`~storage.changelog.log.StateChangelog`. Closed segments of the
changelog are uploaded in the background (:mod:`storage.changelog.uploader`) to the
checkpoint storage's ``shared/`` folder: when a segment reaches ``file_size`` bytes, or
``upload_interval`` seconds after its first change (an event-loop timer), each file in
one worker-thread hop; the event loop never waits for a disk.

* **Checkpoint, synchronous part** (:meth:`snapshot`): close the open segment (the
  checkpoint's position) and capture the current materialization and the segments
  since it; O(segments).
* **Checkpoint, asynchronous part** (:meth:`ChangelogSnapshot.upload`, the same seam as
  RocksDB's incremental upload): wait for the captured segments' uploads (starting those
  not started), reference every file the checkpoint uses in the shared-state registry,
  and return them for ``SubtaskStateHandle.shared``; :meth:`ChangelogSnapshot.encode_chunks`
  then yields a :class:`~storage.changelog.handle.KeyGroupHandle` per key group.
* **Materialization** (:mod:`storage.changelog.materializer`): every
  ``materialization_interval`` seconds, or once ``materialization_size`` bytes were
  logged since the last one, the wrapped backend's own snapshot (copy-on-write for heap;
  flush and hard links for RocksDB) is encoded in the background in bounded chunks and
  written as one file of ``shared/``; then the segments before it are dropped, and their
  files unpinned: the registry deletes them once no retained checkpoint uses them.
* **Restore** (:mod:`storage.changelog.restore`): the deployment defers it; the task
  awaits :meth:`prepare`, which reads and verifies the files off the event loop, restores
  the wrapped backend from the materialized parts, and keeps the changelog entries of each
  state to replay when the operator registers the state (its descriptor gives the types).
  The restored handles are carried into later checkpoints until the first materialization.
* **Savepoints** are never changelogs: with ``full_snapshots`` set (the task sets it for
  a savepoint's synchronous part), or ``canonical``, :meth:`snapshot` returns the wrapped
  backend's full snapshot.

Owned by one subtask; its methods are called from its task only. Background work
(uploads, materialization, timers) runs as tasks of the running event loop that
:meth:`close` cancels and awaits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from storage.changelog.handle import KeyGroupHandle, encode_handle
from storage.changelog.log import ENTRY_OVERHEAD, Op, Segment, StateChangelog, UploadedFile
from storage.changelog.options import ChangelogOptions
from storage.changelog.states import Codecs, apply_entry, codecs_for, wrap_handle
from storage.changelog.uploader import SharedPins, upload_changelog
from storage.checkpoint.errors import StorageError
from storage.checkpoint.metadata import SharedFileHandle
from storage.descriptors import StateDescriptor, StateKind
from storage.errors import StateError
from storage.format.serializers import serializer_for
from storage.keygroups import KeyGroupRange
from storage.state import State

__all__ = ["ChangelogKeyedStateBackend", "ChangelogSnapshot", "ChangelogStorageError"]

logger = logging.getLogger("weir.changelog")

MARK_SIZE: Final = ENTRY_OVERHEAD + 16
"""Estimated bytes of a dirty key's entry (its value is encoded only at the cut)."""

_ABSENT: Final = object()


class ChangelogStorageError(StorageError):
    """The checkpoint storage cannot hold a changelog (it has no ``shared/`` folder)."""


@dataclass(slots=True)
class Materialization:
    """A completed materialization: its file, and the changelog position it covers."""

    file: UploadedFile
    seq: int


class ChangelogKeyedStateBackend:
    """A keyed state backend whose writes also go to a durable changelog.

    Args:
        inner: The wrapped backend (heap or RocksDB), fresh.
        options: Upload and materialization options (validated).
        allow_pickle: Whether keys and values of undeclared types may be pickled.
        clock: Seconds, monotonic (injected by tests).
    """

    def __init__(
        self,
        inner: Any,
        options: ChangelogOptions | None = None,
        *,
        allow_pickle: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.options = options or ChangelogOptions()
        self.allow_pickle = allow_pickle
        self.max_parallelism: int = inner.max_parallelism
        self.key_group_range: KeyGroupRange = inner.key_group_range
        self.clock = clock
        self.log = StateChangelog()
        self.key_serializer = serializer_for(None, allow_pickle, "key")
        self.materialized: Materialization | None = None
        # Set by the task around a savepoint's synchronous part: snapshots are full.
        self.full_snapshots = False
        # Restored handles, carried until the first materialization; their job folder.
        self.base: dict[int, KeyGroupHandle] = {}
        self.base_dir: Path | None = None
        # Restored changelog entries, by state, replayed when the state is registered.
        self.replay: dict[str, list[tuple[Hashable, int, bytes | None, bytes | None]]] = {}
        self.pending_restore: Any = None
        self.pins: SharedPins | None = None
        self.materializations = 0
        self.uploads = 0
        self._key: Hashable | None = None
        self._handles: dict[str, State] = {}
        self._codecs: dict[str, Codecs] = {}
        self._descriptors: dict[str, StateDescriptor] = {}
        self._inner_handles: dict[str, Any] = {}
        # The value and reducing states' handles, whose dirty keys a cut encodes.
        self._marking: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._materialize_timer: asyncio.TimerHandle | None = None
        self._materializing: asyncio.Task[Any] | None = None
        self._last_materialization = clock()
        self._in_flight = 0
        self._retired: list[str] = []

    # -- the keyed state backend interface ----------------------------------------------

    @property
    def current_key(self) -> Hashable | None:
        """The key state handles act on (set on the wrapped backend too)."""
        return self._key

    @current_key.setter
    def current_key(self, key: Hashable | None) -> None:
        self._key = key
        self.inner.current_key = key

    def set_current_key(self, key: Hashable | None) -> None:
        """Set the key that state handles act on."""
        self.current_key = key

    def get_state(self, descriptor: StateDescriptor) -> Any:
        """Return the logged handle of ``descriptor``'s state; replay restored changes first.

        Raises:
            The errors of the wrapped backend's ``get_state``; SerializationError if a
            restored change does not decode with the descriptor's types (names the state).
        """
        handle = self._handles.get(descriptor.name)
        inner = self.inner.get_state(descriptor)
        if handle is not None:
            return handle
        codecs = self._codecs[descriptor.name] = codecs_for(descriptor, self.allow_pickle)
        self._descriptors[descriptor.name] = descriptor
        self._inner_handles[descriptor.name] = inner
        entries = self.replay.pop(descriptor.name, None)
        if entries:
            self._replay(descriptor, inner, codecs, entries)
        handle = self._handles[descriptor.name] = wrap_handle(self, inner, descriptor, codecs)
        if descriptor.kind in (StateKind.VALUE, StateKind.REDUCING):
            self._marking.append(handle)
        return handle

    def replay_registered(self) -> None:
        """Replay the restored changes of the states registered already."""
        for name in [name for name in self.replay if name in self._handles]:
            descriptor = self._descriptors[name]
            self._replay(
                descriptor,
                self.inner.get_state(descriptor),
                self._codecs[name],
                self.replay.pop(name),
            )

    def _replay(
        self,
        descriptor: StateDescriptor,
        inner: Any,
        codecs: Codecs,
        entries: list[tuple[Hashable, int, bytes | None, bytes | None]],
    ) -> None:
        saved = self._key
        try:
            for key, op, map_key, value in entries:
                self.inner.current_key = key
                apply_entry(descriptor.kind, inner, codecs, op, map_key, value)
        finally:
            self.inner.current_key = saved

    @property
    def state_names(self) -> list[str]:
        """The names of the states (the wrapped backend's)."""
        return list(self.inner.state_names)

    def keys(self, state_name: str) -> Iterator[Hashable]:
        """Yield the keys of state ``state_name``."""
        return self.inner.keys(state_name)  # type: ignore[no-any-return]

    def num_keys(self, state_name: str | None = None) -> int:
        """Count the keys of one state or all (the wrapped backend's count)."""
        return self.inner.num_keys(state_name)  # type: ignore[no-any-return]

    @property
    def restoring(self) -> bool:
        """Whether the wrapped heap backend still decodes restored key groups."""
        from storage.heap.backend import HeapKeyedStateBackend

        return isinstance(self.inner, HeapKeyedStateBackend) and self.inner.restoring

    def restore_step(self, max_entries: int = 4096) -> bool:
        """Decode restored key groups of the wrapped heap backend (see its docs)."""
        from storage.heap.backend import HeapKeyedStateBackend

        if isinstance(self.inner, HeapKeyedStateBackend):
            return self.inner.restore_step(max_entries)
        return True

    # -- the changelog --------------------------------------------------------------------

    def record(
        self, name: str, op: int, key: Hashable, map_key: bytes | None, value: bytes | None
    ) -> None:
        """Log one write of state ``name`` for ``key``: the choke point of every write.

        Never blocks: it appends to the open segment; a full segment is closed and its
        upload started, and the first change of a segment arms its upload timer.
        """
        size = ENTRY_OVERHEAD + (len(map_key) if map_key else 0) + (len(value) if value else 0)
        segment = self.log.append((name, op, key, map_key, value), size)
        if segment.size >= self.options.file_size:
            self.flush()
        elif len(segment.entries) == 1 and self.pins is not None and self._timer is None:
            self._arm_upload_timer()

    def grew(self) -> None:
        """A value or reducing state's key was written for the first time since the cut.

        The other choke point (see :mod:`storage.changelog.states`): never blocks; a
        full segment is cut and its upload started, and the first change of a segment
        arms its upload timer.
        """
        segment = self.log.grow(MARK_SIZE)
        if segment.size >= self.options.file_size:
            self.flush()
        elif (
            segment.seq_to - segment.seq_from == 1
            and self.pins is not None
            and (self._timer is None)
        ):
            self._arm_upload_timer()

    def cut(self) -> Segment | None:
        """Close the open segment: encode its dirty keys' current values, then cut."""
        entries = self.log.current.entries
        inner_key = self.inner.current_key
        try:
            for handle in self._marking:
                dirty = handle.dirty
                if not dirty:
                    continue
                handle.dirty = {}
                name = handle.descriptor.name
                inner = self._inner_handles[name]
                encode = self._codecs[name].values.encode
                value_state = handle.descriptor.kind is StateKind.VALUE
                for key in dirty:
                    if value_state:
                        value = inner.get_for(key, _ABSENT)
                    else:  # reducing
                        self.inner.current_key = key
                        value = inner.get()
                        if value is None:
                            value = _ABSENT
                    if value is _ABSENT:
                        entries.append((name, Op.CLEAR, key, None, None))
                    else:
                        entries.append((name, Op.SET, key, None, encode(value)))
        finally:
            self.inner.current_key = inner_key
        return self.log.cut()

    def _arm_upload_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a job (offline tools, tests): no timers
            return
        self._timer = loop.call_later(self.options.upload_interval, self._on_upload_timer)

    def _on_upload_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> Segment | None:
        """Close the open segment and start its upload (once a storage is bound).

        Then start a materialization if one is due. Returns the closed segment.
        """
        segment = self.cut()
        if segment is not None and self.pins is not None:
            self._start_upload(segment)
        self.maybe_materialize()
        return segment

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any] | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside a job (offline tools): the next checkpoint uploads
            coroutine.close()
            return None
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_upload(self, segment: Segment) -> None:
        if segment.upload is None and segment.file is None:
            segment.upload = self._spawn(self._upload(segment))

    async def _upload(self, segment: Segment) -> None:
        assert self.pins is not None
        try:
            segment.file = await upload_changelog(
                self.pins,
                segment.entries,
                segment.seq_from,
                self.max_parallelism,
                self.key_serializer,
            )
        except Exception as error:  # raised again by the checkpoints that need it
            segment.error = error
            logger.warning("changelog upload failed: %s: %s", type(error).__name__, error)
            return
        self.uploads += 1
        segment.entries = []
        if segment.seq_to <= self.truncated_at:
            self.retire([segment.file.name])

    @property
    def truncated_at(self) -> int:
        """The changelog position before which nothing is needed (the materialization's)."""
        return self.materialized.seq if self.materialized is not None else 0

    def bind(self, storage: Any) -> SharedPins:
        """Use ``storage``'s ``shared/`` folder from now on (the first checkpoint's storage).

        Pins the restored files (a restore from another job's folder copies them first,
        see :meth:`ChangelogSnapshot.upload`), starts the uploads of closed segments and
        arms the materialization timer.

        Raises:
            ChangelogStorageError: If ``storage`` has no ``shared/`` folder.
        """
        if self.pins is not None:
            return self.pins
        shared = getattr(storage, "shared_files", None)
        if shared is None:
            raise ChangelogStorageError(
                f"the changelog state backend needs a file-system checkpoint storage, not "
                f"{storage!r}; use storage='file:///...' or changelog=False"
            )
        self.pins = SharedPins(shared)
        for segment in self.log.closed:
            self._start_upload(segment)
        if self.log.has_changes() and self._timer is None:
            self._arm_upload_timer()
        self._arm_materialize_timer()
        self.maybe_materialize()  # what was logged before may be due already
        return self.pins

    # -- materialization ---------------------------------------------------------------

    def _arm_materialize_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._materialize_timer = loop.call_later(
            self.options.materialization_interval, self._on_materialize_timer
        )

    def _on_materialize_timer(self) -> None:
        self._arm_materialize_timer()
        self.maybe_materialize()

    def maybe_materialize(self, *, force: bool = False) -> bool:
        """Start a materialization if one is due (or ``force``) and none runs.

        Not while restored changes of a state not registered yet wait to be replayed:
        the wrapped backend's snapshot would not hold them.

        Returns:
            Whether one was started.
        """
        if self.pins is None or self._materializing is not None or self.replay:
            return False
        if not force:
            logged = self.log.bytes_since(self.truncated_at)
            elapsed = self.clock() - self._last_materialization
            if logged == 0 or (
                logged < self.options.materialization_size
                and elapsed < self.options.materialization_interval
            ):
                return False
        from storage.changelog.materializer import materialize

        segment = self.cut()
        if segment is not None:
            self._start_upload(segment)
        self._materializing = self._spawn(materialize(self, self.log.seq))
        return self._materializing is not None

    async def wait_materialized(self) -> None:
        """Wait until no materialization runs."""
        while (task := self._materializing) is not None:
            await asyncio.wait([task])

    def materialized_at(self, file: UploadedFile, seq: int) -> None:
        """A materialization covering the changes before ``seq`` completed: truncate.

        Called by the materializer. The files no longer needed are unpinned once no
        checkpoint snapshot in flight may still use them.
        """
        self._materializing = None
        self._last_materialization = self.clock()
        self.materializations += 1
        old = self.materialized
        self.materialized = Materialization(file, seq)
        names = [old.file.name] if old is not None else []
        for segment in self.log.truncate(seq):
            if segment.file is not None:
                names.append(segment.file.name)
        for handle in self.base.values():
            names.extend(part.name for part in handle.materialized)
            names.extend(part.name for part in handle.changelog)
        self.base = {}
        self.retire(sorted(set(names)))
        self.maybe_materialize()  # enough may have been logged meanwhile

    def materialization_failed(self, error: BaseException) -> None:
        """The materializer failed: log it; the next one is tried when due."""
        self._materializing = None
        self._last_materialization = self.clock()
        logger.warning("changelog materialization failed: %s: %s", type(error).__name__, error)

    def retire(self, names: list[str]) -> None:
        """Unpin ``names`` once no snapshot in flight uses them."""
        self._retired.extend(names)
        if self._in_flight == 0:
            self._drop_retired()

    def _drop_retired(self) -> None:
        names, self._retired = self._retired, []
        if names and self.pins is not None:
            self._spawn(self.pins.drop(names))

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self, *, canonical: bool = False) -> Any:
        """The synchronous part of a checkpoint: cut the changelog, capture its position.

        A savepoint (``full_snapshots`` set, or ``canonical``) gets the wrapped backend's
        full snapshot instead: savepoints are self-contained.
        """
        if canonical or self.full_snapshots:
            if self.replay:
                # Their changes are only in the changelog: a full snapshot would lose them.
                raise StateError(
                    f"cannot take a savepoint: restored states {sorted(self.replay)} were "
                    "never registered, and their latest changes are only in the changelog; "
                    "register them (get_state in open) before taking a savepoint"
                )
            return self.inner.snapshot(canonical=canonical)
        segment = self.cut()
        if segment is not None and self.pins is not None:
            self._start_upload(segment)
        return ChangelogSnapshot(
            self, dict(self.base), self.materialized, self.log.since(self.truncated_at)
        )

    def snapshot_done(self) -> None:
        """A :class:`ChangelogSnapshot` was released."""
        self._in_flight -= 1
        if self._in_flight == 0 and self._retired:
            self._drop_retired()

    # -- restore ---------------------------------------------------------------------------

    def defer_restore(
        self, blobs: list[tuple[int, bytes | memoryview]], pointer: str | None, **options: Any
    ) -> None:
        """Keep the blobs of a restore for :meth:`prepare` (see :mod:`.restore`)."""
        self.pending_restore = (blobs, pointer, options)

    async def prepare(self) -> None:
        """Finish a deferred restore off the event loop (no-op without one).

        Raises:
            CheckpointNotFoundError: A changelog file is missing; names it.
            CorruptCheckpointError: A changelog file fails its size or crc check, or does
                not decode; names it.
        """
        if self.pending_restore is None:
            return
        from storage.changelog.restore import restore_changelog

        blobs, pointer, options = self.pending_restore
        self.pending_restore = None
        await restore_changelog(self, blobs, pointer, **options)

    async def close(self) -> None:
        """Stop the background work, unpin this backend's files, close the wrapped backend.

        Files no completed checkpoint uses are deleted then (a failed run's uploads).
        """
        from storage.backend import close_keyed_backend

        for timer in (self._timer, self._materialize_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._materialize_timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.pins is not None:
            await self.pins.release()
        await close_keyed_backend(self.inner)


class ChangelogSnapshot:
    """A checkpoint of a changelog backend between its synchronous and asynchronous parts.

    Args:
        backend: The backend.
        base: The restored handles still carried, by key group.
        materialized: The materialization the checkpoint builds on.
        segments: The changelog segments since it, up to the checkpoint's position.
    """

    def __init__(
        self,
        backend: ChangelogKeyedStateBackend,
        base: dict[int, KeyGroupHandle],
        materialized: Materialization | None,
        segments: list[Segment],
    ) -> None:
        self.backend = backend
        self.base = base
        self.materialized = materialized
        self.segments = segments
        self.max_parallelism = backend.max_parallelism
        self.key_group_range = backend.key_group_range
        self.uploaded_bytes = 0
        self._tail = [segment for segment in segments if segment.file is None]
        self._released = False
        self._uploaded = False
        backend._in_flight += 1

    async def upload(self, storage: Any, checkpoint_id: int) -> list[SharedFileHandle]:
        """Make every file the checkpoint uses durable in ``shared/``; return them.

        Starts the uploads of captured segments not started, waits for all (a running
        upload is not cancelled if this is), references each file for ``checkpoint_id``
        in the shared-state registry.

        Raises:
            ChangelogStorageError: ``storage`` has no ``shared/`` folder.
            StorageError: An upload failed, or a file the checkpoint needs is gone.
        """
        from storage.changelog.restore import adopt_base

        backend = self.backend
        pins = backend.bind(storage)
        await adopt_base(backend, storage)
        for segment in self.segments:
            backend._start_upload(segment)
        waiting = [segment.upload for segment in self.segments if segment.file is None]
        if waiting:
            await asyncio.wait(waiting)
        for segment in self.segments:
            if segment.file is None:
                raise StorageError(
                    f"changelog upload failed: {type(segment.error).__name__}: {segment.error}"
                )
        self.uploaded_bytes = sum(s.file.size for s in self._tail if s.file is not None)
        registry = pins.shared.registry
        handles: dict[str, SharedFileHandle] = {}
        for name, size, checksum in self._files():
            if name not in handles:
                if not registry.reference(checkpoint_id, name):
                    raise StorageError(
                        f"changelog file {pins.shared.folder / name} is no longer in the "
                        "shared-state registry (deleted); this checkpoint cannot use it"
                    )
                handles[name] = SharedFileHandle(name, size, checksum)
        self._uploaded = True
        return list(handles.values())

    def _files(self) -> Iterator[tuple[str, int, str]]:
        for handle in self.base.values():
            for part in (*handle.materialized, *handle.changelog):
                yield part.name, part.size, part.checksum
        if self.materialized is not None:
            file = self.materialized.file
            yield file.name, file.size, file.checksum
        for segment in self.segments:
            assert segment.file is not None
            yield segment.file.name, segment.file.size, segment.file.checksum

    def handle(self, key_group: int) -> KeyGroupHandle | None:
        """The handle of ``key_group`` (None if it has no state)."""
        base = self.base.get(key_group)
        if self.materialized is not None:
            materialized = self.materialized.file.parts(key_group)
            changelog = []
        elif base is not None:
            materialized, changelog = list(base.materialized), list(base.changelog)
        else:
            materialized, changelog = [], []
        for segment in self.segments:
            assert segment.file is not None
            changelog.extend(segment.file.parts(key_group))
        if not materialized and not changelog:
            return None
        return KeyGroupHandle(materialized, changelog)

    def encode_chunks(self, chunk_size: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """Yield ``(key group, handle blob)`` pairs after :meth:`upload`, in bounded steps.

        Raises:
            ChangelogStorageError: If :meth:`upload` was not called (a storage without
                ``shared/``, such as the memory storage).
        """
        if not self._uploaded:
            raise ChangelogStorageError(
                "the changelog state backend needs a file-system checkpoint storage; use "
                "storage='file:///...' or changelog=False"
            )
        kgs = self.key_group_range
        chunk: list[tuple[int, bytes]] = []
        for key_group in range(kgs.start, kgs.end + 1):
            handle = self.handle(key_group)
            if handle is not None:
                chunk.append((key_group, encode_handle(handle)))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def release(self) -> None:
        """Let the backend unpin files this snapshot no longer needs (idempotent)."""
        if not self._released:
            self._released = True
            self.backend.snapshot_done()

    def fold_step(self, max_entries: int = 0) -> bool:
        """Nothing to fold back: always True."""
        return True
