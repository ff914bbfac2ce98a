"""Encoding state the way the runtime does, for the savepoint writer.

The savepoint writer (:mod:`storage.processor.writer`) never invents a format: it
encodes with the runtime's own parts, so a job restores what it writes exactly as it
restores a savepoint a job took.

* **Keyed state**: one real :class:`~storage.HeapKeyedStateBackend` per subtask, for the
  subtask's key-group range (Flink's formula); the values are put through the state
  handles of the given descriptors, and the backend's snapshot is encoded with
  :meth:`~storage.HeapSnapshot.encode_chunks`: one or more blobs per key group.
  :func:`transform_keyed_blobs` restores such blobs into backends, rewrites one state
  through its handle, and snapshots again; the other states of the operator are carried
  over undecoded (the backend keeps states that are not registered as their batches).
* **Operator list state**: one :class:`~storage.OperatorStateBackend` per subtask; the
  elements of split list state are cut into contiguous parts, those of union list state
  too (a restore gives every subtask their concatenation, as it does after a job).
* **Source splits**: ``msgspec.Struct`` splits as the runtime writes them, splits that
  the reader returned as ``{"type": "module:QualName", **fields}`` in the same format
  without importing their type, anything else with the untyped serializer.

``allow_pickle=False`` is the canonical format: nothing is pickled, and a value that
would need pickle is a :class:`~storage.PickleForbiddenError` naming the state.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from storage.checkpoint.splits import encode_splits, encode_splits_raw
from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import StateError
from storage.heap.backend import HeapKeyedStateBackend
from storage.key_hash import stable_hashes
from storage.keyed_snapshot import decode_key_group
from storage.keygroups import KeyGroupRange, compute_operator_index_for_key_group
from storage.operator_state import OperatorStateBackend
from storage.state import ListState, MapState, ReducingState, State, ValueState

__all__ = [
    "ENCODE_CHUNK",
    "REMOVE",
    "descriptor_for_kind",
    "encode_keyed",
    "encode_operator_state",
    "encode_splits_for",
    "keyed_state_kinds",
    "transform_keyed_blobs",
]

ENCODE_CHUNK: Final = 4096
"""Entries per encoding step, as the runtime's checkpoint writer uses."""

_operator_state_encoder: Final = msgspec.msgpack.Encoder()


class _Remove:
    """The type of :data:`REMOVE`: one instance, which copies keep."""

    def __repr__(self) -> str:
        return "REMOVE"

    def __copy__(self) -> _Remove:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Remove:
        return self


REMOVE: Final = _Remove()
"""Returned by a ``transform_keyed`` function: drop the key from the state."""


def _keep_last(current: Any, value: Any) -> Any:
    return value


def descriptor_for_kind(name: str, kind: StateKind) -> StateDescriptor:
    """An untyped descriptor of state ``name`` of ``kind`` (for states given without one)."""
    match kind:
        case StateKind.VALUE:
            return ValueStateDescriptor(name)
        case StateKind.LIST:
            return ListStateDescriptor(name)
        case StateKind.MAP:
            return MapStateDescriptor(name)
        case StateKind.REDUCING:
            # Only stored values are written, never folded: any reduce function will do.
            return ReducingStateDescriptor(name, _keep_last)
    raise StateError(f"unknown state kind {kind!r} of state {name!r}")


def _get(handle: State) -> Any:
    """The stored value of the current key (a list state's list, a map state's dict)."""
    if isinstance(handle, ValueState):
        return handle.value()
    if isinstance(handle, ListState):
        return handle.get()
    if isinstance(handle, MapState):
        return dict(handle.items())
    if isinstance(handle, ReducingState):
        return handle.get()
    raise StateError(f"unknown state handle {type(handle).__name__}")


def _put(handle: State, value: Any, what: str) -> None:
    """Store ``value`` for the current key, replacing what it had."""
    if isinstance(handle, ValueState):
        handle.update(value)
    elif isinstance(handle, ListState):
        if not isinstance(value, list | tuple):
            raise StateError(f"{what}: a list state's value must be a list, got {value!r}")
        handle.update(list(value))
    elif isinstance(handle, MapState):
        if not isinstance(value, Mapping):
            raise StateError(f"{what}: a map state's value must be a dict, got {value!r}")
        handle.clear()
        handle.put_all(value)
    elif isinstance(handle, ReducingState):
        handle.clear()
        handle.add(value)
    else:
        raise StateError(f"{what}: unknown state handle {type(handle).__name__}")


def _backends(
    max_parallelism: int, parallelism: int, allow_pickle: bool
) -> list[HeapKeyedStateBackend]:
    return [
        HeapKeyedStateBackend(
            max_parallelism,
            KeyGroupRange.for_operator(max_parallelism, parallelism, index),
            allow_pickle=allow_pickle,
        )
        for index in range(parallelism)
    ]


def _snapshot_blobs(
    backends: Iterable[HeapKeyedStateBackend], allow_pickle: bool
) -> dict[int, list[bytes]]:
    """Encode the backends' state as the runtime's checkpoint writer does."""
    blobs: dict[int, list[bytes]] = {}
    for backend in backends:
        snapshot = backend.snapshot(canonical=not allow_pickle)
        try:
            for chunk in snapshot.encode_chunks(ENCODE_CHUNK):
                for key_group, blob in chunk:
                    blobs.setdefault(key_group, []).append(blob)
        finally:
            snapshot.release()
    return blobs


def encode_keyed(
    states: Mapping[str, Mapping[Hashable, Any]],
    descriptors: Sequence[StateDescriptor],
    max_parallelism: int,
    parallelism: int,
    *,
    allow_pickle: bool,
    what: str,
) -> dict[int, list[bytes]]:
    """Encode keyed state given as ``{state name: {key: stored value}}``.

    Args:
        states: Per state, the stored value of each key (a list state's list, a map
            state's dict).
        descriptors: Descriptors of states that are not untyped value states (their
            kinds and types); matched by name.
        max_parallelism: The number of key groups.
        parallelism: The operator's number of subtasks.
        allow_pickle: Whether values msgspec cannot carry may be pickled.
        what: Names the operator in errors.

    Returns:
        Per key group, its blobs.

    Raises:
        StateError: A descriptor of a state not given, a key of None, or a value that
            does not fit its state's kind.
        KeyEncodingError: A key the stable hash cannot encode.
        SerializationError: A value that does not encode (PickleForbiddenError: one that
            needs pickle, which is forbidden); names the state.
    """
    by_name: dict[str, StateDescriptor] = {}
    for descriptor in descriptors:
        if descriptor.name in by_name:
            raise StateError(f"{what}: two descriptors for state {descriptor.name!r}")
        by_name[descriptor.name] = descriptor
    unknown = sorted(set(by_name) - set(states))
    if unknown:
        raise StateError(
            f"{what}: descriptors for states {unknown} that have no values; give their "
            f"values in keyed= (an empty dict for an empty state)"
        )
    backends = _backends(max_parallelism, parallelism, allow_pickle)
    owner = [
        compute_operator_index_for_key_group(max_parallelism, parallelism, key_group)
        for key_group in range(max_parallelism)
    ]
    for name, entries in states.items():
        descriptor = by_name.get(name) or ValueStateDescriptor(name)
        handles = [backend.get_state(descriptor) for backend in backends]
        keys = list(entries)
        if any(key is None for key in keys):
            raise StateError(f"{what}: state {name!r} has a key of None; None is not a key")
        for key, key_group, value in zip(
            keys, stable_hashes(keys, max_parallelism), entries.values(), strict=True
        ):
            index = owner[key_group]
            backends[index].set_current_key(key)
            _put(handles[index], value, f"{what}, state {name!r}, key {key!r}")
    return _snapshot_blobs(backends, allow_pickle)


def keyed_state_kinds(blobs: Mapping[int, Sequence[bytes]]) -> dict[str, StateKind]:
    """The kind of every state in an operator's key-group blobs, by name.

    Raises:
        SerializationError: A blob that does not decode.
    """
    kinds: dict[str, StateKind] = {}
    for key_group, parts in blobs.items():
        for blob in parts:
            for batch in decode_key_group(key_group, blob).states:
                kinds.setdefault(batch.name, batch.kind)
    return kinds


def transform_keyed_blobs(
    blobs: Mapping[int, Sequence[bytes]],
    descriptor: StateDescriptor,
    function: Callable[[Any, Any], Any],
    max_parallelism: int,
    parallelism: int,
    *,
    allow_pickle: bool,
) -> dict[int, list[bytes]]:
    """Rewrite one state of an operator's key-group blobs, key by key.

    Each subtask's key groups are restored into a heap backend; the state of
    ``descriptor`` is registered (decoding its values), ``function(key, value)`` gives
    each key's new stored value (:data:`REMOVE` drops the key), and the backend is
    snapshotted again. The operator's other states are carried over as encoded.

    Raises:
        StateError: A new value that does not fit the state's kind, or the state
            stored with another kind than the descriptor's.
        SerializationError: A value that does not decode or encode (PickleForbiddenError:
            one that needs pickle, which is forbidden).
    """
    what = f"{descriptor.kind} state {descriptor.name!r}"
    out: dict[int, list[bytes]] = {}
    for backend in _backends(max_parallelism, parallelism, allow_pickle):
        key_groups = backend.key_group_range
        backend.restore(
            (key_group, blob)
            for key_group, parts in blobs.items()
            if key_group in key_groups
            for blob in parts
        )
        handle = backend.get_state(descriptor)
        for key in list(backend.keys(descriptor.name)):
            backend.set_current_key(key)
            new = function(key, _get(handle))
            if new is REMOVE:
                handle.clear()
            else:
                _put(handle, new, f"{what}, key {key!r}")
        out.update(_snapshot_blobs([backend], allow_pickle))
    return out


def encode_operator_state(
    split: Mapping[str, Sequence[Any]],
    union: Mapping[str, Sequence[Any]],
    descriptors: Sequence[ListStateDescriptor],
    parallelism: int,
    *,
    allow_pickle: bool,
    what: str,
) -> dict[int, bytes]:
    """Encode operator list state for each subtask: contiguous parts of every list.

    Unlike keyed state, an element of operator list state does not record how it was
    encoded: a state the job declares with a type must be written with that type (its
    descriptor here), and one it declares untyped without.

    Args:
        split: Split list state: per name, its elements.
        union: Union list state: per name, its elements.
        descriptors: Descriptors (with element types) of some of those states, by name.
        parallelism: The operator's number of subtasks.
        allow_pickle: Whether elements msgspec cannot carry may be pickled.
        what: Names the operator in errors.

    Returns:
        Per subtask index, its encoded ``OperatorStateSnapshot``.

    Raises:
        StateError: A name that is both split and union state, or a descriptor of a
            state not given.
        SerializationError: An element that does not encode (PickleForbiddenError: one
            that needs pickle, which is forbidden); names the state.
    """
    both = sorted(set(split) & set(union))
    if both:
        raise StateError(
            f"{what}: operator states {both} are given as both split and union list state"
        )
    by_name = {descriptor.name: descriptor for descriptor in descriptors}
    unknown = sorted(set(by_name) - set(split) - set(union))
    if unknown:
        raise StateError(
            f"{what}: operator state descriptors for states {unknown} that have no elements; "
            f"give their elements in operator= or union="
        )
    backends = [OperatorStateBackend(allow_pickle=allow_pickle) for _ in range(parallelism)]
    for states, union_mode in ((split, False), (union, True)):
        for name, elements in states.items():
            elements = list(elements)
            size, extra = divmod(len(elements), parallelism)
            start = 0
            for index, backend in enumerate(backends):
                end = start + size + (1 if index < extra else 0)
                descriptor = by_name.get(name) or ListStateDescriptor(name)
                state = (
                    backend.get_union_list_state(descriptor)
                    if union_mode
                    else backend.get_list_state(descriptor)
                )
                state.add_all(elements[start:end])
                start = end
    return {
        index: _operator_state_encoder.encode(backend.snapshot(canonical=not allow_pickle))
        for index, backend in enumerate(backends)
    }


def _split_entry(split: Any) -> tuple[str, Any] | None:
    """``(type name, fields)`` of a Struct split or of a split as the reader shows it."""
    if isinstance(split, msgspec.Struct):
        return f"{type(split).__module__}:{type(split).__qualname__}", msgspec.to_builtins(split)
    if isinstance(split, Mapping):
        name = split.get("type")
        if isinstance(name, str) and ":" in name:
            if set(split) == {"type", "fields"}:  # an array_like Struct
                return name, split["fields"]
            return name, {k: v for k, v in split.items() if k != "type"}
    return None


def encode_splits_for(
    splits: Sequence[Any], parallelism: int, *, allow_pickle: bool
) -> dict[int, bytes]:
    """Deal ``splits`` round robin to the subtasks (as a rescaling restore does); encode.

    Returns:
        Per subtask index, its encoded splits (possibly none: that source subtask reads
        nothing).

    Raises:
        SerializationError: A split that does not encode (PickleForbiddenError: one that
            needs pickle, which is forbidden).
    """
    out: dict[int, bytes] = {}
    for index in range(parallelism):
        mine = list(splits[index::parallelism])
        entries = [_split_entry(split) for split in mine]
        if all(entry is not None for entry in entries):
            out[index] = encode_splits_raw([entry for entry in entries if entry is not None])
        else:
            out[index] = encode_splits(mine, allow_pickle)
    return out
