"""The CheckpointStorage contract, held by both the memory and the file storage."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from storage.checkpoint import (
    CheckpointMetadata,
    CheckpointNotFoundError,
    CheckpointStorage,
    CorruptCheckpointError,
    FileCheckpointStorage,
    MemoryCheckpointStorage,
    StateFrame,
    StateHandle,
    StorageError,
    crc32_hex,
    encode_frame,
    iter_frames,
)

MakeMetadata = Callable[..., CheckpointMetadata]


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStorage:
    if request.param == "memory":
        return MemoryCheckpointStorage("job-1")
    return FileCheckpointStorage(tmp_path / "checkpoints", "job-1")


async def write_and_commit(
    storage: CheckpointStorage, make_metadata: MakeMetadata, checkpoint_id: int
) -> tuple[str, StateHandle, bytes]:
    data = b"".join(
        encode_frame(StateFrame("keyed", "count", group, b"v" * group)) for group in range(5)
    )
    handle = await storage.write_state(checkpoint_id, "count-0", [data[:7], data[7:]])
    pointer = await storage.commit(make_metadata(checkpoint_id, [handle, None]))
    return pointer, handle, data


def test_both_implement_the_protocol(storage: CheckpointStorage) -> None:
    assert isinstance(storage, CheckpointStorage)
    assert storage.job_id == "job-1"


async def test_write_commit_load_read(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, handle, data = await write_and_commit(storage, make_metadata, 4)
    assert handle == StateHandle(path="count-0", size=len(data), checksum=crc32_hex(data))
    meta = await storage.load(pointer)
    assert meta == make_metadata(4, [handle, None])
    stored = meta.operators[0].subtasks[0].handle
    assert stored is not None
    read = await storage.read_state(pointer, stored)
    assert read == data
    assert [f.key_group for f in iter_frames(read, pointer)] == [0, 1, 2, 3, 4]
    assert storage.list_completed() == [4]


async def test_a_pending_checkpoint_is_not_completed(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    await storage.write_state(1, "count-0", [b"abc"])
    assert storage.list_completed() == []
    pointer = await storage.commit(make_metadata(2, [None]))
    assert storage.list_completed() == [2]
    with pytest.raises(CheckpointNotFoundError):
        await storage.load(pointer.removesuffix("2") + "1")


async def test_list_completed_is_ascending(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    for checkpoint_id in (10, 2, 9):
        await storage.commit(make_metadata(checkpoint_id, [None]))
    assert storage.list_completed() == [2, 9, 10]


async def test_discard_is_idempotent(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, handle, _ = await write_and_commit(storage, make_metadata, 1)
    await write_and_commit(storage, make_metadata, 2)
    await storage.write_state(3, "count-0", [b"pending"])
    for _ in range(2):
        await storage.discard(1)
        await storage.discard(3)
        await storage.discard(99)  # never existed
    assert storage.list_completed() == [2]
    with pytest.raises(CheckpointNotFoundError):
        await storage.load(pointer)
    with pytest.raises(CheckpointNotFoundError, match="count-0 does not exist"):
        await storage.read_state(pointer, handle)


async def test_a_completed_checkpoint_is_immutable(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, _, _ = await write_and_commit(storage, make_metadata, 5)
    with pytest.raises(StorageError, match=r"is already complete.*immutable"):
        await storage.commit(make_metadata(5, [None]))
    assert (await storage.load(pointer)).operators[0].subtasks[0].handle is not None


async def test_commit_refuses_another_jobs_metadata(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    with pytest.raises(ValueError, match="of job 'other' to the checkpoint storage of job"):
        await storage.commit(make_metadata(1, [None], job_id="other"))
    assert storage.list_completed() == []


async def test_read_state_with_a_wrong_checksum_is_corrupt(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, handle, _ = await write_and_commit(storage, make_metadata, 1)
    bad = msgspec.structs.replace(handle, checksum="00000000")
    with pytest.raises(
        CorruptCheckpointError,
        match=r"^checkpoint state file .*count-0 is corrupt: checksum mismatch",
    ) as info:
        await storage.read_state(pointer, bad)
    assert info.value.path.endswith("count-0")


async def test_read_state_with_a_wrong_size_is_corrupt(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, handle, data = await write_and_commit(storage, make_metadata, 1)
    bad = msgspec.structs.replace(handle, size=handle.size + 1)
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"count-0 is corrupt: size mismatch: it has {len(data)} bytes, the metadata "
        rf"says {len(data) + 1}",
    ):
        await storage.read_state(pointer, bad)


async def test_read_state_of_a_missing_file(
    storage: CheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await storage.initialize()
    pointer, handle, _ = await write_and_commit(storage, make_metadata, 1)
    missing = msgspec.structs.replace(handle, path="count-9")
    with pytest.raises(
        CheckpointNotFoundError, match=r"^checkpoint state file .*count-9 does not exist"
    ):
        await storage.read_state(pointer, missing)


async def test_load_of_an_unknown_checkpoint(storage: CheckpointStorage) -> None:
    await storage.initialize()
    pointer = (
        "memory://job-1/8"
        if isinstance(storage, MemoryCheckpointStorage)
        else str(storage.description) + "/chk-8"
    )
    with pytest.raises(CheckpointNotFoundError, match=re.escape(pointer)):
        await storage.load(pointer)


async def test_an_empty_state_file(storage: CheckpointStorage, make_metadata: MakeMetadata) -> None:
    await storage.initialize()
    handle = await storage.write_state(1, "empty", [])
    assert handle == StateHandle(path="empty", size=0, checksum="00000000")
    pointer = await storage.commit(make_metadata(1, [handle]))
    assert await storage.read_state(pointer, handle) == b""


async def test_writing_a_name_again_replaces_the_file(storage: CheckpointStorage) -> None:
    await storage.initialize()
    await storage.write_state(1, "count-0", [b"first attempt, longer"])
    handle = await storage.write_state(1, "count-0", [b"second"])
    assert handle.size == 6


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "_metadata", "_metadata.tmp", "a\\b"])
async def test_write_state_refuses_names_that_are_not_plain(
    storage: CheckpointStorage, name: str
) -> None:
    with pytest.raises(ValueError, match="state file name"):
        await storage.write_state(1, name, [b"x"])
