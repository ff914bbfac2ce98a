"""The state processor: savepoints written from Python objects, read back, changed.

Offline only (no job here; ``tests/e2e/test_state_processor_jobs.py`` restores jobs from
written savepoints). A written savepoint is checked with the checkpoint reader and the
raw frames: the runtime's layout (one file per operator subtask, keyed frames in the
subtask's key-group range, relative paths, ``_metadata`` last), every kind of state
round-trips, canonical by default, and a rewritten savepoint keeps what it did not touch
byte for byte.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from storage import (
    KeyEncodingError,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    OperatorStateBackend,
    OperatorStateSnapshot,
    PickleForbiddenError,
    ReducingStateDescriptor,
    StateError,
    ValueStateDescriptor,
    assign_to_key_group,
    compute_operator_index_for_key_group,
)
from storage.checkpoint import (
    METADATA_FILE,
    METADATA_TMP_FILE,
    METADATA_VERSION,
    CheckpointNotFoundError,
    SavepointStorage,
    StateFrame,
    StorageNotWritableError,
    dispose_savepoint,
    encode_frame,
    load_metadata_file,
    read_checkpoint,
)
from storage.checkpoint.metadata import CheckpointMetadata, OperatorStateHandle, SubtaskStateHandle
from storage.processor import REMOVE, SavepointWriter, bootstrap_keyed, load_savepoint
from storage.processor.frames import read_frames

MAX_P = 16


class Point(msgspec.Struct):
    x: int
    y: int


class Split(msgspec.Struct):
    split_id: str
    offset: int


class Opaque:
    """Only pickle can store it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    __hash__ = object.__hash__


KEYS: list[Any] = ["a", "b", 7, -3, ("user", 1), ("user", 2), b"raw", 2**70, 1.5]


def full_writer(parallelism: int = 3) -> SavepointWriter:
    return SavepointWriter.new(MAX_P).with_operator_state(
        "op",
        parallelism=parallelism,
        name="The Op",
        keyed={
            "count": {key: n for n, key in enumerate(KEYS)},
            "pair": {key: (n, str(key)) for n, key in enumerate(KEYS)},
            "seen": {key: [n, n + 1] for n, key in enumerate(KEYS)},
            "attrs": {key: {"n": n, "s": "x"} for n, key in enumerate(KEYS)},
            "max": {key: n * 10 for n, key in enumerate(KEYS)},
            "point": {key: Point(n, -n) for n, key in enumerate(KEYS)},
        },
        descriptors=[
            ListStateDescriptor("seen"),
            MapStateDescriptor("attrs"),
            ReducingStateDescriptor("max", max),
            ValueStateDescriptor("point", type=Point),
        ],
        operator={"offsets": [1, 2, 3, 4, 5]},
        union={"peers": ["p0", ("p", 1)]},
        splits=[Split("s0", 10), Split("s1", 20), {"type": "x.y:Z", "id": "s2"}],
    )


def owner(key: Any, parallelism: int) -> int:
    return compute_operator_index_for_key_group(MAX_P, parallelism, assign_to_key_group(key, MAX_P))


# -- round trips ---------------------------------------------------------------------------


def test_every_kind_of_state_round_trips(tmp_path: Path) -> None:
    path = full_writer().write(tmp_path)

    savepoint = load_savepoint(path)
    op = savepoint["op"]
    assert (op.name, op.parallelism, op.max_parallelism) == ("The Op", 3, MAX_P)
    assert op.keyed_state("count") == {key: n for n, key in enumerate(KEYS)}
    assert op.keyed_state("pair") == {key: (n, str(key)) for n, key in enumerate(KEYS)}
    assert op.keyed_state("seen") == {key: [n, n + 1] for n, key in enumerate(KEYS)}
    assert op.keyed_state("attrs") == {key: {"n": n, "s": "x"} for n, key in enumerate(KEYS)}
    assert op.keyed_state("max") == {key: n * 10 for n, key in enumerate(KEYS)}
    # A declared msgspec type is read as plain data, or converted back on request.
    assert op.keyed_state("point")["a"] == {"x": 0, "y": 0}
    assert op.keyed_state("point", type=Point)[7] == Point(2, -2)
    assert [op.state_kind(n) for n in ("count", "seen", "attrs", "max")] == [
        "value",
        "list",
        "map",
        "reducing",
    ]
    assert op.operator_state("offsets") == [1, 2, 3, 4, 5]
    assert op.operator_state_by_subtask("offsets") == [[1, 2], [3, 4], [5]]
    assert op.operator_state("peers") == ["p0", ("p", 1)]
    assert [op.distribution("offsets"), op.distribution("peers")] == ["split", "union"]
    # Splits are dealt round robin, and shown as the reader shows splits.
    assert op.splits() == [
        {"type": "test_state_processor:Split", "split_id": "s0", "offset": 10},
        {"type": "test_state_processor:Split", "split_id": "s1", "offset": 20},
        {"type": "x.y:Z", "id": "s2"},
    ]


def test_each_key_lands_in_the_file_of_its_key_group_subtask(tmp_path: Path) -> None:
    path = full_writer(parallelism=3).write(tmp_path)

    contents = read_checkpoint(path)
    op = contents.operators["op"]
    for index, subtask in op.subtasks.items():
        key_groups = KeyGroupRange.for_operator(MAX_P, 3, index)
        assert subtask.key_group_range == (key_groups.start, key_groups.end)
        assert subtask.state_file == f"op0-op-{index}.state"
        for key in subtask.keyed.get("count", {}):
            assert owner(key, 3) == index, key
    assert sum(len(s.keyed.get("count", {})) for s in op.subtasks.values()) == len(KEYS)


def test_the_folder_is_a_movable_self_contained_savepoint(tmp_path: Path) -> None:
    path = full_writer().write(tmp_path / "target")

    assert path.parent == (tmp_path / "target").absolute()
    assert path.name.startswith("savepoint-")
    assert not (path / METADATA_TMP_FILE).exists()
    metadata = load_metadata_file(path)
    assert metadata.version == METADATA_VERSION
    assert metadata.is_savepoint
    assert metadata.properties == {
        "written_by": "storage.processor.SavepointWriter",
        "format": "canonical",
    }
    for operator in metadata.operators:
        for subtask in operator.subtasks:
            assert subtask.handle is not None and "/" not in subtask.handle.path
            assert subtask.in_flight_bytes == 0
    assert sorted(p.name for p in path.iterdir()) == [
        METADATA_FILE,
        *(f"op0-op-{i}.state" for i in range(3)),
    ]
    moved = tmp_path / "moved"
    shutil.move(path, moved)
    assert load_savepoint(moved)["op"].keyed_state("count")["a"] == 0
    assert dispose_savepoint(moved) == moved
    assert not moved.exists()


def test_a_subtask_with_no_state_has_no_file(tmp_path: Path) -> None:
    path = (
        SavepointWriter.new(MAX_P)
        .with_operator_state("keyed", parallelism=4, keyed={"v": {"only": 1}})
        .with_operator_state("stateless", parallelism=2)
        .write(tmp_path)
    )
    metadata = load_metadata_file(path)
    keyed, stateless = metadata.operators
    assert [s.handle is not None for s in keyed.subtasks].count(True) == 1
    assert all(s.key_group_start is not None for s in keyed.subtasks)
    assert [s.handle for s in stateless.subtasks] == [None, None]
    assert all(s.key_group_start is None for s in stateless.subtasks)
    assert load_savepoint(path)["keyed"].keyed_state("v") == {"only": 1}


def test_empty_and_union_only_operator_state(tmp_path: Path) -> None:
    path = (
        SavepointWriter.new(MAX_P)
        .with_operator_state("op", parallelism=2, operator={"empty": []}, union={"u": [1, 2, 3]})
        .write(tmp_path)
    )
    op = load_savepoint(path)["op"]
    assert op.operator_state_by_subtask("empty") == [[], []]
    # Union state is stored in parts like any list state; a restore gives it whole to all.
    assert op.operator_state_by_subtask("u") == [[1, 2], [3]]
    with pytest.raises(StateError, match=r"no operator list state 'missing'.*'empty', 'u'"):
        op.operator_state("missing")


def test_typed_operator_state_is_written_as_its_type(tmp_path: Path) -> None:
    path = (
        SavepointWriter.new(MAX_P)
        .with_operator_state(
            "op",
            operator={"points": [Point(1, 2), Point(3, 4)]},
            operator_descriptors=[ListStateDescriptor("points", type=Point)],
        )
        .write(tmp_path)
    )
    op = load_savepoint(path)["op"]
    assert op.operator_state("points") == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
    assert op.operator_state("points", type=Point) == [Point(1, 2), Point(3, 4)]
    # What the job does on restore: its typed descriptor decodes the elements.
    (frame,) = read_frames(path).operators["op"].frames[0]
    backend = OperatorStateBackend(allow_pickle=False)
    backend.restore(msgspec.msgpack.decode(frame.data, type=OperatorStateSnapshot))
    restored = backend.get_list_state(ListStateDescriptor("points", type=Point)).get()
    assert restored == [Point(1, 2), Point(3, 4)]


# -- canonical, native -------------------------------------------------------------------


def test_a_written_savepoint_is_canonical_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    path = full_writer().write(tmp_path)
    assert load_savepoint(path)["op"].keyed_state("attrs")  # allow_pickle=False


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"keyed": {"v": {"k": Opaque()}}}, "value state 'v'"),
        ({"operator": {"ops": [Opaque()]}}, "operator list state 'ops'"),
        ({"splits": [Opaque()]}, "source split"),
    ],
    ids=["keyed", "operator", "splits"],
)
def test_a_value_that_needs_pickle_is_refused_naming_its_state(
    state: dict[str, Any], match: str
) -> None:
    with pytest.raises(PickleForbiddenError, match=match):
        SavepointWriter.new(MAX_P).with_operator_state("op", **state)


def test_with_allow_pickle_values_are_pickled_and_read_back_with_pickle(tmp_path: Path) -> None:
    path = (
        SavepointWriter.new(MAX_P, allow_pickle=True)
        .with_operator_state("op", keyed={"v": {"k": Opaque()}}, operator={"ops": [Opaque()]})
        .write(tmp_path)
    )
    with pytest.raises(PickleForbiddenError, match="value state 'v'"):
        load_savepoint(path)
    op = load_savepoint(path, allow_pickle=True)["op"]
    assert op.keyed_state("v") == {"k": Opaque()}
    assert op.operator_state("ops") == [Opaque()]


# -- from an existing savepoint ----------------------------------------------------------


def test_untouched_operators_are_copied_frame_for_frame(tmp_path: Path) -> None:
    first = (
        full_writer()
        .with_operator_state("other", parallelism=2, keyed={"n": {1: 1, 2: 2}})
        .write(tmp_path)
    )
    second = (
        SavepointWriter.from_savepoint(first)
        .transform_keyed("other", "n", lambda key, n: n * 2)
        .write(tmp_path)
    )

    old, new = read_frames(first), read_frames(second)
    assert new.operators["op"].keyed == old.operators["op"].keyed
    assert new.operators["op"].frames == old.operators["op"].frames
    assert new.operators["other"].keyed != old.operators["other"].keyed
    assert load_savepoint(second)["other"].keyed_state("n") == {1: 2, 2: 4}
    assert new.metadata.job_id == old.metadata.job_id
    assert new.metadata.checkpoint_id == old.metadata.checkpoint_id


def test_transform_keyed_changes_one_state_and_removes_keys(tmp_path: Path) -> None:
    path = (
        SavepointWriter.from_savepoint(full_writer().write(tmp_path))
        .transform_keyed("op", "count", lambda key, n: REMOVE if n % 2 else n + 100)
        .transform_keyed("op", "seen", lambda key, seen: [*seen, 0])
        .transform_keyed("op", "attrs", lambda key, attrs: {**attrs, "new": True})
        .transform_keyed("op", "max", lambda key, value: value + 1)
        .transform_keyed(
            "op",
            "point",
            lambda key, p: Point(p.y, p.x),
            descriptor=ValueStateDescriptor("point", type=Point),
        )
        .write(tmp_path)
    )
    op = load_savepoint(path)["op"]
    assert op.keyed_state("count") == {k: n + 100 for n, k in enumerate(KEYS) if n % 2 == 0}
    assert op.keyed_state("seen") == {key: [n, n + 1, 0] for n, key in enumerate(KEYS)}
    assert op.keyed_state("attrs")["a"] == {"n": 0, "s": "x", "new": True}
    assert op.keyed_state("max") == {key: n * 10 + 1 for n, key in enumerate(KEYS)}
    assert op.keyed_state("point", type=Point)["b"] == Point(-1, 1)
    assert op.keyed_state("pair") == {key: (n, str(key)) for n, key in enumerate(KEYS)}
    assert op.operator_state("offsets") == [1, 2, 3, 4, 5]


def test_remove_operator_and_replace_operator(tmp_path: Path) -> None:
    writer = SavepointWriter.from_savepoint(
        full_writer().with_operator_state("gone", operator={"x": [1]}).write(tmp_path)
    )
    assert writer.uids == ["op", "gone"]
    writer.remove_operator("gone").with_operator_state("op", parallelism=2, keyed={"v": {"k": 1}})
    savepoint = load_savepoint(writer.write(tmp_path))
    assert savepoint.uids == ["op"]
    assert savepoint["op"].parallelism == 2
    assert savepoint["op"].keyed_state_names == ["v"]
    assert savepoint["op"].operator_state_names == []
    assert savepoint["op"].splits() is None


def test_a_checkpoint_with_channel_state_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "unaligned"
    storage = SavepointStorage(folder, "job")

    async def write() -> None:
        await storage.initialize()
        frame = StateFrame("input", "upstream", 0, b"M\x90")
        handle = await storage.write_state(1, "task.state", [encode_frame(frame)])
        subtask = SubtaskStateHandle(0, handle, 0, len(frame.data))
        op = OperatorStateHandle("op", "op", 1, MAX_P, [subtask])
        await storage.commit(CheckpointMetadata(METADATA_VERSION, "job", 1, 0.0, False, [op]))

    anyio.run(write)
    with pytest.raises(ValueError, match=r"in-flight records.*unaligned checkpoint"):
        SavepointWriter.from_savepoint(folder)


async def test_write_async_inside_an_event_loop(tmp_path: Path) -> None:
    path = await full_writer().write_async(tmp_path)
    assert read_frames(path).operators["op"].keyed


# -- bootstrapping -----------------------------------------------------------------------


def test_bootstrap_keyed_folds_records_per_key() -> None:
    records = [("a", 1), ("b", 2), ("a", 3)]
    assert bootstrap_keyed(records, lambda r: r[0], lambda total, r: total + r[1], 0) == {
        "a": 4,
        "b": 2,
    }
    # The initial value is copied per key, so it can be mutated in place.
    lists = bootstrap_keyed(records, lambda r: r[0], lambda seen, r: [*seen, r[1]], [])
    assert lists == {"a": [1, 3], "b": [2]}
    appended = bootstrap_keyed(records, lambda r: r[0], lambda s, r: s.append(r[1]) or s, [])
    assert appended == {"a": [1, 3], "b": [2]}


def test_bootstrap_keyed_refuses_keys_no_job_could_route() -> None:
    with pytest.raises(StateError, match="None is not a key"):
        bootstrap_keyed([1], lambda r: None, lambda a, r: a, 0)
    with pytest.raises(KeyEncodingError):
        bootstrap_keyed([1], lambda r: Opaque(), lambda a, r: a, 0)


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_an_error_naming_it(tmp_path: Path) -> None:
    writer = SavepointWriter.new(MAX_P)
    with pytest.raises(ValueError, match="parallelism must be an int between 1 and"):
        writer.with_operator_state("op", parallelism=MAX_P + 1)
    with pytest.raises(ValueError, match="uid must be a non-empty str"):
        writer.with_operator_state("")
    with pytest.raises(StateError, match="descriptors for states \\['typo'\\]"):
        writer.with_operator_state("op", keyed={"v": {}}, descriptors=[ListStateDescriptor("typo")])
    with pytest.raises(StateError, match="descriptors were given without keyed"):
        writer.with_operator_state("op", descriptors=[ListStateDescriptor("x")])
    with pytest.raises(StateError, match="key of None"):
        writer.with_operator_state("op", keyed={"v": {None: 1}})
    with pytest.raises(StateError, match="list state's value must be a list"):
        writer.with_operator_state(
            "op", keyed={"l": {"k": 1}}, descriptors=[ListStateDescriptor("l")]
        )
    with pytest.raises(StateError, match="operator state descriptors for states"):
        writer.with_operator_state("op", operator_descriptors=[ListStateDescriptor("x")])
    with pytest.raises(StateError, match="both split and union"):
        writer.with_operator_state("op", operator={"x": []}, union={"x": []})
    with pytest.raises(StateError, match="no operator with uid 'nope'"):
        writer.remove_operator("nope")
    writer.with_operator_state("op", keyed={"v": {"k": 1}})
    with pytest.raises(StateError, match=r"no keyed state 'w'.*\['v'\]"):
        writer.transform_keyed("op", "w", lambda k, v: v)
    with pytest.raises(StateError, match="restored as value state"):
        writer.transform_keyed("op", "v", lambda k, v: v, descriptor=ListStateDescriptor("v"))
    with pytest.raises(ValueError, match="max_parallelism must be an int"):
        SavepointWriter.new(0)
    with pytest.raises(CheckpointNotFoundError):
        SavepointWriter.from_savepoint(tmp_path / "nothing")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageNotWritableError):
        writer.write(blocker)


def test_the_reader_names_what_is_missing(tmp_path: Path) -> None:
    savepoint = load_savepoint(full_writer().write(tmp_path))
    with pytest.raises(
        StateError, match="no operator with uid 'nope'; its operators are \\['op'\\]"
    ):
        savepoint["nope"]
    assert "op" in savepoint and "nope" not in savepoint
    assert [op.uid for op in savepoint] == ["op"]
    assert savepoint["op"].keyed_state("never") == {}  # empty states are not recorded
    with pytest.raises(StateError, match="has no keyed state 'never'"):
        savepoint["op"].state_kind("never")
