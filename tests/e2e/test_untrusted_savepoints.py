"""Savepoints are data: restoring one never runs code it names, unless the job allows it.

A savepoint declares its format in its metadata (property ``format``). One that declares
``canonical`` is restored without unpickling anything, whatever the job allows: a file
that declares ``canonical`` but holds pickled state (crafted, or altered) is refused,
naming the operator, the state and the file. A native savepoint or checkpoint (pickled
state allowed) is restored only where the job allows pickle (the default); a job with
``allow_pickle=False`` refuses it with an error that says so. In every refusal, the
pickled payload never runs (it would record that it ran) and the savepoint is intact.

Also here: bad ``_metadata`` files (garbage, wrong magic, a valid crc over garbage) are
each one error naming the file, and source splits never import a module a file names.
"""

from __future__ import annotations

import pickle
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime import (
    ExternalizedCheckpointRetention,
    GeneratorSource,
    JobFailedError,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    RuntimeContext,
    StreamEnvironment,
    TwoPhaseCommitSink,
    ValueStateDescriptor,
)
from runtime.connectors.two_phase_commit import STATE_NAME as TWO_PHASE_STATE
from runtime.testing.gates import GatedSource, SourceGate
from storage import PickleForbiddenError, SerializationError
from storage.checkpoint import (
    METADATA_FILE,
    CorruptCheckpointError,
    decode_metadata,
    encode_metadata,
)
from storage.checkpoint.metadata import METADATA_MAGIC, declares_canonical
from storage.checkpoint.splits import decode_splits, encode_splits_raw
from storage.processor import SavepointWriter

MAX_PARALLELISM = 128
BACKENDS = ["heap", "rocksdb"]
RAN: list[str] = []
"""What pickled payloads ran: a payload appends to it when it is unpickled."""


class Payload:
    """A value whose unpickling runs code (it records that it ran)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return RAN.append, ("payload ran",)


class Trusted:
    """A plain picklable value (what a native savepoint may legitimately hold)."""

    def __init__(self, n: int) -> None:
        self.n = n


@pytest.fixture(autouse=True)
def no_payload_ran() -> Any:
    RAN.clear()
    yield
    RAN.clear()


class Count(KeyedProcessFunction):
    """Emits each key's restored value then its count of records."""

    def open(self, ctx: RuntimeContext) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total"))

    def process_element(self, value: tuple[str, int], ctx: RuntimeContext) -> list[Any]:
        before = self.total.value()
        self.total.update(value[1])
        return [(value[0], before)]


class Buffered(MapFunction):
    """Restores operator list state ``buffer`` and emits it with each record."""

    def open(self, ctx: RuntimeContext) -> None:
        self.buffer = ctx.get_list_state(ListStateDescriptor("buffer"))

    def map(self, value: Any) -> Any:
        return (value, list(self.buffer.get()))


def keyed_job(
    allow_pickle: bool = True, backend: str = "heap", state_dir: Path | None = None
) -> StreamEnvironment:
    env = StreamEnvironment(
        parallelism=1,
        max_parallelism=MAX_PARALLELISM,
        allow_pickle=allow_pickle,
        state_backend=backend,
        state_dir=None if state_dir is None else str(state_dir),
    )
    (
        env.from_collection([("a", 1)])
        .key_by(lambda r: r[0])
        .process(Count(), name="count", uid="count")
        .collect(name="out", uid="out")
    )
    return env


def operator_job() -> StreamEnvironment:
    env = StreamEnvironment(parallelism=1, max_parallelism=MAX_PARALLELISM)
    env.from_collection([1]).map(Buffered(), name="buffered", uid="buffered").collect(
        name="out", uid="out"
    )
    return env


def declare(folder: Path, fmt: str) -> None:
    """Rewrite ``folder``'s ``_metadata`` (valid checksum) to declare format ``fmt``."""
    path = folder / METADATA_FILE
    metadata = decode_metadata(path.read_bytes(), str(path))
    properties = {**metadata.properties, "format": fmt}
    path.write_bytes(encode_metadata(msgspec.structs.replace(metadata, properties=properties)))


def snapshot_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


async def pickled_keyed_savepoint(tmp_path: Path, value: Any) -> Path:
    writer = SavepointWriter.new(MAX_PARALLELISM, allow_pickle=True)
    writer.with_operator_state("count", keyed={"total": {"a": value}})
    return await writer.write_async(tmp_path)


async def failure_of(env: StreamEnvironment, folder: Path) -> BaseException:
    """The error restoring ``folder`` fails with: raised, or a failed job's cause."""
    with pytest.raises(Exception) as raised:
        await env.execute("restore", restore_from=folder)
    error = raised.value
    if isinstance(error, JobFailedError):
        assert error.result.restarts == 0
        assert error.__cause__ is not None
        return error.__cause__
    return error


def test_the_writer_declares_its_format(tmp_path: Path) -> None:
    canonical = SavepointWriter.new(MAX_PARALLELISM).with_operator_state(
        "count", keyed={"total": {"a": 1}}
    )
    native = SavepointWriter.new(MAX_PARALLELISM, allow_pickle=True).with_operator_state(
        "count", keyed={"total": {"a": Trusted(1)}}
    )
    for writer, expected in ((canonical, True), (native, False)):
        folder = writer.write(tmp_path / str(expected))
        path = folder / METADATA_FILE
        assert declares_canonical(decode_metadata(path.read_bytes(), str(path))) is expected
    # A savepoint made from a native one stays native (its carried state may be pickled).
    carried = SavepointWriter.from_savepoint(native.write(tmp_path / "again")).write(tmp_path)
    path = carried / METADATA_FILE
    assert not declares_canonical(decode_metadata(path.read_bytes(), str(path)))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_canonical_savepoint_with_pickled_keyed_state_is_refused(
    tmp_path: Path, backend: str
) -> None:
    folder = await pickled_keyed_savepoint(tmp_path, Payload())
    declare(folder, "canonical")
    before = snapshot_files(folder)
    job = keyed_job(backend=backend, state_dir=tmp_path / "state")  # allows pickle
    cause = await failure_of(job, folder)
    assert isinstance(cause, PickleForbiddenError)
    message = str(cause)
    assert "cannot restore operator 'count' (uid 'count')" in message
    assert "declares the canonical format" in message
    assert "value state 'total' in key group" in message
    assert ".state" in message  # the state file that holds the key group
    assert RAN == []
    assert snapshot_files(folder) == before  # nothing of the savepoint was changed


async def test_a_canonical_savepoint_with_pickled_operator_state_is_refused(
    tmp_path: Path,
) -> None:
    writer = SavepointWriter.new(MAX_PARALLELISM, allow_pickle=True)
    writer.with_operator_state("buffered", operator={"buffer": [Payload()]})
    folder = await writer.write_async(tmp_path)
    declare(folder, "canonical")
    cause = await failure_of(operator_job(), folder)
    assert isinstance(cause, PickleForbiddenError)
    assert "cannot restore operator 'buffered' (uid 'buffered')" in str(cause)
    assert "operator list state 'buffer'" in str(cause)
    assert RAN == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_native_savepoint_needs_a_job_that_allows_pickle(
    tmp_path: Path, backend: str
) -> None:
    folder = await pickled_keyed_savepoint(tmp_path, Payload())
    job = keyed_job(allow_pickle=False, backend=backend, state_dir=tmp_path / "state")
    cause = await failure_of(job, folder)
    assert isinstance(cause, PickleForbiddenError)
    assert "the job forbids pickle (allow_pickle=False)" in str(cause)
    assert "StreamEnvironment(allow_pickle=True)" in str(cause)
    assert RAN == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_native_savepoint_restores_where_pickle_is_allowed(
    tmp_path: Path, backend: str
) -> None:
    # The trust model: where pickle is allowed, restoring is as safe as the job's code.
    folder = await pickled_keyed_savepoint(tmp_path, Trusted(41))
    job = keyed_job(backend=backend, state_dir=tmp_path / "state")
    result = await job.execute("restore", restore_from=folder)
    ((key, restored),) = result.collected["out"]
    assert key == "a" and isinstance(restored, Trusted) and restored.n == 41


async def test_a_job_that_forbids_pickle_restores_its_own_rocksdb_checkpoint(
    tmp_path: Path,
) -> None:
    # A native RocksDB checkpoint is refused only when a savepoint declares canonical;
    # its rows are read with the job's own policy (none are pickled here).
    gate = SourceGate(hold_after=4, hold_at_end=True)
    env = StreamEnvironment(
        parallelism=1,
        max_parallelism=MAX_PARALLELISM,
        allow_pickle=False,
        state_backend="rocksdb",
        state_dir=str(tmp_path / "state"),
    )
    env.enable_checkpointing(
        3600.0,
        storage=(tmp_path / "checkpoints").as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    source = GatedSource(GeneratorSource(lambda i: ("a", i), 8), gate)
    (
        env.from_source(source, name="numbers", uid="numbers")
        .key_by(lambda r: r[0])
        .process(Count(), name="count", uid="count")
        .collect(name="out", uid="out")
    )
    client = await env.start("first")
    await gate.wait_held()
    completed = await client.trigger_checkpoint()
    client.cancel()
    await client.wait()

    again = StreamEnvironment(
        parallelism=1,
        max_parallelism=MAX_PARALLELISM,
        allow_pickle=False,
        state_backend="rocksdb",
        state_dir=str(tmp_path / "state-again"),
    )
    (
        again.from_source(GeneratorSource(lambda i: ("a", i), 8), name="numbers", uid="numbers")
        .key_by(lambda r: r[0])
        .process(Count(), name="count", uid="count")
        .collect(name="out", uid="out")
    )
    result = await again.execute("second", restore_from=completed.pointer)
    # Record 4 finds the value record 3 left in the restored state.
    assert result.collected["out"] == [("a", 3), ("a", 4), ("a", 5), ("a", 6)]


class ListSink(TwoPhaseCommitSink[Any, list[Any]]):
    """A two-phase-commit sink with untyped transactions (lists of records)."""

    def begin_transaction(self) -> list[Any]:
        return []

    def write(self, transaction: list[Any], value: Any) -> None:
        transaction.append(value)

    def commit(self, transaction: list[Any]) -> None:
        COMMITTED.extend(transaction)

    def abort(self, transaction: list[Any]) -> None:
        transaction.clear()


COMMITTED: list[Any] = []


async def test_a_canonical_savepoint_never_unpickles_a_sink_transaction(tmp_path: Path) -> None:
    # The transactions are bytes inside typed operator state: the state itself is
    # canonical, the bytes are an untyped envelope holding a pickle.
    pickled = b"P" + pickle.dumps(Payload())
    writer = SavepointWriter.new(MAX_PARALLELISM)
    writer.with_operator_state(
        "sink",
        operator={TWO_PHASE_STATE: [("pending", 1, pickled)]},
        operator_descriptors=[ListStateDescriptor(TWO_PHASE_STATE, type=tuple[str, int, bytes])],
    )
    folder = await writer.write_async(tmp_path)
    env = StreamEnvironment(parallelism=1, max_parallelism=MAX_PARALLELISM)
    env.from_collection([1, 2]).sink_to(ListSink(), name="sink", uid="sink")
    cause = await failure_of(env, folder)
    assert "transaction was written with pickle" in str(cause) or isinstance(
        cause.__cause__, PickleForbiddenError
    ), cause
    assert RAN == [] and COMMITTED == []


def test_splits_never_import_a_module_a_file_names() -> None:
    name = "antigravity"  # importing it opens a web browser
    assert name not in sys.modules
    data = encode_splits_raw([(f"{name}:Split", {})])
    with pytest.raises(SerializationError, match="module 'antigravity' is not imported"):
        decode_splits(data, allow_pickle=False)
    assert name not in sys.modules
    with pytest.raises(SerializationError, match=r"not a msgspec\.Struct"):
        decode_splits(encode_splits_raw([("os:system", {})]), allow_pickle=False)


def _with_header(body: bytes, magic: bytes = METADATA_MAGIC) -> bytes:
    return struct.pack(">8sII", magic, 1, zlib.crc32(body)) + body


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x00garbage, not a metadata file at all", "too short|magic|not a weir"),
        (_with_header(b"\x93\x01\x02\x03", b"NOTWEIR!"), "magic"),
        (_with_header(b"\xc1\xc1 garbage with a valid crc"), "decode|invalid|malformed"),
        (_with_header(msgspec.msgpack.encode({"version": 1, "job_id": 3})), "decode|expected"),
    ],
    ids=["garbage", "wrong-magic", "valid-crc-garbage", "valid-crc-wrong-shape"],
)
async def test_crafted_metadata_is_one_error_naming_the_file(
    tmp_path: Path, content: bytes, what: str
) -> None:
    folder = await pickled_keyed_savepoint(tmp_path, 1)
    (folder / METADATA_FILE).write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=what) as raised:
        decode_metadata(content, str(folder / METADATA_FILE))
    assert str(folder / METADATA_FILE) in str(raised.value)
    cause = await failure_of(keyed_job(), folder)
    assert isinstance(cause, CorruptCheckpointError)
    assert str(folder / METADATA_FILE) in str(cause)
    assert (folder / METADATA_FILE).read_bytes() == content
