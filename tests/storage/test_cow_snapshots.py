"""Copy-on-write snapshots of the heap backend, checked against a plain-dict model."""

from __future__ import annotations

import copy
import gc
from collections.abc import Hashable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
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
from storage.heap.state_table import SHARDS, TOMBSTONE, Layer, StateTable, TableView

KEYS_LIST: list[Any] = ["a", "b", 1, (1, "x"), b"k"]
STATE_NAMES = ["value", "obj", "list", "map", "sum"]
# Keys in different shards of an overlay (ints hash to themselves: buckets 0 to 4095).
TABLE_KEY_LIST: list[Any] = [0, 1, 700, 1500, 2300, 3100, 3900, 4096 + 2300, "s"]
TABLE_KEYS = st.sampled_from(TABLE_KEY_LIST)
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
        # Released snapshots, kept to drive folding through the public fold_step.
        self.released: list[HeapSnapshot] = []
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

    @rule(snapshot_id=consumes(snapshots), steps=st.integers(0, 2))
    def release(self, snapshot_id: int, steps: int) -> None:
        snapshot, expected = self.live.pop(snapshot_id)
        assert snapshot_content(snapshot) == expected
        snapshot.release()
        snapshot.release()  # idempotent
        self.released.append(snapshot)
        # A few small steps leave most tables folding, for the other rules to meet.
        for _ in range(steps):
            snapshot.fold_step(1)

    def tables(self) -> list[StateTable]:
        return [registered.table for registered in self.backend._registered.values()]

    @rule(name=st.sampled_from(STATE_NAMES), max_entries=st.integers(1, 3))
    def fold_step(self, name: str, max_entries: int) -> None:
        # Folding is interleaved with reads, writes and snapshots by the other rules.
        table = self.backend._registered[name].table
        before = overlay_entries(table)
        done = table.fold_step(max_entries)
        after = overlay_entries(table)
        if table.pins:
            assert done and after == before  # a frozen base is never folded into
        else:
            # Bounded and making progress: exactly min(max_entries, left) entries moved.
            assert before - after == min(max_entries, before)
            assert done == (after == 0) == (table.overlay is None and table.below is None)

    @rule(max_entries=st.integers(1, 3))
    def fold_through_released_snapshot(self, max_entries: int) -> None:
        # The runtime's way: drive a released snapshot's fold_step until it says done.
        if not self.released:
            return
        snapshot = self.released[-1]
        steps = 0
        while not snapshot.fold_step(max_entries):
            steps += 1
            assert steps < 100
        if not self.live:
            for table in self.tables():
                assert table.overlay is None and table.below is None

    @invariant()
    def layers_are_consistent(self) -> None:
        for table in self.tables():
            assert table.pins == len(self.live)
            assert table.pins or table.shared is None
            if table.below is not None:
                assert table.overlay is not None
            assert table.folding == (table.overlay is not None and not self.live)

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
        # Folding to the end gives a plain table holding exactly the live state; run on
        # a copy of the layers, so that the machine keeps exploring the folding states.
        if not self.live:
            for name, table in zip(STATE_NAMES, self.tables(), strict=True):
                clone = StateTable(table.name)
                clone.base = dict(table.base)
                clone.below = copy_layer(table.below)
                clone.overlay = copy_layer(table.overlay)
                steps = 0
                while not clone.fold_step(2):
                    steps += 1
                    assert steps < 100, "folding makes no progress"
                assert clone.overlay is None and clone.below is None
                assert {k: clone.peek(k) for k in clone.base} == self.model[name], name

    def teardown(self) -> None:
        for snapshot, _ in self.live.values():
            snapshot.release()


CopyOnWriteMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestCopyOnWrite = CopyOnWriteMachine.TestCase


class StateTableMachine(RuleBasedStateMachine):
    """One table, driven directly: dense in the layer combinations a backend meets rarely.

    Snapshots taken while the table folds (one overlay left: frozen as it is; two: the
    top one copied), writes and removals in every layer, in-place mutation of values
    read with ``get``, and fold steps of one to three entries, all interleaved.
    """

    views = Bundle("views")

    def __init__(self) -> None:
        super().__init__()
        self.table = StateTable("t")
        self.model: dict[Hashable, Any] = {}
        self.live: dict[int, tuple[TableView, dict[Hashable, Any]]] = {}
        self.next_id = 0

    @rule(key=TABLE_KEYS, v=VALUES)
    def put_list(self, key: int, v: int) -> None:
        self.table.put(key, [v])
        self.model[key] = [v]

    @rule(key=TABLE_KEYS, v=VALUES)
    def put_int(self, key: int, v: int) -> None:
        self.table.put(key, v)
        self.model[key] = v

    @rule(keys=st.lists(TABLE_KEYS, max_size=4), v=VALUES)
    def put_all(self, keys: list[Hashable], v: int) -> None:
        values = [[v, i] for i in range(len(keys))]
        self.table.put_all(keys, values)
        self.model.update(zip(keys, copy.deepcopy(values), strict=True))

    @rule(key=TABLE_KEYS, v=VALUES)
    def mutate_in_place(self, key: int, v: int) -> None:
        value = self.table.get(key, "absent")
        assert value == self.model.get(key, "absent")
        if isinstance(value, list):
            value.append(v)
            self.model[key].append(v)

    @rule(key=TABLE_KEYS)
    def remove(self, key: int) -> None:
        self.table.remove(key)
        self.model.pop(key, None)

    @precondition(lambda self: len(self.live) < 2)  # time for folding between views
    @rule(target=views)
    def freeze(self) -> int:
        view_id = self.next_id
        self.next_id += 1
        self.live[view_id] = (self.table.freeze(), copy.deepcopy(self.model))
        return view_id

    @rule(view_id=consumes(views))
    def release(self, view_id: int) -> None:
        view, expected = self.live.pop(view_id)
        assert dict(view.items()) == expected
        self.table.release()

    @rule(max_entries=st.integers(1, 3))
    def fold_step(self, max_entries: int) -> None:
        table = self.table
        before = overlay_entries(table)
        done = table.fold_step(max_entries)
        after = overlay_entries(table)
        if table.pins:
            assert done and after == before
        else:
            assert before - after == min(max_entries, before)
            assert done == (after == 0) == (table.overlay is None and table.below is None)

    @rule(view_id=views, size=st.integers(1, 3))
    def read_in_chunks(self, view_id: int, size: int) -> None:
        if view_id not in self.live:
            return
        view, expected = self.live[view_id]
        read: dict[Hashable, Any] = {}
        for keys, values in view.chunks(size):
            assert len(keys) == len(values) <= size
            for key, value in zip(keys, values, strict=True):
                assert key not in read
                read[key] = value
        assert read == expected

    @invariant()
    def views_are_frozen(self) -> None:
        for view, expected in self.live.values():
            items = list(view.items())
            assert len(items) == len(dict(items)) == len(view)
            assert dict(items) == expected

    @invariant()
    def table_matches_model(self) -> None:
        table = self.table
        keys = table.keys()
        assert len(keys) == len(table) == len(self.model)
        assert set(keys) == set(self.model)
        for key in TABLE_KEY_LIST:
            assert table.peek(key, "absent") == self.model.get(key, "absent")
            assert table.contains(key) == (key in self.model)

    @invariant()
    def layers_are_consistent(self) -> None:
        table = self.table
        assert table.pins == len(self.live)
        assert table.pins or table.shared is None
        if table.below is not None:
            assert table.overlay is not None
        if table.overlay is None:
            assert len(table.base) == len(self.model)

    def teardown(self) -> None:
        for _ in self.live:
            self.table.release()


StateTableMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestStateTable = StateTableMachine.TestCase


def overlay_entries(table: StateTable) -> int:
    return table.overlay_entries()


def copy_layer(layer: Layer | None) -> Layer | None:
    return None if layer is None else layer.copy()


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
    assert table.overlay is not None and table.overlay.as_dict() == {}
    backend.set_current_key(5)
    state.update(-5)
    assert base[5] == 5
    assert table.overlay.as_dict() == {5: -5}
    snapshot.release()
    # Released: the table folds back in bounded steps, driven by the snapshot's owner.
    assert table.folding and table.overlay.as_dict() == {5: -5} and base[5] == 5
    assert snapshot.fold_step(1)
    assert table.overlay is None and table.base is base and base[5] == -5


def test_snapshot_while_folding_freezes_the_overlay_without_copying() -> None:
    backend = HeapKeyedStateBackend(128, KeyGroupRange.of(128))
    state = backend.get_state(ValueStateDescriptor("v"))
    for key in range(100):
        backend.set_current_key(key)
        state.update(key)
    table = backend._registered["v"].table
    first = backend.snapshot()
    for key in range(50):
        backend.set_current_key(key)
        state.update(-key)
    first.release()
    assert not first.fold_step(10)  # 40 of the 50 entries written meanwhile left
    left = table.overlay
    assert left is not None and len(left) == 40
    second = backend.snapshot()
    assert table.below is left  # frozen as it is: O(1), no copy
    assert table.overlay is not None and not table.overlay
    backend.set_current_key(3)
    state.update(333)
    assert dict(snapshot_entries(second)) == {k: -k if k < 50 else k for k in range(100)}
    assert second.fold_step()  # a frozen table is not folded
    second.release()
    for _ in range(10):
        if second.fold_step(7):
            break
    assert table.overlay is None and table.below is None
    assert table.base == {k: 333 if k == 3 else -k if k < 50 else k for k in range(100)}


def snapshot_entries(snapshot: HeapSnapshot) -> list[tuple[Any, Any]]:
    return [(key, value) for _, key, value in snapshot.entries()]


def test_fold_step_rejects_an_empty_step() -> None:
    import pytest

    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        StateTable("v").fold_step(0)


def test_released_snapshot_cannot_be_read() -> None:
    import pytest

    from storage import StateError

    backend = HeapKeyedStateBackend(128, KeyGroupRange.of(128))
    snapshot = backend.snapshot()
    snapshot.release()
    assert snapshot.released
    with pytest.raises(StateError, match="snapshot was released and cannot be read"):
        list(snapshot.entries())


def test_layer_spreads_keys_over_shards_with_unequal_shares() -> None:
    layer = Layer.of({key: key for key in range(4096)})
    sizes = [len(shard) for shard in layer.shards]
    assert len(sizes) == SHARDS and sum(sizes) == len(layer) == 4096
    # Shares grow across one doubling, so the shards outgrow their tables one at a time.
    assert sizes == sorted(sizes) and 1.8 < sizes[-1] / sizes[0] < 2.2
    assert layer.as_dict() == {key: key for key in range(4096)}
    assert all(layer.get(key) == key and key in layer for key in range(4096))
    assert layer.get(-1, "absent") == "absent" and -1 not in layer


@given(
    entries=st.dictionaries(st.integers() | st.text(max_size=3), st.integers(), max_size=60),
    keys=st.lists(st.integers() | st.text(max_size=3), max_size=30),
)
def test_layer_without_keeps_the_keys_it_does_not_hold(
    entries: dict[Hashable, int], keys: list[Hashable]
) -> None:
    layer = Layer.of(entries)
    assert layer.without(keys) == [key for key in keys if key not in entries]
    copied = layer.copy()
    copied[object()] = 1
    assert layer.as_dict() == entries and len(copied) == len(entries) + 1


@given(
    entries=st.dictionaries(st.integers(), st.integers() | st.just(TOMBSTONE), max_size=200),
    base=st.dictionaries(st.integers(), st.integers(), max_size=50),
    limit=st.integers(1, 40),
)
def test_layer_fold_into_moves_exactly_the_limit(
    entries: dict[Hashable, Any], base: dict[Hashable, int], limit: int
) -> None:
    layer = Layer.of(entries)
    expected = {**base, **entries}
    expected = {k: v for k, v in expected.items() if v is not TOMBSTONE}
    while layer:
        before = len(layer)
        assert layer.fold_into(base, limit) == min(limit, before) == before - len(layer)
    assert base == expected


@given(
    writes=st.lists(
        st.tuples(st.integers(0, 20_000), st.integers() | st.none()), min_size=1, max_size=300
    ),
    at=st.integers(0, 300),
)
def test_view_taken_during_writes_over_many_shards_sees_its_frozen_contents(
    writes: list[tuple[int, int | None]], at: int
) -> None:
    table = StateTable("t")
    model: dict[Hashable, Any] = {}
    frozen: list[tuple[TableView, dict[Hashable, Any]]] = []
    for index, (key, value) in enumerate(writes):
        if index == at % len(writes) or index == (at * 7) % len(writes):
            frozen.append((table.freeze(), dict(model)))
        if value is None:
            table.remove(key)
            model.pop(key, None)
        else:
            table.put(key, [value])
            model[key] = [value]
        if index % 50 == 49 and not table.pins:
            table.fold_step(7)
    for view, expected in frozen:
        assert dict(view.items()) == expected
        read = {k: v for keys, values in view.chunks(5) for k, v in zip(keys, values, strict=True)}
        assert read == expected
        table.release()
    live_keys = table.keys()
    assert {key: table.peek(key) for key in live_keys} == model
    while not table.fold_step(13):
        pass
    assert table.overlay is None and table.base == model


def test_overlay_shards_are_tracked_by_the_collector_from_birth() -> None:
    # So that the runtime's state freezer, called right after the snapshot's sync part,
    # freezes them while they are still empty (see runtime.tasks.gc_freezer).
    layer = Layer()
    assert all(gc.is_tracked(shard) for shard in layer.shards)
    assert all(gc.is_tracked(shard) for shard in layer.copy().shards)


def test_table_entries_counts_the_bases_cheaply() -> None:
    backend = HeapKeyedStateBackend(128, KeyGroupRange.of(128))
    state = backend.get_state(ValueStateDescriptor("v"))
    for key in range(300):
        backend.set_current_key(key)
        state.update(key)
    snapshot = backend.snapshot()
    backend.set_current_key(1000)
    state.update(1)  # in the overlay: not counted
    assert snapshot.table_entries() == 300
    snapshot.release()
    assert snapshot.table_entries() == 300


def test_a_tuple_holding_a_mutable_value_is_copied_before_it_is_handed_out() -> None:
    # Tuples of scalars are shared with the snapshot as they are; a tuple with a list
    # (or a nested tuple with one) inside is copied, so mutating it leaves the view alone.
    table = StateTable("t")
    shared_tuple = (1, ("x", 2.5, None, b"b", frozenset({3})))
    table.put("plain", shared_tuple)
    table.put("nested", (1, ("y", [2])))
    table.put("list", (1, [2]))
    view = table.freeze()
    assert table.get("plain") is shared_tuple
    table.get("nested")[1][1].append(9)
    table.get("list")[1].append(9)
    frozen = dict(view.items())
    assert frozen["nested"] == (1, ("y", [2])) and frozen["list"] == (1, [2])
    assert table.get("nested") == (1, ("y", [2, 9])) and table.get("list") == (1, [2, 9])
    table.release()
