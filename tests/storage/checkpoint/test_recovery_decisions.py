"""The recovery planner and the verification it relies on, without a job.

* :class:`RecoveryPlanner` (pure): newest candidate that verifies; refuses to go back past
  a checkpoint whose completion may have been notified, naming both checkpoints and the
  option that forces it, unless the sinks skip their committed output or it is forced;
  every candidate failing is one error naming each reason.
* :func:`verify_checkpoint`: a ``shared/`` file that is missing, cut or damaged with
  the same size (only its crc32 tells) makes the checkpoint invalid, and every failing
  file of a checkpoint is named, not only the first.
* The job folder's records, and what a killed run leaves (orphans), are listed and
  removed; a storage that starts removes its own never-completed ``chk-<n>`` folders.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import msgspec
import pytest

from storage.checkpoint import (
    Candidate,
    CheckpointVerificationError,
    FileCheckpointStorage,
    NoValidCheckpointError,
    RecoveryPlanner,
    RestoreRefusedError,
    SubtaskStateHandle,
    find_latest_valid,
    verify_checkpoint,
)
from storage.checkpoint.job_record import (
    add_restored_by,
    read_job_record,
    read_restored_by,
)
from storage.checkpoint.metadata import SharedFileHandle
from storage.checkpoint.recovery import plan_recovery
from storage.checkpoint.shared_files import find_orphans, remove_orphans
from tests.storage.checkpoint.conftest import MakeMetadata

# -- the planner, pure ----------------------------------------------------------------------


def candidates(*ids: int) -> list[Candidate]:
    return [Candidate(n, f"/jobs/j/chk-{n}") for n in ids]


def test_the_newest_candidate_that_verifies_is_chosen_and_the_rest_named() -> None:
    planner = RecoveryPlanner(candidates(1, 3, 2), sinks_skip_committed=True)
    assert [c.checkpoint_id for c in planner.candidates()] == [3, 2, 1]
    planner.reject(Candidate(3, "/jobs/j/chk-3"), "state file x is missing")
    decision = planner.choose(Candidate(2, "/jobs/j/chk-2"))
    assert decision.chosen == Candidate(2, "/jobs/j/chk-2")
    assert decision.committed == 3  # chk-3 completed: its completion may be notified
    assert decision.older_than_committed and not decision.forced
    [warning] = decision.warnings()
    assert warning.startswith("skipped checkpoint 3: state file x is missing")
    assert "set aside the output they committed after checkpoint 2" in warning, warning


def test_going_back_past_notified_output_is_refused_naming_both_and_the_option() -> None:
    planner = RecoveryPlanner(candidates(4, 5), where="/jobs/j")
    planner.reject(Candidate(5, "/jobs/j/chk-5"), "checkpoint metadata m is corrupt")
    with pytest.raises(RestoreRefusedError) as caught:
        planner.choose(Candidate(4, "/jobs/j/chk-4"))
    message = str(caught.value)
    assert "refusing restoring checkpoint 4 (/jobs/j/chk-4)" in message
    assert "checkpoint 5 (/jobs/j/chk-5) completed after it" in message
    assert "checkpoint 5 cannot be used: checkpoint metadata m is corrupt" in message
    assert "allow_older_than_committed=True" in message
    assert "--allow-older-than-committed" in message
    assert (caught.value.chosen.checkpoint_id, caught.value.committed) == (4, 5)


def test_a_recorded_notification_counts_even_when_its_folder_is_gone() -> None:
    # A synchronous savepoint (7) was notified; the folder holds checkpoints up to 6.
    planner = RecoveryPlanner(candidates(5, 6), committed=7, committed_pointer="/sp/7")
    with pytest.raises(RestoreRefusedError, match=r"checkpoint 7 \(/sp/7\) completed after it"):
        planner.choose(Candidate(6, "/jobs/j/chk-6"))


def test_forcing_goes_back_and_says_what_it_costs() -> None:
    planner = RecoveryPlanner(candidates(4, 5), allow_older_than_committed=True)
    planner.reject(Candidate(5, "/jobs/j/chk-5"), "broken")
    decision = planner.choose(Candidate(4, "/jobs/j/chk-4"))
    assert decision.forced and decision.older_than_committed
    assert "forced with allow_older_than_committed" in decision.warnings()[-1]


def test_the_newest_candidate_needs_no_permission() -> None:
    planner = RecoveryPlanner(candidates(4, 5), committed=5)
    decision = planner.choose(Candidate(5, "/jobs/j/chk-5"))
    assert not decision.older_than_committed and decision.warnings() == []


def test_every_candidate_failing_is_one_error_naming_each() -> None:
    planner = RecoveryPlanner(candidates(1, 2), sinks_skip_committed=True, where="/jobs/j")
    planner.reject(Candidate(2, "/jobs/j/chk-2"), "state file /jobs/j/chk-2/a is missing")
    planner.reject(Candidate(1, "/jobs/j/chk-1"), "shared file /jobs/j/shared/s is corrupt")
    with pytest.raises(NoValidCheckpointError) as caught:
        planner.give_up()
    message = str(caught.value)
    assert message.startswith("no valid checkpoint at /jobs/j:")
    assert "checkpoint 2: state file /jobs/j/chk-2/a is missing" in message
    assert "checkpoint 1: shared file /jobs/j/shared/s is corrupt" in message


def test_starting_from_nothing_after_committed_output_is_refused() -> None:
    # A restart whose every checkpoint is gone: even a FileSink cannot skip (no state).
    planner = RecoveryPlanner([], committed=3, sinks_skip_committed=True)
    with pytest.raises(RestoreRefusedError, match="refusing starting from no checkpoint"):
        planner.give_up()
    assert RecoveryPlanner([]).give_up().chosen is None


def test_a_verifier_driven_plan_stops_at_the_first_that_verifies() -> None:
    tried: list[int] = []

    def verify(candidate: Candidate) -> str:
        tried.append(candidate.checkpoint_id)
        if candidate.checkpoint_id == 3:
            raise CheckpointVerificationError(candidate.pointer, ["shared file s is missing"])
        return f"loaded {candidate.checkpoint_id}"

    planner = RecoveryPlanner(candidates(1, 2, 3), sinks_skip_committed=True)
    decision, loaded = plan_recovery(planner, verify)
    assert tried == [3, 2] and loaded == "loaded 2"
    assert decision.skipped[0].reason.endswith("shared file s is missing; it will not be used")


# -- verification of shared files -------------------------------------------------------------


async def take_incremental(
    storage: FileCheckpointStorage, make_metadata: MakeMetadata, n: int, shared: dict[str, bytes]
) -> Path:
    """A checkpoint whose subtask 0 uses ``shared`` files of the job's shared/ folder."""
    handle = await storage.write_state(n, "count-0", [b"state of %d" % n])
    metadata = make_metadata(n, [handle])
    folder = storage.job_dir / "shared"
    folder.mkdir(exist_ok=True)
    handles = []
    for name, data in shared.items():
        (folder / name).write_bytes(data)
        handles.append(SharedFileHandle(name, len(data), f"{zlib.crc32(data):08x}"))
    operator = metadata.operators[0]
    subtask: SubtaskStateHandle = operator.subtasks[0]
    subtask = msgspec.structs.replace(subtask, shared=handles)
    operator = msgspec.structs.replace(operator, subtasks=[subtask])
    metadata = msgspec.structs.replace(metadata, operators=[operator])
    return Path(await storage.commit(metadata))


@pytest.mark.parametrize("damage", ["missing", "cut", "flipped byte"])
async def test_a_damaged_shared_file_makes_the_checkpoint_invalid(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata, damage: str
) -> None:
    await file_storage.initialize()
    older = await take_incremental(file_storage, make_metadata, 1, {"sst-a": b"a" * 100})
    await take_incremental(file_storage, make_metadata, 2, {"sst-b": b"b" * 100})
    bad = file_storage.job_dir / "shared" / "sst-b"
    if damage == "missing":
        bad.unlink()
    elif damage == "cut":
        bad.write_bytes(b"b" * 50)
    else:
        bad.write_bytes(b"b" * 99 + b"c")  # same size: only the crc32 tells

    expected = {
        "missing": "is missing or unreadable",
        "cut": "has 50 bytes, the metadata says 100",
        "flipped byte": "checksum mismatch",
    }[damage]
    with pytest.raises(CheckpointVerificationError, match=re.escape(str(bad)) + ".*" + expected):
        verify_checkpoint(file_storage.checkpoint_dir(2), checksums=False)
    latest, skipped = find_latest_valid(file_storage.job_dir)
    assert latest is not None and latest[0] == older
    assert len(skipped) == 1 and str(bad) in skipped[0]


async def test_every_failing_file_of_a_checkpoint_is_named(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    folder = await take_incremental(
        file_storage, make_metadata, 1, {"sst-a": b"a" * 10, "sst-b": b"b" * 10}
    )
    (folder / "count-0").unlink()
    (file_storage.job_dir / "shared" / "sst-a").unlink()
    (file_storage.job_dir / "shared" / "sst-b").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointVerificationError) as caught:
        verify_checkpoint(folder, checksums=False)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert str(folder / "count-0") in problems[0]
    assert str(file_storage.job_dir / "shared" / "sst-a") in problems[1]
    assert "checksum mismatch" in problems[2]


# -- job folder records and orphans -----------------------------------------------------------


async def test_the_job_record_keeps_the_newest_notified_and_the_end(
    file_storage: FileCheckpointStorage,
) -> None:
    await file_storage.initialize()
    await file_storage.record_notified(5, "/x/chk-5")
    await file_storage.record_notified(4, "/x/chk-4")  # older: changes nothing
    record = read_job_record(file_storage.job_dir)
    assert record is not None and (record.notified, record.status) == (5, "running")
    await file_storage.record_job_end("finished", notified=6)
    record = read_job_record(file_storage.job_dir)
    assert record is not None
    assert (record.notified, record.status, record.job_id) == (6, "finished", "job-1")
    assert record.ended_at is not None


def test_restores_are_recorded_oldest_first(tmp_path: Path) -> None:
    assert read_restored_by(tmp_path) == []
    add_restored_by(tmp_path, "run-2", 3, str(tmp_path / "chk-3"))
    add_restored_by(tmp_path, "run-3", 3, str(tmp_path / "chk-3"))
    assert [(r.job_id, r.checkpoint_id) for r in read_restored_by(tmp_path)] == [
        ("run-2", 3),
        ("run-3", 3),
    ]
    (tmp_path / "_restored_by").write_bytes(b"garbage")
    assert read_restored_by(tmp_path) == []  # a damaged record informs nothing


async def test_orphans_of_a_killed_run_are_listed_and_removed(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    await take_incremental(file_storage, make_metadata, 1, {"sst-a": b"a"})
    job_dir = file_storage.job_dir
    (job_dir / "shared" / "sst-left-behind").write_bytes(b"z")
    await file_storage.write_state(2, "count-0", [b"never completed"])
    assert find_orphans(job_dir) == [job_dir / "chk-2", job_dir / "shared" / "sst-left-behind"]
    assert remove_orphans(job_dir) == [
        job_dir / "chk-2",
        job_dir / "shared" / "sst-left-behind",
    ]
    assert find_orphans(job_dir) == []
    assert (job_dir / "shared" / "sst-a").exists() and (job_dir / "chk-1").exists()


async def test_a_starting_storage_removes_its_never_completed_checkpoints(
    file_storage: FileCheckpointStorage, make_metadata: MakeMetadata
) -> None:
    await file_storage.initialize()
    await take_incremental(file_storage, make_metadata, 1, {"sst-a": b"a"})
    await file_storage.write_state(2, "count-0", [b"never completed"])
    (file_storage.job_dir / "shared" / "sst-unused").write_bytes(b"u")
    again = FileCheckpointStorage(file_storage.directory, file_storage.job_id)
    await again.initialize()  # the registry starts for the folder
    assert sorted(p.name for p in file_storage.job_dir.iterdir()) == ["chk-1", "shared"]
    assert [p.name for p in (file_storage.job_dir / "shared").iterdir()] == ["sst-a"]
