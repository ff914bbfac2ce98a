"""Heap state handles: the keyed state interfaces over copy-on-write state tables.

Each handle belongs to one :class:`~storage.heap.backend.HeapKeyedStateBackend` and one
:class:`~storage.heap.state_table.StateTable`. On every call it reads the backend's
``current_key`` (set by the runtime before each user call) and touches that key's entry.
With no snapshot in flight an access is the attribute reads plus one or two dict
operations; during a snapshot it goes through the table's copy-on-write methods.
A key of None cannot hold state: None means "no current key".

While a restored state still has key groups not decoded yet, its handle holds their
:class:`~storage.heap.restoring.RestoringState` in ``restoring``: before a write or a removal,
and after a read that found no value, it asks it to decode the key's group first (see
:mod:`storage.heap.restoring`). A read that finds its value, and every access once all is
decoded (``restoring`` is then None), costs what it did without a restore.

:class:`HeapValueState` also has ``get_for(key)`` / ``put_for(key, value)``, which act on
an explicit key, for runtime operators that know each record's key (no ``current_key``
round trip; the caller validates the key).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from storage.errors import StateError
from storage.heap.state_table import IMMUTABLE_TYPES, StateTable
from storage.state import ListState, MapState, ReducingState, ValueState

if TYPE_CHECKING:
    from storage.heap.restoring import RestoringState

__all__ = [
    "HeapListState",
    "HeapMapState",
    "HeapReducingState",
    "HeapValueState",
    "KeyContext",
]

_ABSENT: Final = object()


class KeyContext(Protocol):
    """Where a keyed handle finds the key it acts on (the keyed state backend)."""

    current_key: Hashable | None


def _no_current_key(descriptor: StateDescriptor) -> StateError:
    return StateError(
        f"{descriptor.kind} state {descriptor.name!r} was accessed with no current key; "
        "keyed state can only be used while a keyed record (or timer) is processed, and "
        "None cannot be a key"
    )


class HeapValueState(ValueState):
    """:class:`~storage.state.ValueState` on the heap backend."""

    __slots__ = ("_context", "_copy_default", "_default", "_table", "descriptor", "restoring")

    def __init__(
        self, context: KeyContext, table: StateTable, descriptor: ValueStateDescriptor
    ) -> None:
        self._context = context
        self._table = table
        self.descriptor = descriptor
        self._default = descriptor.default
        self._copy_default = type(descriptor.default) not in IMMUTABLE_TYPES
        self.restoring: RestoringState | None = None

    def value(self) -> Any:  # noqa: D102
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        table = self._table
        # No snapshot in flight: one dict lookup. Otherwise copy-on-write.
        value = table.base.get(key, _ABSENT) if table.overlay is None else table.get(key, _ABSENT)
        if value is _ABSENT:
            restoring = self.restoring
            if restoring is not None and restoring.load(key):
                return self.value()
            return copy.deepcopy(self._default) if self._copy_default else self._default
        return value

    def update(self, value: Any) -> None:  # noqa: D102
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        if self.restoring is not None:
            self.restoring.load(key)
        table = self._table
        if table.overlay is None:
            table.base[key] = value
        else:
            table.put(key, value)

    def clear(self) -> None:  # noqa: D102
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        if self.restoring is not None:
            self.restoring.load(key)
        self._table.remove(key)

    def get_for(self, key: Hashable, default: Any = None) -> Any:
        """Return the value of ``key`` (not the current key), or ``default`` if it has none.

        The runtime's hot path for operators that know each record's key (a keyed
        reduce): no ``current_key`` write or read and no None check, and with no snapshot
        in flight one dict lookup. The caller guarantees that ``key`` is a valid key (not
        None; hashable by the stable hash); the descriptor's default is not used. During
        a snapshot it goes through copy-on-write like :meth:`value`, so the value
        returned may be mutated in place like any value read from state.
        """
        if self.restoring is not None:
            self.restoring.load(key)
        table = self._table
        if table.overlay is None:
            return table.base.get(key, default)
        return table.get(key, default)

    def put_for(self, key: Hashable, value: Any) -> None:
        """Set the value of ``key`` (not the current key); see :meth:`get_for`.

        With no snapshot in flight one dict store; during a snapshot a copy-on-write
        write like :meth:`update`. The state owns ``value`` from now on.
        """
        if self.restoring is not None:
            self.restoring.load(key)
        table = self._table
        if table.overlay is None:
            table.base[key] = value
        else:
            table.put(key, value)


class HeapListState(ListState):
    """:class:`~storage.state.ListState` on the heap backend; ``get`` returns a copy."""

    __slots__ = ("_context", "_table", "descriptor", "restoring")

    def __init__(
        self, context: KeyContext, table: StateTable, descriptor: ListStateDescriptor
    ) -> None:
        self._context = context
        self._table = table
        self.descriptor = descriptor
        self.restoring: RestoringState | None = None

    def _key(self) -> Hashable:
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        if self.restoring is not None:
            self.restoring.load(key)
        return key

    def get(self) -> list[Any]:  # noqa: D102
        elements = self._table.get(self._key())
        return [] if elements is None else list(elements)

    def add(self, value: Any) -> None:  # noqa: D102
        key = self._key()
        elements = self._table.get(key)
        if elements is None:
            self._table.put(key, [value])
        else:
            elements.append(value)

    def add_all(self, values: Iterable[Any]) -> None:  # noqa: D102
        key = self._key()
        new = list(values)
        if not new:
            return
        elements = self._table.get(key)
        if elements is None:
            self._table.put(key, new)
        else:
            elements.extend(new)

    def update(self, values: Iterable[Any]) -> None:  # noqa: D102
        key = self._key()
        new = list(values)
        if new:
            self._table.put(key, new)
        else:
            self._table.remove(key)

    def clear(self) -> None:  # noqa: D102
        self._table.remove(self._key())


class HeapMapState(MapState):
    """:class:`~storage.state.MapState` on the heap backend.

    An empty map is not stored: removing the last entry removes the key from the state.
    """

    __slots__ = ("_context", "_table", "descriptor", "restoring")

    def __init__(
        self, context: KeyContext, table: StateTable, descriptor: MapStateDescriptor
    ) -> None:
        self._context = context
        self._table = table
        self.descriptor = descriptor
        self.restoring: RestoringState | None = None

    def _key(self) -> Hashable:
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        if self.restoring is not None:
            self.restoring.load(key)
        return key

    def get(self, key: Any, default: Any = None) -> Any:  # noqa: D102
        entries = self._table.peek(self._key())
        if entries is None:
            return default
        value = entries.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        if type(value) in IMMUTABLE_TYPES:
            return value
        # A mutable value may be changed in place by the caller: detach it first.
        return self._table.get(self._context.current_key)[key]

    def put(self, key: Any, value: Any) -> None:  # noqa: D102
        state_key = self._key()
        entries = self._table.get(state_key)
        if entries is None:
            self._table.put(state_key, {key: value})
        else:
            entries[key] = value

    def put_all(self, mapping: Mapping[Any, Any]) -> None:  # noqa: D102
        state_key = self._key()
        if not mapping:
            return
        entries = self._table.get(state_key)
        if entries is None:
            self._table.put(state_key, dict(mapping))
        else:
            entries.update(mapping)

    def remove(self, key: Any) -> None:  # noqa: D102
        state_key = self._key()
        entries = self._table.peek(state_key)
        if entries is None or key not in entries:
            return
        entries = self._table.get(state_key)
        del entries[key]
        if not entries:
            self._table.remove(state_key)

    def contains(self, key: Any) -> bool:  # noqa: D102
        entries = self._table.peek(self._key())
        return entries is not None and key in entries

    def keys(self) -> list[Any]:  # noqa: D102
        entries = self._table.peek(self._key())
        return [] if entries is None else list(entries)

    def values(self) -> list[Any]:  # noqa: D102
        entries = self._table.get(self._key())
        return [] if entries is None else list(entries.values())

    def items(self) -> list[tuple[Any, Any]]:  # noqa: D102
        entries = self._table.get(self._key())
        return [] if entries is None else list(entries.items())

    def is_empty(self) -> bool:  # noqa: D102
        return not self._table.peek(self._key())

    def clear(self) -> None:  # noqa: D102
        self._table.remove(self._key())


class HeapReducingState(ReducingState):
    """:class:`~storage.state.ReducingState` on the heap backend."""

    __slots__ = ("_context", "_reduce", "_table", "descriptor", "restoring")

    def __init__(
        self, context: KeyContext, table: StateTable, descriptor: ReducingStateDescriptor
    ) -> None:
        self._context = context
        self._table = table
        self.descriptor = descriptor
        self._reduce = descriptor.reduce_function
        self.restoring: RestoringState | None = None

    def _key(self) -> Hashable:
        key = self._context.current_key
        if key is None:
            raise _no_current_key(self.descriptor)
        if self.restoring is not None:
            self.restoring.load(key)
        return key

    def get(self) -> Any:  # noqa: D102
        return self._table.get(self._key())

    def add(self, value: Any) -> None:  # noqa: D102
        key = self._key()
        table = self._table
        current = table.get(key, _ABSENT)
        table.put(key, value if current is _ABSENT else self._reduce(current, value))

    def clear(self) -> None:  # noqa: D102
        self._table.remove(self._key())
