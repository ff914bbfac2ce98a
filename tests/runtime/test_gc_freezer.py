"""The state freezer: its pure decision, the actor around it, and the real collector."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from runtime.tasks.gc_freezer import (
    FREEZE_ENTRIES,
    MAX_FROZEN_SECONDS,
    FreezeAction,
    FreezerState,
    StateFreezer,
    decide,
)

BIG = FREEZE_ENTRIES


def at(
    state: FreezerState,
    entries: int = BIG,
    now: float = 1.0,
    enabled: bool = True,
    freeze_count: int = 0,
    full_collections: int = 0,
) -> tuple[FreezeAction, FreezerState]:
    return decide(
        state,
        entries=entries,
        now=now,
        enabled=enabled,
        freeze_count=freeze_count,
        full_collections=full_collections,
    )


def test_a_large_state_freezes_and_a_small_one_does_not() -> None:
    idle = FreezerState()
    assert at(idle, entries=BIG - 1, now=5.0) == (FreezeAction.NOTHING, idle)
    assert at(idle, entries=BIG, now=5.0) == (FreezeAction.FREEZE, FreezerState(5.0, None))


def test_frozen_state_freezes_again_to_take_in_what_grew_then_unfreezes_in_time() -> None:
    frozen = FreezerState(100.0, None)
    assert at(frozen, now=101.0, freeze_count=50) == (FreezeAction.FREEZE, frozen)
    assert at(frozen, entries=10, now=101.0, freeze_count=50) == (FreezeAction.NOTHING, frozen)
    late = 100.0 + MAX_FROZEN_SECONDS
    assert at(frozen, now=late, freeze_count=50, full_collections=7) == (
        FreezeAction.UNFREEZE,
        FreezerState(None, 7),
    )


def test_after_unfreezing_it_waits_for_a_full_collection() -> None:
    unfrozen = FreezerState(None, 7)
    assert at(unfrozen, full_collections=7)[0] is FreezeAction.NOTHING
    assert at(unfrozen, full_collections=8) == (FreezeAction.FREEZE, FreezerState(1.0, None))


def test_it_leaves_a_collector_managed_by_someone_else_alone() -> None:
    idle = FreezerState()
    assert at(idle, enabled=False)[0] is FreezeAction.NOTHING
    assert at(idle, freeze_count=12)[0] is FreezeAction.NOTHING


@dataclass
class FakeCollector:
    enabled: bool = True
    frozen: int = 0
    full: int = 0
    calls: list[str] = field(default_factory=list)

    def isenabled(self) -> bool:
        return self.enabled

    def freeze(self) -> None:
        self.calls.append("freeze")
        self.frozen += 1

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")
        self.frozen = 0

    def get_freeze_count(self) -> int:
        return self.frozen

    def get_stats(self) -> list[dict[str, int]]:
        return [{"collections": 0}, {"collections": 0}, {"collections": self.full}]


@given(
    events=st.lists(
        st.tuples(st.integers(0, 2 * BIG), st.floats(0, 400), st.booleans()), max_size=40
    )
)
def test_nothing_stays_frozen_longer_than_the_limit_and_refreezing_waits_for_a_collection(
    events: list[tuple[int, float, bool]],
) -> None:
    collector = FakeCollector()
    now = 0.0
    freezer = StateFreezer(collector, lambda: now)
    first_frozen: float | None = None
    unfrozen_at_full: int | None = None
    for entries, elapsed, collect in events:
        now += elapsed
        if collect:
            collector.full += 1
        action = freezer.on_snapshot(entries)
        if action is FreezeAction.UNFREEZE:
            assert first_frozen is not None and now - first_frozen >= MAX_FROZEN_SECONDS
            first_frozen, unfrozen_at_full = None, collector.full
        elif action is FreezeAction.FREEZE:
            assert entries >= BIG
            if first_frozen is None:
                assert unfrozen_at_full is None or collector.full > unfrozen_at_full
                first_frozen = now
        if first_frozen is not None:
            assert now - first_frozen < MAX_FROZEN_SECONDS  # checked at every snapshot
    assert collector.calls.count("unfreeze") <= collector.calls.count("freeze")


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_with_the_real_collector_a_frozen_cycle_is_reclaimed_once_unfrozen() -> None:
    if gc.get_freeze_count() or not gc.isenabled():
        return  # the test process manages the collector itself
    now = 0.0
    freezer = StateFreezer(gc, lambda: now)
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    try:
        assert freezer.on_snapshot(BIG) is FreezeAction.FREEZE
        assert gc.get_freeze_count() > 0
        del a, b  # a garbage cycle, frozen: the collector does not see it
        gc.collect()
        assert alive() is not None
        now += MAX_FROZEN_SECONDS
        assert freezer.on_snapshot(BIG) is FreezeAction.UNFREEZE
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None
        # A full collection ran since the unfreeze: the next large snapshot freezes.
        assert freezer.on_snapshot(BIG) is FreezeAction.FREEZE
    finally:
        gc.unfreeze()


def test_a_job_end_unfreezes_what_the_freezer_froze_and_only_that() -> None:
    if gc.get_freeze_count() or not gc.isenabled():
        return  # the test process manages the collector itself
    freezer = StateFreezer(gc, lambda: 0.0)
    assert freezer.on_job_end() is FreezeAction.NOTHING  # nothing frozen: gc untouched
    try:
        assert freezer.on_snapshot(BIG) is FreezeAction.FREEZE
        assert gc.get_freeze_count() > 0
        assert freezer.on_job_end() is FreezeAction.UNFREEZE
        assert gc.get_freeze_count() == 0
        assert freezer.on_job_end() is FreezeAction.NOTHING
        # Freezing again waits for a full collection to reclaim the ended job's state.
        assert freezer.on_snapshot(BIG) is FreezeAction.NOTHING
        gc.collect()
        assert freezer.on_snapshot(BIG) is FreezeAction.FREEZE
    finally:
        gc.unfreeze()


async def test_the_job_master_tells_the_freezer_when_a_job_ends(monkeypatch: Any) -> None:
    from runtime import StreamEnvironment
    from runtime.scheduler import executor

    ended: list[str] = []

    class Spy:
        def on_job_end(self) -> None:
            ended.append("end")

    monkeypatch.setattr(executor, "STATE_FREEZER", Spy())
    env = StreamEnvironment(parallelism=1)
    env.from_collection([1, 2, 3]).map(lambda x: x + 1).collect(name="out")
    result = await env.execute("freezer")
    assert result.collected["out"] == [2, 3, 4]
    assert ended == ["end"]
