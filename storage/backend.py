"""The keyed state backend seam: the protocol the runtime uses, and the factory.

A keyed operator's subtask owns one keyed state backend for its key-group range. Two
implementations: :class:`~storage.heap.backend.HeapKeyedStateBackend` (in memory, the
default) and :class:`~storage.rocksdb.backend.RocksDBKeyedStateBackend` (on local disk,
with incremental checkpoints). The runtime's deployment creates it with
:func:`create_keyed_backend`, by the job's ``state_backend`` option
(:data:`STATE_BACKENDS`), and restores it before the subtask runs (a RocksDB restore is
deferred to :func:`prepare_keyed_backend`, which the subtask awaits before it opens its
operators, so it runs in a worker thread); operators reach it through their runtime
context.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Final, Protocol, runtime_checkable

from storage.checkpoint.metadata import SharedFileHandle
from storage.descriptors import StateDescriptor
from storage.keygroups import KeyGroupRange

__all__ = [
    "STATE_BACKENDS",
    "KeyedSnapshot",
    "KeyedStateBackend",
    "UploadingSnapshot",
    "close_keyed_backend",
    "create_keyed_backend",
    "prepare_keyed_backend",
    "restore_keyed_backend",
]

STATE_BACKENDS: Final = ("heap", "rocksdb")
"""The values of the ``state_backend`` option."""

# storage.rocksdb.handle.NATIVE_MAGIC, without importing the RocksDB package (and rocksdict).
_ROCKSDB_NATIVE_MAGIC: Final = b"WEIRRDB1"


class KeyedSnapshot(Protocol):
    """The synchronous part of a keyed snapshot, as the checkpoint writer uses it."""

    def encode_chunks(self, chunk_size: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """Yield ``(key group, blob)`` pairs in bounded steps."""
        ...

    def release(self) -> None:
        """Release what the snapshot holds (idempotent)."""
        ...

    def fold_step(self, max_entries: int = ...) -> bool:
        """Fold copy-on-write state back; True when done."""
        ...


@runtime_checkable
class UploadingSnapshot(Protocol):
    """A keyed snapshot whose asynchronous part first writes files into ``shared/``.

    RocksDB's incremental snapshots and the changelog backend's snapshots: the task's
    checkpoint writer awaits :meth:`upload` before :meth:`KeyedSnapshot.encode_chunks`
    and lists the files it returns in the subtask's ``SubtaskStateHandle.shared``.
    """

    uploaded_bytes: int

    async def upload(self, storage: Any, checkpoint_id: int) -> list[SharedFileHandle]:
        """Write the snapshot's files for ``checkpoint_id``; return the shared ones."""
        ...


@runtime_checkable
class DeferredSnapshot(Protocol):
    """A keyed snapshot whose synchronous part may be taken later, off the event loop.

    RocksDB's snapshots when its backend has ``defer_snapshots`` set: ``taken`` is False
    until the task awaits :meth:`take` (flush and hard links in a worker thread).
    """

    taken: bool

    async def take(self) -> None:
        """Take the snapshot's synchronous part in a worker thread (idempotent)."""
        ...


@runtime_checkable
class DeferringBackend(Protocol):
    """A keyed backend that can leave its snapshots' synchronous part to the task."""

    defer_snapshots: bool


@runtime_checkable
class LazilyRestoringBackend(Protocol):
    """A keyed backend that decodes restored state step by step after the task starts."""

    @property
    def restoring(self) -> bool:
        """Whether restored key groups are still encoded."""
        ...

    def restore_step(self, max_entries: int = ...) -> bool:
        """Decode a bounded step of restored state; True when all is decoded."""
        ...


class KeyedStateBackend(Protocol):
    """What the runtime calls on a keyed state backend (see the heap backend's docs)."""

    max_parallelism: int
    key_group_range: KeyGroupRange
    current_key: Hashable | None

    def set_current_key(self, key: Hashable | None) -> None:
        """Set the key that state handles act on."""
        ...

    def get_state(self, descriptor: StateDescriptor) -> Any:
        """Return the handle of the state ``descriptor`` names."""
        ...

    @property
    def state_names(self) -> list[str]:
        """The names of the states."""
        ...

    def keys(self, state_name: str) -> Iterator[Hashable]:
        """Yield the keys of state ``state_name``."""
        ...

    def num_keys(self, state_name: str | None = None) -> int:
        """Count the keys of one state or all."""
        ...

    def snapshot(self, *, canonical: bool = False) -> Any:
        """Take the synchronous part of a snapshot."""
        ...


def create_keyed_backend(
    kind: str,
    max_parallelism: int,
    key_group_range: KeyGroupRange,
    *,
    allow_pickle: bool = True,
    state_dir: str | os.PathLike[str] | None = None,
    incremental: bool = True,
    local_recovery: bool = False,
    changelog: Any = None,
) -> KeyedStateBackend:
    """Create the keyed state backend ``kind`` (one of :data:`STATE_BACKENDS`).

    Blocks briefly for ``"rocksdb"`` (it opens a RocksDB instance). With ``changelog``
    (a :class:`~storage.changelog.ChangelogOptions`) the backend is wrapped in a
    :class:`~storage.changelog.ChangelogKeyedStateBackend`.

    Raises:
        ValueError: If ``kind`` is not a known backend.
    """
    if changelog is not None:
        from storage.changelog import ChangelogKeyedStateBackend

        inner = create_keyed_backend(
            kind,
            max_parallelism,
            key_group_range,
            allow_pickle=allow_pickle,
            state_dir=state_dir,
            incremental=incremental,
            local_recovery=local_recovery,
        )
        return ChangelogKeyedStateBackend(inner, changelog, allow_pickle=allow_pickle)
    if kind == "heap":
        from storage.heap.backend import HeapKeyedStateBackend

        return HeapKeyedStateBackend(max_parallelism, key_group_range, allow_pickle=allow_pickle)
    if kind == "rocksdb":
        from storage.rocksdb.backend import RocksDBKeyedStateBackend

        return RocksDBKeyedStateBackend(
            max_parallelism,
            key_group_range,
            allow_pickle=allow_pickle,
            state_dir=state_dir,
            incremental=incremental,
            local_recovery=local_recovery,
        )
    raise ValueError(
        f"state_backend must be one of {', '.join(map(repr, STATE_BACKENDS))}, got {kind!r}"
    )


def restore_keyed_backend(
    backend: KeyedStateBackend,
    blobs: Iterable[tuple[int, bytes | memoryview]],
    pointer: str | None,
    *,
    deferred: bool = False,
    allow_pickle: bool = True,
    native: bool = True,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Restore ``backend`` from the key-group blobs of checkpoint ``pointer``.

    The heap backend restores now (it only indexes the blobs: decoding is lazy). The
    RocksDB backend restores now too, blocking on file links, copies, checks and its
    open, unless ``deferred``: then it keeps the blobs, and the owner must await
    :func:`prepare_keyed_backend` before it uses the backend, which runs that work in a
    worker thread.

    Args:
        backend: The backend, fresh.
        blobs: ``(key group, blob)`` pairs; those outside the backend's range are skipped.
        pointer: The checkpoint's or savepoint's folder.
        deferred: Leave a RocksDB restore to :func:`prepare_keyed_backend`.
        allow_pickle: Whether state written with pickle may be read. If False (a job
            that forbids pickle, or a savepoint that declares the canonical format),
            every key-group blob of the range is checked now, before anything is
            decoded: a state written with pickle is refused. (The rows of a native
            RocksDB snapshot are read with the backend's own ``allow_pickle``.)
        native: Whether native RocksDB snapshots may be restored: False for a savepoint
            that declares the canonical format, which never holds one (its rows could
            hold pickle).
        describe: Names the file that holds a key group, for messages.

    Raises:
        PickleForbiddenError: See ``allow_pickle``; names the file, state and key group.
        SerializationError: A blob that does not decode; names the file and key group.
    """
    from storage.changelog import ChangelogKeyedStateBackend, is_changelog
    from storage.errors import PickleForbiddenError, SerializationError
    from storage.format.keyed_format import decode_key_group
    from storage.heap.backend import HeapKeyedStateBackend

    if isinstance(backend, ChangelogKeyedStateBackend):
        # Reads shared/ files: always left to prepare_keyed_backend (a worker thread).
        backend.defer_restore(
            list(blobs), pointer, allow_pickle=allow_pickle, native=native, describe=describe
        )
        return

    where = describe or (lambda key_group: f"{pointer} (key group {key_group})")
    in_range = backend.key_group_range
    blobs = [(key_group, blob) for key_group, blob in blobs if key_group in in_range]
    for key_group, blob in blobs:
        if is_changelog(blob):
            raise SerializationError(
                f"{where(key_group)}: key group {key_group} was written by the changelog "
                "state backend; restore it with changelog=True (then take a savepoint "
                "to switch the changelog off)"
            )
    heap = isinstance(backend, HeapKeyedStateBackend)
    if not allow_pickle or not native or not heap:
        # RocksDB decodes key-group blobs later, in a worker thread of the task: check
        # them here, where a failure names the file and fails the deployment.
        for key_group, blob in blobs:
            if bytes(blob[: len(_ROCKSDB_NATIVE_MAGIC)]) == _ROCKSDB_NATIVE_MAGIC:
                if native:
                    continue
                raise PickleForbiddenError(
                    f"{where(key_group)}: key group {key_group} is a native RocksDB "
                    "snapshot, whose values may hold pickle, and pickle may not be read here"
                )
            try:
                decode_key_group(key_group, blob, allow_pickle=allow_pickle)
            except SerializationError as exc:
                raise type(exc)(f"{where(key_group)}: {exc}") from exc
    if isinstance(backend, HeapKeyedStateBackend):
        current = [0]

        def tracked() -> Iterator[tuple[int, bytes | memoryview]]:
            for key_group, blob in blobs:
                current[0] = key_group
                yield key_group, blob

        try:
            backend.restore(tracked())
        except SerializationError as exc:
            raise type(exc)(f"{where(current[0])}: {exc}") from exc
    elif deferred:
        backend.defer_restore(blobs, pointer)  # type: ignore[attr-defined]
    else:
        backend.restore(blobs, pointer)  # type: ignore[attr-defined]


async def prepare_keyed_backend(backend: KeyedStateBackend | None) -> None:
    """Finish a deferred restore of ``backend`` off the event loop (no-op for heap).

    The subtask that owns the backend awaits this before it opens its operators;
    nothing else may use the backend meanwhile.

    Raises:
        The errors of the backend's restore.
    """
    prepare = getattr(backend, "prepare", None)
    if prepare is not None:
        await prepare()


async def close_keyed_backend(backend: KeyedStateBackend | None) -> None:
    """Release ``backend``'s resources off the event loop when its subtask ends.

    No-op for heap. A RocksDB instance is closed and its working folder deleted in a
    worker thread (about a second for a few hundred MB); left to the garbage collector,
    that happened in whichever code ran the collection next, a later job's included.
    The subtask awaits this after its operators closed and no snapshot thread runs.
    """
    close = getattr(backend, "close", None)
    if close is not None:
        await close()
