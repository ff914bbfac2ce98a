"""Recovery never duplicates committed output, and says what it restores and why.

Each job here is small (parallelism 1, a number sequence behind a ``SourceGate``) and
checkpoints only when the test says so (``trigger_checkpoint``; the interval is an hour),
so which checkpoint holds which records is known exactly:

* c1 is taken once the source held after ``HALF`` records (its sink then commits them),
  and the job's final checkpoint commits the rest; ``retained=2`` keeps both.
* Damage the final one and restore from the job's folder into the same output folder:
  the planner falls back to c1, the ``FileSink`` sets aside the part files committed
  after c1 (into ``.superseded/``) and writes those records again: each record once.
* The same with a two-phase-commit sink that cannot skip its committed output (a
  ``FileSink`` subclass that says so, which also pins that a subclass keeps its
  overrides): the restore is refused with an error naming both checkpoints and the
  option; forced with ``allow_older_than_committed=True``, it writes those records twice,
  which is what the refusal protects against.
* A restart inside a running job falls back past a damaged newest retained checkpoint
  (it used to fail at once) and the job ends with each record once.
* A finished job's folder, and a checkpoint a later run already continued from, warn.
* A RocksDB incremental checkpoint with a damaged ``shared/`` file is not chosen, and
  ``weir checkpoints --verify`` reports it invalid, naming the file.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    ExternalizedCheckpointRetention,
    FileSink,
    FixedDelayRestart,
    JobFailedError,
    JobResult,
    JobStatus,
    KeyedProcessFunction,
    NoRestart,
    NumberSequenceSource,
    RestoreWarning,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
    read_committed,
)
from runtime.api.client import JobClient
from runtime.cli.offline import scan_checkpoints
from runtime.scheduler.recovery import sinks_skip_committed
from runtime.testing.failures import FailureSchedule
from runtime.testing.gates import GatedSource, SourceGate
from runtime.testing.injection import FailingSink
from storage.checkpoint import METADATA_FILE, RestoreRefusedError, load_metadata_file
from storage.checkpoint.shared_files import shared_names

COUNT = 400
HALF = 200
ARMED = {"fail": False}


def fail_when_armed(value: int) -> int:
    """Identity; raises once when the test armed it (a deterministic task failure)."""
    if ARMED["fail"]:
        ARMED["fail"] = False
        raise RuntimeError("injected failure")
    return value


class PlainTwoPhaseSink(FileSink):
    """A two-phase-commit sink that cannot skip its committed output (most cannot)."""

    skips_committed_on_restore = False

    def _set_aside_superseded(self) -> None:
        """Override: leave committed output where it is."""


class UpperFileSink(FileSink):
    """A subclass whose override must survive the per-subtask copy."""

    async def write_batch(self, values: list[Any]) -> None:
        await super().write_batch([f"x{value}" for value in values])


def make_env(
    checkpoints: Path,
    out: Path,
    gate: SourceGate | None,
    *,
    sink: type[FileSink] = FileSink,
    restarts: int = 0,
) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(
        3600.0,  # triggered by hand
        storage=checkpoints.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    env.set_restart_strategy(
        FixedDelayRestart(attempts=restarts, delay=0.0) if restarts else NoRestart()
    )
    source: Any = NumberSequenceSource(0, COUNT - 1)
    if gate is not None:
        source = GatedSource(source, gate)
    (
        env.from_source(source, name="numbers", uid="numbers")
        .map(fail_when_armed, name="fail", uid="fail")
        .sink_to(sink(out), name="files", uid="files")
    )
    return env


def numbers(lines: list[str]) -> list[int]:
    return sorted(int(line) for line in lines)


def chk(folder: Path, checkpoint_id: int) -> Path:
    return folder / f"chk-{checkpoint_id}"


async def run_with_a_checkpoint_half_way(
    checkpoints: Path, out: Path, sink: type[FileSink] = FileSink
) -> tuple[Path, int, int]:
    """Run to the end with c1 after ``HALF`` records; return the folder, c1, final id."""
    gate = SourceGate(hold_after=HALF)
    client: JobClient = await make_env(checkpoints, out, gate, sink=sink).start("first")
    await gate.wait_held()
    first = await client.trigger_checkpoint()
    assert numbers(read_committed(out)) == list(range(HALF))  # c1 committed them
    gate.open()
    result = await client.wait()
    assert result.status is JobStatus.FINISHED
    assert numbers(read_committed(out)) == list(range(COUNT))
    folder = checkpoints / result.job_id
    kept = sorted(int(p.parent.name[4:]) for p in folder.glob("chk-*/_metadata"))
    assert kept[0] == first.checkpoint_id and len(kept) == 2, kept
    return folder, first.checkpoint_id, kept[-1]


def damage_metadata(folder: Path) -> Path:
    metadata = folder / METADATA_FILE
    data = bytearray(metadata.read_bytes())
    data[len(data) // 2] ^= 0xFF
    metadata.write_bytes(bytes(data))
    return metadata


# -- restore_from a folder whose newest checkpoint is broken -----------------------------------


async def test_falling_back_past_committed_output_writes_each_record_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    folder, first, final = await run_with_a_checkpoint_half_way(tmp_path / "checkpoints", out)
    bad = damage_metadata(chk(folder, final))

    with pytest.warns(RestoreWarning) as warned:
        result = await make_env(tmp_path / "again", out, None).execute("again", restore_from=folder)

    assert result.status is JobStatus.FINISHED
    assert result.checkpoints is not None
    assert result.checkpoints.restored_from == str(chk(folder, first))
    messages = [str(w.message) for w in warned]
    skipped = [m for m in messages if f"skipped checkpoint {final}" in m]
    assert len(skipped) == 1 and str(bad) in skipped[0]
    assert f"older than checkpoint {final}" in skipped[0] and ".superseded" in skipped[0]
    assert any("finished" in m for m in messages), messages  # the first job ended
    # Each record once in the output; what the first run committed after c1 is set
    # aside, not deleted.
    assert numbers(read_committed(out)) == list(range(COUNT))
    assert numbers(read_committed(out / ".superseded")) == list(range(HALF, COUNT))


async def test_a_sink_that_cannot_skip_refuses_and_forcing_writes_twice(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    folder, first, final = await run_with_a_checkpoint_half_way(
        tmp_path / "checkpoints", out, PlainTwoPhaseSink
    )
    damage_metadata(chk(folder, final))
    env = make_env(tmp_path / "again", out, None, sink=PlainTwoPhaseSink)

    with pytest.raises(RestoreRefusedError) as caught:
        await env.execute("again", restore_from=folder)
    message = str(caught.value)
    assert f"restoring checkpoint {first} ({chk(folder, first)})" in message
    assert f"checkpoint {final} ({chk(folder, final)}) completed after it" in message
    assert "allow_older_than_committed=True" in message
    assert numbers(read_committed(out)) == list(range(COUNT))  # nothing written

    with pytest.warns(RestoreWarning) as warned:  # the first job finished, too
        result = await make_env(tmp_path / "forced", out, None, sink=PlainTwoPhaseSink).execute(
            "forced", restore_from=folder, allow_older_than_committed=True
        )
    assert result.status is JobStatus.FINISHED
    messages = [str(w.message) for w in warned]
    assert any("forced with allow_older_than_committed" in m for m in messages), messages
    # What the refusal protects against: the records after c1, committed twice.
    assert numbers(read_committed(out)) == sorted([*range(COUNT), *range(HALF, COUNT)])


def test_a_file_sink_subclass_keeps_its_overrides_when_copied(tmp_path: Path) -> None:
    sink = PlainTwoPhaseSink(tmp_path / "out", formatter=repr)
    sink.extra = ["kept"]  # type: ignore[attr-defined]
    clone = copy.deepcopy(sink)
    assert type(clone) is PlainTwoPhaseSink and not clone.skips_committed_on_restore
    assert clone.formatter is repr and clone.directory == sink.directory
    assert clone.extra == ["kept"] and clone.extra is not sink.extra  # type: ignore[attr-defined]


async def test_a_file_sink_subclass_writes_through_its_override(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = StreamEnvironment(parallelism=2)
    env.from_collection(list(range(10))).sink_to(UpperFileSink(out), uid="files")
    result = await env.execute("subclass")
    assert result.status is JobStatus.FINISHED
    assert sorted(read_committed(out)) == sorted(f"x{i}" for i in range(10))


@pytest.mark.parametrize(
    ("make_sink", "skips"),
    [
        (lambda out: FileSink(out), True),
        (lambda out: PlainTwoPhaseSink(out), False),
        (lambda out: FailingSink(PlainTwoPhaseSink(out), FailureSchedule([])), False),
        (lambda out: lambda value: None, True),  # no two-phase commit: nothing committed
    ],
    ids=["file-sink", "plain-two-phase", "wrapped-plain-two-phase", "plain-function"],
)
def test_the_planner_knows_which_sinks_skip_their_committed_output(
    tmp_path: Path, make_sink: Any, skips: bool
) -> None:
    env = StreamEnvironment(parallelism=1)
    env.from_collection([1]).sink_to(make_sink(tmp_path / "out"), uid="s")
    assert sinks_skip_committed(env.get_job_graph()) is skips


# -- a restart inside a running job --------------------------------------------------------------


async def test_a_restart_falls_back_past_a_damaged_newest_retained_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    gate = SourceGate(hold_after=HALF)
    env = make_env(tmp_path / "checkpoints", out, gate, restarts=1)
    client: JobClient = await env.start("restarted")
    await gate.wait_held()
    first = await client.trigger_checkpoint()
    newest = await client.trigger_checkpoint()
    bad = damage_metadata(Path(newest.pointer))
    ARMED["fail"] = True  # the next record fails the map
    gate.open()
    with caplog.at_level(logging.WARNING, logger="weir.restore"):
        result: JobResult = await client.wait()

    assert not ARMED["fail"], "the failure was injected"
    assert result.status is JobStatus.FINISHED and result.restarts == 1
    assert result.checkpoints is not None
    assert result.checkpoints.restored_from == first.pointer
    logged = [r.getMessage() for r in caplog.records if r.name == "weir.restore"]
    assert any(
        f"skipped checkpoint {newest.checkpoint_id}" in m and str(bad) in m for m in logged
    ), logged
    assert numbers(read_committed(out)) == list(range(COUNT))


async def test_a_restart_that_would_go_back_past_a_plain_sinks_output_fails_the_job(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    gate = SourceGate(hold_after=HALF)
    env = make_env(tmp_path / "checkpoints", out, gate, sink=PlainTwoPhaseSink, restarts=1)
    client: JobClient = await env.start("refused restart")
    await gate.wait_held()
    first = await client.trigger_checkpoint()
    newest = await client.trigger_checkpoint()
    damage_metadata(Path(newest.pointer))
    ARMED["fail"] = True
    gate.open()
    with pytest.raises(JobFailedError) as caught:
        await client.wait()

    assert not ARMED["fail"], "the failure was injected"
    cause = caught.value.__cause__
    assert isinstance(cause, RestoreRefusedError), repr(cause)
    assert (cause.chosen is not None and cause.chosen.checkpoint_id, cause.committed) == (
        first.checkpoint_id,
        newest.checkpoint_id,
    )
    assert numbers(read_committed(out)) == list(range(HALF))  # nothing written twice


# -- stale folders ---------------------------------------------------------------------------


async def test_restoring_a_finished_or_already_continued_job_warns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder, _first, final = await run_with_a_checkpoint_half_way(tmp_path / "checkpoints", out)

    with pytest.warns(RestoreWarning, match=rf"its job {folder.name} finished") as warned:
        await make_env(tmp_path / "again", tmp_path / "out2", None).execute(
            "again", restore_from=folder
        )
    assert len(warned) == 1, [str(w.message) for w in warned]

    with pytest.warns(RestoreWarning, match=rf"already continued from checkpoint {final}"):
        await make_env(tmp_path / "third", tmp_path / "out3", None).execute(
            "third", restore_from=chk(folder, final)
        )

    scan = scan_checkpoints(str(folder))
    [note] = scan["jobs"]
    assert note["status"] == "finished"
    assert [r["checkpoint_id"] for r in note["restored_by"]] == [final, final]
    assert note["orphans"] == []


async def test_a_job_leaves_no_empty_folders(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    _folder, _first, _final = await run_with_a_checkpoint_half_way(checkpoints, tmp_path / "o")
    [job_dir] = list(checkpoints.iterdir())
    assert sorted(p.name for p in job_dir.iterdir() if p.is_dir()) == [
        f"chk-{_first}",
        f"chk-{_final}",
    ]


# -- RocksDB incremental checkpoints: shared/ files ------------------------------------------------


class Count(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext) -> None:
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: int, ctx: RuntimeContext) -> list[Any]:
        self.count.update(self.count.value() + 1)
        return []


async def test_a_damaged_shared_file_is_not_chosen_and_verify_reports_it(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    env = StreamEnvironment(
        parallelism=1, max_parallelism=8, state_backend="rocksdb", incremental_checkpoints=True
    )
    env.enable_checkpointing(
        3600.0,
        storage=checkpoints.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=2,
    )
    gate = SourceGate(hold_after=HALF)
    (
        env.from_source(GatedSource(NumberSequenceSource(0, COUNT - 1), gate), uid="numbers")
        .key_by(lambda v: v % 5)
        .process(Count(), uid="count")
        .sink_to(lambda v: None, uid="none")
    )
    client: JobClient = await env.start("rocksdb")
    await gate.wait_held()
    await client.trigger_checkpoint()
    gate.open()
    result = await client.wait()
    assert result.status is JobStatus.FINISHED
    folder = checkpoints / result.job_id
    kept = sorted(folder.glob("chk-*/_metadata"))
    assert len(kept) == 2
    uses = {path.parent: shared_names(load_metadata_file(path.parent)) for path in kept}
    oldest, newest = sorted(uses, key=lambda p: int(p.name[4:]))
    # The records after the first checkpoint went into SST files only the newest uses.
    only_newest = sorted(uses[newest] - uses[oldest])
    assert only_newest, uses
    damaged = folder / "shared" / only_newest[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the crc32 tells
    damaged.write_bytes(bytes(data))

    scan = scan_checkpoints(str(folder), verify=True)
    [invalid] = [e for e in scan["checkpoints"] if not e["valid"]]
    assert Path(invalid["path"]) == newest
    assert str(damaged) in invalid["reason"] and "checksum mismatch" in invalid["reason"]
    quick = scan_checkpoints(str(folder))  # without --verify: sizes only
    assert all(e["valid"] for e in quick["checkpoints"])

    again = StreamEnvironment(parallelism=1, max_parallelism=8, state_backend="rocksdb")
    again.enable_checkpointing(3600.0)
    again.from_collection([1]).key_by(lambda v: v % 5).process(Count(), uid="count").sink_to(
        lambda v: None, uid="none"
    )
    with pytest.warns(RestoreWarning) as warned:  # the first job finished, too
        restored = await again.execute("again", restore_from=folder, allow_non_restored_state=True)
    assert any(str(damaged) in str(w.message) for w in warned)
    assert restored.checkpoints is not None
    assert restored.checkpoints.restored_from == str(oldest)
