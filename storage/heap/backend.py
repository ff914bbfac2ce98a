"""The heap keyed state backend: all keyed state of one subtask, in memory.

A keyed operator's subtask owns one :class:`HeapKeyedStateBackend` for its key group
range. Before each call into the user function the runtime sets the record's key
(:meth:`~HeapKeyedStateBackend.set_current_key`, a plain attribute write); the state
handles the function obtained with :meth:`~HeapKeyedStateBackend.get_state` then act on
that key's entries. Keys are stored as they are: their key group is only computed when a
snapshot is encoded or a restore filters key groups, never on a state access.

At a checkpoint the subtask calls :meth:`~HeapKeyedStateBackend.snapshot` (synchronous,
O(number of states), see :mod:`storage.heap.state_table`) and hands the
:class:`~storage.keyed_snapshot.HeapSnapshot` to its asynchronous writer.

On recovery the subtask calls :meth:`~HeapKeyedStateBackend.restore` with the key group
blobs of the checkpoint, before any record. The blobs are checked and split into their
batches of entries, which stay encoded: a state the operator has not registered is kept
as its batches until it does, and carried into later snapshots unchanged if it never
does. When the operator registers a restored state (in its ``open``), its first key
group is decoded at once (a declared type that no longer fits fails there, as it would
on a full decode), and the others are decoded lazily, whole key groups at a time (see
:mod:`storage.heap.restoring`): a key's group on the first access to it, and the rest in
bounded :meth:`~HeapKeyedStateBackend.restore_step` calls that the subtask makes between
records until :attr:`~HeapKeyedStateBackend.restoring` is False. Each batch is decoded
with one call per column and loaded with one dict update. So processing starts after the
files are read and checked, not after a million entries are decoded; a snapshot taken
meanwhile carries the groups still encoded, unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Final, cast, overload

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import StateError
from storage.format.entry_columns import ValueColumns
from storage.heap.restoring import RestoringHandle, RestoringState
from storage.heap.state import HeapListState, HeapMapState, HeapReducingState, HeapValueState
from storage.heap.state_table import StateTable, TableView
from storage.keyed_snapshot import (
    Carried,
    HeapSnapshot,
    KeyedStateEntries,
    SnapshotState,
    decode_columns,
    decode_key_group,
    value_columns,
)
from storage.keygroups import KeyGroupRange, validate_max_parallelism
from storage.state import ListState, MapState, ReducingState, State, ValueState

__all__ = ["RESTORE_STEP", "HeapKeyedStateBackend", "restore_key_groups"]

RESTORE_STEP: Final = 4096
"""Entries decoded per :meth:`HeapKeyedStateBackend.restore_step` by default (~1-2 ms)."""


class _Registered:
    __slots__ = ("columns", "descriptor", "handle", "restoring", "table")

    def __init__(
        self,
        descriptor: StateDescriptor,
        handle: State,
        columns: ValueColumns,
        table: StateTable,
    ) -> None:
        self.descriptor = descriptor
        self.handle = handle
        self.columns = columns
        self.table = table
        # Restored key groups not decoded yet (None once all are, or if none were).
        self.restoring: RestoringState | None = None

    def pending(self) -> RestoringState | None:
        """The restoring state if it still has key groups to decode, else None."""
        restoring = self.restoring
        if restoring is not None and restoring.done:
            self.restoring = restoring = None
        return restoring


class _Stashed:
    """A restored state not registered yet: its encoded batches, by key group."""

    __slots__ = ("batches", "count", "kind")

    def __init__(self, kind: StateKind) -> None:
        self.kind = kind
        # Appended to only; a snapshot takes a copy of the list (not of the batches).
        self.batches: list[tuple[int, KeyedStateEntries]] = []
        self.count = 0


class HeapKeyedStateBackend:
    """In-memory keyed state of one subtask, with copy-on-write snapshots.

    Owned by one subtask and used from its task only (not thread safe). No method blocks.

    Args:
        max_parallelism: The job's number of key groups.
        key_group_range: The key groups this subtask owns.
        allow_pickle: Whether state values of undeclared types may be pickled.

    Attributes:
        current_key: The key the state handles act on; set by the runtime before each
            user call. None means no key (state access then raises StateError).
    """

    __slots__ = (
        "_registered",
        "_restored",
        "allow_pickle",
        "current_key",
        "key_group_range",
        "max_parallelism",
    )

    def __init__(
        self, max_parallelism: int, key_group_range: KeyGroupRange, *, allow_pickle: bool = True
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
        self.current_key: Hashable | None = None
        self._registered: dict[str, _Registered] = {}
        # Restored states not registered yet, as their encoded batches.
        self._restored: dict[str, _Stashed] = {}

    def set_current_key(self, key: Hashable | None) -> None:
        """Set the key that state handles act on (the hot path: an attribute write)."""
        self.current_key = key

    @overload
    def get_state(self, descriptor: ValueStateDescriptor) -> ValueState: ...
    @overload
    def get_state(self, descriptor: ListStateDescriptor) -> ListState: ...
    @overload
    def get_state(self, descriptor: MapStateDescriptor) -> MapState: ...
    @overload
    def get_state(self, descriptor: ReducingStateDescriptor) -> ReducingState: ...
    @overload
    def get_state(self, descriptor: StateDescriptor) -> State: ...

    def get_state(self, descriptor: StateDescriptor) -> State:
        """Return the handle of the state ``descriptor`` names, registering it on first use.

        The same name always gives the same handle; the first descriptor registered
        under a name decides its serializer and default.

        A restored state's first key group is decoded here, the others later (see the
        module docstring); the errors below may then come from any access to the state
        or from :meth:`restore_step`, naming the state just the same.

        Raises:
            StateError: If the name is registered, or was restored, with another kind.
            SerializationError: If restored values do not decode with the descriptor's type.
            PickleForbiddenError: If the descriptor's type needs pickle and it is forbidden.
        """
        registered = self._registered.get(descriptor.name)
        if registered is not None:
            if registered.descriptor.kind != descriptor.kind:
                raise StateError(
                    f"state {descriptor.name!r} is registered as {registered.descriptor.kind}"
                    f" state and cannot be registered again as {descriptor.kind} state; give "
                    "the new state another name"
                )
            return registered.handle
        restored = self._restored.get(descriptor.name)
        if restored is not None and restored.kind != descriptor.kind:
            raise StateError(
                f"state {descriptor.name!r} was restored as {restored.kind} state but is "
                f"registered as {descriptor.kind} state; register it with its old kind, or "
                "give the new state another name"
            )
        columns = value_columns(descriptor, self.allow_pickle)
        table = StateTable(descriptor.name)
        handle = _make_handle(self, table, descriptor)
        registered = _Registered(descriptor, handle, columns, table)
        if restored is not None:
            groups: dict[int, list[KeyedStateEntries]] = {}
            for key_group, batch in restored.batches:
                groups.setdefault(key_group, []).append(batch)
            restoring = RestoringState(
                descriptor.name,
                descriptor.kind,
                table,
                columns,
                self.max_parallelism,
                groups,
                cast(RestoringHandle, handle),  # every heap handle has ``restoring``
            )
            # Decode one key group now: a declared type that no longer fits the stored
            # values fails at registration, in ``open``, rather than at some record.
            restoring.load_step(1)
            del self._restored[descriptor.name]
            registered.restoring = restoring
        self._registered[descriptor.name] = registered
        return handle

    @property
    def restoring(self) -> bool:
        """Whether a registered state has restored key groups not decoded yet."""
        return any(registered.pending() is not None for registered in self._registered.values())

    def restore_step(self, max_entries: int = RESTORE_STEP) -> bool:
        """Decode restored key groups of registered states, at least ``max_entries`` entries.

        The subtask calls it between records, yielding to the event loop in between,
        until it returns True; each call decodes whole key groups until it has decoded
        ``max_entries`` entries (at least one group, however large). States restored
        but not registered are left encoded (they are decoded when registered).

        Returns:
            True when no registered state has a key group left to decode.

        Raises:
            ValueError: If ``max_entries`` is less than 1.
            SerializationError: If a key group does not decode; names the state.
        """
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        for registered in self._registered.values():
            restoring = registered.pending()
            if restoring is not None:
                restoring.load_step(max_entries)
                return False if not restoring.done else not self.restoring
        return True

    @property
    def state_names(self) -> list[str]:
        """The names of registered states, then of restored states not registered yet."""
        return [*self._registered, *self._restored]

    def keys(self, state_name: str) -> Iterator[Hashable]:
        """Yield the keys that have an entry in state ``state_name``.

        The keys are listed when the iterator starts, so state may change meanwhile.

        Raises:
            StateError: If no state of that name is registered.
        """
        registered = self._registered.get(state_name)
        if registered is None:
            raise StateError(
                f"no state named {state_name!r} is registered; registered states: "
                f"{sorted(self._registered)}"
            )
        restoring = registered.pending()
        if restoring is not None:
            restoring.load_all()
        return iter(registered.table.keys())

    def num_keys(self, state_name: str | None = None) -> int:
        """Return the number of keys with an entry in one state, or in all states summed."""
        if state_name is not None:
            registered = self._registered.get(state_name)
            if registered is not None:
                return len(registered.table) + _pending_count(registered)
            restored = self._restored.get(state_name)
            return 0 if restored is None else restored.count
        return sum(len(r.table) + _pending_count(r) for r in self._registered.values()) + sum(
            stashed.count for stashed in self._restored.values()
        )

    def snapshot(self, *, canonical: bool = False) -> HeapSnapshot:
        """Freeze all state and return the snapshot: the synchronous part of a checkpoint.

        O(number of states) when no other snapshot is in flight (see
        :mod:`storage.heap.state_table`), plus O(batches) of restored key groups not decoded
        yet, which the snapshot carries still encoded (a state being restored is then
        listed twice: its decoded entries, and its key groups still encoded). The caller
        must ``release()`` the snapshot, then drive its ``fold_step()``.

        Args:
            canonical: encode keys and values without pickle (canonical savepoints); a
                value that needs pickle then fails the snapshot, naming the state.
                Restored key groups of registered states are decoded first (O(their
                entries)), so that they are encoded again without pickle too.
        """
        states: list[tuple[SnapshotState, ValueColumns, TableView]] = []
        tables: list[StateTable] = []
        carried: list[Carried] = []
        for name, registered in self._registered.items():
            restoring = registered.pending()
            if restoring is not None:
                if canonical:
                    restoring.load_all()
                else:
                    state = SnapshotState(name, registered.descriptor.kind, encoded=True)
                    carried.append((state, restoring.carried()))
            view = registered.table.freeze()
            tables.append(registered.table)
            columns = (
                value_columns(registered.descriptor, False) if canonical else registered.columns
            )
            states.append((SnapshotState(name, registered.descriptor.kind), columns, view))
        carried.extend(
            (SnapshotState(name, stashed.kind, encoded=True), list(stashed.batches))
            for name, stashed in self._restored.items()
        )
        return HeapSnapshot(
            self.max_parallelism,
            self.key_group_range,
            states,
            tables,
            self.allow_pickle and not canonical,
            carried,
        )

    def restore(self, key_group_blobs: Iterable[tuple[int, bytes | memoryview]]) -> None:
        """Load the key groups of this backend's range; others are skipped undecoded.

        Call before any record is processed. Entries overwrite entries of the same key.
        A key group written as several blobs (parts) needs all of them, in any order and
        over any number of calls. The blobs are checked and split into batches here;
        the batches of a state not registered yet (or of a key group it has not
        decoded yet) stay encoded, those of other registered states are decoded now.

        Args:
            key_group_blobs: ``(key group, blob)`` pairs from ``HeapSnapshot.encode_chunks``
                of one or more subtasks of the previous run; a blob may be any buffer
                (e.g. a memoryview into the file read), which undecoded batches keep
                referring to.

        Raises:
            SerializationError: If a blob is corrupt or a value does not decode; the
                message names the state and, where one is to blame, the key.
            StateError: If a state comes back with a kind other than its registered one.
        """
        key_group_range = self.key_group_range
        for key_group, blob in key_group_blobs:
            if key_group not in key_group_range:
                continue
            data = decode_key_group(key_group, blob)
            for batch in data.states:
                registered = self._registered.get(batch.name)
                if registered is None:
                    self._stash(key_group, batch)
                    continue
                if registered.descriptor.kind != batch.kind:
                    raise StateError(
                        f"state {batch.name!r} was restored as {batch.kind} state but is "
                        f"registered as {registered.descriptor.kind} state; register it with "
                        "its old kind, or give the new state another name"
                    )
                restoring = registered.pending()
                if restoring is None or not restoring.add(key_group, batch):
                    registered.table.put_all(*decode_columns(batch, registered.columns))

    def _stash(self, key_group: int, batch: KeyedStateEntries) -> None:
        stashed = self._restored.get(batch.name)
        if stashed is None:
            stashed = self._restored[batch.name] = _Stashed(batch.kind)
        elif stashed.kind != batch.kind:
            raise StateError(
                f"state {batch.name!r} was restored both as {stashed.kind} and as "
                f"{batch.kind} state; the checkpoint mixes snapshots of different jobs"
            )
        stashed.batches.append((key_group, batch))
        stashed.count += batch.count


def _pending_count(registered: _Registered) -> int:
    restoring = registered.pending()
    return 0 if restoring is None else restoring.count


def _make_handle(
    backend: HeapKeyedStateBackend, table: StateTable, descriptor: StateDescriptor
) -> State:
    if isinstance(descriptor, ValueStateDescriptor):
        return HeapValueState(backend, table, descriptor)
    if isinstance(descriptor, ListStateDescriptor):
        return HeapListState(backend, table, descriptor)
    if isinstance(descriptor, MapStateDescriptor):
        return HeapMapState(backend, table, descriptor)
    if isinstance(descriptor, ReducingStateDescriptor):
        return HeapReducingState(backend, table, descriptor)
    raise StateError(
        f"unknown state descriptor type {type(descriptor).__name__} for state "
        f"{descriptor.name!r}; use a Value/List/Map/ReducingStateDescriptor"
    )


def restore_key_groups(
    backend: HeapKeyedStateBackend, key_group_blobs: Iterable[tuple[int, bytes | memoryview]]
) -> None:
    """Restore ``backend`` from key group blobs; same as ``backend.restore(blobs)``."""
    backend.restore(key_group_blobs)
