"""Keyed state snapshot format 2: parts, column codecs, bounded steps, decoding API."""

from __future__ import annotations

import enum
from collections import defaultdict
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
    SerializationError,
    StateError,
    ValueStateDescriptor,
)
from storage.format.entry_columns import ColumnCodec
from storage.format.key_group_writer import array_header
from storage.keyed_snapshot import decode_entries, decode_key_group, decode_keys

MAX_PARALLELISM = 8


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


class Opaque:
    """A class msgspec cannot encode: needs pickle."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    def __hash__(self) -> int:
        return self.n


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


def new_backend(allow_pickle: bool = True, max_parallelism: int = MAX_PARALLELISM) -> Any:
    return HeapKeyedStateBackend(
        max_parallelism, KeyGroupRange.of(max_parallelism), allow_pickle=allow_pickle
    )


def put(backend: Any, descriptor: Any, items: dict[Any, Any]) -> None:
    state = backend.get_state(descriptor)
    for key, value in items.items():
        backend.set_current_key(key)
        state.update(value)


def encode(backend: Any, chunk_size: int = 2048) -> list[tuple[int, bytes]]:
    snapshot = backend.snapshot()
    try:
        return [blob for chunk in snapshot.encode_chunks(chunk_size) for blob in chunk]
    finally:
        snapshot.release()


def batches(blobs: list[tuple[int, bytes]]) -> list[Any]:
    return [batch for kg, blob in blobs for batch in decode_key_group(kg, blob).states]


def values_of(backend: Any, descriptor: Any) -> dict[Any, Any]:
    state = backend.get_state(descriptor)
    result = {}
    for key in backend.keys(descriptor.name):
        backend.set_current_key(key)
        result[key] = state.value()
    return result


def test_a_large_key_group_is_written_as_parts() -> None:
    backend = new_backend(max_parallelism=2)
    put(backend, ValueStateDescriptor("v"), {k: (k, 1) for k in range(1000)})
    blobs = encode(backend, chunk_size=100)
    parts: dict[int, list[KeyGroupSnapshotData]] = defaultdict(list)
    for kg, blob in blobs:
        parts[kg].append(decode_key_group(kg, blob))
    assert sorted(parts) == [0, 1]
    for datas in parts.values():
        assert [d.part for d in datas] == list(range(len(datas)))
        assert {d.parts for d in datas} == {len(datas)}
        counts = [sum(b.count for b in d.states) for d in datas]
        assert max(counts) <= 100
        # Cut where entries were grouped (here in runs of ~50): never many small parts.
        assert len(counts) <= 2 * -(-sum(counts) // 100), counts
    assert sum(b.count for b in batches(blobs)) == 1000
    restored = new_backend(max_parallelism=2)
    restored.restore(blobs)
    assert values_of(restored, ValueStateDescriptor("v")) == {k: (k, 1) for k in range(1000)}


STATES = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.dictionaries(st.integers(-500, 500) | st.text(max_size=3), st.integers(), max_size=120),
    max_size=3,
)


@settings(max_examples=60, deadline=None)
@given(STATES, st.integers(1, 50))
def test_every_step_encodes_at_most_chunk_size_entries(
    states: dict[str, dict[Any, int]], chunk_size: int
) -> None:
    backend = new_backend()
    for name, items in states.items():
        put(backend, ValueStateDescriptor(name), items)
    snapshot = backend.snapshot()
    steps = list(snapshot.encode_chunks(chunk_size))
    snapshot.release()
    total = sum(len(items) for items in states.values())
    for step in steps:
        assert sum(b.count for b in batches(step)) <= chunk_size
    # Grouping also goes in steps of at most chunk_size: never one step for everything.
    assert len(steps) >= 2 * (-(-total // chunk_size)) - 1 if total else len(steps) <= 1
    restored = new_backend()
    restored.restore([blob for step in steps for blob in step])
    for name, items in states.items():
        assert values_of(restored, ValueStateDescriptor(name)) == items


@pytest.mark.parametrize(
    ("descriptor", "value", "allow_pickle", "codec"),
    [
        (ValueStateDescriptor("v"), 5, True, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), "text", False, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), (1, "a", None, 2.5, b"b", True), True, ColumnCodec.TUPLES),
        (ValueStateDescriptor("v"), (1, 2), False, ColumnCodec.TUPLES),
        (ValueStateDescriptor("v"), [1, "a"], True, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), {"a": 1, 2: None}, True, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), ((1, 2), [3]), True, ColumnCodec.PICKLE),
        (ValueStateDescriptor("v"), ((1, 2), [3]), False, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), {(1, "t"): {"n": [1]}}, False, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), 2**70, True, ColumnCodec.PICKLE),
        (ValueStateDescriptor("v"), 2**70, False, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), (2**70, 1), False, ColumnCodec.MSGPACK),
        (ValueStateDescriptor("v"), Opaque(3), True, ColumnCodec.PICKLE),
        (ValueStateDescriptor("v", type=Point), Point(1, 2), False, ColumnCodec.TYPED),
        (ValueStateDescriptor("v", type=tuple[int, str]), (1, "a"), False, ColumnCodec.TYPED),
        (ValueStateDescriptor("v", type=Opaque), Opaque(4), True, ColumnCodec.PICKLE),
    ],
)
def test_value_codecs_round_trip_exactly(
    descriptor: Any, value: Any, allow_pickle: bool, codec: ColumnCodec
) -> None:
    backend = new_backend(allow_pickle)
    items = {key: value for key in range(40)}
    put(backend, descriptor, items)
    blobs = encode(backend)
    assert {b.value_codec for b in batches(blobs)} == {codec}
    restored = new_backend(allow_pickle)
    restored.restore(blobs)
    got = values_of(restored, descriptor)
    assert got == items
    assert {type(v) for v in got.values()} == {type(value)}


@pytest.mark.parametrize(
    ("keys", "allow_pickle", "codec"),
    [
        ([1, -5, 2**63 - 1, True], False, ColumnCodec.MSGPACK),
        (["a", "", "\u0101"], False, ColumnCodec.MSGPACK),
        (["a", "\ud800"], True, ColumnCodec.PICKLE),  # msgpack cannot carry lone surrogates
        ([b"x", 1.5, -0.5, False], False, ColumnCodec.MSGPACK),
        ([("a", 1), ("b", 2), ()], False, ColumnCodec.TUPLES),
        ([(("a",), 1), 2**70, -(2**70)], False, ColumnCodec.MSGPACK),
        ([1, ("a", 1)], False, ColumnCodec.MSGPACK),
        ([Color.RED, Color.BLUE], True, ColumnCodec.PICKLE),
    ],
)
def test_key_codecs_round_trip_exactly(
    keys: list[Any], allow_pickle: bool, codec: ColumnCodec
) -> None:
    backend = new_backend(allow_pickle, max_parallelism=1)
    items = {key: i for i, key in enumerate(keys)}
    put(backend, ValueStateDescriptor("v"), items)
    blobs = encode(backend)
    (batch,) = batches(blobs)
    assert batch.key_codec == codec
    decoded = decode_keys(batch, allow_pickle)
    assert decoded == list(items)
    assert [type(k) for k in decoded] == [type(k) for k in items]
    restored = new_backend(allow_pickle, max_parallelism=1)
    restored.restore(blobs)
    assert values_of(restored, ValueStateDescriptor("v")) == items


def test_a_key_that_needs_pickle_when_pickle_is_forbidden_is_named() -> None:
    backend = new_backend(allow_pickle=False)
    put(backend, ValueStateDescriptor("v", type=int), {"x": 1, Color.BLUE: 2})
    with pytest.raises(
        PickleForbiddenError, match=r"cannot snapshot value state 'v' for key <Color.BLUE: 2>"
    ):
        encode(backend)
    surrogate = new_backend(allow_pickle=False)
    put(surrogate, ValueStateDescriptor("v", type=int), {"x": 1, "\ud800": 2})
    with pytest.raises(SerializationError, match=r"for key '\\ud800'.*surrogates not allowed"):
        encode(surrogate)


def test_a_value_msgspec_cannot_encode_as_its_type_is_named() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("v", type=int), {"ok": 1, "bad": Opaque(1)})
    with pytest.raises(SerializationError, match="cannot snapshot value state 'v' for key 'bad'"):
        encode(backend)


def test_an_unpicklable_value_is_named() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("v"), {"ok": Opaque(1), "bad": lambda: None})
    with pytest.raises(SerializationError, match="cannot snapshot value state 'v' for key 'bad'"):
        encode(backend)


def test_pickled_state_needs_pickle_to_restore() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("v"), {1: Opaque(1)})
    blobs = encode(backend)
    restored = new_backend(allow_pickle=False)
    restored.get_state(ValueStateDescriptor("v"))
    with pytest.raises(PickleForbiddenError, match=r"value state 'v'.*pickle is forbidden"):
        restored.restore(blobs)


def test_a_state_may_gain_a_declared_type() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("pairs"), {k: (k, 2 * k) for k in range(30)})
    put(backend, ValueStateDescriptor("ints"), {k: k for k in range(30)})
    blobs = encode(backend)
    restored = new_backend()
    restored.restore(blobs)  # not registered yet: kept encoded
    pairs = values_of(restored, ValueStateDescriptor("pairs", type=tuple[int, int]))
    assert pairs == {k: (k, 2 * k) for k in range(30)}
    as_str = new_backend()
    as_str.get_state(ValueStateDescriptor("ints", type=str))
    with pytest.raises(SerializationError, match=r"cannot restore value state 'ints' for key \d+"):
        as_str.restore(blobs)


def test_a_typed_state_restored_without_its_type_is_an_error() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("p", type=Point), {1: Point(1, 2)})
    restored = new_backend()
    restored.get_state(ValueStateDescriptor("p"))
    with pytest.raises(SerializationError, match="declare the type again"):
        restored.restore(encode(backend))


def test_decode_entries_without_a_descriptor_reads_plain_values() -> None:
    backend = new_backend(max_parallelism=1)
    put(backend, ValueStateDescriptor("p", type=Point), {"a": Point(1, 2)})
    put(backend, ValueStateDescriptor("t"), {"a": (1, 2)})
    put(backend, MapStateDescriptor("m"), {})
    backend.set_current_key("a")
    backend.get_state(MapStateDescriptor("m")).put((1, 2), [3])
    backend.get_state(ListStateDescriptor("l", type=int)).add_all([1, 2])
    by_name = {b.name: b for b in batches(encode(backend))}
    assert decode_entries(by_name["p"]) == [("a", {"x": 1, "y": 2})]
    assert decode_entries(by_name["p"], ValueStateDescriptor("p", type=Point)) == [
        ("a", Point(1, 2))
    ]
    assert decode_entries(by_name["t"]) == [("a", (1, 2))]
    assert decode_entries(by_name["l"]) == [("a", [1, 2])]
    assert by_name["m"].value_codec == ColumnCodec.PICKLE
    with pytest.raises(PickleForbiddenError, match="map state 'm'"):
        decode_entries(by_name["m"], allow_pickle=False)
    assert decode_entries(by_name["m"]) == [("a", {(1, 2): [3]})]


def test_blobs_of_another_version_or_corrupt_batches_are_errors() -> None:
    backend = new_backend()
    version_1 = msgspec.msgpack.encode([1, 3, [["v", "value", [b"Mk"], [b"Mv"]]]])
    with pytest.raises(SerializationError, match="format version 1, this weir reads version 2"):
        backend.restore([(3, version_1)])
    assert KEYED_STATE_FORMAT_VERSION == 2
    bad_part = msgspec.msgpack.encode(KeyGroupSnapshotData(2, 3, [], part=2, parts=2))
    with pytest.raises(SerializationError, match="says it is part 2 of 2"):
        backend.restore([(3, bad_part)])
    source = new_backend(max_parallelism=1)
    put(source, ValueStateDescriptor("v"), {1: 1, 2: 2})
    ((kg, blob),) = encode(source)
    data = decode_key_group(kg, blob)
    (batch,) = data.states
    lying = msgspec.structs.replace(batch, count=3)
    blob = msgspec.msgpack.encode(msgspec.structs.replace(data, states=[lying]))
    registered = new_backend(max_parallelism=1)
    registered.get_state(ValueStateDescriptor("v"))
    with pytest.raises(SerializationError, match="holds 3 entries but has 2 keys"):
        registered.restore([(kg, blob)])
    wrong_values = msgspec.structs.replace(batch, values=msgspec.Raw(msgspec.msgpack.encode([1])))
    blob = msgspec.msgpack.encode(msgspec.structs.replace(data, states=[wrong_values]))
    with pytest.raises(SerializationError, match="has 2 keys but 1 values"):
        registered.restore([(kg, blob)])


def test_carried_state_is_written_again_unchanged_in_its_key_groups() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("old", type=Point), {k: Point(k, k) for k in range(50)})
    put(backend, ValueStateDescriptor("live"), {k: k for k in range(50)})
    first = encode(backend, chunk_size=10)
    carrier = new_backend()
    carrier.get_state(ValueStateDescriptor("live"))
    carrier.restore(first)
    assert carrier.num_keys("old") == 50
    second = encode(carrier, chunk_size=10)
    old = {
        (kg, bytes(b.keys), bytes(b.values))
        for kg, blob in first
        for b in decode_key_group(kg, blob).states
        if b.name == "old"
    }
    again = {
        (kg, bytes(b.keys), bytes(b.values))
        for kg, blob in second
        for b in decode_key_group(kg, blob).states
        if b.name == "old"
    }
    assert again == old
    final = new_backend()
    final.restore(second)
    assert values_of(final, ValueStateDescriptor("old", type=Point)) == {
        k: Point(k, k) for k in range(50)
    }
    assert values_of(final, ValueStateDescriptor("live")) == {k: k for k in range(50)}


def test_releasing_between_steps_stops_the_encoding() -> None:
    backend = new_backend()
    put(backend, ValueStateDescriptor("v"), {k: k for k in range(100)})
    snapshot = backend.snapshot()
    steps = snapshot.encode_chunks(10)
    next(steps)
    snapshot.release()
    with pytest.raises(StateError, match="snapshot was released"):
        list(steps)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536, 70000])
def test_runs_concatenate_into_one_msgpack_array(count: int) -> None:
    runs = [list(range(i, min(i + 1000, count))) for i in range(0, count, 1000)]
    joined = array_header(count) + b"".join(
        msgspec.msgpack.encode(run)[len(array_header(len(run))) :] for run in runs
    )
    assert msgspec.msgpack.decode(joined) == list(range(count))


def test_chunks_of_different_shapes_in_one_key_group() -> None:
    # Plain chunks are encoded as they are read, the others kept and encoded at the end,
    # and a key group gets batches of each kind; all come back.
    backend = new_backend(max_parallelism=1)
    items: dict[Any, Any] = {k: k for k in range(40)}
    items.update({k: (k, str(k)) for k in range(40, 80)})
    items[80] = ((1, 2), [3])  # not plain: pickled
    items.update({k: k for k in range(81, 100)})
    items[2**70] = 1  # a key beyond 64 bits: its chunk is kept as references
    put(backend, ValueStateDescriptor("v"), items)
    blobs = encode(backend, chunk_size=10)
    codecs = {(b.key_codec, b.value_codec) for b in batches(blobs)}
    assert codecs >= {
        (ColumnCodec.MSGPACK, ColumnCodec.MSGPACK),
        (ColumnCodec.MSGPACK, ColumnCodec.TUPLES),
        (ColumnCodec.MSGPACK, ColumnCodec.PICKLE),
    }
    restored = new_backend(max_parallelism=1)
    restored.restore(blobs)
    assert values_of(restored, ValueStateDescriptor("v")) == items
