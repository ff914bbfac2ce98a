"""resolve_storage: the accepted forms of the ``storage`` option, and the error for others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.checkpoint import FileCheckpointStorage, MemoryCheckpointStorage, resolve_storage


@pytest.mark.parametrize("spec", [None, "memory"])
def test_memory(spec: str | None) -> None:
    storage = resolve_storage(spec, "job-1")
    assert isinstance(storage, MemoryCheckpointStorage)
    assert (storage.job_id, storage.description) == ("job-1", "memory")


@pytest.mark.parametrize(
    ("spec", "directory"),
    [
        ("file:///var/weir/checkpoints", "/var/weir/checkpoints"),
        ("file://localhost/var/weir", "/var/weir"),
        ("file:///with%20space", "/with space"),
        ("/var/weir", "/var/weir"),
    ],
)
def test_file(spec: str, directory: str) -> None:
    storage = resolve_storage(spec, "job-1")
    assert isinstance(storage, FileCheckpointStorage)
    assert storage.directory == Path(directory)
    assert storage.description == f"{directory}/job-1"


def test_a_relative_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = resolve_storage("chk", "job-1")
    assert isinstance(storage, FileCheckpointStorage)
    assert storage.job_dir == tmp_path / "chk" / "job-1"


ACCEPTED = re.escape("use 'memory', 'file:///absolute/dir' or a plain directory path")


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("s3://bucket/checkpoints", "has an unsupported scheme 's3'"),
        ("memory://", "has an unsupported scheme 'memory'"),
        ("file://host/dir", "names host 'host'; file:// URIs must be local"),
        ("file://", "has no absolute path"),
        ("", "is not a storage"),
        ("   ", "is not a storage"),
    ],
)
def test_anything_else_names_the_spec_and_the_accepted_forms(spec: str, why: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"^checkpoint storage {re.escape(repr(spec))} {re.escape(why)}; "
        rf"{ACCEPTED}$",
    ):
        resolve_storage(spec, "job-1")


def test_a_bad_job_id() -> None:
    with pytest.raises(ValueError, match="job id 'a/b' cannot name a checkpoint folder"):
        resolve_storage("/tmp/x", "a/b")
