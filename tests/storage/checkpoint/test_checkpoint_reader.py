"""The offline checkpoint reader: verified, decoded contents of a completed checkpoint.

Most tests build a checkpoint by hand, the way a job writes one (state files of frames,
keyed state from a real heap backend's snapshot, ``_metadata`` last), so that every kind
of state and every failure can be set up exactly. The last ones read checkpoints that
real jobs wrote.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from storage import (
    HeapKeyedStateBackend,
    KeyGroupRange,
    ListStateDescriptor,
    MapStateDescriptor,
    OperatorStateBackend,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from storage.checkpoint import (
    METADATA_FILE,
    METADATA_VERSION,
    CheckpointMetadata,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    OperatorStateHandle,
    StateFrame,
    StateHandle,
    SubtaskStateHandle,
    crc32_hex,
    encode_frame,
    encode_metadata,
    read_checkpoint,
)
from storage.errors import PickleForbiddenError
from storage.format.serializers import UntypedSerializer

MAX_PARALLELISM = 8
RANGE = KeyGroupRange.for_operator(MAX_PARALLELISM, 1, 0)  # the single subtask: every group
RECORDS = UntypedSerializer(allow_pickle=True, what="record")


class Point(msgspec.Struct):
    x: int
    y: int


class Opaque:
    """A class msgspec cannot encode: only pickle can store it."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.tag == self.tag

    def __hash__(self) -> int:
        return hash(self.tag)


# -- building checkpoints by hand -----------------------------------------------------------


def keyed_frames(
    uid: str, fill: Callable[[HeapKeyedStateBackend], None], *, allow_pickle: bool = False
) -> list[StateFrame]:
    """The ``keyed`` frames of a heap backend that ``fill`` wrote into.

    Without pickle, as a job with ``allow_pickle=False`` writes them: a backend that may
    pickle writes untyped values that plain msgpack cannot carry (nested tuples) as pickle.
    """
    backend = HeapKeyedStateBackend(MAX_PARALLELISM, RANGE, allow_pickle=allow_pickle)
    fill(backend)
    snapshot = backend.snapshot()
    try:
        return [
            StateFrame("keyed", uid, key_group, blob)
            for key_group, blob in snapshot.encode_key_groups()
        ]
    finally:
        snapshot.release()


def operator_frame(uid: str, fill: Callable[[OperatorStateBackend], None]) -> StateFrame:
    backend = OperatorStateBackend()
    fill(backend)
    return StateFrame("operator", uid, -1, msgspec.msgpack.encode(backend.snapshot()))


def untyped_frame(kind: str, uid: str, index: int, value: Any) -> StateFrame:
    return StateFrame(kind, uid, index, RECORDS.encode(value))


def write_file(folder: Path, name: str, frames: list[StateFrame]) -> StateHandle:
    data = b"".join(encode_frame(frame) for frame in frames)
    (folder / name).write_bytes(data)
    return StateHandle(name, len(data), crc32_hex(data))


def subtask(
    handle: StateHandle | None, in_flight: int = 0, keyed: bool = False
) -> SubtaskStateHandle:
    return SubtaskStateHandle(
        subtask_index=0,
        handle=handle,
        state_size=0 if handle is None else handle.size,
        in_flight_bytes=in_flight,
        key_group_start=RANGE.start if keyed else None,
        key_group_end=RANGE.end if keyed else None,
    )


def operator(uid: str, *subtasks: SubtaskStateHandle) -> OperatorStateHandle:
    return OperatorStateHandle(uid, uid.title(), len(subtasks), MAX_PARALLELISM, list(subtasks))


def commit(folder: Path, *operators: OperatorStateHandle, checkpoint_id: int = 3) -> Path:
    meta = CheckpointMetadata(
        version=METADATA_VERSION,
        job_id="job-1",
        checkpoint_id=checkpoint_id,
        timestamp=1_700_000_000.0,
        is_savepoint=False,
        operators=list(operators),
    )
    (folder / METADATA_FILE).write_bytes(encode_metadata(meta))
    return folder


def fill_counts(backend: HeapKeyedStateBackend) -> None:
    """Every kind of keyed state, typed and untyped, for keys "a" and ("b", 2)."""
    count = backend.get_state(ValueStateDescriptor("count", default=0, type=int))
    last = backend.get_state(ValueStateDescriptor("last"))
    point = backend.get_state(ValueStateDescriptor("point", type=Point))
    pair = backend.get_state(ValueStateDescriptor("pair", type=tuple[int, str]))
    seen = backend.get_state(ListStateDescriptor("seen"))
    totals = backend.get_state(MapStateDescriptor("totals", key_type=str, value_type=int))
    biggest = backend.get_state(ReducingStateDescriptor("biggest", max))
    for key in ("a", ("b", 2)):
        backend.set_current_key(key)
        count.update(7 if key == "a" else 9)
        last.update((key, 1.5))
        point.update(Point(1, 2))
        pair.update((3, "x"))
        seen.add_all([1, "two", (3,)])
        totals.put("n", 4)
        biggest.add(5)
        biggest.add(11)


@dataclass
class Built:
    """A hand-built checkpoint of two chains, as a job ``src -> tag -> count -> sink`` writes.

    ``src`` and ``tag`` share a state file (``src`` is the head: splits, output channel
    state towards ``count``); ``count`` and ``sink`` share another (``count`` is the head:
    keyed state, input channel state from ``tag``; ``sink`` has operator state).
    """

    folder: Path
    source_file: StateHandle
    count_file: StateHandle


def build(folder: Path) -> Built:
    folder.mkdir(parents=True, exist_ok=True)
    output = untyped_frame("output", "count", 0, [("a", 10), ("b", 11)])
    source_frames = [
        untyped_frame("splits", "src", -1, [{"split": 0, "next": 12}, ("range", 0, 40)]),
        output,
    ]
    source_file = write_file(folder, "src-0.state", source_frames)
    inputs = untyped_frame("input", "tag", 0, [("a", 8), ("a", 9)])

    def fill_sink(backend: OperatorStateBackend) -> None:
        backend.get_list_state(ListStateDescriptor("pending", type=int)).add_all([1, 2])
        backend.get_union_list_state(ListStateDescriptor("names")).add(("x", 1))

    count_frames = [*keyed_frames("count", fill_counts), operator_frame("sink", fill_sink), inputs]
    count_file = write_file(folder, "count-0.state", count_frames)
    commit(
        folder,
        operator("count", subtask(count_file, in_flight=len(inputs.data), keyed=True)),
        operator("sink", subtask(count_file)),
        operator("src", subtask(source_file, in_flight=len(output.data))),
        operator("tag", subtask(source_file)),
    )
    return Built(folder, source_file, count_file)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path / "job-1" / "chk-3")


# -- reading --------------------------------------------------------------------------------


def test_decodes_every_kind_of_state(built: Built) -> None:
    contents = read_checkpoint(built.folder)
    assert contents.checkpoint_id == 3
    assert contents.path == built.folder
    assert list(contents.operators) == ["count", "sink", "src", "tag"]
    count = contents.operators["count"]
    assert (count.uid, count.name, count.parallelism, count.max_parallelism) == (
        "count",
        "Count",
        1,
        MAX_PARALLELISM,
    )
    keyed = count.subtasks[0].keyed
    b = ("b", 2)
    assert keyed == {
        "count": {"a": 7, b: 9},
        "last": {"a": ("a", 1.5), b: (b, 1.5)},
        # Declared msgspec types come back as plain msgpack values.
        "point": {"a": {"x": 1, "y": 2}, b: {"x": 1, "y": 2}},
        "pair": {"a": [3, "x"], b: [3, "x"]},
        "seen": {"a": [1, "two", (3,)], b: [1, "two", (3,)]},
        "totals": {"a": {"n": 4}, b: {"n": 4}},
        "biggest": {"a": 11, b: 11},
    }
    assert count.subtasks[0].state_kinds == {
        "count": "value",
        "last": "value",
        "point": "value",
        "pair": "value",
        "seen": "list",
        "totals": "map",
        "biggest": "reducing",
    }
    assert count.keyed_state("count") == {"a": 7, b: 9}
    assert count.keyed_state("missing") == {}
    assert count.subtasks[0].key_group_range == (0, MAX_PARALLELISM - 1)
    assert contents.operators["sink"].subtasks[0].operator == {
        "pending": [1, 2],
        "names": [("x", 1)],
    }
    assert contents.operators["src"].subtasks[0].splits == [
        {"split": 0, "next": 12},
        ("range", 0, 40),
    ]
    for uid in ("count", "sink", "tag"):
        assert contents.operators[uid].subtasks[0].splits is None


def test_channel_state_belongs_to_the_head_of_its_chain(built: Built) -> None:
    contents = read_checkpoint(built.folder)
    count, sink = contents.operators["count"].subtasks[0], contents.operators["sink"].subtasks[0]
    src, tag = contents.operators["src"].subtasks[0], contents.operators["tag"].subtasks[0]
    assert count.input_channels == {("tag", 0): [("a", 8), ("a", 9)]}
    assert src.output_channels == {("count", 0): [("a", 10), ("b", 11)]}
    for other in (sink, tag):
        assert other.input_channels == other.output_channels == {}
        assert other.in_flight_records == 0
    assert not count.output_channels and not src.input_channels
    assert (count.in_flight_records, src.in_flight_records) == (2, 2)
    assert contents.operators["count"].in_flight_records == 2
    assert contents.in_flight_records == 4
    # Every operator knows which operators share its file, and which file it is.
    assert count.file_operators == sink.file_operators == ("count", "sink")
    assert src.file_operators == tag.file_operators == ("src", "tag")
    assert count.state_file == sink.state_file == "count-0.state"
    assert [uid for uid, _ in contents.iter_subtasks()] == ["count", "sink", "src", "tag"]


def test_without_a_head_in_the_metadata_channel_state_goes_to_the_first_operator(
    tmp_path: Path,
) -> None:
    frames = [untyped_frame("input", "up", 1, [1, 2, 3])]
    handle = write_file(tmp_path, "chain-0.state", frames)
    commit(tmp_path, operator("second", subtask(handle)), operator("first", subtask(handle)))
    contents = read_checkpoint(tmp_path)
    assert contents.operators["second"].subtasks[0].input_channels == {("up", 1): [1, 2, 3]}
    assert contents.operators["first"].subtasks[0].input_channels == {}


def test_each_state_file_is_read_once(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    read_bytes = pathlib.Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self.name)
        return read_bytes(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting)
    read_checkpoint(built.folder)
    assert sorted(reads) == [METADATA_FILE, "count-0.state", "src-0.state"]


@pytest.mark.parametrize("form", ["folder", "metadata", "uri", "str"])
def test_takes_the_folder_its_metadata_or_a_file_uri(built: Built, form: str) -> None:
    pointer: str | Path = {
        "folder": built.folder,
        "metadata": built.folder / METADATA_FILE,
        "uri": built.folder.as_uri(),
        "str": str(built.folder),
    }[form]
    assert read_checkpoint(pointer).operators["count"].keyed_state("count")["a"] == 7


def test_a_subtask_without_state_has_empty_contents(tmp_path: Path) -> None:
    second = msgspec.structs.replace(subtask(None), subtask_index=1)
    commit(tmp_path, operator("sink", subtask(None), second))
    contents = read_checkpoint(tmp_path)
    for index in (0, 1):
        empty = contents.operators["sink"].subtasks[index]
        assert empty.subtask_index == index
        assert empty.state_file is None and empty.file_operators == ()
        assert empty.keyed == empty.operator == empty.input_channels == {}
        assert empty.splits is None and empty.in_flight_records == 0


def test_frames_of_unknown_kinds_are_kept_undecoded(tmp_path: Path) -> None:
    unknown = StateFrame("watermarks", "elsewhere", -1, b"\x01\x02")
    handle = write_file(tmp_path, "op-0.state", [unknown])
    commit(tmp_path, operator("op", subtask(handle)))
    assert read_checkpoint(tmp_path).operators["op"].subtasks[0].other_frames == [unknown]


# -- pickle ---------------------------------------------------------------------------------


def pickled_keyed(folder: Path) -> Any:
    def fill(backend: HeapKeyedStateBackend) -> None:
        backend.set_current_key("k")
        backend.get_state(ValueStateDescriptor("opaque")).update(Opaque("v"))

    handle = write_file(folder, "op-0.state", keyed_frames("op", fill, allow_pickle=True))
    commit(folder, operator("op", subtask(handle, keyed=True)))
    return lambda contents: contents.operators["op"].subtasks[0].keyed["opaque"]["k"]


def pickled_operator_state(folder: Path) -> Any:
    def fill(backend: OperatorStateBackend) -> None:
        backend.get_list_state(ListStateDescriptor("buffer", type=Opaque)).add(Opaque("v"))

    handle = write_file(folder, "op-0.state", [operator_frame("op", fill)])
    commit(folder, operator("op", subtask(handle)))
    return lambda contents: contents.operators["op"].subtasks[0].operator["buffer"][0]


def pickled_records(folder: Path) -> Any:
    frame = untyped_frame("output", "down", 1, [Opaque("v")])
    handle = write_file(folder, "op-0.state", [frame])
    commit(folder, operator("op", subtask(handle, in_flight=len(frame.data))))
    return lambda contents: contents.operators["op"].subtasks[0].output_channels[("down", 1)][0]


def pickled_splits(folder: Path) -> Any:
    handle = write_file(folder, "op-0.state", [untyped_frame("splits", "op", -1, [Opaque("v")])])
    commit(folder, operator("op", subtask(handle)))
    return lambda contents: contents.operators["op"].subtasks[0].splits[0]


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (pickled_keyed, "value state 'opaque' of operator 'op' subtask 0"),
        (pickled_operator_state, "operator list state 'buffer' of operator 'op' subtask 0"),
        (pickled_records, "output channel state to 'down' subtask 1 of operator 'op' subtask 0"),
        (pickled_splits, "source splits of operator 'op' subtask 0"),
    ],
    ids=["keyed", "operator", "records", "splits"],
)
def test_pickle_is_read_only_when_allowed(
    tmp_path: Path, make: Callable[[Path], Any], what: str
) -> None:
    value_of = make(tmp_path)
    with pytest.raises(PickleForbiddenError, match=re.escape(what)) as caught:
        read_checkpoint(tmp_path)
    message = str(caught.value)
    assert "op-0.state" in message and "allow_pickle=True" in message
    assert value_of(read_checkpoint(tmp_path, allow_pickle=True)) == Opaque("v")


# -- verification ---------------------------------------------------------------------------


def test_a_missing_checkpoint_names_its_metadata(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=re.escape(str(tmp_path / METADATA_FILE))):
        read_checkpoint(tmp_path)


def test_a_missing_state_file_is_named(built: Built) -> None:
    (built.folder / "src-0.state").unlink()
    with pytest.raises(
        CheckpointNotFoundError, match=r"checkpoint state file .*src-0\.state does not exist"
    ):
        read_checkpoint(built.folder)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-1], "size mismatch: it has"),
        (lambda data: data + b"\x00", "size mismatch: it has"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
    ],
    ids=["truncated", "extended", "flipped"],
)
def test_a_damaged_state_file_is_corrupt(
    built: Built, damage: Callable[[bytes], bytes], reason: str
) -> None:
    path = built.folder / "count-0.state"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptCheckpointError, match=re.escape(reason)) as caught:
        read_checkpoint(built.folder)
    assert caught.value.path == str(path)


def test_damaged_metadata_is_corrupt(built: Built) -> None:
    path = built.folder / METADATA_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch") as caught:
        read_checkpoint(built.folder)
    assert caught.value.path == str(path)


def test_metadata_of_another_checkpoint_is_corrupt(tmp_path: Path) -> None:
    folder = tmp_path / "chk-4"
    folder.mkdir()
    commit(folder, operator("op", subtask(None)), checkpoint_id=3)
    with pytest.raises(CorruptCheckpointError, match="describes checkpoint 3, but its folder is"):
        read_checkpoint(folder)


def test_operators_that_disagree_about_a_shared_file_are_corrupt(tmp_path: Path) -> None:
    handle = write_file(tmp_path, "chain-0.state", [])
    other = StateHandle(handle.path, handle.size + 1, handle.checksum)
    commit(tmp_path, operator("a", subtask(handle)), operator("b", subtask(other)))
    with pytest.raises(CorruptCheckpointError, match="different sizes or checksums"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (
            StateFrame("keyed", "stranger", 0, b""),
            "'keyed' frame of operator 'stranger', but the metadata points only operators",
        ),
        (
            StateFrame("splits", "stranger", -1, RECORDS.encode([])),
            "'splits' frame of operator 'stranger'",
        ),
        (StateFrame("keyed", "op", 0, b"\x93garbage"), "'keyed' frame of operator 'op'"),
        (StateFrame("operator", "op", -1, b"\xc1"), "'operator' frame of operator 'op'"),
        (StateFrame("input", "up", 0, RECORDS.encode({"not": "a list"})), "not a list"),
        (StateFrame("splits", "op", -1, b"Xjunk"), "unknown envelope tag"),
    ],
    ids=["keyed-stranger", "splits-stranger", "keyed-blob", "operator", "input", "splits"],
)
def test_a_frame_that_does_not_decode_is_corrupt(
    tmp_path: Path, frame: StateFrame, reason: str
) -> None:
    handle = write_file(tmp_path, "op-0.state", [frame])
    commit(tmp_path, operator("op", subtask(handle, keyed=True, in_flight=1)))
    with pytest.raises(CorruptCheckpointError, match=re.escape(reason)) as caught:
        read_checkpoint(tmp_path)
    assert caught.value.path == str(tmp_path / "op-0.state")


def test_keyed_state_outside_the_subtask_key_groups_is_corrupt(tmp_path: Path) -> None:
    def fill(backend: HeapKeyedStateBackend) -> None:
        backend.set_current_key("a")
        backend.get_state(ValueStateDescriptor("count")).update(1)

    frames = keyed_frames("op", fill)
    handle = write_file(tmp_path, "op-0.state", frames)
    wrong = (frames[0].key_group + 1) % MAX_PARALLELISM
    narrow = msgspec.structs.replace(subtask(handle), key_group_start=wrong, key_group_end=wrong)
    commit(tmp_path, operator("op", narrow))
    with pytest.raises(CorruptCheckpointError, match="outside the subtask's key groups"):
        read_checkpoint(tmp_path)


# -- checkpoints that jobs wrote --------------------------------------------------------------


async def test_reads_the_final_checkpoint_of_a_job(tmp_path: Path) -> None:
    from runtime import (
        ExternalizedCheckpointRetention,
        KeyedProcessFunction,
        RuntimeContext,
        StreamEnvironment,
    )

    class CountWords(KeyedProcessFunction[str, str]):
        def open(self, ctx: RuntimeContext) -> None:
            self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))
            self.first = ctx.get_state(ValueStateDescriptor("first"))

        def process_element(self, value: str, ctx: RuntimeContext) -> list[str]:
            self.count.update(self.count.value() + 1)
            if self.first.value() is None:
                self.first.update((value, len(value)))
            return [value]

    words = ["the", "cat", "and", "the", "hat", "and", "the", "bat"]
    env = StreamEnvironment(parallelism=2, max_parallelism=16)
    env.enable_checkpointing(
        60.0,  # only the final checkpoint, once every record went through
        storage=tmp_path.as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    (
        env.from_collection(words, uid="words")
        .map(str.strip, uid="strip", parallelism=1)
        .key_by(lambda word: word)
        .process(CountWords(), uid="count")
        .sink_to(lambda word: None, uid="sink")
    )
    result = await env.execute("words")
    assert result.checkpoints is not None
    final = result.checkpoints.latest_completed
    assert final is not None and final.external_pointer is not None

    # Built-in splits are msgspec Structs: readable without pickle, as plain data.
    contents = read_checkpoint(final.external_pointer)

    assert contents.metadata.job_id == result.job_id
    counter = contents.operators["count"]
    assert counter.parallelism == 2 and counter.max_parallelism == 16
    assert counter.keyed_state("count") == {w: words.count(w) for w in set(words)}
    assert counter.keyed_state("first") == {w: (w, len(w)) for w in set(words)}
    # Each subtask holds the keys of its own key groups.
    ranges = [counter.subtasks[i].key_group_range for i in (0, 1)]
    assert ranges == [(0, 7), (8, 15)]
    assert set(counter.subtasks[0].keyed["count"]).isdisjoint(counter.subtasks[1].keyed["count"])
    # The source ran at parallelism 1 (a collection), chained with the map.
    source = contents.operators["words"].subtasks
    assert list(source) == [0]
    assert source[0].splits == [
        {
            "type": "runtime.connectors.collection:CollectionSplit",
            "split_id": "collection-0",
            "next_index": len(words),
        }
    ]
    assert source[0].file_operators == ("words", "strip")
    assert contents.operators["sink"].subtasks[1].file_operators == ("count", "sink")
    assert contents.in_flight_records == 0
