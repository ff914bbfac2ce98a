"""The state interfaces user functions program against: value, list, map, reducing.

A state handle is obtained once from a backend (``backend.get_state(descriptor)``) and
used on every record. Keyed handles act on the entry of the backend's current key, which
the runtime sets before each call into the user function; operator (non-keyed) list state
has one list per subtask. The implementations live with their backends
(:mod:`storage.heap.state`, :mod:`storage.operator_state`). Calls never block.

Values handed to ``update``/``add``/``put`` belong to the state afterwards: do not keep
mutating them. Values returned by reads may be mutated in place; the change is part of
the state (as with a Python dict), and snapshots already taken never see it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ListState", "MapState", "ReducingState", "State", "ValueState"]


class State(abc.ABC):
    """Base of all state handles."""

    __slots__ = ()

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove the state's entry (of the current key, for keyed state)."""


class ValueState(State):
    """One value per key."""

    __slots__ = ()

    @abc.abstractmethod
    def value(self) -> Any:
        """Return the value, or (a copy of) the descriptor's default if there is none."""

    @abc.abstractmethod
    def update(self, value: Any) -> None:
        """Set the value."""


class ListState(State):
    """A list of elements (per key for keyed state, per subtask for operator state)."""

    __slots__ = ()

    @abc.abstractmethod
    def get(self) -> list[Any]:
        """Return a new list of the elements (empty if there are none).

        The list is a copy: appending to it does not change the state; use :meth:`add`.
        """

    @abc.abstractmethod
    def add(self, value: Any) -> None:
        """Append one element."""

    @abc.abstractmethod
    def add_all(self, values: Iterable[Any]) -> None:
        """Append the elements in order."""

    @abc.abstractmethod
    def update(self, values: Iterable[Any]) -> None:
        """Replace the elements (an empty iterable clears the state)."""


class MapState(State):
    """A dict per key."""

    __slots__ = ()

    @abc.abstractmethod
    def get(self, key: Any, default: Any = None) -> Any:
        """Return the value under map key ``key``, or ``default``."""

    @abc.abstractmethod
    def put(self, key: Any, value: Any) -> None:
        """Set the value under map key ``key``."""

    @abc.abstractmethod
    def put_all(self, mapping: Mapping[Any, Any]) -> None:
        """Set every entry of ``mapping``."""

    @abc.abstractmethod
    def remove(self, key: Any) -> None:
        """Remove map key ``key`` if present."""

    @abc.abstractmethod
    def contains(self, key: Any) -> bool:
        """Whether map key ``key`` is present."""

    @abc.abstractmethod
    def keys(self) -> list[Any]:
        """Return a new list of the map keys."""

    @abc.abstractmethod
    def values(self) -> list[Any]:
        """Return a new list of the map values."""

    @abc.abstractmethod
    def items(self) -> list[tuple[Any, Any]]:
        """Return a new list of the ``(key, value)`` entries."""

    @abc.abstractmethod
    def is_empty(self) -> bool:
        """Whether the map has no entry."""


class ReducingState(State):
    """One value per key, combined with each added value by the reduce function."""

    __slots__ = ()

    @abc.abstractmethod
    def get(self) -> Any:
        """Return the reduced value, or None if nothing was added."""

    @abc.abstractmethod
    def add(self, value: Any) -> None:
        """Fold ``value`` into the state: ``reduce_function(current, value)``."""
