"""State handles of the changelog backend: the wrapped backend's handles, with every write logged.

Each handle wraps the handle the wrapped backend (heap or RocksDB) returned for the
same descriptor. Reads go straight to it; every write goes to it first (so a bad key
fails as it would without the changelog) and then is recorded through the backend's
choke points: list and map writes with :meth:`ChangelogKeyedStateBackend.record
<storage.changelog.backend.ChangelogKeyedStateBackend.record>`, their element encoded
now by the descriptor's serializer (the user may mutate the object later); value and
reducing writes only mark the key dirty in the handle (and call
:meth:`~storage.changelog.backend.ChangelogKeyedStateBackend.grew` the first time): the
backend reads and encodes its value once when the changelog segment is cut. A list or
map element mutated in place after its write is not logged: write it again with
``update``/``put``.

:func:`apply_entry` is the other direction: it replays one logged entry on a wrapped
handle, on restore.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from storage.changelog.log import Op
from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import StateError
from storage.format.serializers import Serializer, serializer_for
from storage.state import ListState, MapState, ReducingState, State, ValueState

if TYPE_CHECKING:
    from storage.changelog.backend import ChangelogKeyedStateBackend

__all__ = ["Codecs", "apply_entry", "codecs_for", "wrap_handle"]


class Codecs:
    """The serializers of one state's logged values (and map keys)."""

    __slots__ = ("map_keys", "values")

    def __init__(self, values: Serializer[Any], map_keys: Serializer[Any] | None) -> None:
        self.values = values
        self.map_keys = map_keys


def codecs_for(descriptor: StateDescriptor, allow_pickle: bool) -> Codecs:
    """The serializers of ``descriptor``'s values (list: elements; map: values and keys)."""
    what = f"{descriptor.kind} state {descriptor.name!r}"
    if isinstance(descriptor, MapStateDescriptor):
        return Codecs(
            serializer_for(descriptor.value_type, allow_pickle, what),
            serializer_for(descriptor.key_type, allow_pickle, f"map keys of {what}"),
        )
    tp = getattr(descriptor, "type", None)
    return Codecs(serializer_for(tp, allow_pickle, what), None)


class _Logged:
    __slots__ = ("_backend", "_encode", "_inner", "_name", "descriptor")

    def __init__(
        self,
        backend: ChangelogKeyedStateBackend,
        inner: Any,
        descriptor: StateDescriptor,
        codecs: Codecs,
    ) -> None:
        self._backend = backend
        self._inner = inner
        self.descriptor = descriptor
        self._name = descriptor.name
        self._encode = codecs.values.encode

    def clear(self) -> None:
        self._inner.clear()
        self._backend.record(self._name, Op.CLEAR, self._backend.current_key, None, None)


class ChangelogValueState(_Logged, ValueState):
    """A value state whose writes mark their key dirty until the next cut.

    ``get_for`` is the wrapped handle's own (no extra call on the runtime's hot path);
    a write costs the wrapped write and a dict lookup, plus a call the first time the
    key is written since the cut.
    """

    __slots__ = ("_put_for", "dirty", "get_for")

    def __init__(
        self,
        backend: ChangelogKeyedStateBackend,
        inner: Any,
        descriptor: StateDescriptor,
        codecs: Codecs,
    ) -> None:
        super().__init__(backend, inner, descriptor, codecs)
        self.get_for = inner.get_for
        self._put_for = inner.put_for
        # Keys written since the last cut (taken, and replaced, by the backend's cut).
        self.dirty: dict[Hashable, None] = {}

    def value(self) -> Any:
        return self._inner.value()

    def update(self, value: Any) -> None:
        self._inner.update(value)
        self._mark(self._backend.current_key)

    def clear(self) -> None:
        self._inner.clear()
        self._mark(self._backend.current_key)

    def put_for(self, key: Hashable, value: Any) -> None:
        """Set the value of ``key`` and log it; see ``HeapValueState.put_for``."""
        self._put_for(key, value)
        dirty = self.dirty
        if key not in dirty:
            dirty[key] = None
            self._backend.grew()

    def _mark(self, key: Hashable) -> None:
        dirty = self.dirty
        if key not in dirty:
            dirty[key] = None
            self._backend.grew()


class ChangelogListState(_Logged, ListState):
    """A list state whose writes are logged (appends as appends)."""

    __slots__ = ()

    def get(self) -> list[Any]:
        return self._inner.get()  # type: ignore[no-any-return]

    def add(self, value: Any) -> None:
        self._inner.add(value)
        self._backend.record(
            self._name, Op.APPEND, self._backend.current_key, None, self._encode(value)
        )

    def add_all(self, values: Iterable[Any]) -> None:
        values = list(values)
        self._inner.add_all(values)
        key = self._backend.current_key
        for value in values:
            self._backend.record(self._name, Op.APPEND, key, None, self._encode(value))

    def update(self, values: Iterable[Any]) -> None:
        values = list(values)
        self._inner.update(values)
        key = self._backend.current_key
        self._backend.record(self._name, Op.CLEAR, key, None, None)
        for value in values:
            self._backend.record(self._name, Op.APPEND, key, None, self._encode(value))


class ChangelogMapState(_Logged, MapState):
    """A map state whose writes are logged, one mapping at a time."""

    __slots__ = ("_encode_key",)

    def __init__(
        self,
        backend: ChangelogKeyedStateBackend,
        inner: Any,
        descriptor: StateDescriptor,
        codecs: Codecs,
    ) -> None:
        super().__init__(backend, inner, descriptor, codecs)
        assert codecs.map_keys is not None
        self._encode_key = codecs.map_keys.encode

    def get(self, key: Any, default: Any = None) -> Any:
        return self._inner.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        self._inner.put(key, value)
        self._backend.record(
            self._name,
            Op.PUT,
            self._backend.current_key,
            self._encode_key(key),
            self._encode(value),
        )

    def put_all(self, mapping: Mapping[Any, Any]) -> None:
        self._inner.put_all(mapping)
        current = self._backend.current_key
        for key, value in mapping.items():
            self._backend.record(
                self._name, Op.PUT, current, self._encode_key(key), self._encode(value)
            )

    def remove(self, key: Any) -> None:
        self._inner.remove(key)
        self._backend.record(
            self._name, Op.REMOVE, self._backend.current_key, self._encode_key(key), None
        )

    def contains(self, key: Any) -> bool:
        return self._inner.contains(key)  # type: ignore[no-any-return]

    def keys(self) -> list[Any]:
        return self._inner.keys()  # type: ignore[no-any-return]

    def values(self) -> list[Any]:
        return self._inner.values()  # type: ignore[no-any-return]

    def items(self) -> list[tuple[Any, Any]]:
        return self._inner.items()  # type: ignore[no-any-return]

    def is_empty(self) -> bool:
        return self._inner.is_empty()  # type: ignore[no-any-return]


class ChangelogReducingState(_Logged, ReducingState):
    """A reducing state whose writes mark their key dirty (the reduced value is logged)."""

    __slots__ = ("dirty",)

    def __init__(
        self,
        backend: ChangelogKeyedStateBackend,
        inner: Any,
        descriptor: StateDescriptor,
        codecs: Codecs,
    ) -> None:
        super().__init__(backend, inner, descriptor, codecs)
        self.dirty: dict[Hashable, None] = {}

    def get(self) -> Any:
        return self._inner.get()

    def add(self, value: Any) -> None:
        self._inner.add(value)
        self._mark()

    def clear(self) -> None:
        self._inner.clear()
        self._mark()

    def _mark(self) -> None:
        key = self._backend.current_key
        dirty = self.dirty
        if key not in dirty:
            dirty[key] = None
            self._backend.grew()


def wrap_handle(
    backend: ChangelogKeyedStateBackend, inner: State, descriptor: StateDescriptor, codecs: Codecs
) -> State:
    """Wrap the wrapped backend's handle ``inner`` of ``descriptor``."""
    if isinstance(descriptor, ValueStateDescriptor):
        return ChangelogValueState(backend, inner, descriptor, codecs)
    if isinstance(descriptor, ListStateDescriptor):
        return ChangelogListState(backend, inner, descriptor, codecs)
    if isinstance(descriptor, MapStateDescriptor):
        return ChangelogMapState(backend, inner, descriptor, codecs)
    if isinstance(descriptor, ReducingStateDescriptor):
        return ChangelogReducingState(backend, inner, descriptor, codecs)
    raise StateError(
        f"unknown state descriptor type {type(descriptor).__name__} for state "
        f"{descriptor.name!r}; use a Value/List/Map/ReducingStateDescriptor"
    )


def apply_entry(
    kind: StateKind,
    inner: Any,
    codecs: Codecs,
    op: int,
    map_key: bytes | None,
    value: bytes | None,
) -> None:
    """Replay one logged change on the wrapped backend's handle (its current key set).

    Raises:
        SerializationError: A value that does not decode with the descriptor's type.
        ValueError: An op that this kind of state never logs (a corrupt file).
    """
    if op == Op.CLEAR:
        inner.clear()
    elif op == Op.SET and kind is StateKind.VALUE:
        inner.update(codecs.values.decode(value))  # type: ignore[arg-type]
    elif op == Op.SET and kind is StateKind.REDUCING:
        inner.clear()
        inner.add(codecs.values.decode(value))  # type: ignore[arg-type]
    elif op == Op.APPEND and kind is StateKind.LIST:
        inner.add(codecs.values.decode(value))  # type: ignore[arg-type]
    elif op == Op.PUT and kind is StateKind.MAP and codecs.map_keys is not None:
        inner.put(codecs.map_keys.decode(map_key), codecs.values.decode(value))  # type: ignore[arg-type]
    elif op == Op.REMOVE and kind is StateKind.MAP and codecs.map_keys is not None:
        inner.remove(codecs.map_keys.decode(map_key))  # type: ignore[arg-type]
    else:
        raise ValueError(f"changelog entry with op {op} cannot apply to {kind} state")
