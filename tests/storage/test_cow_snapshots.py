"""Copy-on-write snapshots of the heap backend, checked against a plain-dict model."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from storage import (
    HeapKeyedStateBackend,
    HeapSnapshot,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

KEYS = st.sampled_from(["a", "b", 1, (1, "x"), b"k"])
MAP_KEYS = st.sampled_from(["p", "q", 3])
VALUES = st.integers(-5, 5)

Model = dict[str, dict[Any, Any]]


def snapshot_content(snapshot: HeapSnapshot) -> Model:
    content: Model = {"value": {}, "obj": {}, "list": {}, "map": {}, "sum": {}}
    for name, key, value in snapshot.entries():
        assert key not in content[name]
        content[name][key] = copy.deepcopy(value)
    return content


class CopyOnWriteMachine(RuleBasedStateMachine):
    snapshots = Bundle("snapshots")

    def __init__(self) -> None:
        super().__init__()
        self.backend = HeapKeyedStateBackend(16, KeyGroupRange(0, 15))
        b = self.backend
        self.value = b.get_state(ValueStateDescriptor("value"))
        self.obj = b.get_state(ValueStateDescriptor("obj", default=[]))
        self.list = b.get_state(ListStateDescriptor("list"))
        self.map = b.get_state(MapStateDescriptor("map"))
        self.sum = b.get_state(ReducingStateDescriptor("sum", lambda x, y: x + y))
        self.model: Model = {"value": {}, "obj": {}, "list": {}, "map": {}, "sum": {}}
        self.live: dict[int, tuple[HeapSnapshot, Model]] = {}
        self.next_id = 0

    def use(self, key: Any) -> None:
        self.backend.set_current_key(key)

    @rule(key=KEYS, v=VALUES)
    def value_update(self, key: Any, v: int) -> None:
        self.use(key)
        self.value.update(v)
        self.model["value"][key] = v

    @rule(key=KEYS)
    def value_clear(self, key: Any) -> None:
        self.use(key)
        self.value.clear()
        self.model["value"].pop(key, None)

    @rule(key=KEYS, v=VALUES)
    def obj_append_and_update(self, key: Any, v: int) -> None:
        self.use(key)
        current = self.obj.value()
        current.append(v)
        self.obj.update(current)
        self.model["obj"].setdefault(key, []).append(v)

    @rule(key=KEYS, v=VALUES)
    def obj_mutate_in_place(self, key: Any, v: int) -> None:
        # Values returned by reads may be mutated in place; the change is state.
        self.use(key)
        if key in self.model["obj"]:
            self.obj.value().append(v)
            self.model["obj"][key].append(v)

    @rule(key=KEYS, v=VALUES)
    def list_add(self, key: Any, v: int) -> None:
        self.use(key)
        self.list.add(v)
        self.model["list"].setdefault(key, []).append(v)

    @rule(key=KEYS, vs=st.lists(VALUES, max_size=3))
    def list_update(self, key: Any, vs: list[int]) -> None:
        self.use(key)
        self.list.update(vs)
        if vs:
            self.model["list"][key] = list(vs)
        else:
            self.model["list"].pop(key, None)

    @rule(key=KEYS, vs=st.lists(VALUES, max_size=3))
    def list_add_all(self, key: Any, vs: list[int]) -> None:
        self.use(key)
        self.list.add_all(vs)
        if vs:
            self.model["list"].setdefault(key, []).extend(vs)

    @rule(key=KEYS)
    def list_clear(self, key: Any) -> None:
        self.use(key)
        self.list.clear()
        self.model["list"].pop(key, None)

    @rule(key=KEYS, mk=MAP_KEYS, v=VALUES)
    def map_put(self, key: Any, mk: Any, v: int) -> None:
        self.use(key)
        self.map.put(mk, [v])
        self.model["map"].setdefault(key, {})[mk] = [v]

    @rule(key=KEYS, mk=MAP_KEYS, v=VALUES)
    def map_value_mutate_in_place(self, key: Any, mk: Any, v: int) -> None:
        self.use(key)
        value = self.map.get(mk)
        if value is not None:
            value.append(v)
            self.model["map"][key][mk].append(v)

    @rule(key=KEYS, mk=MAP_KEYS)
    def map_remove(self, key: Any, mk: Any) -> None:
        self.use(key)
        self.map.remove(mk)
        entries = self.model["map"].get(key)
        if entries is not None:
            entries.pop(mk, None)
            if not entries:
                del self.model["map"][key]

    @rule(key=KEYS)
    def map_clear(self, key: Any) -> None:
        self.use(key)
        self.map.clear()
        self.model["map"].pop(key, None)

    @rule(key=KEYS, v=VALUES)
    def sum_add(self, key: Any, v: int) -> None:
        self.use(key)
        self.sum.add(v)
        self.model["sum"][key] = self.model["sum"].get(key, 0) + v

    @rule(target=snapshots)
    def snapshot(self) -> int:
        snapshot_id = self.next_id
        self.next_id += 1
        self.live[snapshot_id] = (self.backend.snapshot(), copy.deepcopy(self.model))
        return snapshot_id

    @rule(snapshot_id=consumes(snapshots))
    def release(self, snapshot_id: int) -> None:
        snapshot, expected = self.live.pop(snapshot_id)
        assert snapshot_content(snapshot) == expected
        snapshot.release()
        snapshot.release()  # idempotent

    @invariant()
    def snapshots_are_frozen(self) -> None:
        for snapshot, expected in self.live.values():
            assert snapshot_content(snapshot) == expected

    @invariant()
    def live_state_matches_model(self) -> None:
        b = self.backend
        for name in ("value", "obj", "list", "map", "sum"):
            assert set(b.keys(name)) == set(self.model[name]), name
            assert b.num_keys(name) == len(self.model[name]), name
        for key, expected in self.model["value"].items():
            b.set_current_key(key)
            assert self.value.value() == expected
        for key, expected in self.model["obj"].items():
            b.set_current_key(key)
            assert self.obj.value() == expected
        for key, expected in self.model["list"].items():
            b.set_current_key(key)
            assert self.list.get() == expected
        for key, expected in self.model["map"].items():
            b.set_current_key(key)
            assert dict(self.map.items()) == expected
        for key, expected in self.model["sum"].items():
            b.set_current_key(key)
            assert self.sum.get() == expected

    @invariant()
    def overlays_fold_back_when_no_snapshot_is_live(self) -> None:
        if not self.live:
            for registered in self.backend._registered.values():
                assert registered.table.overlay is None
                assert registered.table.pins == 0

    def teardown(self) -> None:
        for snapshot, _ in self.live.values():
            snapshot.release()


CopyOnWriteMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestCopyOnWrite = CopyOnWriteMachine.TestCase


def test_snapshot_sync_part_does_not_copy_entries() -> None:
    backend = HeapKeyedStateBackend(128, KeyGroupRange.of(128))
    state = backend.get_state(ValueStateDescriptor("v"))
    for key in range(1000):
        backend.set_current_key(key)
        state.update(key)
    table = backend._registered["v"].table
    base = table.base
    snapshot = backend.snapshot()
    assert table.base is base  # frozen and shared, not copied
    assert table.overlay == {}
    backend.set_current_key(5)
    state.update(-5)
    assert base[5] == 5
    assert table.overlay == {5: -5}
    snapshot.release()
    assert table.overlay is None and table.base is base and base[5] == -5


def test_released_snapshot_cannot_be_read() -> None:
    import pytest

    from storage import StateError

    backend = HeapKeyedStateBackend(128, KeyGroupRange.of(128))
    snapshot = backend.snapshot()
    snapshot.release()
    assert snapshot.released
    with pytest.raises(StateError, match="snapshot was released and cannot be read"):
        list(snapshot.entries())
