"""The copy-on-write state table: one keyed state's entries, snapshottable in O(1).

A :class:`StateTable` maps keys to stored values for one state of a
:class:`~storage.keyed_state.HeapKeyedStateBackend` (the value of a value or reducing
state, the list of a list state, the dict of a map state). The state handles of
:mod:`storage.heap_state` read and write it on the record path; the backend freezes it
when it takes a snapshot, and the snapshot reads the frozen :class:`TableView` in its
asynchronous part.

Design. With no snapshot in flight the table is one plain dict, ``base``, and the handles
work on it directly. :meth:`StateTable.freeze` starts copy-on-write: ``base`` is frozen
and shared with the view, and every later write goes to ``overlay`` (a removal is the
``TOMBSTONE``). Reads fall through ``overlay`` to ``base``. A mutable stored value (a
list, a dict, a user object) that comes from a frozen layer is deep-copied into
``overlay`` before the caller may touch it, and ``owned`` records the keys whose overlay
value is private to the table, so each key is copied at most once per snapshot. When the
last view is released, ``overlay`` is folded into ``base`` (cost: the keys written
meanwhile) and the table is a plain dict again.

Cost of :meth:`StateTable.freeze`: O(1) when no other snapshot of the table is in
flight; otherwise the next view needs a frozen copy of ``overlay``, so O(keys written
since the oldest view in flight). Reads and writes during a snapshot cost one or two
dict operations more than without one.

Stored values must be treated as owned by the table: callers hand a value to
:meth:`StateTable.put` and do not mutate it afterwards except through values obtained
from :meth:`StateTable.get`, which are safe to mutate in place.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping
from itertools import filterfalse, islice
from typing import Any, Final

from storage.errors import StateError

__all__ = ["IMMUTABLE_TYPES", "TOMBSTONE", "StateTable", "TableView"]


class _Tombstone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE: Final = _Tombstone()
"""Marks a key removed in an overlay."""

IMMUTABLE_TYPES: Final = frozenset({int, float, str, bytes, bool, complex, type(None)})
"""Types whose values need no copy when shared between the live table and a snapshot."""

_ABSENT: Final = object()


class TableView:
    """A frozen view of a :class:`StateTable` at one snapshot; read-only.

    Args:
        name: The state's name.
        base: The frozen base dict.
        overlay: A frozen copy of the overlay, or None.
    """

    __slots__ = ("_base", "_overlay", "name")

    def __init__(
        self, name: str, base: Mapping[Hashable, Any], overlay: Mapping[Hashable, Any] | None
    ) -> None:
        self.name = name
        self._base = base
        self._overlay = overlay

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Yield the ``(key, stored value)`` entries of the view, each key once.

        The values are shared with the live table: read them, never mutate them.
        """
        overlay = self._overlay
        if overlay is None:
            yield from self._base.items()
            return
        for key, value in overlay.items():
            if value is not TOMBSTONE:
                yield key, value
        for key, value in self._base.items():
            if key not in overlay:
                yield key, value

    def chunks(self, size: int) -> Iterator[tuple[list[Hashable], list[Any]]]:
        """Yield the entries of the view as ``(keys, values)`` lists of at most ``size``.

        The same entries as :meth:`items`, in slices built with C-level iteration (the
        asynchronous part of a snapshot reads a large view this way). The values are
        shared with the live table: read them, never mutate them.
        """
        overlay = self._overlay
        base = self._base
        if overlay:
            live = [(k, v) for k, v in overlay.items() if v is not TOMBSTONE]
            for start in range(0, len(live), size):
                part = live[start : start + size]
                yield [k for k, _ in part], [v for _, v in part]
        keys_left = iter(base)
        values_left = iter(base.values())
        while True:
            keys = list(islice(keys_left, size))
            if not keys:
                return
            if overlay:
                keys = list(filterfalse(overlay.__contains__, keys))
                if keys:
                    yield keys, list(map(base.__getitem__, keys))
            else:
                yield keys, list(islice(values_left, len(keys)))

    def __len__(self) -> int:
        """Return the number of keys (O(overlay) when there is one)."""
        overlay = self._overlay
        if overlay is None:
            return len(self._base)
        base = self._base
        added = sum(1 for k, v in overlay.items() if v is not TOMBSTONE and k not in base)
        removed = sum(1 for k, v in overlay.items() if v is TOMBSTONE and k in base)
        return len(base) + added - removed


class StateTable:
    """The entries of one keyed state, with copy-on-write snapshots.

    The attributes are read directly by the heap state handles on the hot path; anything
    outside this package goes through the methods.

    Attributes:
        name: The state's name.
        base: The entries (frozen while ``overlay`` is not None).
        overlay: Writes since the table was frozen, or None when no view is in flight.
        owned: Keys of ``overlay`` whose value is private to the table (None with it).
    """

    __slots__ = ("base", "name", "overlay", "owned", "pins")

    def __init__(self, name: str) -> None:
        self.name = name
        self.base: dict[Hashable, Any] = {}
        self.overlay: dict[Hashable, Any] | None = None
        self.owned: set[Hashable] | None = None
        self.pins = 0

    def get(self, key: Hashable, missing: Any = None) -> Any:
        """Return the value of ``key`` (``missing`` if absent); safe to mutate in place."""
        overlay = self.overlay
        if overlay is None:
            return self.base.get(key, missing)
        value = overlay.get(key, _ABSENT)
        if value is _ABSENT:
            value = self.base.get(key, _ABSENT)
            if value is _ABSENT:
                return missing
        elif value is TOMBSTONE:
            return missing
        elif key in self.owned:  # type: ignore[operator]
            return value
        if type(value) in IMMUTABLE_TYPES:
            return value
        value = copy.deepcopy(value)
        overlay[key] = value
        self.owned.add(key)  # type: ignore[union-attr]
        return value

    def peek(self, key: Hashable, missing: Any = None) -> Any:
        """Return the value of ``key`` without copying it; the caller must not mutate it."""
        overlay = self.overlay
        if overlay is None:
            return self.base.get(key, missing)
        value = overlay.get(key, _ABSENT)
        if value is _ABSENT:
            return self.base.get(key, missing)
        return missing if value is TOMBSTONE else value

    def put(self, key: Hashable, value: Any) -> None:
        """Set the value of ``key``; the table owns ``value`` from now on."""
        overlay = self.overlay
        if overlay is None:
            self.base[key] = value
        else:
            overlay[key] = value
            self.owned.add(key)  # type: ignore[union-attr]

    def put_all(self, keys: list[Hashable], values: list[Any]) -> None:
        """Set the value of each key to the value at the same index (restore's bulk load).

        The table owns the values from now on. Later keys win over earlier equal ones.
        """
        overlay = self.overlay
        if overlay is None:
            self.base.update(zip(keys, values, strict=True))
        else:
            overlay.update(zip(keys, values, strict=True))
            self.owned.update(keys)  # type: ignore[union-attr]

    def remove(self, key: Hashable) -> None:
        """Remove ``key`` if present."""
        overlay = self.overlay
        if overlay is None:
            self.base.pop(key, None)
        elif key in self.base:
            overlay[key] = TOMBSTONE
            self.owned.discard(key)  # type: ignore[union-attr]
        else:
            overlay.pop(key, None)
            self.owned.discard(key)  # type: ignore[union-attr]

    def contains(self, key: Hashable) -> bool:
        """Whether ``key`` has a value."""
        overlay = self.overlay
        if overlay is None:
            return key in self.base
        value = overlay.get(key, _ABSENT)
        if value is _ABSENT:
            return key in self.base
        return value is not TOMBSTONE

    def keys(self) -> list[Hashable]:
        """Return the keys that have a value (a list, so the table may change meanwhile)."""
        overlay = self.overlay
        if overlay is None:
            return list(self.base)
        keys = [k for k, v in overlay.items() if v is not TOMBSTONE]
        keys.extend(k for k in self.base if k not in overlay)
        return keys

    def __len__(self) -> int:
        """Return the number of keys with a value."""
        return len(TableView(self.name, self.base, self.overlay))

    def freeze(self) -> TableView:
        """Return a view of the current entries, frozen until :meth:`release`.

        Runs in the synchronous part of a snapshot: O(1) if no other view of this table
        is in flight, else O(keys written since the oldest view in flight).
        """
        if self.overlay is None:
            view = TableView(self.name, self.base, None)
            self.overlay = {}
        else:
            view = TableView(self.name, self.base, dict(self.overlay))
        # Every overlay value is now shared with the view: copy before mutating.
        self.owned = set()
        self.pins += 1
        return view

    def release(self) -> None:
        """Release one view; folding the overlay back when no view is left.

        Raises:
            StateError: If no view of the table is in flight.
        """
        if self.pins <= 0:
            raise StateError(
                f"state {self.name!r} has no snapshot in flight; release each snapshot once"
            )
        self.pins -= 1
        if self.pins:
            return
        overlay = self.overlay
        assert overlay is not None
        base = self.base
        for key, value in overlay.items():
            if value is TOMBSTONE:
                base.pop(key, None)
            else:
                base[key] = value
        self.overlay = None
        self.owned = None
