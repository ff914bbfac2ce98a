"""``InFlightQueue``: the calls of an async I/O operator that are not yet emitted.

A pure, synchronous structure (no event loop): the ``AsyncWaitOperator``
(``runtime.tasks.async_wait``) adds an entry per record when it starts a call, marks it
complete when the call's task finishes, and takes the results that may be emitted when
its task polls it. As Flink's ``StreamElementQueue``:

* **ordered**: results leave in input order; a completed entry behind an incomplete one
  waits (it still holds its slot);
* **unordered**: each result leaves as soon as its call completed.

An entry holds its slot until its results are taken, so a queue whose results cannot be
emitted (the output is backpressured) stays full and the operator takes no more input.
``entries()`` lists what a checkpoint stores: every entry not yet taken, with its results
if complete.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Entry:
    """One record's call: its input and, once complete, its output records."""

    __slots__ = ("done", "record", "results")

    def __init__(self, record: Any) -> None:
        self.record = record
        self.results: list[Any] = []
        self.done = False

    def __repr__(self) -> str:
        state = f"done {self.results!r}" if self.done else "in flight"
        return f"<Entry {self.record!r} {state}>"


class InFlightQueue:
    """At most ``capacity`` entries, released in input order or in completion order.

    Args:
        capacity: the most entries at once (>= 1).
        ordered: release results in input order (else in completion order).
    """

    __slots__ = ("_pending", "_ready", "_ready_count", "capacity", "ordered")

    def __init__(self, capacity: int, ordered: bool) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self.ordered = ordered
        # Ordered: every entry, in input order. Unordered: the incomplete ones.
        self._pending: deque[Entry] | dict[int, Entry] = deque() if ordered else {}
        # Unordered: completed entries, in completion order.
        self._ready: list[Entry] = []
        # Ordered: how many entries are complete (any position).
        self._ready_count = 0

    def __len__(self) -> int:
        return len(self._pending) + len(self._ready)

    @property
    def is_full(self) -> bool:
        """Whether every slot is taken (the operator must not start another call)."""
        return len(self._pending) + len(self._ready) >= self.capacity

    @property
    def in_flight(self) -> int:
        """Entries whose call has not completed."""
        if self.ordered:
            return len(self._pending) - self._ready_count
        return len(self._pending)

    @property
    def has_ready(self) -> bool:
        """Whether ``pop_ready`` would release something."""
        if self.ordered:
            pending = self._pending
            return bool(pending) and pending[0].done
        return bool(self._ready)

    def add(self, record: Any) -> Entry:
        """Take a slot for ``record``'s call. The caller checks ``is_full`` first."""
        assert not self.is_full, "add() on a full queue"
        entry = Entry(record)
        if self.ordered:
            self._pending.append(entry)  # type: ignore[union-attr]
        else:
            self._pending[id(entry)] = entry
        return entry

    def add_completed(self, record: Any, results: list[Any]) -> Entry:
        """Take a slot for a call that already completed (restored from a checkpoint)."""
        entry = self.add(record)
        self.complete(entry, results)
        return entry

    def complete(self, entry: Entry, results: list[Any]) -> None:
        """``entry``'s call completed with ``results`` (its output records, maybe none)."""
        if entry.done:
            return
        entry.results = results
        entry.done = True
        if self.ordered:
            self._ready_count += 1
        else:
            pending: dict[int, Entry] = self._pending  # type: ignore[assignment]
            if pending.pop(id(entry), None) is not None:
                self._ready.append(entry)

    def pop_ready(self) -> list[Any]:
        """Release the entries that may leave; return their output records, in order."""
        out: list[Any] = []
        if self.ordered:
            pending: deque[Entry] = self._pending  # type: ignore[assignment]
            while pending and pending[0].done:
                entry = pending.popleft()
                self._ready_count -= 1
                out.extend(entry.results)
            return out
        ready = self._ready
        if ready:
            self._ready = []
            for entry in ready:
                out.extend(entry.results)
        return out

    def entries(self) -> list[Entry]:
        """Every entry not released: completed first (unordered), else in input order."""
        if self.ordered:
            return list(self._pending)  # type: ignore[arg-type]
        return [*self._ready, *self._pending.values()]  # type: ignore[union-attr]

    def clear(self) -> None:
        """Forget every entry (the operator is closing)."""
        self._pending.clear()
        self._ready = []
        self._ready_count = 0
