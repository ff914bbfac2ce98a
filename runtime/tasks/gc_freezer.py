"""The state freezer: large heap keyed state kept out of CPython's cyclic collector.

:meth:`TaskCheckpointing.begin <runtime.tasks.snapshot.TaskCheckpointing.begin>`, the
synchronous part of a subtask's checkpoint, reports how many entries its heap keyed
state holds to the process's one :data:`STATE_FREEZER` (:meth:`StateFreezer.on_snapshot`),
which may call ``gc.freeze()`` or ``gc.unfreeze()``. Nothing else uses it. The decision
is the pure function :func:`decide`; :class:`StateFreezer` only performs it.

Why. CPython 3.11 collects cycles by generations: a collection walks every object
tracked in the generations it collects, and a full collection walks them all. A dict of
heap state is one object to the collector's heuristics but a walk over every key and
value: ~60 to 80 ms for 1M keys on the 2-core VM. A full collection is due when the
objects moved to the oldest generation since the last one exceed a quarter of those it
kept; values the collector untracks (tuples of scalars, once they survive a young
collection) do not count, so in a busy 1M-key job it came every ten seconds or so, and
``benchmarks.overhead`` met one in most checkpoints. A full collection also untracks a
plain dict whose contents are all untracked, and the next write of a fresh tuple tracks
it again as a young object: the next two young collections walk it too (~30 ms each).

What. ``gc.freeze()`` moves every tracked object to a permanent generation that no
collection walks, in O(1); ``gc.unfreeze()`` moves them back to the oldest generation,
in O(1). When a snapshot finds at least :data:`FREEZE_ENTRIES` entries, the freezer
freezes: the state tables, their copy-on-write overlay shards (tracked from birth, see
:mod:`storage.heap.state_table`) and whatever else is alive then. Collections then walk only
what is newer, and a frozen dict is never untracked. Freezing again at each such
snapshot takes in what grew since.

The price, and its bound. A frozen object that becomes cyclic garbage is not collected
while it is frozen (acyclic garbage is freed by reference counting as usual). So the
freezer unfreezes everything at the first snapshot (of any subtask of any job in the
process) once :data:`MAX_FROZEN_SECONDS` have passed since it first froze: the next full
collection walks the whole heap once (one stall of the old kind every ten minutes
instead of every few seconds) and reclaims what died, and the freezer freezes again only
after that collection has run. While snapshots go on nothing stays frozen much longer
than that. When a job ends, the job master calls :meth:`StateFreezer.on_job_end`, which
unfreezes what the freezer froze (the ended job's state is garbage now, and another
job's next large snapshot freezes again once a full collection has run).

The freezer stays out of the way of a program that manages the collector itself: it
does nothing while the collector is disabled, or while objects it did not freeze are
frozen.
"""

from __future__ import annotations

import enum
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = [
    "FREEZE_ENTRIES",
    "MAX_FROZEN_SECONDS",
    "STATE_FREEZER",
    "Collector",
    "FreezeAction",
    "FreezerState",
    "StateFreezer",
    "decide",
]

FREEZE_ENTRIES: Final = 100_000
"""Heap state entries (of one subtask) from which a snapshot freezes: a walk of fewer
takes under ~8 ms, and small jobs (tests) never freeze."""

MAX_FROZEN_SECONDS: Final = 600.0
"""Longest time objects stay frozen before everything is unfrozen and collected."""


class FreezeAction(enum.Enum):
    """What :func:`decide` tells the freezer to do."""

    NOTHING = "nothing"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"


@dataclass(frozen=True, slots=True)
class FreezerState:
    """What the freezer knows between two snapshots.

    Attributes:
        frozen_since: When it first froze what is frozen now, or None if nothing is.
        collections_at_unfreeze: The count of full collections when it last unfroze
            (it freezes again only once that count has moved on), or None if it never
            unfroze.
    """

    frozen_since: float | None = None
    collections_at_unfreeze: int | None = None


def decide(
    state: FreezerState,
    *,
    entries: int,
    now: float,
    enabled: bool,
    freeze_count: int,
    full_collections: int,
) -> tuple[FreezeAction, FreezerState]:
    """Decide what to do at a snapshot; pure.

    Args:
        state: The freezer's state.
        entries: The heap state entries of the subtask taking the snapshot.
        now: A monotonic clock's reading, in seconds.
        enabled: ``gc.isenabled()``.
        freeze_count: ``gc.get_freeze_count()``.
        full_collections: The number of full collections so far.

    Returns:
        The action and the freezer's next state.
    """
    if state.frozen_since is not None:
        if now - state.frozen_since >= MAX_FROZEN_SECONDS:
            return FreezeAction.UNFREEZE, FreezerState(None, full_collections)
        if entries >= FREEZE_ENTRIES and enabled:
            return FreezeAction.FREEZE, state  # take in what grew since
        return FreezeAction.NOTHING, state
    if entries < FREEZE_ENTRIES or not enabled or freeze_count:
        return FreezeAction.NOTHING, state  # too small, or someone else runs the collector
    if state.collections_at_unfreeze == full_collections:
        return FreezeAction.NOTHING, state  # let a full collection reclaim first
    return FreezeAction.FREEZE, FreezerState(now, None)


class Collector(Protocol):
    """The parts of the ``gc`` module the freezer uses (the module itself, or a fake)."""

    def isenabled(self) -> bool: ...  # noqa: D102

    def freeze(self) -> None: ...  # noqa: D102

    def unfreeze(self) -> None: ...  # noqa: D102

    def get_freeze_count(self) -> int: ...  # noqa: D102

    def get_stats(self) -> list[dict[str, int]]: ...  # noqa: D102


@dataclass(slots=True)
class StateFreezer:
    """Performs :func:`decide` on the process's collector; see the module's docstring.

    Called on the event loop's thread only; every call is O(1) and never blocks.

    Attributes:
        collector: The ``gc`` module (a fake in tests).
        clock: A monotonic clock in seconds.
        state: The decision's state.
    """

    collector: Collector = field(default_factory=lambda: gc)
    clock: Callable[[], float] = time.monotonic
    state: FreezerState = field(default_factory=FreezerState)

    def on_snapshot(self, entries: int) -> FreezeAction:
        """A subtask took a snapshot of ``entries`` heap state entries: act on it.

        Returns:
            What was done.
        """
        collector = self.collector
        action, self.state = decide(
            self.state,
            entries=entries,
            now=self.clock(),
            enabled=collector.isenabled(),
            freeze_count=collector.get_freeze_count(),
            full_collections=collector.get_stats()[-1]["collections"],
        )
        match action:
            case FreezeAction.FREEZE:
                collector.freeze()
            case FreezeAction.UNFREEZE:
                collector.unfreeze()
            case FreezeAction.NOTHING:
                pass
        return action

    def on_job_end(self) -> FreezeAction:
        """A job ended: unfreeze what the freezer froze, so its state can be collected.

        Returns:
            :attr:`FreezeAction.UNFREEZE` if something the freezer froze was unfrozen,
            else :attr:`FreezeAction.NOTHING`.
        """
        if self.state.frozen_since is None:
            return FreezeAction.NOTHING
        self.collector.unfreeze()
        self.state = FreezerState(None, self.collector.get_stats()[-1]["collections"])
        return FreezeAction.UNFREEZE


STATE_FREEZER = StateFreezer()
"""The process's freezer (the collector is process-wide)."""
