from __future__ import annotations

import pytest

from storage import (
    HeapKeyedStateBackend,
    KeyGroupRange,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    ReducingState,
    ReducingStateDescriptor,
    StateError,
    ValueState,
    ValueStateDescriptor,
)


def test_value_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ValueStateDescriptor("count", default=0))
    assert isinstance(state, ValueState)
    backend.set_current_key("a")
    assert state.value() == 0
    state.update(state.value() + 1)
    state.update(state.value() + 1)
    backend.set_current_key("b")
    assert state.value() == 0
    state.update(10)
    backend.set_current_key("a")
    assert state.value() == 2
    state.clear()
    assert state.value() == 0
    assert list(backend.keys("count")) == ["b"]


def test_value_state_mutable_default_is_copied(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ValueStateDescriptor("seen", default=[]))
    backend.set_current_key("a")
    state.value().append(1)
    assert state.value() == []


def test_list_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ListStateDescriptor("events"))
    assert isinstance(state, ListState)
    backend.set_current_key(1)
    assert state.get() == []
    state.add("x")
    state.add_all(["y", "z"])
    state.add_all([])
    got = state.get()
    assert got == ["x", "y", "z"]
    got.append("not stored")  # get() returns a copy
    assert state.get() == ["x", "y", "z"]
    state.update(["only"])
    assert state.get() == ["only"]
    state.update([])
    assert state.get() == []
    assert list(backend.keys("events")) == []
    state.add("again")
    state.clear()
    assert state.get() == []


def test_map_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(MapStateDescriptor("m"))
    assert isinstance(state, MapState)
    backend.set_current_key(("user", 1))
    assert state.is_empty()
    assert state.get("a") is None
    assert state.get("a", 5) == 5
    state.put("a", 1)
    state.put_all({"b": 2, "c": 3})
    assert state.contains("a") and not state.contains("z")
    assert sorted(state.keys()) == ["a", "b", "c"]
    assert sorted(state.values()) == [1, 2, 3]
    assert sorted(state.items()) == [("a", 1), ("b", 2), ("c", 3)]
    state.remove("a")
    state.remove("missing")
    assert not state.contains("a")
    assert not state.is_empty()
    backend.set_current_key(("user", 2))
    assert state.is_empty()
    backend.set_current_key(("user", 1))
    state.clear()
    assert state.is_empty()
    assert backend.num_keys("m") == 0


def test_map_state_removing_last_entry_drops_the_key(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(MapStateDescriptor("m"))
    backend.set_current_key("k")
    state.put("a", 1)
    state.remove("a")
    assert backend.num_keys("m") == 0


def test_reducing_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ReducingStateDescriptor("sum", lambda a, b: a + b, type=int))
    assert isinstance(state, ReducingState)
    backend.set_current_key("k")
    assert state.get() is None
    state.add(3)
    state.add(4)
    assert state.get() == 7
    backend.set_current_key("other")
    state.add(1)
    assert state.get() == 1
    state.clear()
    assert state.get() is None


def test_same_name_gives_same_handle(backend: HeapKeyedStateBackend) -> None:
    first = backend.get_state(ValueStateDescriptor("v"))
    assert backend.get_state(ValueStateDescriptor("v", default=3)) is first


def test_same_name_other_kind_is_an_error(backend: HeapKeyedStateBackend) -> None:
    backend.get_state(ValueStateDescriptor("v"))
    with pytest.raises(
        StateError, match="state 'v' is registered as value state and cannot be registered again"
    ):
        backend.get_state(ListStateDescriptor("v"))


@pytest.mark.parametrize(
    "descriptor",
    [
        ValueStateDescriptor("v"),
        ListStateDescriptor("l"),
        MapStateDescriptor("m"),
        ReducingStateDescriptor("r", max),
    ],
)
def test_access_without_current_key(backend: HeapKeyedStateBackend, descriptor: object) -> None:
    state = backend.get_state(descriptor)  # type: ignore[call-overload]
    name = descriptor.name  # type: ignore[attr-defined]
    with pytest.raises(StateError, match=rf"state '{name}' was accessed with no current key"):
        state.clear()
    read = {"v": "value", "l": "get", "m": "is_empty", "r": "get"}[name]
    with pytest.raises(StateError, match="no current key"):
        getattr(state, read)()


def test_descriptor_validation() -> None:
    with pytest.raises(ValueError, match="ListStateDescriptor needs a non-empty str name"):
        ListStateDescriptor("")
    with pytest.raises(ValueError, match="MapStateDescriptor needs a non-empty str name"):
        MapStateDescriptor(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a callable reduce_function"):
        ReducingStateDescriptor("r", 5)  # type: ignore[arg-type]
    assert ValueStateDescriptor("v").kind == "value"
    assert MapStateDescriptor("m").kind == "map"


def test_keys_of_unknown_state(backend: HeapKeyedStateBackend) -> None:
    with pytest.raises(StateError, match="no state named 'nope' is registered"):
        backend.keys("nope")


def test_backend_validates_range() -> None:
    with pytest.raises(ValueError, match="exceeds max_parallelism=8"):
        HeapKeyedStateBackend(8, KeyGroupRange(0, 8))


def test_num_keys(backend: HeapKeyedStateBackend) -> None:
    v = backend.get_state(ValueStateDescriptor("v"))
    items = backend.get_state(ListStateDescriptor("l"))
    for key in range(5):
        backend.set_current_key(key)
        v.update(key)
        if key % 2:
            items.add(key)
    assert backend.num_keys("v") == 5
    assert backend.num_keys("l") == 2
    assert backend.num_keys() == 7
    assert backend.num_keys("unknown") == 0
