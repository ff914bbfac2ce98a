"""Lazy restore: restored key groups decoded on first access or in bounded steps."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import (
    HeapKeyedStateBackend,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    SerializationError,
    ValueStateDescriptor,
    assign_to_key_group,
)
from storage.heap.backend import RESTORE_STEP
from storage.keyed_snapshot import decode_key_group

MAX_PARALLELISM = 16
KEYS = 400


def new_backend(key_groups: KeyGroupRange | None = None) -> HeapKeyedStateBackend:
    return HeapKeyedStateBackend(MAX_PARALLELISM, key_groups or KeyGroupRange.of(MAX_PARALLELISM))


def encode(backend: HeapKeyedStateBackend, chunk_size: int = 50) -> list[tuple[int, bytes]]:
    snapshot = backend.snapshot()
    try:
        return [blob for chunk in snapshot.encode_chunks(chunk_size) for blob in chunk]
    finally:
        snapshot.release()


def source(keys: int = KEYS) -> list[tuple[int, bytes]]:
    """Blobs of a value, a list, a map and a reducing state over ``keys`` int keys."""
    backend = new_backend()
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    items = backend.get_state(ListStateDescriptor("list"))
    mapping = backend.get_state(MapStateDescriptor("map"))
    total = backend.get_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    for key in range(keys):
        backend.set_current_key(key)
        value.update(key * 10)
        items.add_all([key, "x"])
        mapping.put("k", (key, key))
        total.add(key)
    return encode(backend)


def contents(backend: HeapKeyedStateBackend) -> dict[str, dict[Any, Any]]:
    """Every entry, read through the handles (``keys`` decodes what is left)."""
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    items = backend.get_state(ListStateDescriptor("list"))
    mapping = backend.get_state(MapStateDescriptor("map"))
    total = backend.get_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    result: dict[str, dict[Any, Any]] = {"value": {}, "list": {}, "map": {}, "sum": {}}
    for key in backend.keys("value"):
        backend.set_current_key(key)
        result["value"][key] = value.value()
    for key in backend.keys("list"):
        backend.set_current_key(key)
        result["list"][key] = items.get()
    for key in backend.keys("map"):
        backend.set_current_key(key)
        result["map"][key] = dict(mapping.items())
    for key in backend.keys("sum"):
        backend.set_current_key(key)
        result["sum"][key] = total.get()
    return result


def expected(keys: int = KEYS) -> dict[str, dict[Any, Any]]:
    return {
        "value": {k: k * 10 for k in range(keys)},
        "list": {k: [k, "x"] for k in range(keys)},
        "map": {k: {"k": (k, k)} for k in range(keys)},
        "sum": {k: k for k in range(keys)},
    }


def restored(blobs: list[tuple[int, bytes]], **kwargs: Any) -> HeapKeyedStateBackend:
    backend = new_backend(**kwargs)
    backend.restore(blobs)
    return backend


def test_registration_decodes_one_key_group_and_the_rest_stays_encoded() -> None:
    backend = restored(source())
    state = backend.get_state(ValueStateDescriptor("value", type=int))
    assert backend.restoring
    assert state.restoring is not None  # type: ignore[attr-defined]
    decoded = len(state._table)  # type: ignore[attr-defined]
    assert 0 < decoded < KEYS
    assert backend.num_keys("value") == KEYS  # decoded and still encoded entries


def test_first_access_decodes_the_key_group_of_the_key() -> None:
    backend = restored(source())
    state = backend.get_state(ValueStateDescriptor("value", type=int))
    table = state._table  # type: ignore[attr-defined]
    pending = state.restoring.groups  # type: ignore[attr-defined]
    key = next(k for k in range(KEYS) if assign_to_key_group(k, MAX_PARALLELISM) in pending)
    group = assign_to_key_group(key, MAX_PARALLELISM)
    before = len(table)
    backend.set_current_key(key)
    assert state.value() == key * 10
    assert group not in pending
    in_group = sum(1 for k in range(KEYS) if assign_to_key_group(k, MAX_PARALLELISM) == group)
    assert len(table) == before + in_group


def test_restore_steps_decode_everything_then_the_handles_forget_the_restore() -> None:
    backend = restored(source())
    states = [
        backend.get_state(ValueStateDescriptor("value", type=int)),
        backend.get_state(ListStateDescriptor("list")),
    ]
    steps = 0
    while not backend.restore_step(max_entries=30):
        steps += 1
        assert steps < 10 * KEYS
    assert steps > 1  # bounded steps, not everything at once
    assert not backend.restoring
    assert all(state.restoring is None for state in states)  # type: ignore[attr-defined]
    # Unregistered states stay encoded until registered.
    assert backend.num_keys("map") == KEYS
    assert contents(backend) == expected()
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        backend.restore_step(0)
    assert RESTORE_STEP >= 1


def test_writes_and_removals_before_their_group_is_decoded_win() -> None:
    backend = restored(source())
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    items = backend.get_state(ListStateDescriptor("list"))
    mapping = backend.get_state(MapStateDescriptor("map"))
    total = backend.get_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
    want = expected()
    for key in range(0, KEYS, 7):
        backend.set_current_key(key)
        value.update(-key)
        want["value"][key] = -key
        items.add("new")
        want["list"][key].append("new")
        mapping.put("m", 1)
        want["map"][key]["m"] = 1
        total.add(1)
        want["sum"][key] += 1
    for key in range(3, KEYS, 11):
        backend.set_current_key(key)
        value.clear()
        del want["value"][key]
        mapping.remove("k")  # the last entry (unless "m" came): the key leaves the state
        del want["map"][key]["k"]
        if not want["map"][key]:
            del want["map"][key]
    backend.set_current_key(KEYS + 5)  # a new key
    value.update(1)
    want["value"][KEYS + 5] = 1
    while not backend.restore_step(max_entries=1):
        pass
    assert contents(backend) == want


def test_get_for_and_put_for_decode_the_key_group_first() -> None:
    backend = restored(source())
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    for key in range(KEYS):
        assert value.get_for(key) == key * 10
        value.put_for(key, key)
    assert not backend.restoring
    assert contents(backend)["value"] == {k: k for k in range(KEYS)}


def test_a_snapshot_before_everything_is_decoded_holds_every_key() -> None:
    backend = restored(source())
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    backend.get_state(ListStateDescriptor("list"))
    backend.set_current_key(1)
    value.update(-1)
    backend.set_current_key(2)
    value.clear()
    assert backend.restoring
    snapshot = backend.snapshot()
    encoded = {(s.name, s.encoded) for s in snapshot.states}
    assert ("value", True) in encoded and ("value", False) in encoded
    assert snapshot.num_entries() == 4 * KEYS - 1
    blobs = [blob for chunk in snapshot.encode_chunks(50) for blob in chunk]
    # Decoding on after the snapshot was taken does not change it.
    while not backend.restore_step():
        pass
    backend.set_current_key(3)
    value.update(-3)
    snapshot.release()
    want = expected()
    want["value"][1] = -1
    del want["value"][2]
    assert contents(restored(blobs)) == want


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_snapshots_taken_while_decoding_rescale(data: st.DataObject) -> None:
    backend = restored(source(120))
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    backend.get_state(MapStateDescriptor("map"))
    for key in data.draw(st.lists(st.integers(0, 130), max_size=20)):
        backend.set_current_key(key)
        value.update(value.value() if value.value() is not None else 0)
    for _ in range(data.draw(st.integers(0, 20))):
        backend.restore_step(max_entries=1)
    blobs = encode(backend)
    reference = contents(restored(blobs))  # every key groups at once
    split = data.draw(st.integers(0, MAX_PARALLELISM - 2))
    low = restored(blobs, key_groups=KeyGroupRange(0, split))
    high = restored(blobs, key_groups=KeyGroupRange(split + 1, MAX_PARALLELISM - 1))
    merged = {name: {**a, **contents(high)[name]} for name, a in contents(low).items()}
    assert merged == reference
    assert {k: v for k, v in reference["value"].items() if k >= 120} == {
        k: 0 for k in range(120, 131) if k in reference["value"]
    }


def test_a_canonical_snapshot_decodes_every_key_group_first() -> None:
    backend = restored(source())
    backend.get_state(ValueStateDescriptor("value", type=int))
    assert backend.restoring
    snapshot = backend.snapshot(canonical=True)
    assert not backend.restoring
    assert ("value", True) not in {(s.name, s.encoded) for s in snapshot.states}
    snapshot.release()


def test_a_restore_after_registration_joins_a_pending_key_group() -> None:
    blobs = source()
    backend = new_backend()
    half = len(blobs) // 2
    backend.restore(blobs[:half])
    backend.get_state(ValueStateDescriptor("value", type=int))
    backend.restore(blobs[half:])  # other parts of pending groups, and new groups
    assert contents(backend) == expected()


def corrupt(blobs: list[tuple[int, bytes]], group: int) -> list[tuple[int, bytes]]:
    """``blobs`` with the values of state 'value' in key group ``group`` not ints."""
    result = []
    for key_group, blob in blobs:
        if key_group == group:
            data = decode_key_group(key_group, blob)
            states = [
                msgspec.structs.replace(
                    batch, values=msgspec.Raw(msgspec.msgpack.encode(["bad"] * batch.count))
                )
                if batch.name == "value"
                else batch
                for batch in data.states
            ]
            blob = msgspec.msgpack.encode(msgspec.structs.replace(data, states=states))
        result.append((key_group, blob))
    return result


def test_a_corrupt_key_group_decoded_later_is_an_error_naming_the_state() -> None:
    blobs = source()
    groups = sorted({key_group for key_group, _ in blobs})
    bad = groups[-1]  # not the group decoded at registration
    backend = restored(corrupt(blobs, bad))
    value = backend.get_state(ValueStateDescriptor("value", type=int))
    key = next(k for k in range(KEYS) if assign_to_key_group(k, MAX_PARALLELISM) == bad)
    backend.set_current_key(key)
    with pytest.raises(SerializationError, match=r"cannot restore value state 'value' for key"):
        value.value()
    with pytest.raises(SerializationError, match=r"cannot restore value state 'value' for key"):
        value.update(1)  # the group stays pending: a write cannot hide it
    with pytest.raises(SerializationError, match=r"cannot restore value state 'value'"):
        while not backend.restore_step():
            pass
    assert backend.restoring


def test_a_type_that_no_longer_fits_fails_at_registration() -> None:
    backend = restored(source())
    with pytest.raises(SerializationError, match=r"cannot restore value state 'value' for key"):
        backend.get_state(ValueStateDescriptor("value", type=str))
