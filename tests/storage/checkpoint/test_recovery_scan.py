"""find_latest_valid: newest usable checkpoint, falling back past broken ones and saying so."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.checkpoint import (
    CheckpointMetadata,
    CheckpointNotFoundError,
    CheckpointScan,
    CorruptCheckpointError,
    FileCheckpointStorage,
    completed_checkpoint_ids,
    encode_metadata,
    find_latest_valid,
    load_metadata_file,
)

MakeMetadata = Callable[..., CheckpointMetadata]


async def take(storage: FileCheckpointStorage, make_metadata: MakeMetadata, n: int) -> Path:
    handle = await storage.write_state(n, "count-0", [b"state of %d" % n])
    return Path(await storage.commit(make_metadata(n, [handle, None])))


async def test_the_newest_checkpoint_wins(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    for n in (1, 2, 10):
        newest = await take(file_storage, make_metadata, n)
    scan = find_latest_valid(file_storage.job_dir)
    assert scan == CheckpointScan((newest, load_metadata_file(newest)), ())
    assert newest == file_storage.job_dir / "chk-10"


async def test_falls_back_past_a_corrupt_newest_checkpoint_and_says_so(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    await take(file_storage, make_metadata, 1)
    older = await take(file_storage, make_metadata, 2)
    newest = await take(file_storage, make_metadata, 3)
    metadata_file = newest / "_metadata"
    data = bytearray(metadata_file.read_bytes())
    data[-3] ^= 0x55
    metadata_file.write_bytes(bytes(data))

    latest, skipped = find_latest_valid(file_storage.job_dir)
    assert latest is not None
    assert latest[0] == older
    assert latest[1].checkpoint_id == 2
    assert len(skipped) == 1
    assert re.fullmatch(
        rf"skipped checkpoint 3: checkpoint metadata {re.escape(str(metadata_file))} is "
        r"corrupt: checksum mismatch.*; it will not be used",
        skipped[0],
    )


async def test_reports_every_skipped_checkpoint_newest_first(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    await take(file_storage, make_metadata, 1)
    empty = await take(file_storage, make_metadata, 2)
    (empty / "_metadata").write_bytes(b"")
    missing_state = await take(file_storage, make_metadata, 3)
    (missing_state / "count-0").unlink()
    short_state = await take(file_storage, make_metadata, 4)
    (short_state / "count-0").write_bytes(b"x")
    misnamed = file_storage.job_dir / "chk-5"
    misnamed.mkdir()
    (misnamed / "_metadata").write_bytes(encode_metadata(make_metadata(6, [None])))
    (file_storage.job_dir / "chk-6").mkdir()  # never completed: skipped silently

    latest, skipped = find_latest_valid(file_storage.job_dir)
    assert latest is not None and latest[1].checkpoint_id == 1
    assert [message.split(":")[0] for message in skipped] == [
        f"skipped checkpoint {n}" for n in (5, 4, 3, 2)
    ]
    assert "describes checkpoint 6, but its folder is chk-5" in skipped[0]
    assert (
        f"state file {short_state / 'count-0'} of operator 'count' subtask 0 has 1 bytes"
        in (skipped[1])
    )
    assert (
        f"state file {missing_state / 'count-0'} of operator 'count' subtask 0 is missing"
        in (skipped[2])
    )
    assert f"{empty / '_metadata'} is corrupt: truncated: it is empty" in skipped[3]


async def test_nothing_usable(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    only = await take(file_storage, make_metadata, 1)
    (only / "_metadata").write_bytes(b"WEIRMETA")
    latest, skipped = find_latest_valid(file_storage.job_dir)
    assert latest is None
    assert len(skipped) == 1


def test_a_missing_job_folder_has_no_checkpoints(tmp_path: Path) -> None:
    assert find_latest_valid(tmp_path / "nope") == CheckpointScan(None, ())
    assert completed_checkpoint_ids(tmp_path / "nope") == []


def test_only_canonical_checkpoint_folders_count(tmp_path: Path) -> None:
    for name in ("chk-1", "chk-01", "chk-x", "chk-", "savepoint-1", "chk-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "_metadata").write_bytes(b"")
    (tmp_path / "chk-3").write_bytes(b"a file, not a folder")
    assert completed_checkpoint_ids(tmp_path) == [1, 2]


def test_load_metadata_file_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointNotFoundError,
        match=rf"^checkpoint metadata {re.escape(str(tmp_path))}/_metadata does not exist; ",
    ):
        load_metadata_file(tmp_path)


def test_load_metadata_file_names_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "_metadata").write_bytes(b"garbage" * 4)
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint metadata {re.escape(str(tmp_path))}/_metadata is corrupt: "
        r"wrong magic",
    ):
        load_metadata_file(tmp_path / "_metadata")


def test_load_metadata_file_refuses_remote_uris() -> None:
    with pytest.raises(ValueError, match="is not a local path"):
        load_metadata_file("s3://bucket/chk-1")
