"""CompletedCheckpointStore: Flink's subsumption keeps the newest ``max_retained``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.checkpoint import CompletedCheckpointStore, RetainedCheckpoint


def test_keeps_the_newest_and_returns_the_subsumed() -> None:
    store = CompletedCheckpointStore(2)
    assert store.latest() is None
    assert store.add(1, "p1") == []
    assert store.add(2, "p2") == []
    assert store.add(3, "p3") == [1]
    assert store.all() == [RetainedCheckpoint(2, "p2"), RetainedCheckpoint(3, "p3")]
    assert store.latest() == RetainedCheckpoint(3, "p3")
    assert len(store) == 2


def test_an_old_checkpoint_added_to_a_full_store_is_subsumed_at_once() -> None:
    store = CompletedCheckpointStore(1)
    store.add(5, "p5")
    assert store.add(4, "p4") == [4]
    assert store.all() == [RetainedCheckpoint(5, "p5")]


def test_a_repeated_add_changes_nothing() -> None:
    store = CompletedCheckpointStore(1)
    store.add(5, "p5")
    assert store.add(5, "p5") == []
    with pytest.raises(ValueError, match="checkpoint 5 is already retained at 'p5', not 'q5'"):
        store.add(5, "q5")
    assert store.all() == [RetainedCheckpoint(5, "p5")]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_retained_must_be_positive(bad: object) -> None:
    with pytest.raises(ValueError, match="max_retained must be"):
        CompletedCheckpointStore(bad)  # type: ignore[arg-type]


@given(
    max_retained=st.integers(min_value=1, max_value=5),
    ids=st.lists(st.integers(min_value=0, max_value=1000), unique=True, max_size=30),
)
def test_retention(max_retained: int, ids: list[int]) -> None:
    store = CompletedCheckpointStore(max_retained)
    discarded: list[int] = []
    for checkpoint_id in ids:
        returned = store.add(checkpoint_id, f"p{checkpoint_id}")
        assert returned == sorted(returned)
        discarded += returned
        kept = [c.checkpoint_id for c in store.all()]
        assert kept == sorted(kept)
        assert len(kept) <= max_retained
    newest = sorted(ids)[len(ids) - min(len(ids), max_retained) :]
    assert [c.checkpoint_id for c in store.all()] == newest
    assert all(c.pointer == f"p{c.checkpoint_id}" for c in store.all())
    assert sorted(discarded) == sorted(set(ids) - set(newest))
    assert len(discarded) == len(set(discarded))  # each returned exactly once
    assert store.latest() == (RetainedCheckpoint(max(ids), f"p{max(ids)}") if ids else None)
