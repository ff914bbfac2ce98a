from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import (
    DistributionMode,
    ListState,
    ListStateDescriptor,
    OperatorStateBackend,
    OperatorStateSnapshot,
    SerializationError,
    StateError,
    redistribute,
)


def subtask_with(offsets: list[int], union: list[str]) -> OperatorStateSnapshot:
    backend = OperatorStateBackend()
    backend.get_list_state(ListStateDescriptor("offsets", type=int)).add_all(offsets)
    backend.get_union_list_state(ListStateDescriptor("pending")).add_all(union)
    return backend.snapshot()


def restored(snapshot: OperatorStateSnapshot) -> tuple[list[int], list[str]]:
    backend = OperatorStateBackend()
    backend.restore(snapshot)
    split = backend.get_list_state(ListStateDescriptor("offsets", type=int)).get()
    union = backend.get_union_list_state(ListStateDescriptor("pending")).get()
    return split, union


def test_list_state_semantics() -> None:
    backend = OperatorStateBackend()
    state = backend.get_list_state(ListStateDescriptor("s"))
    assert isinstance(state, ListState)
    assert backend.get_list_state(ListStateDescriptor("s")) is state
    state.add(1)
    state.add_all([2, 3])
    got = state.get()
    got.append(99)
    assert state.get() == [1, 2, 3]
    state.update([7])
    assert state.get() == [7]
    state.clear()
    assert state.get() == []


@given(
    st.lists(st.lists(st.integers(0, 2**40), max_size=10), min_size=1, max_size=5),
    st.integers(1, 6),
)
def test_split_is_even_and_union_goes_to_all(old: list[list[int]], new_parallelism: int) -> None:
    snapshots = [subtask_with(offsets, [f"txn-{i}"]) for i, offsets in enumerate(old)]
    new = redistribute(snapshots, new_parallelism)
    assert len(new) == new_parallelism
    splits = [restored(s) for s in new]
    everything = [o for offsets in old for o in offsets]
    assert [o for split, _ in splits for o in split] == everything
    sizes = [len(split) for split, _ in splits]
    assert max(sizes) - min(sizes) <= 1
    for _, union in splits:
        assert union == [f"txn-{i}" for i in range(len(old))]


def test_snapshot_is_msgspec_encodable() -> None:
    snapshot = subtask_with([1, 2], ["a"])
    data = msgspec.msgpack.encode(snapshot)
    assert msgspec.msgpack.decode(data, type=OperatorStateSnapshot) == snapshot
    assert snapshot.states["pending"].mode is DistributionMode.UNION


def test_mode_mismatch_is_an_error() -> None:
    backend = OperatorStateBackend()
    backend.get_list_state(ListStateDescriptor("s"))
    with pytest.raises(StateError, match="'s' is registered as split list state and cannot"):
        backend.get_union_list_state(ListStateDescriptor("s"))
    fresh = OperatorStateBackend()
    fresh.restore(subtask_with([1], ["x"]))
    with pytest.raises(StateError, match="'pending' is restored as union list state"):
        fresh.get_list_state(ListStateDescriptor("pending"))
    a = OperatorStateSnapshot({"s": subtask_with([1], []).states["offsets"]})
    b = OperatorStateSnapshot({"s": subtask_with([], ["x"]).states["pending"]})
    with pytest.raises(StateError, match="'s' is split state in one subtask and union"):
        redistribute([a, b], 2)


def test_unregistered_restored_state_is_carried_over() -> None:
    backend = OperatorStateBackend()
    backend.restore(subtask_with([1, 2], ["x"]))
    assert sorted(backend.state_names) == ["offsets", "pending"]
    snapshot = backend.snapshot()
    assert restored(snapshot) == ([1, 2], ["x"])


def test_restore_after_registration_appends() -> None:
    backend = OperatorStateBackend()
    state = backend.get_list_state(ListStateDescriptor("offsets", type=int))
    state.add(0)
    backend.restore(subtask_with([1, 2], []))
    assert state.get() == [0, 1, 2]


def test_wrong_type_and_version() -> None:
    backend = OperatorStateBackend()
    backend.restore(subtask_with([1], []))
    with pytest.raises(SerializationError, match="cannot restore operator list state 'offsets'"):
        backend.get_list_state(ListStateDescriptor("offsets", type=str))
    with pytest.raises(SerializationError, match="format version 7"):
        backend.restore(OperatorStateSnapshot({}, version=7))
    with pytest.raises(ValueError, match="new_parallelism must be at least 1"):
        redistribute([], 0)
