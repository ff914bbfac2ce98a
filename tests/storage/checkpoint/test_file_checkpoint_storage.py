"""FileCheckpointStorage: Flink's layout on disk, atomic commit, errors naming paths."""

from __future__ import annotations

import errno
import gc
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from storage.checkpoint import (
    CheckpointMetadata,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    FileCheckpointStorage,
    StateHandle,
    StorageNotWritableError,
    encode_metadata,
    find_latest_valid,
    load_metadata_file,
)
from storage.checkpoint import filesystem as filesystem_module

MakeMetadata = Callable[..., CheckpointMetadata]


def names(folder: Path | str) -> list[str]:
    """The sorted names in ``folder`` (a blocking helper, fine in a test)."""
    return sorted(p.name for p in Path(folder).iterdir())


async def test_initialize_creates_flinks_layout(file_storage: FileCheckpointStorage) -> None:
    await file_storage.initialize()
    await file_storage.initialize()  # again, on restart
    job_dir = file_storage.directory / "job-1"
    assert file_storage.job_dir == job_dir
    assert file_storage.description == str(job_dir)
    assert names(job_dir) == []  # shared/ comes with the first upload; no taskowned/


async def test_layout_after_a_checkpoint(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    handle = await file_storage.write_state(3, "count-0", [b"abc"])
    assert names(file_storage.job_dir / "chk-3") == ["count-0"]
    pointer = await file_storage.commit(make_metadata(3, [handle]))
    assert pointer == str(file_storage.job_dir / "chk-3")
    assert names(file_storage.job_dir) == ["chk-3"]
    assert names(pointer) == ["_metadata", "count-0"]
    assert (Path(pointer) / "_metadata").read_bytes() == encode_metadata(make_metadata(3, [handle]))


async def test_handles_are_relative(file_storage: FileCheckpointStorage) -> None:
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    assert handle.path == "count-0"


async def test_small_chunks_are_joined_into_few_writes(
    file_storage: FileCheckpointStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filesystem_module, "WRITE_BATCH_BYTES", 100)
    sizes: list[int] = []
    batches = filesystem_module._batches

    def spy(chunks: object, limit: int) -> object:
        for batch in batches(chunks, limit):  # type: ignore[arg-type]
            sizes.append(len(batch))
            yield batch

    monkeypatch.setattr(filesystem_module, "_batches", spy)
    chunks = [bytes([i]) * 10 for i in range(25)] + [b"L" * 300] + [b"s" * 30] * 2
    handle = await file_storage.write_state(1, "f", chunks)
    assert sizes == [100, 100, 50, 300, 60]
    data = (file_storage.job_dir / "chk-1" / "f").read_bytes()
    assert data == b"".join(chunks)
    assert handle.size == len(data)


async def test_commit_writes_a_fsynced_temporary_and_renames_it_last(
    file_storage: FileCheckpointStorage,
    make_metadata: MakeMetadata,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    folder = file_storage.job_dir / "chk-2"
    expected = encode_metadata(make_metadata(2, [None]))
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        assert not (folder / "_metadata").exists(), "_metadata visible before the rename"
        assert Path(src).read_bytes() == expected
        events.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    await file_storage.commit(make_metadata(2, [None]))
    assert events == [
        "fsync file",
        "rename _metadata.tmp -> _metadata",
        "fsync dir",
        "fsync dir",
    ]
    assert names(folder) == ["_metadata"]


async def test_a_failed_commit_leaves_no_metadata_and_names_the_file(
    file_storage: FileCheckpointStorage,
    make_metadata: MakeMetadata,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    await file_storage.initialize()
    monkeypatch.setattr(os, "fsync", full)
    metadata_path = file_storage.job_dir / "chk-1" / "_metadata"
    with pytest.raises(
        StorageNotWritableError,
        match=rf"^cannot write checkpoint storage at {re.escape(str(metadata_path))}: No space "
        r"left on device; free some space or choose another checkpoint directory$",
    ) as info:
        await file_storage.commit(make_metadata(1, [None]))
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert names(metadata_path.parent) == []
    assert file_storage.list_completed() == []


async def test_a_failed_state_write_names_the_file(
    file_storage: FileCheckpointStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    real_close = os.close

    def denied(fd: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "fsync", denied)
    monkeypatch.setattr(os, "close", close)
    path = file_storage.job_dir / "chk-1" / "count-0"
    with pytest.raises(
        StorageNotWritableError,
        match=rf"at {re.escape(str(path))}: Permission denied; fix its permissions or choose "
        r"another checkpoint directory$",
    ) as info:
        await file_storage.write_state(1, "count-0", [b"abc"])
    assert isinstance(info.value.__cause__, PermissionError)
    assert len(closed) == 1  # the descriptor was closed on the way out


async def test_a_leftover_temporary_from_a_crash_is_ignored(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    await file_storage.commit(make_metadata(1, [handle]))
    # A crash during the commit of checkpoint 2: state written, metadata only as .tmp
    # (here even a complete and valid one: it was never renamed, so it never counts).
    handle = await file_storage.write_state(2, "count-0", [b"abcd"])
    tmp = file_storage.job_dir / "chk-2" / "_metadata.tmp"
    tmp.write_bytes(encode_metadata(make_metadata(2, [handle])))
    assert file_storage.list_completed() == [1]
    latest, skipped = find_latest_valid(file_storage.job_dir)
    assert latest is not None
    assert latest[0] == file_storage.job_dir / "chk-1"
    assert skipped == ()
    with pytest.raises(CheckpointNotFoundError, match=r"chk-2/_metadata does not exist"):
        await file_storage.load(str(file_storage.job_dir / "chk-2"))


async def test_read_state_of_a_tampered_file(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    handle = await file_storage.write_state(1, "count-0", [b"x" * 1000])
    pointer = await file_storage.commit(make_metadata(1, [handle]))
    path = Path(pointer) / "count-0"
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint state file {re.escape(str(path))} is corrupt: checksum mismatch",
    ) as info:
        await file_storage.read_state(pointer, handle)
    assert info.value.path == str(path)


async def test_read_state_of_a_deleted_file(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    pointer = await file_storage.commit(make_metadata(1, [handle]))
    (Path(pointer) / "count-0").unlink()
    with pytest.raises(
        CheckpointNotFoundError,
        match=rf"^checkpoint state file {re.escape(pointer)}/count-0 does not exist",
    ):
        await file_storage.read_state(pointer, handle)


@pytest.mark.parametrize("path", ["../chk-1/count-0", "/etc/passwd", "a/../../x", ""])
async def test_a_handle_path_that_leaves_the_folder_is_corrupt(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata, path: str
) -> None:
    pointer = await file_storage.commit(make_metadata(2, [None]))
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint metadata {re.escape(pointer)}/_metadata is corrupt: state handle "
        r"path .* is not a relative path inside the checkpoint folder",
    ):
        await file_storage.read_state(pointer, StateHandle(path=path, size=0, checksum="0" * 8))


async def test_pointers_may_be_uris_or_the_metadata_file(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    pointer = await file_storage.commit(make_metadata(1, [handle]))
    for form in (pointer, f"file://{pointer}", f"{pointer}/_metadata"):
        assert (await file_storage.load(form)).checkpoint_id == 1
        assert await file_storage.read_state(form, handle) == b"abc"
    assert load_metadata_file(Path(pointer)) == load_metadata_file(Path(pointer) / "_metadata")


async def test_discard_removes_the_whole_folder(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    await file_storage.write_state(1, "count-1", [b"def"])
    await file_storage.commit(make_metadata(1, [handle]))
    await file_storage.discard(1)
    assert names(file_storage.job_dir) == []


async def test_initialize_on_an_unwritable_directory_names_it(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # chmod does not stop root: go through a regular file instead, which fails with
        # NotADirectoryError for everyone.
        (tmp_path / "file").write_bytes(b"")
        directory = tmp_path / "file" / "sub"
    else:
        directory = tmp_path / "read-only"
        directory.mkdir()
        directory.chmod(0o500)
    try:
        storage = FileCheckpointStorage(directory, "job-1")
        with pytest.raises(
            StorageNotWritableError,
            match=rf"^cannot write checkpoint storage at {re.escape(str(directory))}/job-1"
            r": .*; fix its permissions or choose another checkpoint directory$",
        ) as info:
            await storage.initialize()
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.path.startswith(str(directory))
    finally:
        if directory.exists():
            directory.chmod(0o700)


async def test_initialize_probes_an_existing_job_folder(
    file_storage: FileCheckpointStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await file_storage.initialize()

    real_open = os.open

    def read_only(path: object, *args: object, **kwargs: object) -> int:
        if ".write-probe-" in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("os.open", read_only)
    with pytest.raises(
        StorageNotWritableError,
        match=rf"at {re.escape(str(file_storage.job_dir))}: Read-only file system",
    ):
        await file_storage.initialize()


def test_relative_directories_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = FileCheckpointStorage("checkpoints", "job-1")
    assert storage.job_dir == tmp_path / "checkpoints" / "job-1"


@pytest.mark.parametrize("job_id", ["", ".", "..", "a/b"])
def test_job_ids_that_cannot_name_a_folder(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(ValueError, match="cannot name a checkpoint folder"):
        FileCheckpointStorage(tmp_path, job_id)


async def test_a_write_cancelled_in_its_thread_completes_and_discard_removes_it(
    file_storage: FileCheckpointStorage,
) -> None:
    await file_storage.initialize()
    with anyio.CancelScope() as scope:

        def chunks() -> Iterator[bytes]:  # consumed in the write's worker thread
            yield b"a" * (2 << 20)
            anyio.from_thread.run_sync(scope.cancel)  # cancelled between two writes
            yield b"b" * (2 << 20)

        await file_storage.write_state(1, "count-0", chunks())
        await anyio.lowlevel.checkpoint()  # the cancellation lands here
    assert scope.cancelled_caught
    gc.collect()  # an unclosed file would warn (ResourceWarning, an error here) now
    assert names(file_storage.job_dir / "chk-1") == ["count-0"]
    data = (file_storage.job_dir / "chk-1" / "count-0").read_bytes()
    assert data == b"a" * (2 << 20) + b"b" * (2 << 20)  # written to its end
    assert file_storage.list_completed() == []
    await file_storage.discard(1)
    assert names(file_storage.job_dir) == []


async def test_a_commit_cancelled_in_its_thread_completes_and_returns(
    file_storage: FileCheckpointStorage,
    make_metadata: MakeMetadata,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await file_storage.initialize()
    real_fsync = os.fsync
    pointer = None
    with anyio.CancelScope() as scope:

        def fsync(fd: int) -> None:
            anyio.from_thread.run_sync(scope.cancel)  # cancel the caller mid-commit
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        pointer = await file_storage.commit(make_metadata(1, [None]))
        await anyio.lowlevel.checkpoint()  # the cancellation lands here
    assert scope.cancelled_caught
    assert pointer == str(file_storage.job_dir / "chk-1")
    assert names(pointer) == ["_metadata"]


async def test_a_commit_cancelled_before_its_thread_writes_nothing(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await file_storage.commit(make_metadata(1, [None]))
    assert scope.cancelled_caught
    assert not (file_storage.job_dir / "chk-1").exists()


async def test_a_cancelled_read_closes_its_file(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    handle = await file_storage.write_state(1, "count-0", [b"abc"])
    pointer = await file_storage.commit(make_metadata(1, [handle]))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await file_storage.read_state(pointer, handle)
    assert scope.cancelled_caught
    gc.collect()  # an unclosed file would warn (ResourceWarning, an error here) now
