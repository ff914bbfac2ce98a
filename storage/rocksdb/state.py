"""RocksDB state handles: the keyed state interfaces over one column family each.

Each handle belongs to one :class:`~storage.rocksdb.backend.RocksDBKeyedStateBackend`
and acts on the rows of the backend's current key (see :mod:`storage.rocksdb.keys` for
the layout). Every read decodes and every write encodes: unlike the heap backend, a value
read from state and mutated in place does not change the state until it is written back
(Flink's RocksDB backend behaves the same way). Calls never block for long: a point
lookup or write goes to RocksDB's memtable and block cache.

:class:`RocksDBValueState` has the ``get_for`` / ``put_for`` fast path that the keyed
reduce operator uses, like :class:`~storage.heap.state.HeapValueState`.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from storage.format.keyed_format import stored_value_serializer
from storage.format.serializers import Serializer, serializer_for
from storage.heap.state_table import IMMUTABLE_TYPES
from storage.key_hash import encode_key
from storage.rocksdb.keys import decode_key
from storage.state import ListState, MapState, ReducingState, ValueState

if TYPE_CHECKING:
    from rocksdict import Rdict

    from storage.rocksdb.backend import RocksDBKeyedStateBackend

__all__ = [
    "RocksDBListState",
    "RocksDBMapState",
    "RocksDBReducingState",
    "RocksDBValueState",
    "make_handle",
    "scan_prefix",
]


def scan_prefix(column: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the ``(row, value)`` pairs of ``column`` whose row starts with ``prefix``."""
    it = column.iter()
    it.seek(prefix)
    while it.valid():
        row = it.key()
        if not row.startswith(prefix):
            return
        yield row, it.value()
        it.next()


class _Handle:
    __slots__ = ("_backend", "_column", "_serializer", "descriptor")

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        column: Rdict,
        descriptor: StateDescriptor,
        serializer: Serializer[Any],
    ) -> None:
        self._backend = backend
        self._column = column
        self._serializer = serializer
        self.descriptor = descriptor

    def clear(self) -> None:
        self._column.delete(self._backend.current_row(self.descriptor))


class RocksDBValueState(_Handle, ValueState):
    """:class:`~storage.state.ValueState` on the RocksDB backend."""

    __slots__ = ("_copy_default", "_default")

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        column: Rdict,
        descriptor: ValueStateDescriptor,
        serializer: Serializer[Any],
    ) -> None:
        super().__init__(backend, column, descriptor, serializer)
        self._default = descriptor.default
        self._copy_default = type(descriptor.default) not in IMMUTABLE_TYPES

    def value(self) -> Any:  # noqa: D102
        data = self._column.get(self._backend.current_row(self.descriptor))
        if data is None:
            return copy.deepcopy(self._default) if self._copy_default else self._default
        return self._serializer.decode(data)

    def update(self, value: Any) -> None:  # noqa: D102
        self._column.put(self._backend.current_row(self.descriptor), self._serializer.encode(value))

    def get_for(self, key: Hashable, default: Any = None) -> Any:
        """Return the value of ``key`` (not the current key), or ``default``.

        The keyed reduce's fast path; the caller guarantees a valid key.
        """
        data = self._column.get(self._backend.row_of(key))
        return default if data is None else self._serializer.decode(data)

    def put_for(self, key: Hashable, value: Any) -> None:
        """Set the value of ``key`` (not the current key); see :meth:`get_for`."""
        self._column.put(self._backend.row_of(key), self._serializer.encode(value))


class RocksDBListState(_Handle, ListState):
    """:class:`~storage.state.ListState` on the RocksDB backend (one row per key)."""

    __slots__ = ()

    def get(self) -> list[Any]:  # noqa: D102
        data = self._column.get(self._backend.current_row(self.descriptor))
        return [] if data is None else list(self._serializer.decode(data))

    def add(self, value: Any) -> None:  # noqa: D102
        self.add_all([value])

    def add_all(self, values: Iterable[Any]) -> None:  # noqa: D102
        new = list(values)
        if not new:
            return
        row = self._backend.current_row(self.descriptor)
        data = self._column.get(row)
        elements = new if data is None else [*self._serializer.decode(data), *new]
        self._column.put(row, self._serializer.encode(elements))

    def update(self, values: Iterable[Any]) -> None:  # noqa: D102
        new = list(values)
        row = self._backend.current_row(self.descriptor)
        if new:
            self._column.put(row, self._serializer.encode(new))
        else:
            self._column.delete(row)


class RocksDBReducingState(_Handle, ReducingState):
    """:class:`~storage.state.ReducingState` on the RocksDB backend."""

    __slots__ = ("_reduce",)

    def __init__(
        self,
        backend: RocksDBKeyedStateBackend,
        column: Rdict,
        descriptor: ReducingStateDescriptor,
        serializer: Serializer[Any],
    ) -> None:
        super().__init__(backend, column, descriptor, serializer)
        self._reduce = descriptor.reduce_function

    def get(self) -> Any:  # noqa: D102
        data = self._column.get(self._backend.current_row(self.descriptor))
        return None if data is None else self._serializer.decode(data)

    def add(self, value: Any) -> None:  # noqa: D102
        row = self._backend.current_row(self.descriptor)
        data = self._column.get(row)
        if data is not None:
            value = self._reduce(self._serializer.decode(data), value)
        self._column.put(row, self._serializer.encode(value))


class RocksDBMapState(_Handle, MapState):
    """:class:`~storage.state.MapState` on the RocksDB backend: one row per map entry.

    Map keys are encoded with the stable key encoding, so they must be of the key types
    ``key_by`` accepts (str, int, float, bytes, bool, None and tuples of them).
    """

    __slots__ = ()

    def _row(self, key: Any) -> bytes:
        return self._backend.current_row(self.descriptor) + encode_key(key)

    def get(self, key: Any, default: Any = None) -> Any:  # noqa: D102
        data = self._column.get(self._row(key))
        return default if data is None else self._serializer.decode(data)

    def put(self, key: Any, value: Any) -> None:  # noqa: D102
        self._column.put(self._row(key), self._serializer.encode(value))

    def put_all(self, mapping: Mapping[Any, Any]) -> None:  # noqa: D102
        for key, value in mapping.items():
            self.put(key, value)

    def remove(self, key: Any) -> None:  # noqa: D102
        self._column.delete(self._row(key))

    def contains(self, key: Any) -> bool:  # noqa: D102
        return self._column.get(self._row(key)) is not None

    def _items(self) -> Iterator[tuple[bytes, bytes]]:
        prefix = self._backend.current_row(self.descriptor)
        skip = len(prefix)
        for row, data in scan_prefix(self._column, prefix):
            yield row[skip:], data

    def keys(self) -> list[Any]:  # noqa: D102
        return [decode_key(key) for key, _ in self._items()]

    def values(self) -> list[Any]:  # noqa: D102
        return [self._serializer.decode(data) for _, data in self._items()]

    def items(self) -> list[tuple[Any, Any]]:  # noqa: D102
        decode = self._serializer.decode
        return [(decode_key(key), decode(data)) for key, data in self._items()]

    def is_empty(self) -> bool:  # noqa: D102
        return next(self._items(), None) is None

    def clear(self) -> None:  # noqa: D102
        for row, _ in list(scan_prefix(self._column, self._backend.current_row(self.descriptor))):
            self._column.delete(row)


def row_value_serializer(descriptor: StateDescriptor, allow_pickle: bool) -> Serializer[Any]:
    """Return the serializer of one row's value: the map value for map state."""
    if isinstance(descriptor, MapStateDescriptor):
        what = f"{descriptor.kind} state {descriptor.name!r}"
        return serializer_for(descriptor.value_type, allow_pickle, what)
    return stored_value_serializer(descriptor, allow_pickle)


def make_handle(
    backend: RocksDBKeyedStateBackend, column: Rdict, descriptor: StateDescriptor
) -> _Handle:
    """Return the handle of ``descriptor``'s kind over ``column``."""
    serializer = row_value_serializer(descriptor, backend.allow_pickle)
    if isinstance(descriptor, ValueStateDescriptor):
        return RocksDBValueState(backend, column, descriptor, serializer)
    if isinstance(descriptor, ListStateDescriptor):
        return RocksDBListState(backend, column, descriptor, serializer)
    if isinstance(descriptor, MapStateDescriptor):
        return RocksDBMapState(backend, column, descriptor, serializer)
    if isinstance(descriptor, ReducingStateDescriptor):
        return RocksDBReducingState(backend, column, descriptor, serializer)
    from storage.errors import StateError

    raise StateError(
        f"unknown state descriptor type {type(descriptor).__name__} for state "
        f"{descriptor.name!r}; use a Value/List/Map/ReducingStateDescriptor"
    )
