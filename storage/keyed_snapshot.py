"""Keyed state snapshots: a frozen view of a heap backend, written one key group at a time.

:meth:`HeapKeyedStateBackend.snapshot() <storage.heap.backend.HeapKeyedStateBackend.snapshot>`
is the synchronous part of a checkpoint: it freezes every state table (O(number of
states)) and returns a :class:`HeapSnapshot`. The asynchronous part, run by the subtask's
checkpoint writer while records keep flowing, groups the entries by key group and encodes
them (:meth:`HeapSnapshot.encode_chunks`, in steps of at most ``chunk_size`` entries so
that the writer can yield to the event loop between them), calls
:meth:`HeapSnapshot.release`, folds the state tables' overlays back in bounded steps
(:meth:`HeapSnapshot.fold_step`, yielding between them too), and writes the blobs.

The blobs are those of :mod:`storage.format.keyed_format` (a large key group is written as
several parts); :mod:`storage.format.key_group_writer` does the grouping and encoding. A restore
reads only the key groups of the new subtask's range, which is how rescaling moves
state. The format's names (:func:`decode_key_group`, :func:`decode_entries`, ...) are
re-exported here.
"""

from __future__ import annotations

import gc
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import msgspec

from storage.descriptors import StateKind
from storage.errors import StateError
from storage.format.entry_columns import ColumnCodec, ValueColumns
from storage.format.key_group_writer import Piece, StateGrouping, pack_parts
from storage.format.keyed_format import (
    KEYED_STATE_FORMAT_VERSION,
    KeyedStateEntries,
    KeyGroupSnapshotData,
    decode_columns,
    decode_entries,
    decode_key_group,
    decode_keys,
    encode_key_group,
    key_serializer,
    stored_value_serializer,
    value_columns,
)
from storage.heap.state_table import FOLD_STEP, StateTable, TableView
from storage.key_hash import stable_hashes
from storage.keygroups import KeyGroupRange

__all__ = [
    "KEYED_STATE_FORMAT_VERSION",
    "Carried",
    "ColumnCodec",
    "HeapSnapshot",
    "KeyGroupSnapshotData",
    "KeyedStateEntries",
    "SnapshotState",
    "ValueColumns",
    "decode_columns",
    "decode_entries",
    "decode_key_group",
    "decode_keys",
    "key_serializer",
    "stored_value_serializer",
    "value_columns",
]


class SnapshotState(msgspec.Struct, frozen=True):
    """Describes one state in a snapshot (for checkpoint metadata and for tests).

    Attributes:
        name: The state's name.
        kind: The state's kind.
        encoded: True if the entries are still encoded: the state was restored and
            never registered again, so its batches are carried over unchanged.
    """

    name: str
    kind: StateKind
    encoded: bool = False


Carried = tuple[SnapshotState, Sequence[tuple[int, KeyedStateEntries]]]
"""A state still encoded: its description and its ``(key group, batch)`` pairs."""


class HeapSnapshot:
    """A frozen, consistent view of a heap keyed state backend.

    Created by ``HeapKeyedStateBackend.snapshot()``. Reading it never blocks and may be
    spread over many event-loop turns; the live backend keeps changing meanwhile without
    affecting it. Call :meth:`release` when done (idempotent); after that the snapshot
    cannot be read, and :meth:`fold_step` folds the backend's copy-on-write overlays
    back (until then the backend is correct, only its state accesses are a little
    slower).

    Args:
        max_parallelism: The backend's number of key groups.
        key_group_range: The key groups the backend owns.
        states: Per registered state: its description, its value column codec and its
            frozen entries.
        tables: The tables frozen for this snapshot, released by :meth:`release`.
        allow_pickle: Whether keys may be pickled.
        carried: States restored but not registered again: their batches, written again
            unchanged.
    """

    __slots__ = (
        "_allow_pickle",
        "_carried",
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
        states: list[tuple[SnapshotState, ValueColumns, TableView]],
        tables: list[StateTable],
        allow_pickle: bool = True,
        carried: Sequence[Carried] = (),
    ) -> None:
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self._states = states
        self._tables = tables
        self._allow_pickle = allow_pickle
        self._carried = list(carried)
        self._released = False

    @property
    def states(self) -> list[SnapshotState]:
        """The states in the snapshot: registered ones, then those still encoded."""
        return [state for state, _, _ in self._states] + [state for state, _ in self._carried]

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    def release(self) -> None:
        """Let the backend fold its overlays back; idempotent. Never blocks; O(states).

        The folding itself is done by :meth:`fold_step`.
        """
        if self._released:
            return
        self._released = True
        for table in self._tables:
            table.release()

    def fold_step(self, max_entries: int = FOLD_STEP) -> bool:
        """After :meth:`release`: fold at most ``max_entries`` overlay entries back.

        The owner of the backend calls it again, yielding to the event loop in between,
        until it returns True; each call costs O(``max_entries`` + states). Tables that
        another snapshot froze meanwhile are skipped: that snapshot's release starts
        their folding again. Before :meth:`release` there is nothing to fold (True).

        Each call that folds ends with a collection of the youngest generation (when
        the collector is enabled), costing O(objects made since the last one). Folding
        frees the values it replaces in ``base``, and CPython counts a freed object
        against the allocations that trigger its young collections: while a large
        overlay folds back, the fresh values of the records processed meanwhile piled up
        uncollected (186 k of them in one checkpoint of ``benchmarks.overhead``), and
        the young collection that finally came walked them all in one stall.

        Returns:
            True when none of the snapshot's tables has anything left to fold now.
        """
        if not self._released:
            return True
        folding = [table for table in self._tables if table.folding]
        if not folding:
            return True
        done = folding[0].fold_step(max_entries)
        if gc.isenabled():
            gc.collect(0)
        return done and len(folding) == 1

    def _check_live(self) -> None:
        if self._released:
            raise StateError(
                "the keyed state snapshot was released and cannot be read; read it before "
                "calling release()"
            )

    def table_entries(self) -> int:
        """Return the entries of the live state tables' ``base`` dicts; O(states).

        A cheap measure of the state's size (what the garbage collector would walk), for
        the runtime's state freezer; it counts no overlay and no encoded batch. Valid
        after :meth:`release` too.
        """
        return sum(len(table.base) for table in self._tables)

    def num_entries(self) -> int:
        """Return the number of (state, key) entries, encoded ones included.

        O(states + overlays + batches of states still encoded).
        """
        self._check_live()
        live = sum(len(view) for _, _, view in self._states)
        return live + sum(batch.count for _, batches in self._carried for _, batch in batches)

    def entries(self) -> Iterator[tuple[str, Hashable, Any]]:
        """Yield every ``(state name, key, stored value)`` of the registered states.

        States still encoded (restored, not registered again) are not listed. Values
        must not be mutated.
        """
        self._check_live()
        for state, _, view in self._states:
            for key, value in view.items():
                yield state.name, key, value

    def iter_key_groups(self) -> Iterator[tuple[int, dict[str, list[tuple[Hashable, Any]]]]]:
        """Yield ``(key group, {state name: [(key, stored value), ...]})``, by key group.

        Registered states only (see :meth:`entries`). Groups all entries first
        (O(entries), in one go); use :meth:`encode_chunks` in the asynchronous part of a
        checkpoint instead. Values must not be mutated.
        """
        self._check_live()
        groups: dict[int, dict[str, list[tuple[Hashable, Any]]]] = {}
        for state, _, view in self._states:
            items = list(view.items())
            key_groups = stable_hashes([key for key, _ in items], self.max_parallelism)
            for key_group, item in zip(key_groups, items, strict=True):
                groups.setdefault(key_group, {}).setdefault(state.name, []).append(item)
        for key_group in sorted(groups):
            yield key_group, groups[key_group]

    def encode_chunks(self, chunk_size: int = 2048) -> Iterator[list[tuple[int, bytes]]]:
        """Encode the snapshot as ``(key group, blob)`` pairs, in bounded steps.

        Every step of the iterator handles at most ``chunk_size`` entries and yields the
        ``(key group, blob)`` pairs completed in it: first the steps that read, group
        and (mostly) encode the entries, yielding nothing, then the steps that assemble
        the blobs. So an async writer can yield to the event loop between steps, and a
        step takes time proportional to ``chunk_size``. A key group with more than
        ``chunk_size`` entries is written as several blobs, its parts (see
        :class:`KeyGroupSnapshotData`). Blobs come in ascending key group order, the
        parts of a key group in part order.

        Each step runs with Python's cyclic garbage collector paused (its previous state
        is restored before the step returns or raises). A step builds hundreds of
        short-lived lists and dicts; a collection of the middle generation falling
        inside it would move them to the oldest one, and such moves are what makes
        CPython run a full collection, which walks every tracked object, the state's
        dicts included (~60 ms at 1M keys): without the pause a checkpoint of 1M keys
        caused about one full collection. Garbage made in a step is collected later.

        Args:
            chunk_size: Entries handled per step.

        Raises:
            SerializationError: If a key or value cannot be encoded; the message names
                the state and the key.
            StateError: If the snapshot was released, also between two steps.
        """
        return _collector_paused(self._encode_steps(chunk_size))

    def _encode_steps(self, chunk_size: int) -> Iterator[list[tuple[int, bytes]]]:
        self._check_live()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        groupings: list[StateGrouping] = []
        for state, columns, view in self._states:
            grouping = StateGrouping(
                state.name, state.kind, columns, self.max_parallelism, self._allow_pickle
            )
            groupings.append(grouping)
            for keys, values in view.chunks(chunk_size):
                self._check_live()
                if keys:  # a slice of entries all shadowed by a newer layer is empty
                    grouping.add(keys, values)
                yield []
        carried: dict[int, list[Piece]] = {}
        for _, batches in self._carried:
            for key_group, batch in batches:
                carried.setdefault(key_group, []).append(Piece.ready(batch))
        key_groups = set(carried).union(*(g.key_groups() for g in groupings))
        ready: list[tuple[int, bytes]] = []
        done = 0
        for key_group in sorted(key_groups):
            pieces = [p for g in groupings for p in g.pieces(key_group, chunk_size)]
            parts = pack_parts(pieces + carried.get(key_group, []), chunk_size)
            for part, part_pieces in enumerate(parts):
                weight = sum(piece.weight for piece in part_pieces)
                if done and done + weight > chunk_size:
                    yield ready
                    ready = []
                    done = 0
                    self._check_live()
                built = [piece.build() for piece in part_pieces]
                ready.append((key_group, encode_key_group(key_group, built, part, len(parts))))
                done += weight
        if ready:
            yield ready

    def encode_key_groups(self) -> list[tuple[int, bytes]]:
        """Encode the whole snapshot at once; see :meth:`encode_chunks`."""
        return [blob for chunk in self.encode_chunks() for blob in chunk]


_DONE = object()


def _collector_paused(steps: Iterator[Any]) -> Iterator[Any]:
    """Run each step of ``steps`` (up to its next item) with ``gc`` paused."""
    while True:
        enabled = gc.isenabled()
        gc.disable()
        try:
            item = next(steps, _DONE)
        finally:
            if enabled:
                gc.enable()
        if item is _DONE:
            return
        yield item
