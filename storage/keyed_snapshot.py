"""Keyed state snapshots: a frozen view of a heap backend, written one key group at a time.

:meth:`HeapKeyedStateBackend.snapshot() <storage.keyed_state.HeapKeyedStateBackend.snapshot>`
is the synchronous part of a checkpoint: it freezes every state table (O(number of
states)) and returns a :class:`HeapSnapshot`. The asynchronous part, run by the subtask's
checkpoint writer while records keep flowing, groups the entries by key group and encodes
them (:meth:`HeapSnapshot.encode_chunks`, in bounded steps so the writer can yield to the
event loop between them), writes the blobs, and then calls :meth:`HeapSnapshot.release`.

The blob of one key group is a msgpack :class:`KeyGroupSnapshotData` (format version
:data:`KEYED_STATE_FORMAT_VERSION`): for each state, its name and kind, the keys encoded
by an :class:`~storage.serializers.UntypedSerializer` and the stored values encoded by the
state's serializer (:func:`stored_value_serializer`). A restore reads only the key groups
of the new subtask's range, which is how rescaling moves state.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final

import msgspec

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import SerializationError, StateError
from storage.key_hash import stable_hash
from storage.keygroups import KeyGroupRange
from storage.serializers import Serializer, UntypedSerializer, serializer_for
from storage.state_table import StateTable, TableView

__all__ = [
    "KEYED_STATE_FORMAT_VERSION",
    "HeapSnapshot",
    "KeyGroupSnapshotData",
    "KeyedStateEntries",
    "SnapshotState",
    "decode_key_group",
    "identity_serializer",
    "key_serializer",
    "stored_value_serializer",
]

KEYED_STATE_FORMAT_VERSION: Final = 1

_encoder: Final = msgspec.msgpack.Encoder()


class KeyedStateEntries(msgspec.Struct, frozen=True, array_like=True):
    """The entries of one state in one key group.

    Attributes:
        name: The state's name.
        kind: The state's kind.
        keys: The encoded keys.
        values: The encoded stored values, in the order of ``keys``.
    """

    name: str
    kind: StateKind
    keys: list[bytes]
    values: list[bytes]


class KeyGroupSnapshotData(msgspec.Struct, frozen=True, array_like=True):
    """The blob of one key group: every state's entries for the keys of the group.

    Attributes:
        version: The format version, :data:`KEYED_STATE_FORMAT_VERSION`.
        key_group: The key group.
        states: One entry list per state with keys in this group.
    """

    version: int
    key_group: int
    states: list[KeyedStateEntries]


_decoder: Final = msgspec.msgpack.Decoder(KeyGroupSnapshotData)


def stored_value_serializer(descriptor: StateDescriptor, allow_pickle: bool) -> Serializer[Any]:
    """Return the serializer of what a state stores per key.

    A value or reducing state stores the value; a list state the list of elements; a
    map state the dict. With every type declared the serializer is msgspec's.

    Args:
        descriptor: The state's descriptor.
        allow_pickle: Whether pickle may be used for undeclared types.

    Raises:
        PickleForbiddenError: If a declared type needs pickle and pickle is forbidden.
    """
    what = f"{descriptor.kind} state {descriptor.name!r}"
    if isinstance(descriptor, ValueStateDescriptor | ReducingStateDescriptor):
        return serializer_for(descriptor.type, allow_pickle, what)
    if isinstance(descriptor, ListStateDescriptor):
        tp = None if descriptor.type is None else list[descriptor.type]  # type: ignore[name-defined]
        return serializer_for(tp, allow_pickle, what)
    if isinstance(descriptor, MapStateDescriptor):
        if descriptor.key_type is None or descriptor.value_type is None:
            return serializer_for(None, allow_pickle, what)
        return serializer_for(
            dict[descriptor.key_type, descriptor.value_type],  # type: ignore[name-defined]
            allow_pickle,
            what,
        )
    raise StateError(f"unknown state descriptor {descriptor!r}")


def key_serializer(allow_pickle: bool) -> UntypedSerializer:
    """Return the serializer of keys (msgpack for every key type the stable hash supports)."""
    return UntypedSerializer(allow_pickle=allow_pickle, what="key")


class _IdentitySerializer:
    """Passes already-encoded values through (states restored but not registered yet)."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return value  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        return data


_IDENTITY: Final = _IdentitySerializer()


class SnapshotState(msgspec.Struct, frozen=True):
    """Describes one state in a snapshot (for checkpoint metadata and for tests).

    Attributes:
        name: The state's name.
        kind: The state's kind.
        encoded: True if the values are still encoded bytes: the state was restored
            and never registered again, so it is carried over unchanged.
    """

    name: str
    kind: StateKind
    encoded: bool = False


class HeapSnapshot:
    """A frozen, consistent view of a heap keyed state backend.

    Created by ``HeapKeyedStateBackend.snapshot()``. Reading it never blocks and may be
    spread over many event-loop turns; the live backend keeps changing meanwhile without
    affecting it. Call :meth:`release` exactly once when done (idempotent), so the
    backend can fold its copy-on-write overlays back; after that the snapshot cannot be
    read.

    Args:
        max_parallelism: The backend's number of key groups.
        key_group_range: The key groups the backend owns.
        states: Per state: its description, its serializer and its frozen entries.
        tables: The tables frozen for this snapshot, released by :meth:`release`.
        allow_pickle: Whether keys may be pickled.
    """

    __slots__ = (
        "_key_serializer",
        "_released",
        "_states",
        "_tables",
        "key_group_range",
        "max_parallelism",
    )

    def __init__(
        self,
        max_parallelism: int,
        key_group_range: KeyGroupRange,
        states: list[tuple[SnapshotState, Serializer[Any], TableView]],
        tables: list[StateTable],
        allow_pickle: bool = True,
    ) -> None:
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self._states = states
        self._tables = tables
        self._key_serializer = key_serializer(allow_pickle)
        self._released = False

    @property
    def states(self) -> list[SnapshotState]:
        """The states in the snapshot, in registration order."""
        return [state for state, _, _ in self._states]

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    def release(self) -> None:
        """Let the backend fold its overlays back; idempotent. Never blocks."""
        if self._released:
            return
        self._released = True
        for table in self._tables:
            table.release()

    def _check_live(self) -> None:
        if self._released:
            raise StateError(
                "the keyed state snapshot was released and cannot be read; read it before "
                "calling release()"
            )

    def num_entries(self) -> int:
        """Return the number of (state, key) entries; O(states + overlays)."""
        self._check_live()
        return sum(len(view) for _, _, view in self._states)

    def entries(self) -> Iterator[tuple[str, Hashable, Any]]:
        """Yield every ``(state name, key, stored value)``; values must not be mutated."""
        self._check_live()
        for state, _, view in self._states:
            for key, value in view.items():
                yield state.name, key, value

    def _group_steps(
        self, chunk_size: int, groups: dict[int, dict[str, list[tuple[Hashable, Any]]]]
    ) -> Iterator[None]:
        max_parallelism = self.max_parallelism
        key_groups: dict[Hashable, int] = {}
        done = 0
        for state, _, view in self._states:
            name = state.name
            for key, value in view.items():
                key_group = key_groups.get(key)
                if key_group is None:
                    key_group = stable_hash(key) % max_parallelism
                    key_groups[key] = key_group
                by_state = groups.get(key_group)
                if by_state is None:
                    by_state = groups[key_group] = {}
                entries = by_state.get(name)
                if entries is None:
                    entries = by_state[name] = []
                entries.append((key, value))
                done += 1
                if done % chunk_size == 0:
                    yield None

    def iter_key_groups(self) -> Iterator[tuple[int, dict[str, list[tuple[Hashable, Any]]]]]:
        """Yield ``(key group, {state name: [(key, stored value), ...]})``, by key group.

        Groups all entries first (O(entries), in one go); use :meth:`encode_chunks` in the
        asynchronous part of a checkpoint instead. Values must not be mutated.
        """
        self._check_live()
        groups: dict[int, dict[str, list[tuple[Hashable, Any]]]] = {}
        for _ in self._group_steps(1 << 62, groups):
            pass
        for key_group in sorted(groups):
            yield key_group, groups[key_group]

    def encode_chunks(self, chunk_size: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """Encode the snapshot, one key group blob per key group with entries.

        Every step of the iterator does work on about ``chunk_size`` entries and yields
        the ``(key group, blob)`` pairs completed in it (often none while entries are
        still being grouped), so an async writer can yield to the event loop between
        steps. Blobs come in ascending key group order.

        Args:
            chunk_size: Entries handled per step.

        Raises:
            SerializationError: If a key or value cannot be encoded; the message names
                the state.
            StateError: If the snapshot was released.
        """
        self._check_live()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        groups: dict[int, dict[str, list[tuple[Hashable, Any]]]] = {}
        for _ in self._group_steps(chunk_size, groups):
            yield []
        meta = {state.name: (state, serializer) for state, serializer, _ in self._states}
        encode_key = self._key_serializer.encode
        ready: list[tuple[int, bytes]] = []
        done = 0
        for key_group in sorted(groups):
            states = []
            for name, entries in groups[key_group].items():
                state, serializer = meta[name]
                states.append(
                    _encode_entries(state, serializer.encode, encode_key, entries, key_group)
                )
                done += len(entries)
            data = KeyGroupSnapshotData(KEYED_STATE_FORMAT_VERSION, key_group, states)
            ready.append((key_group, _encoder.encode(data)))
            if done >= chunk_size:
                yield ready
                ready = []
                done = 0
        if ready:
            yield ready

    def encode_key_groups(self) -> list[tuple[int, bytes]]:
        """Encode the whole snapshot at once; see :meth:`encode_chunks`."""
        return [blob for chunk in self.encode_chunks() for blob in chunk]


def _encode_entries(
    state: SnapshotState,
    encode_value: Callable[[Any], bytes],
    encode_key: Callable[[Any], bytes],
    entries: list[tuple[Hashable, Any]],
    key_group: int,
) -> KeyedStateEntries:
    keys: list[bytes] = []
    values: list[bytes] = []
    for key, value in entries:
        try:
            keys.append(encode_key(key))
            values.append(encode_value(value))
        except SerializationError as exc:
            raise type(exc)(
                f"cannot snapshot {state.kind} state {state.name!r} for key {key!r} "
                f"(key group {key_group}): {exc}"
            ) from exc
    return KeyedStateEntries(state.name, state.kind, keys, values)


def identity_serializer() -> Serializer[Any]:
    """Return the pass-through serializer used for states that are still encoded."""
    return _IDENTITY


def decode_key_group(key_group: int, blob: bytes) -> KeyGroupSnapshotData:
    """Decode the blob of ``key_group`` and check its version and key group.

    Raises:
        SerializationError: If the blob is not a key group snapshot of a known version,
            or is the blob of another key group.
    """
    try:
        data = _decoder.decode(blob)
    except msgspec.DecodeError as exc:
        raise SerializationError(
            f"cannot decode the keyed state of key group {key_group}: {exc}; the checkpoint "
            "file is corrupt or not a weir keyed state snapshot"
        ) from exc
    if data.version != KEYED_STATE_FORMAT_VERSION:
        raise SerializationError(
            f"keyed state of key group {key_group} has format version {data.version}, this "
            f"weir reads version {KEYED_STATE_FORMAT_VERSION}; restore with a matching weir"
        )
    if data.key_group != key_group:
        raise SerializationError(
            f"the blob given for key group {key_group} holds key group {data.key_group}; "
            "the checkpoint metadata does not match its files"
        )
    return data
