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

KEYS_LIST: list[Any] = ["a", "b", 1, (1, "x"), b"k"]
KEYS = st.sampled_from(KEYS_LIST)
MAP_KEYS = st.sampled_from(["p", "q", 3])
VALUES = st.integers(-5, 5)

Model = dict[str, dict[Any, Any]]


def snapshot_content(snapshot: HeapSnapshot) -> Model:
    content: Model = {"value": {}, "obj": {}, "list": {}, "map": {}, "sum": {}}
    for name, key, value in snapshot.entries():
        assert key not in content[name]
        content[name][key] = copy.deepcopy(value)
    return content


def backend_content(backend: HeapKeyedStateBackend) -> Model:
    """Read every state of a backend registered with the machine's descriptors."""
    states = {
        "value": backend.get_state(ValueStateDescriptor("value")),
        "obj": backend.get_state(ValueStateDescriptor("obj", default=[])),
        "list": backend.get_state(ListStateDescriptor("list")),
        "map": backend.get_state(MapStateDescriptor("map")),
        "sum": backend.get_state(ReducingStateDescriptor("sum", lambda x, y: x + y)),
    }
    content: Model = {name: {} for name in states}
    for name, state in states.items():
        for key in backend.keys(name):
            backend.set_current_key(key)
            if name in ("value", "obj"):
                content[name][key] = state.value()  # type: ignore[attr-defined]
            elif name == "map":
                content[name][key] = dict(state.items())  # type: ignore[attr-defined]
            else:
                content[name][key] = state.get()  # type: ignore[attr-defined]
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
    def value_put_for(self, key: Any, v: int) -> None:
        # The explicit-key fast path: no current key involved.
        self.backend.set_current_key(None)
        self.value.put_for(key, v)
        self.model["value"][key] = v

    @rule(key=KEYS, v=VALUES)
    def obj_get_for_and_put_for(self, key: Any, v: int) -> None:
        current = self.obj.get_for(key)
        self.obj.put_for(key, [v] if current is None else [*current, v])
        self.model["obj"][key] = [*self.model["obj"].get(key, []), v]

    @rule(key=KEYS, v=VALUES)
    def obj_get_for_mutate_in_place(self, key: Any, v: int) -> None:
        # A value read with get_for may be mutated in place, as one read with value().
        current = self.obj.get_for(key, "absent")
        if current == "absent":
            assert key not in self.model["obj"]
        else:
            current.append(v)
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

    @rule(snapshot_id=snapshots, chunk_size=st.integers(1, 4))
    def encode_and_restore(self, snapshot_id: int, chunk_size: int) -> None:
        # Encoding reads the frozen view in chunks (overlay and base): the restored
        # state is the snapshot's, whatever happened since.
        if snapshot_id not in self.live:
            return
        snapshot, expected = self.live[snapshot_id]
        blobs = [b for chunk in snapshot.encode_chunks(chunk_size) for b in chunk]
        restored = HeapKeyedStateBackend(16, KeyGroupRange(0, 15))
        restored.restore(blobs)
        assert backend_content(restored) == expected

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
        # Peek only: a read through a handle copies values out of the frozen layer,
        # which would hide a missing copy before a later in-place mutation.
        b = self.backend
        for name in ("value", "obj", "list", "map", "sum"):
            assert set(b.keys(name)) == set(self.model[name]), name
            assert b.num_keys(name) == len(self.model[name]), name
            table = b._registered[name].table
            for key, expected in self.model[name].items():
                assert table.peek(key) == expected, (name, key)

    @rule()
    def read_everything_through_handles(self) -> None:
        b = self.backend
        for key, expected in self.model["value"].items():
            b.set_current_key(key)
            assert self.value.value() == expected
            assert self.value.get_for(key) == expected
        for key, expected in self.model["obj"].items():
            b.set_current_key(key)
            assert self.obj.value() == expected
            assert self.obj.get_for(key) == expected
        for key in set(KEYS_LIST) - set(self.model["value"]):
            assert self.value.get_for(key, "absent") == "absent"
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
