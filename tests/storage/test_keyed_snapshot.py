from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import (
    KEYED_STATE_FORMAT_VERSION,
    HeapKeyedStateBackend,
    KeyGroupRange,
    KeyGroupSnapshotData,
    ListStateDescriptor,
    MapStateDescriptor,
    PickleForbiddenError,
    ReducingStateDescriptor,
    SerializationError,
    StateError,
    ValueStateDescriptor,
    assign_to_key_group,
    restore_key_groups,
)

MAX_PARALLELISM = 32


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


def descriptors() -> list[Any]:
    return [
        ValueStateDescriptor("value"),
        ValueStateDescriptor("point", type=Point),
        ListStateDescriptor("list", type=int),
        MapStateDescriptor("map"),
        MapStateDescriptor("typed_map", key_type=str, value_type=float),
        ReducingStateDescriptor("sum", lambda a, b: a + b, type=int),
    ]


def register(backend: HeapKeyedStateBackend) -> dict[str, Any]:
    return {d.name: backend.get_state(d) for d in descriptors()}


def fill(backend: HeapKeyedStateBackend, keys: list[Any]) -> dict[str, dict[Any, Any]]:
    states = register(backend)
    expected: dict[str, dict[Any, Any]] = {name: {} for name in states}
    for i, key in enumerate(keys):
        backend.set_current_key(key)
        states["value"].update((i, str(key)))
        expected["value"][key] = (i, str(key))
        if i % 2:
            states["point"].update(Point(i, -i))
            expected["point"][key] = Point(i, -i)
        states["list"].add_all([i, i + 1])
        expected["list"][key] = [i, i + 1]
        states["map"].put((i, "t"), {"nested": [i]})
        expected["map"][key] = {(i, "t"): {"nested": [i]}}
        states["typed_map"].put("f", i / 2)
        expected["typed_map"][key] = {"f": i / 2}
        states["sum"].add(i)
        states["sum"].add(1)
        expected["sum"][key] = i + 1
    return expected


def content(backend: HeapKeyedStateBackend) -> dict[str, dict[Any, Any]]:
    states = register(backend)
    result: dict[str, dict[Any, Any]] = {name: {} for name in states}
    for name, state in states.items():
        for key in backend.keys(name):
            backend.set_current_key(key)
            if name in ("value", "point"):
                result[name][key] = state.value()
            elif name in ("map", "typed_map"):
                result[name][key] = dict(state.items())
            else:
                result[name][key] = state.get()
    return result


KEYS = st.lists(
    st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.binary(max_size=3),
        st.tuples(st.text(max_size=2), st.integers()),
    ),
    unique_by=lambda k: (type(k), k),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(KEYS)
def test_round_trip_and_rescale(keys: list[Any]) -> None:
    original = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    expected = fill(original, keys)
    snapshot = original.snapshot()
    blobs = [blob for chunk in snapshot.encode_chunks(chunk_size=7) for blob in chunk]
    snapshot.release()
    groups = [kg for kg, _ in blobs]
    assert groups == sorted(groups)
    assert set(groups) == {assign_to_key_group(k, MAX_PARALLELISM) for k in keys}

    whole = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    whole.restore(blobs)
    assert content(whole) == expected

    # Parts can be restored in any order, one call each.
    one_by_one = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    for blob in reversed(blobs):
        one_by_one.restore([blob])
    assert content(one_by_one) == expected

    for parallelism in (2, 3):
        union: dict[str, dict[Any, Any]] = {name: {} for name in expected}
        for index in range(parallelism):
            key_groups = KeyGroupRange.for_operator(MAX_PARALLELISM, parallelism, index)
            part = HeapKeyedStateBackend(MAX_PARALLELISM, key_groups)
            restore_key_groups(part, blobs)
            for name, entries in content(part).items():
                for key, value in entries.items():
                    assert assign_to_key_group(key, MAX_PARALLELISM) in key_groups
                    assert key not in union[name]
                    union[name][key] = value
        assert union == expected


def test_snapshot_is_consistent_while_state_changes() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    expected = fill(backend, list(range(50)))
    snapshot = backend.snapshot()
    chunks = snapshot.encode_chunks(chunk_size=10)
    blobs = list(next(chunks))
    fill(backend, list(range(25, 100)))  # the "records" between writer steps
    blobs += [blob for chunk in chunks for blob in chunk]
    snapshot.release()
    restored = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    restored.restore(blobs)
    assert content(restored) == expected


def test_restore_before_registration_and_carry_over() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    expected = fill(backend, ["a", "b", 7])
    snapshot = backend.snapshot()
    blobs = snapshot.encode_key_groups()
    snapshot.release()

    restored = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    restored.restore(blobs)
    assert sorted(restored.state_names) == sorted(expected)
    assert restored.num_keys("value") == 3
    # Only one state is registered again; the others are carried over still encoded.
    value = restored.get_state(ValueStateDescriptor("value"))
    restored.set_current_key("a")
    assert value.value() == expected["value"]["a"]
    second = restored.snapshot()
    assert {(s.name, s.encoded) for s in second.states} >= {("value", False), ("list", True)}
    blobs2 = second.encode_key_groups()
    second.release()
    again = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    again.restore(blobs2)
    assert content(again) == expected


def test_restore_with_other_kind_is_an_error() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    fill(backend, ["a"])
    snapshot = backend.snapshot()
    blobs = snapshot.encode_key_groups()
    snapshot.release()
    restored = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    restored.restore(blobs)
    with pytest.raises(StateError, match="state 'list' was restored as list state but is"):
        restored.get_state(ValueStateDescriptor("list"))
    registered_first = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    registered_first.get_state(MapStateDescriptor("value"))
    with pytest.raises(StateError, match="state 'value' was restored as value state"):
        registered_first.restore(blobs)


def test_restore_with_other_type_names_the_state() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    state = backend.get_state(ValueStateDescriptor("v", type=str))
    backend.set_current_key("k")
    state.update("text")
    snapshot = backend.snapshot()
    blobs = snapshot.encode_key_groups()
    snapshot.release()
    restored = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    restored.restore(blobs)
    with pytest.raises(SerializationError, match="cannot restore value state 'v' for key 'k'"):
        restored.get_state(ValueStateDescriptor("v", type=int))


def test_corrupt_blob_names_the_key_group() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    with pytest.raises(SerializationError, match="cannot decode the keyed state of key group 3"):
        backend.restore([(3, b"\x00garbage")])
    wrong = msgspec.msgpack.encode(KeyGroupSnapshotData(KEYED_STATE_FORMAT_VERSION, 4, []))
    with pytest.raises(SerializationError, match="blob given for key group 3 holds key group 4"):
        backend.restore([(3, wrong)])
    future = msgspec.msgpack.encode(KeyGroupSnapshotData(99, 3, []))
    with pytest.raises(SerializationError, match="format version 99"):
        backend.restore([(3, future)])


def test_out_of_range_blobs_are_not_decoded() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange(0, 3))
    backend.restore([(10, b"not even msgpack")])
    assert backend.num_keys() == 0


def test_pickle_forbidden_in_snapshot_names_the_state() -> None:
    backend = HeapKeyedStateBackend(
        MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM), allow_pickle=False
    )
    state = backend.get_state(ValueStateDescriptor("objects"))
    backend.set_current_key("k")
    state.update({1, 2})
    snapshot = backend.snapshot()
    with pytest.raises(
        PickleForbiddenError, match="cannot snapshot value state 'objects' for key 'k'"
    ):
        snapshot.encode_key_groups()
    snapshot.release()


def test_iter_key_groups_and_counts() -> None:
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    fill(backend, list(range(20)))
    snapshot = backend.snapshot()
    assert snapshot.num_entries() == 20 * 5 + 10
    seen = 0
    previous = -1
    for key_group, states in snapshot.iter_key_groups():
        assert key_group > previous
        previous = key_group
        for entries in states.values():
            for key, _ in entries:
                assert assign_to_key_group(key, MAX_PARALLELISM) == key_group
                seen += 1
    assert seen == snapshot.num_entries()
    snapshot.release()
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        next(backend.snapshot().encode_chunks(0))


def test_encoding_steps_pause_the_garbage_collector_and_restore_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A step's temporaries must not reach the oldest generation (see encode_chunks);
    # between steps, and after a step that raises, the collector is as it was.
    import gc

    from storage.heap.state_table import TableView

    seen_in_step: list[bool] = []
    chunks = TableView.chunks

    def spy(view: TableView, size: int) -> Any:
        for chunk in chunks(view, size):
            seen_in_step.append(gc.isenabled())
            yield chunk

    monkeypatch.setattr(TableView, "chunks", spy)
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM))
    fill(backend, list(range(50)))
    snapshot = backend.snapshot()
    assert gc.isenabled()
    for _ in snapshot.encode_chunks(8):
        assert gc.isenabled()
    assert seen_in_step and not any(seen_in_step)
    snapshot.release()
    gc.disable()
    try:
        snapshot = backend.snapshot()
        for _ in snapshot.encode_chunks(8):
            assert not gc.isenabled()  # left as the caller had it
        snapshot.release()
    finally:
        gc.enable()

    forbidden = HeapKeyedStateBackend(
        MAX_PARALLELISM, KeyGroupRange.of(MAX_PARALLELISM), allow_pickle=False
    )
    state = forbidden.get_state(ValueStateDescriptor("objects"))
    forbidden.set_current_key("k")
    state.update({1, 2})
    snapshot = forbidden.snapshot()
    with pytest.raises(PickleForbiddenError):
        list(snapshot.encode_chunks(8))
    assert gc.isenabled()
    snapshot.release()
