"""Restoring from bad input, and resuming from a retained checkpoint exactly.

Real checkpoints first: a job (a rate-limited generator, a keyed running sum, an
exactly-once ``FileSink``) runs to its end with file storage, checkpoints every 20 ms and
``RETAIN_ON_CANCELLATION`` with ``retained=2``, which leaves its last two checkpoints on
disk. Each test copies that job folder and damages the copy:

* a ``_metadata`` with a flipped byte or cut short: restoring from the job's folder falls
  back to the previous checkpoint with a ``RestoreWarning`` naming the file; restoring
  from that checkpoint (its folder or its ``_metadata``) is an error naming the file;
* a state file deleted or cut short: the same, the messages naming the state file;
* every retained checkpoint damaged: one error saying there is no valid checkpoint and
  naming every file that failed, and why;
* a checkpoint of another job (an operator uid the job lacks): a ``ConfigError`` naming
  the uid and suggesting ``allow_non_restored_state``, with which the job runs; another
  max parallelism: a ``ConfigError``; a path with no checkpoint: a ``ConfigError``.

``execute`` reports a restore that fails as a ``JobFailedError`` whose ``__cause__`` is
the error (the message repeats it); ``start`` raises the error itself, before anything
runs. :func:`restore_error` accepts both shapes so that the tests pin the error, not the
wrapper.

Last, resuming continues exactly: a job cancelled half way (``JobClient.cancel``) and
resumed from its job folder ends with the same keyed state (final running sums) and the
same committed ``FileSink`` output, each record once, as a run without the cancel; also
when it resumes with another parallelism (scaled down to 1, up to 3).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    ConfigError,
    ExternalizedCheckpointRetention,
    FileSink,
    JobFailedError,
    JobResult,
    JobStatus,
    KeyedProcessFunction,
    NoRestart,
    RestoreWarning,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
    read_committed,
)
from runtime.connectors.sequence import GeneratorSource
from runtime.testing.gates import GatedSource, SourceGate
from storage.checkpoint import (
    METADATA_FILE,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    find_latest_valid,
    load_metadata_file,
)

KEYS = 7
COUNT = 3_000
RATE = 10_000.0
MAX_PARALLELISM = 128
UIDS = {"source": "numbers", "tag": "tag", "sum": "sum", "sink": "files"}


class RunningSum(KeyedProcessFunction):
    """The running sum of each key's numbers, in keyed state: ``"<key> <i> <sum>"``."""

    def open(self, ctx: RuntimeContext) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: tuple[int, int], ctx: RuntimeContext) -> list[str]:
        key, i = value
        total = self.total.value() + i
        self.total.update(total)
        return [f"{key} {i} {total}"]


def make_env(
    checkpoints: Path,
    out: Path,
    *,
    uids: dict[str, str] = UIDS,
    parallelism: int = 2,
    max_parallelism: int = MAX_PARALLELISM,
    count: int = COUNT,
    rate: float | None = RATE,
    gate: SourceGate | None = None,
) -> StreamEnvironment:
    """The job: numbers -> (key, i) -> running sum per key -> FileSink(out).

    With ``gate``, the numbers come through a ``GatedSource`` (same uid and splits).
    """
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=max_parallelism)
    env.enable_checkpointing(
        0.02,
        storage=checkpoints.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    env.set_restart_strategy(NoRestart())
    if gate is None:
        numbers = env.generate(lambda i: i, count, records_per_second=rate, uid=uids["source"])
    else:
        source = GatedSource(GeneratorSource(lambda i: i, count, rate), gate)
        numbers = env.from_source(source, name="numbers", uid=uids["source"])
    (
        numbers.map(lambda i: (i % KEYS, i), name="tag", uid=uids["tag"])
        .key_by(lambda pair: pair[0])
        .process(RunningSum(), name="sum", uid=uids["sum"])
        .sink_to(FileSink(out), name="files", uid=uids["sink"])
    )
    return env


def job_folder(checkpoints: Path, result: JobResult) -> Path:
    return checkpoints / result.job_id


def completed(folder: Path) -> list[Path]:
    """The ``chk-<n>`` folders with a ``_metadata``, oldest first."""
    found = [p for p in folder.glob("chk-*") if (p / METADATA_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("chk-")))


def restored_from(result: JobResult) -> Path:
    assert result.checkpoints is not None and result.checkpoints.restored_from is not None
    return Path(result.checkpoints.restored_from)


def check_exactly_once(out: Path, count: int = COUNT) -> None:
    """Each number once in the committed output; per key, the sums are a running sum."""
    numbers = []
    per_key: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line in read_committed(out):
        key, i, total = map(int, line.split())
        assert key == i % KEYS, line
        numbers.append(i)
        per_key[key].append((total, i))
    assert sorted(numbers) == list(range(count)), "committed output is not exactly-once"
    for key, sums in per_key.items():
        previous = 0
        for total, i in sorted(sums):
            # Each sum is the previous one plus this record: nothing counted twice or lost
            # in the keyed state, whatever the order in which the key's records came.
            assert total == previous + i, f"key {key}: sum {total} after {previous} + {i}"
            previous = total
        assert previous == sum(range(key, count, KEYS)), key


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished job's folder with its last two checkpoints; never modified."""
    root = tmp_path_factory.mktemp("pristine")
    checkpoints = root / "checkpoints"
    job = make_env(checkpoints, root / "out").execute("restore errors")
    result = asyncio.run(asyncio.wait_for(job, timeout=60))  # outside the tests' deadline
    assert result.status is JobStatus.FINISHED
    folder = job_folder(checkpoints, result)
    assert len(completed(folder)) == 2, sorted(p.name for p in folder.iterdir())
    return folder


@pytest.fixture
def job(tmp_path: Path, pristine: Path) -> Path:
    """A copy of the pristine job folder, for a test to damage."""
    copy = tmp_path / "checkpoints" / pristine.name
    shutil.copytree(pristine, copy)
    # These tests damage files; the warning for a finished job's folder (what its
    # _job record says) is pinned in tests/e2e/test_recovery_planner.py.
    (copy / "_job").unlink()
    return copy


def newest(folder: Path) -> Path:
    return completed(folder)[-1]


def previous(folder: Path) -> Path:
    return completed(folder)[-2]


def state_file(checkpoint: Path, uid: str = UIDS["sum"]) -> Path:
    """A state file of ``checkpoint`` that holds state of operator ``uid``."""
    metadata = load_metadata_file(checkpoint)
    for operator in metadata.operators:
        if operator.uid == uid:
            for subtask in operator.subtasks:
                if subtask.handle is not None:
                    return checkpoint / subtask.handle.path
    raise AssertionError(f"no state file of {uid!r} in {checkpoint}")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@contextmanager
def restore_error(kind: type[BaseException], match: str) -> Iterator[Any]:
    """Expect ``kind`` matching ``match``: raised, or the cause of a ``JobFailedError``."""
    with pytest.raises((kind, JobFailedError)) as caught:
        yield caught
    error = caught.value
    if isinstance(error, JobFailedError) and not isinstance(error, kind):
        assert error.result.status is JobStatus.FAILED
        error = error.__cause__
    assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
    assert re.search(match, str(error)), f"{match!r} not in {error}"


async def restore(tmp_path: Path, restore_from: Path | str, **options: Any) -> JobResult:
    """Run the same job from ``restore_from`` (into fresh folders)."""
    allow = options.pop("allow_non_restored_state", False)
    env = make_env(tmp_path / "restored-checkpoints", tmp_path / "restored-out", **options)
    return await env.execute(
        "restore errors", restore_from=restore_from, allow_non_restored_state=allow
    )


# -- a corrupt or truncated _metadata -----------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "empty"])
async def test_corrupt_newest_metadata_falls_back_with_a_warning(
    tmp_path: Path, job: Path, damage: str
) -> None:
    bad, good = newest(job) / METADATA_FILE, previous(job)
    if damage == "flipped byte":
        flip_byte(bad, len(bad.read_bytes()) // 2)
    elif damage == "truncated":
        truncate(bad)
    else:
        bad.write_bytes(b"")

    with pytest.warns(RestoreWarning, match=re.escape(str(bad))) as warned:
        result = await restore(tmp_path, job)

    assert result.status is JobStatus.FINISHED
    assert restored_from(result) == good
    assert len(warned) == 1, [str(w.message) for w in warned]
    assert "corrupt" in str(warned[0].message)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
@pytest.mark.parametrize("pointer", ["folder", "metadata file"])
async def test_corrupt_metadata_named_directly_is_an_error_naming_it(
    tmp_path: Path, job: Path, damage: str, pointer: str
) -> None:
    bad = newest(job) / METADATA_FILE
    if damage == "flipped byte":
        flip_byte(bad, len(bad.read_bytes()) // 2)
    else:
        truncate(bad)
    target = bad.parent if pointer == "folder" else bad

    # A cut keeps the header: the body's crc32 no longer matches it.
    with restore_error(CorruptCheckpointError, re.escape(str(bad)) + ".*checksum mismatch"):
        await restore(tmp_path, target)


# -- a missing or damaged state file --------------------------------------------------------


async def test_missing_state_file_falls_back_from_the_job_folder(tmp_path: Path, job: Path) -> None:
    gone = state_file(newest(job))
    gone.unlink()

    with pytest.warns(RestoreWarning, match=re.escape(str(gone))) as warned:
        result = await restore(tmp_path, job)

    assert restored_from(result) == previous(job)
    assert "missing" in str(warned[0].message)


async def test_missing_state_file_named_directly_is_an_error_naming_it(
    tmp_path: Path, job: Path
) -> None:
    gone = state_file(newest(job))
    gone.unlink()

    with restore_error(CheckpointNotFoundError, re.escape(str(gone))):
        await restore(tmp_path, newest(job))


async def test_truncated_state_file_falls_back_from_the_job_folder(
    tmp_path: Path, job: Path
) -> None:
    cut = state_file(newest(job))
    truncate(cut)

    with pytest.warns(RestoreWarning, match=re.escape(str(cut))):
        result = await restore(tmp_path, job)

    assert restored_from(result) == previous(job)


async def test_truncated_state_file_named_directly_is_an_error_naming_it(
    tmp_path: Path, job: Path
) -> None:
    cut = state_file(newest(job))
    truncate(cut)

    with restore_error(CorruptCheckpointError, re.escape(str(cut))):
        await restore(tmp_path, newest(job))


async def test_flipped_byte_in_state_file_named_directly_is_an_error_naming_it(
    tmp_path: Path, job: Path
) -> None:
    bad = state_file(newest(job))
    flip_byte(bad, len(bad.read_bytes()) // 2)

    with restore_error(CorruptCheckpointError, re.escape(str(bad)) + ".*checksum"):
        await restore(tmp_path, newest(job))


async def test_flipped_byte_in_state_file_falls_back_from_the_job_folder(
    tmp_path: Path, job: Path
) -> None:
    # Same size, wrong crc32: only reading the file finds it out.
    bad = state_file(newest(job))
    flip_byte(bad, len(bad.read_bytes()) // 2)

    with pytest.warns(RestoreWarning, match=re.escape(str(bad)) + ".*checksum mismatch"):
        result = await restore(tmp_path, job)

    assert restored_from(result) == previous(job)


async def test_every_checkpoint_damaged_is_one_error_naming_every_file(
    tmp_path: Path, job: Path
) -> None:
    bad_metadata = newest(job) / METADATA_FILE
    gone = state_file(previous(job))
    flip_byte(bad_metadata, 3)
    gone.unlink()

    with restore_error(ConfigError, "no valid checkpoint at " + re.escape(str(job))) as caught:
        await restore(tmp_path, job)

    message = str(caught.value)
    assert str(bad_metadata) in message and "wrong magic bytes" in message, message
    assert str(gone) in message and "does not exist" in message, message


def test_the_offline_scan_agrees_with_the_restore(job: Path) -> None:
    """``find_latest_valid`` picks the checkpoint a restore falls back to, and says why."""
    truncate(newest(job) / METADATA_FILE)
    scan = find_latest_valid(job)
    assert scan.latest is not None and scan.latest[0] == previous(job)
    assert len(scan.skipped) == 1 and str(newest(job) / METADATA_FILE) in scan.skipped[0]


# -- a checkpoint that does not fit the job -----------------------------------------------------


async def test_checkpoint_of_another_job_names_the_uid(tmp_path: Path, job: Path) -> None:
    other = {**UIDS, "sum": "sum-v2"}

    with restore_error(
        ConfigError, r"uid 'sum' \(operator 'sum'\).*allow_non_restored_state=True"
    ) as caught:
        await restore(tmp_path, job, uids=other)
    assert str(newest(job)) in str(caught.value)


async def test_checkpoint_of_another_job_is_refused_by_start_before_it_runs(
    tmp_path: Path, job: Path
) -> None:
    env = make_env(tmp_path / "c", tmp_path / "o", uids={**UIDS, "sum": "sum-v2"})
    with pytest.raises(ConfigError, match=r"uid 'sum'.*allow_non_restored_state"):
        await env.start("restore errors", restore_from=job)


async def test_allow_non_restored_state_skips_the_unknown_uid(tmp_path: Path, job: Path) -> None:
    other = {**UIDS, "sum": "sum-v2"}

    result = await restore(tmp_path, job, uids=other, allow_non_restored_state=True)

    assert result.status is JobStatus.FINISHED
    assert restored_from(result) == newest(job)


async def test_another_max_parallelism_is_an_error(tmp_path: Path, job: Path) -> None:
    with restore_error(
        ConfigError,
        r"cannot restore operator '[a-z]+' \(uid '[a-z]+'\) from "
        + re.escape(str(newest(job)))
        + ": its max parallelism was 128, the job's is 64",
    ):
        await restore(tmp_path, job, max_parallelism=64)


@pytest.mark.parametrize("where", ["empty folder", "missing path", "chk folder without metadata"])
async def test_no_checkpoint_at_the_path_is_an_error(tmp_path: Path, job: Path, where: str) -> None:
    if where == "empty folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif where == "missing path":
        path = tmp_path / "no" / "such" / "folder"
    else:
        path = newest(job)
        (path / METADATA_FILE).unlink()

    with restore_error(ConfigError, "no valid checkpoint at " + re.escape(str(path))):
        await restore(tmp_path, path)


async def test_metadata_file_path_restores(tmp_path: Path, job: Path) -> None:
    result = await restore(tmp_path, newest(job) / METADATA_FILE)
    assert restored_from(result) == newest(job)


async def test_file_uri_restores(tmp_path: Path, job: Path) -> None:
    result = await restore(tmp_path, job.as_uri())
    assert restored_from(result) == newest(job)


# -- resuming continues exactly ------------------------------------------------------------


async def cancel_half_way(checkpoints: Path, out: Path, count: int) -> JobResult:
    """Start the job, cancel it after a checkpoint of its first half, before its end.

    The source holds after half of the records and never ends (a ``GatedSource`` whose
    gate stays shut), so the job cannot end before the cancel however fast it runs; a
    checkpoint triggered once the source held covers every record it read.
    """
    gate = SourceGate(hold_after=count // 2, hold_at_end=True)
    env = make_env(checkpoints, out, count=count, gate=gate)
    client = await env.start("resume")
    await gate.wait_held()
    await client.trigger_checkpoint()
    assert client.status is JobStatus.RUNNING
    client.cancel()
    result = await client.wait()
    assert result.status is JobStatus.CANCELED
    return result


async def test_resume_after_cancel_is_exactly_once(tmp_path: Path) -> None:
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    count = 6_000
    first = await cancel_half_way(checkpoints, out, count)
    sink_in_first = first.records_in("files")
    # The checkpoint of the first half passed the sink after its records.
    assert count // 2 <= sink_in_first < count
    folder = job_folder(checkpoints, first)
    assert completed(folder), "RETAIN_ON_CANCELLATION kept no checkpoint"
    committed_first = read_committed(out)

    second = await make_env(checkpoints, out, count=count).execute("resume", restore_from=folder)

    assert second.status is JobStatus.FINISHED
    assert restored_from(second) == newest(folder)
    # What the first run committed stays; the second run adds the rest.
    assert set(committed_first) <= set(read_committed(out))
    check_exactly_once(out, count)
    # The sink saw every record at least once over both runs; the second run replays
    # only what followed the restored checkpoint.
    assert sink_in_first + second.records_in("files") >= count
    assert second.records_in("files") < count


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_resume_with_another_parallelism_is_exactly_once(
    tmp_path: Path, parallelism: int
) -> None:
    """Rescaling on restore: key groups, source splits and pending transactions move."""
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    count = 6_000
    first = await cancel_half_way(checkpoints, out, count)
    folder = job_folder(checkpoints, first)

    env = make_env(checkpoints, out, count=count, parallelism=parallelism)
    second = await env.execute("resume", restore_from=folder)

    assert second.status is JobStatus.FINISHED
    assert second.operators["sum"].parallelism == parallelism
    check_exactly_once(out, count)
