"""The copy-on-write state table: one keyed state's entries, snapshottable in O(1).

A :class:`StateTable` maps keys to stored values for one state of a
:class:`~storage.heap.backend.HeapKeyedStateBackend` (the value of a value or reducing
state, the list of a list state, the dict of a map state). The state handles of
:mod:`storage.heap.state` read and write it on the record path; the backend freezes it
when it takes a snapshot, and the snapshot reads the frozen :class:`TableView` in its
asynchronous part. The subtask's checkpoint writer folds the table back after releasing
the snapshot, in bounded steps (:meth:`StateTable.fold_step`).

Design. With no snapshot in flight and nothing left to fold the table is one plain dict,
``base``, and the handles work on it directly. :meth:`StateTable.freeze` starts
copy-on-write: ``base`` is frozen and shared with the view, and every later write goes
to ``overlay`` (a removal is the ``TOMBSTONE``). Reads fall through ``overlay`` to
``base``. A mutable stored value (a list, a dict, a user object) that comes from a frozen
layer is deep-copied into ``overlay`` before the caller may touch it, so each key is
copied at most once per snapshot; an immutable one (a scalar, or a tuple or frozenset of
immutable values) is handed out as it is. Overlay values are the table's own, except when a
second view is taken while one is in flight: that view gets a frozen copy of
``overlay`` (kept as ``shared``), and an overlay value still identical to its entry in
``shared`` is copied before it is handed out.

When the last view is released the table is *folding*: no view shares its layers any
more, so every value is private again, and :meth:`StateTable.fold_step` moves a bounded
number of ``overlay`` entries into ``base`` per call; once ``overlay`` is empty the table
is a plain dict again. Folding in one go would hold the event loop for the keys written
during the snapshot (tens of milliseconds for a few hundred thousand keys). While
folding, reads still look in ``overlay`` first, and a write goes to the layer that
already holds its key, else to ``base``, so the overlay does not grow while it is folded
(only a restore's ``put_all`` adds to it).

A snapshot taken while the table is folding freezes the layers as they are: the
remaining overlay becomes ``below``, a frozen layer between a new ``overlay`` and
``base``, and reads fall through all three. Folding drains ``below`` first.

Invariant (all modes): the value of a key is the one in the first of ``overlay``,
``below``, ``base`` that holds the key, and the key has none if that is the
``TOMBSTONE`` or no layer holds it. Folding an entry of the lowest overlay layer into
``base`` keeps it: any upper layer that holds the key still shadows ``base``.

Cost of :meth:`StateTable.freeze`: O(1) when no other snapshot of the table is in flight
and at most one overlay is left to fold; otherwise the next view needs a frozen copy of
``overlay``, so O(keys written since the oldest view in flight, or since the last view
of a table with two overlays still folding). Reads and writes during a snapshot or a
fold cost a ``hash`` and one to three dict operations more than without one; with no
snapshot in flight and nothing to fold they are plain dict operations on ``base``.
An overlay is a :class:`Layer`: its entries are spread over :data:`SHARDS` dicts of
unequal shares, so that a dict's rehash, which moves all its entries in one step, never
grows with all the keys written during the snapshot (one dict of them stalled the loop
10 to 20 ms at 175 k keys on the 2-core VM), and the shards' rehashes come one at a
time.

Stored values must be treated as owned by the table: callers hand a value to
:meth:`StateTable.put` and do not mutate it afterwards except through values obtained
from :meth:`StateTable.get`, which are safe to mutate in place.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping
from itertools import islice
from typing import Any, Final

from storage.errors import StateError
from storage.heap.overlay import BUCKET_MASK, SHARDS, TOMBSTONE, Layer

__all__ = [
    "FOLD_STEP",
    "IMMUTABLE_TYPES",
    "SHARDS",
    "TOMBSTONE",
    "Layer",
    "StateTable",
    "TableView",
]


IMMUTABLE_TYPES: Final = frozenset({int, float, str, bytes, bool, complex, type(None)})
"""Types whose values need no copy when shared between the live table and a snapshot."""

FOLD_STEP: Final = 2048
"""Overlay entries folded back per :meth:`StateTable.fold_step` by default (~1 ms)."""

_ABSENT: Final = object()


def _is_immutable(value: Any) -> bool:
    """Whether ``value`` can never change: a plain scalar, or a tuple or frozenset of them.

    Such a value needs no copy when it is shared with a snapshot (``copy.deepcopy``
    would return it as it is, at ~6x the cost of this check).
    """
    kind = type(value)
    if kind in IMMUTABLE_TYPES:
        return True
    if kind is tuple or kind is frozenset:
        # Scalars inline: a keyed reduce's tuples are checked per record during a snapshot.
        for item in value:
            if type(item) not in IMMUTABLE_TYPES and not _is_immutable(item):
                return False
        return True
    return False


class TableView:
    """A frozen view of a :class:`StateTable` at one snapshot; read-only.

    Args:
        name: The state's name.
        base: The frozen base dict.
        layers: Frozen overlays on top of ``base``, newest first: an entry of a layer
            shadows those of the layers after it and of ``base``; a ``TOMBSTONE`` marks
            a key removed.
    """

    __slots__ = ("_base", "_layers", "name")

    def __init__(
        self, name: str, base: Mapping[Hashable, Any], layers: tuple[Layer, ...] = ()
    ) -> None:
        self.name = name
        self._base = base
        self._layers = layers

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Yield the ``(key, stored value)`` entries of the view, each key once.

        The values are shared with the live table: read them, never mutate them.
        """
        layers = self._layers
        for index, layer in enumerate(layers):
            newer = layers[:index]
            for key, value in layer.items():
                if value is not TOMBSTONE and not any(key in n for n in newer):
                    yield key, value
        if not layers:
            yield from self._base.items()
            return
        for key, value in self._base.items():
            if not any(key in layer for layer in layers):
                yield key, value

    def chunks(self, size: int) -> Iterator[tuple[list[Hashable], list[Any]]]:
        """Yield the entries of the view as ``(keys, values)`` lists of at most ``size``.

        The same entries as :meth:`items`, in slices built with C-level iteration (the
        asynchronous part of a snapshot reads a large view this way). Every slice reads
        at most ``size`` entries of one shard of a layer or of the base; a slice whose
        entries are all shadowed or removed is yielded empty, so the work between two
        yields stays bounded. The values are shared with the live table: read them,
        never mutate them.
        """
        layers = tuple(layer for layer in self._layers if layer)
        for index, layer in enumerate(layers):
            newer = layers[:index]
            for shard in layer.shards:
                items_left = iter(shard.items())
                while True:
                    items = list(islice(items_left, size))
                    if not items:
                        break
                    live = [item for item in items if item[1] is not TOMBSTONE]
                    keys = [k for k, _ in live]
                    if newer:
                        for shadow in newer:
                            keys = shadow.without(keys)
                        yield keys, list(map(shard.__getitem__, keys))
                    else:
                        yield keys, [v for _, v in live]
        base = self._base
        keys_left = iter(base)
        values_left = iter(base.values())
        while True:
            keys = list(islice(keys_left, size))
            if not keys:
                return
            if layers:
                for layer in layers:
                    keys = layer.without(keys)
                yield keys, list(map(base.__getitem__, keys))
            else:
                yield keys, list(islice(values_left, len(keys)))

    def __len__(self) -> int:
        """Return the number of keys (O(layers) when there are any)."""
        layers = self._layers
        base = self._base
        count = len(base)
        for index, layer in enumerate(layers):
            newer = layers[:index]
            for key, value in layer.items():
                if not any(key in n for n in newer):
                    count += (value is not TOMBSTONE) - (key in base)
        return count


class StateTable:
    """The entries of one keyed state, with copy-on-write snapshots.

    The attributes are read directly by the heap state handles on the hot path; anything
    outside this package goes through the methods. Not thread safe; no method blocks.

    Attributes:
        name: The state's name.
        base: The entries (frozen while a view is in flight).
        overlay: Writes since the table was frozen, or None when no view is in flight
            and nothing is left to fold (then ``base`` holds every entry).
        below: A frozen overlay still to be folded, between ``overlay`` and ``base``, or
            None (see the module's docstring).
        shared: The frozen copy of ``overlay`` handed to the newest view, or None; an
            overlay value that is its entry there is shared with that view.
        pins: Views in flight.
    """

    __slots__ = ("base", "below", "name", "overlay", "pins", "shared")

    def __init__(self, name: str) -> None:
        self.name = name
        self.base: dict[Hashable, Any] = {}
        self.overlay: Layer | None = None
        self.below: Layer | None = None
        self.shared: Layer | None = None
        self.pins = 0

    @property
    def folding(self) -> bool:
        """Whether released overlays are left to fold back (see :meth:`fold_step`)."""
        return self.overlay is not None and not self.pins

    def overlay_entries(self) -> int:
        """Return the entries of ``overlay`` and ``below``: what is left to fold."""
        return len(self.overlay or ()) + len(self.below or ())

    def get(self, key: Hashable, missing: Any = None) -> Any:
        """Return the value of ``key`` (``missing`` if absent); safe to mutate in place."""
        overlay = self.overlay
        if overlay is None:
            return self.base.get(key, missing)
        bucket = hash(key) & BUCKET_MASK  # the same shard in every layer
        shard = overlay.by_hash[bucket]
        value = shard.get(key, _ABSENT)
        if value is _ABSENT:
            below = self.below
            if below is not None:
                value = below.by_hash[bucket].get(key, _ABSENT)
            if value is _ABSENT:
                value = self.base.get(key, _ABSENT)
            if value is _ABSENT or value is TOMBSTONE:
                return missing
            if not self.pins:  # folding: no view shares the layers any more
                return value
        elif value is TOMBSTONE:
            return missing
        else:
            shared = self.shared
            if shared is None or shared.by_hash[bucket].get(key, _ABSENT) is not value:
                return value
        if _is_immutable(value):
            return value
        value = copy.deepcopy(value)
        shard[key] = value
        return value

    def peek(self, key: Hashable, missing: Any = None) -> Any:
        """Return the value of ``key`` without copying it; the caller must not mutate it."""
        overlay = self.overlay
        if overlay is None:
            return self.base.get(key, missing)
        bucket = hash(key) & BUCKET_MASK
        value = overlay.by_hash[bucket].get(key, _ABSENT)
        if value is _ABSENT:
            below = self.below
            if below is not None:
                value = below.by_hash[bucket].get(key, _ABSENT)
            if value is _ABSENT:
                return self.base.get(key, missing)
        return missing if value is TOMBSTONE else value

    def put(self, key: Hashable, value: Any) -> None:
        """Set the value of ``key``; the table owns ``value`` from now on."""
        overlay = self.overlay
        if overlay is None:
            self.base[key] = value
            return
        bucket = hash(key) & BUCKET_MASK
        shard = overlay.by_hash[bucket]
        if self.pins or key in shard:
            shard[key] = value
            return
        # Folding: write where the key's value is, so the overlay does not grow.
        below = self.below
        if below is not None:
            shard = below.by_hash[bucket]
            if key in shard:
                shard[key] = value
                return
        self.base[key] = value

    def put_all(self, keys: list[Hashable], values: list[Any]) -> None:
        """Set the value of each key to the value at the same index (restore's bulk load).

        The table owns the values from now on. Later keys win over earlier equal ones.
        """
        overlay = self.overlay
        if overlay is None:
            self.base.update(zip(keys, values, strict=True))
        else:
            # The top layer shadows the others, folding or not.
            overlay.update(zip(keys, values, strict=True))

    def remove(self, key: Hashable) -> None:
        """Remove ``key`` if present."""
        overlay = self.overlay
        if overlay is None:
            self.base.pop(key, None)
            return
        bucket = hash(key) & BUCKET_MASK
        shard = overlay.by_hash[bucket]
        below = self.below
        if not self.pins:
            # Folding: mark the key removed in the first layer that holds it.
            if key in shard:
                shard[key] = TOMBSTONE
            elif below is not None and key in below.by_hash[bucket]:
                below.by_hash[bucket][key] = TOMBSTONE
            else:
                self.base.pop(key, None)
        elif below is not None or key in self.base:
            shard[key] = TOMBSTONE
        else:
            shard.pop(key, None)

    def contains(self, key: Hashable) -> bool:
        """Whether ``key`` has a value."""
        return self.peek(key, _ABSENT) is not _ABSENT

    def keys(self) -> list[Hashable]:
        """Return the keys that have a value (a list, so the table may change meanwhile)."""
        if self.overlay is None:
            return list(self.base)
        return [key for key, _ in self._view().items()]

    def __len__(self) -> int:
        """Return the number of keys with a value (O(overlays) while there are any)."""
        if self.overlay is None:
            return len(self.base)
        return len(self._view())

    def _view(self) -> TableView:
        overlay = self.overlay
        below = self.below
        layers: tuple[Layer, ...] = ()
        if overlay is not None:
            layers = (overlay,) if below is None else (overlay, below)
        return TableView(self.name, self.base, layers)

    def freeze(self) -> TableView:
        """Return a view of the current entries, frozen until :meth:`release`.

        Runs in the synchronous part of a snapshot: O(1) if no other view of this table
        is in flight and at most one overlay is left to fold, else O(keys in
        ``overlay``).
        """
        # The new overlay is a Layer of SHARDS dicts (~20 us to create), so that no
        # single rehash grows with the keys written during the snapshot (see Layer).
        overlay = self.overlay
        if overlay is None:
            view = TableView(self.name, self.base)
            self.overlay = Layer()
        elif not self.pins and self.below is None:
            # Folding, and no view shares a layer: freeze them as they are.
            view = TableView(self.name, self.base, (overlay,))
            self.below = overlay
            self.overlay = Layer()
        else:
            below = self.below
            frozen = overlay.copy()
            view = TableView(self.name, self.base, (frozen,) if below is None else (frozen, below))
            # The overlay's values are now shared with the view: copy before mutating.
            self.shared = frozen
        self.pins += 1
        return view

    def release(self) -> None:
        """Release one view; when no view is left, the table starts folding.

        O(1): the overlays are folded back by :meth:`fold_step`. Until then reads and
        writes cost a lookup or two more, and are correct either way.

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
        self.shared = None
        if not self.overlay and not self.below:
            self.overlay = None
            self.below = None

    def fold_step(self, max_entries: int = FOLD_STEP) -> bool:
        """Fold at most ``max_entries`` overlay entries back into ``base``.

        Call it again (yielding to the event loop in between) until it returns True.
        Only a released table folds: while a view is in flight ``base`` is frozen and
        this returns True at once (the release of the last view starts folding again).

        Args:
            max_entries: Entries moved in this call; the call's cost is proportional.

        Returns:
            True when nothing is left to fold now.

        Raises:
            ValueError: If ``max_entries`` is less than 1.
        """
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        overlay = self.overlay
        if overlay is None or self.pins:
            return True
        left = max_entries
        below = self.below
        if below is not None:
            # Lowest layer first: ``overlay`` shadows whatever lands in ``base``.
            left -= below.fold_into(self.base, left)
            if below:
                return False
            self.below = None
        if left:
            overlay.fold_into(self.base, left)
        if overlay:
            return False
        self.overlay = None
        return True
