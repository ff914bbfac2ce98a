"""Keys and state a job cannot keep: one clear error each, and nothing committed lost.

* NaN keys (alone or inside a tuple) fail the job on either backend, naming the keyed
  operator, the subtask and the record: a NaN is not equal to itself, so the heap
  backend kept one entry per NaN object and RocksDB one for all of them.
* State that cannot be serialized (a lock, which neither msgpack nor pickle carries)
  fails the checkpoint that would store it, with an error naming the state, the key and
  its key group; no checkpoint completes with it, and the records go on.
* A key group blob that does not decode (valid checksum, garbage inside) fails the
  restore, naming the state file and the key group.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from runtime import (
    CheckpointError,
    GeneratorSource,
    JobFailedError,
    JobStatus,
    KeyedProcessFunction,
    OperatorError,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from runtime.testing.gates import GatedSource, SourceGate
from storage import KeyEncodingError, SerializationError
from storage.checkpoint import METADATA_FILE, decode_metadata, encode_metadata
from storage.checkpoint.metadata import crc32_hex
from storage.processor import SavepointWriter

BACKENDS = ["heap", "rocksdb"]
MAX_PARALLELISM = 128


class Count(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: RuntimeContext) -> list[Any]:
        self.count.update(self.count.value() + 1)
        return [(value[0], self.count.value())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", [float("nan"), ("a", float("nan"))], ids=["nan", "tuple"])
async def test_nan_keys_fail_the_job_naming_the_operator(
    tmp_path: Path, backend: str, key: Any
) -> None:
    env = StreamEnvironment(parallelism=1, state_backend=backend, state_dir=str(tmp_path))
    records = [("a", 1), (key, 2), (key, 3)]
    (
        env.from_collection(records)
        .key_by(lambda r: r[0])
        .process(Count(), name="count", uid="count")
        .collect(name="out")
    )
    with pytest.raises(JobFailedError) as raised:
        await env.execute("nan keys")
    error = raised.value.__cause__
    assert isinstance(error, OperatorError)
    assert isinstance(error.__cause__, KeyEncodingError)
    message = str(error)
    assert "'count'" in message and "(subtask 1/1)" in message  # the keyed operator
    assert "cannot use NaN as a key" in message
    assert "while processing record" in message


class HoldsALock(KeyedProcessFunction):
    """Keeps an unserializable value in keyed state for one key, from 5 until 15."""

    def open(self, ctx: RuntimeContext) -> None:
        self.lock = ctx.get_state(ValueStateDescriptor("lock"))
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: int, ctx: RuntimeContext) -> list[int]:
        self.count.update(self.count.value() + 1)
        if value == 5:
            self.lock.update(threading.Lock())
        elif value == 15:
            self.lock.clear()  # the checkpoints after this one store nothing unserializable
        return [value]


async def test_unserializable_state_fails_its_checkpoint_naming_the_state(
    tmp_path: Path,
) -> None:
    count = 20
    gate = SourceGate(hold_after=10)
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(
        3600.0, storage=(tmp_path / "checkpoints").as_uri(), tolerable_failures=1
    )
    (
        env.from_source(GatedSource(GeneratorSource(lambda i: i, count), gate), name="numbers")
        .key_by(lambda i: i % 2)
        .process(HoldsALock(), name="holder", uid="holder")
        .collect(name="out")
    )
    client = await env.start("unserializable")
    await gate.wait_flushed()  # 0..9 sent: the barrier comes after the lock is stored
    with pytest.raises(CheckpointError) as raised:
        await client.trigger_checkpoint()
    message = str(raised.value)
    assert "value state 'lock'" in message, message
    assert "cannot pickle" in message, message
    stats = client.checkpoint_stats()
    assert stats is not None and stats.latest_completed is None
    gate.open()
    result = await client.wait()
    # One failed checkpoint is tolerated: the job goes on, and its final checkpoint
    # (the lock cleared by then) completes; no record is lost or repeated.
    assert result.status is JobStatus.FINISHED, result.error
    assert result.restarts == 0
    assert sorted(result.collected["out"]) == list(range(count))
    assert result.checkpoints is not None and result.checkpoints.counts.failed == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_key_group_that_does_not_decode_names_its_file(
    tmp_path: Path, backend: str
) -> None:
    writer = SavepointWriter.new(MAX_PARALLELISM)
    writer.with_operator_state("count", keyed={"count": {("a", 1): 5}})
    folder = await writer.write_async(tmp_path)
    (state_file,) = [p for p in folder.iterdir() if p.name.endswith(".state")]
    data = bytearray(state_file.read_bytes())
    # Garbage in the middle of the key group's blob, with every checksum made valid.
    middle = len(data) // 2
    data[middle : middle + 4] = b"\xc1\xc1\xc1\xc1"
    state_file.write_bytes(bytes(data))
    path = folder / METADATA_FILE
    metadata = decode_metadata(path.read_bytes(), str(path))
    operators = []
    for operator in metadata.operators:
        subtasks = []
        for subtask in operator.subtasks:
            handle = subtask.handle
            if handle is not None and handle.path == state_file.name:
                handle = msgspec.structs.replace(handle, checksum=crc32_hex(bytes(data)))
            subtasks.append(msgspec.structs.replace(subtask, handle=handle))
        operators.append(msgspec.structs.replace(operator, subtasks=subtasks))
    path.write_bytes(encode_metadata(msgspec.structs.replace(metadata, operators=operators)))

    env = StreamEnvironment(
        parallelism=1,
        max_parallelism=MAX_PARALLELISM,
        state_backend=backend,
        state_dir=str(tmp_path / "state"),
    )
    (
        env.from_collection([(("a", 1), 1)])
        .key_by(lambda r: r[0])
        .process(Count(), name="count", uid="count")
        .collect(name="out")
    )
    with pytest.raises(Exception) as raised:
        await env.execute("restore", restore_from=folder)
    error: BaseException | None = raised.value
    if isinstance(error, JobFailedError):
        error = error.__cause__
    assert isinstance(error, SerializationError)
    message = str(error)
    assert "cannot restore operator 'count' (uid 'count')" in message, message
    assert state_file.name in message, message
    assert "key group" in message, message
