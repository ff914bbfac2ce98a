"""Restoring state: a registered keyed state's restored key groups, decoded on demand.

A restore hands the heap backend (:mod:`storage.heap.backend`) the encoded batches of each
state, by key group. Decoding them all when the operator registers the state (in its
``open``) would hold the subtask for as long as decoding every key and value and
loading them into the table's dict takes (0.4 to 0.6 s per million entries on the 2-core
VM, most of it the dict inserts): the first record would wait for all of it. Instead the
backend gives a registered state a :class:`RestoringState` holding the key groups not
decoded yet, and a key group is decoded whole, with one decoder call per column and one
dict update per batch:

* on the first access to one of its keys: the state handles of :mod:`storage.heap.state`
  call :meth:`RestoringState.load` before a write, a removal or a read that found no
  value, while the state is restoring;
* or by :meth:`RestoringState.load_step`, which the subtask calls in bounded steps
  between records (through ``HeapKeyedStateBackend.restore_step``) until every key group
  is decoded.

Invariant: no key of a key group still pending is in the state table. A write reaches
the table only after its key's group is decoded, so decoding a group never overwrites a
newer value or resurrects a removed key, and a snapshot can carry the pending groups
still encoded beside the table's frozen view: together they are every entry.

When the last group is decoded the state handles drop their reference to this object,
and their accesses are as cheap as those of a state that was never restored.

This moves the decoding off the path to the first record; it does not make it cheaper.
Records whose keys are spread over all key groups decode most groups within their first
few hundred records (each first access pays for its whole group), so the time until all
state is decoded stays about what a full decode costs (``benchmarks/recovery.py``
reports both).
"""

from __future__ import annotations

import gc
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Protocol

from storage.descriptors import StateKind
from storage.errors import KeyEncodingError, SerializationError
from storage.format.entry_columns import ValueColumns
from storage.format.keyed_format import KeyedStateEntries, decode_columns
from storage.heap.state_table import StateTable
from storage.keygroups import assign_to_key_group

__all__ = ["RestoringHandle", "RestoringState"]


class RestoringHandle(Protocol):
    """A state handle that consults its state's :class:`RestoringState` while it has one."""

    restoring: RestoringState | None


class RestoringState:
    """The key groups of one registered state that are restored but not decoded yet.

    Owned by the backend and used from the subtask's task only; no method blocks (a call
    decodes at most one key group, or, for :meth:`load_step` and :meth:`load_all`, what
    they say).

    Args:
        name: The state's name.
        kind: The state's kind.
        table: The state's table, which decoded entries go to.
        columns: The codec of the state's values (per its descriptor).
        max_parallelism: The number of key groups (to find a key's group).
        groups: The encoded batches of each key group, in the order restore gave them.
        handle: The state's handle; its ``restoring`` is cleared when all is decoded.

    Attributes:
        groups: The key groups not decoded yet, and their batches.
        count: The entries in ``groups`` (as the batches count them).
    """

    __slots__ = ("columns", "count", "groups", "handle", "kind", "max_parallelism", "name", "table")

    def __init__(
        self,
        name: str,
        kind: StateKind,
        table: StateTable,
        columns: ValueColumns,
        max_parallelism: int,
        groups: dict[int, list[KeyedStateEntries]],
        handle: RestoringHandle,
    ) -> None:
        self.name = name
        self.kind = kind
        self.table = table
        self.columns = columns
        self.max_parallelism = max_parallelism
        self.groups = groups
        self.count = sum(batch.count for batches in groups.values() for batch in batches)
        self.handle = handle
        handle.restoring = self if groups else None

    @property
    def done(self) -> bool:
        """Whether every key group is decoded."""
        return not self.groups

    def load(self, key: Hashable) -> bool:
        """Decode the key group of ``key`` if it is still pending.

        Called by the state's handle before it writes or removes ``key``, and when a
        read of ``key`` found no value. O(1) if ``key`` has a value (its group was
        decoded), else a stable hash and, the first time, the decoding of the group.

        Returns:
            True if entries were decoded (a read that found nothing should look again).

        Raises:
            SerializationError: If the group does not decode; the message names the
                state (and the key, if one value is to blame). The group stays pending.
            PickleForbiddenError: If it was pickled and pickle is forbidden.
        """
        if self.table.contains(key):
            return False
        try:
            key_group = assign_to_key_group(key, self.max_parallelism)
        except KeyEncodingError:
            return False  # no restored key is of a type the stable hash cannot encode
        if key_group not in self.groups:
            return False
        with _collector_paused():
            self._decode(key_group)
        return True

    def load_step(self, max_entries: int) -> bool:
        """Decode whole key groups until at least ``max_entries`` entries are decoded.

        A step decodes at least one key group (when one is left), however large.

        Returns:
            True when every key group is decoded.

        Raises:
            SerializationError: See :meth:`load`.
        """
        loaded = 0
        with _collector_paused():
            while self.groups and loaded < max_entries:
                loaded += self._decode(next(iter(self.groups)))
        return not self.groups

    def load_all(self) -> None:
        """Decode every key group left (O(entries left))."""
        with _collector_paused():
            while self.groups:
                self._decode(next(iter(self.groups)))

    def add(self, key_group: int, batch: KeyedStateEntries) -> bool:
        """Append ``batch`` to ``key_group`` if that group is pending; return whether it was.

        A batch of a group already decoded (or never restored) is the caller's to decode.
        """
        batches = self.groups.get(key_group)
        if batches is None:
            return False
        batches.append(batch)
        self.count += batch.count
        return True

    def carried(self) -> list[tuple[int, KeyedStateEntries]]:
        """The ``(key group, batch)`` pairs still encoded, for a snapshot (O(batches))."""
        return [
            (key_group, batch) for key_group, batches in self.groups.items() for batch in batches
        ]

    def _decode(self, key_group: int) -> int:
        batches = self.groups[key_group]
        # Decode every batch before putting any: a batch that fails leaves the group
        # pending and the table as it was.
        try:
            decoded = [decode_columns(batch, self.columns) for batch in batches]
        except SerializationError as exc:
            raise type(exc)(f"{exc} (key group {key_group})") from exc
        put_all = self.table.put_all
        loaded = 0
        for keys, values in decoded:
            put_all(keys, values)
            loaded += len(keys)
        del self.groups[key_group]
        self.count -= sum(batch.count for batch in batches)
        if not self.groups:
            self.handle.restoring = None
        return loaded


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding (restoring its previous state).

    Decoding a key group makes thousands of container objects at once (lists of values,
    dicts of map states); collections triggered in the middle would move them to older
    generations and, over a large restore, cause full collections that walk the whole
    state (see ``HeapSnapshot.encode_chunks``, which pauses it for the same reason).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
