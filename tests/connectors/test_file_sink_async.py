"""FileSink writes through aiofiles, and its pre-commit (flush, fsync, move to pending)
is the asynchronous part of its snapshot (``TwoPhaseCommitSink`` with an ``async``
``pre_commit``).

* The pre-commit runs while records go on into the next transaction: a checkpoint is
  acknowledged only once its part file is pending, so every completed checkpoint's
  transactions are durable (the exactly-once end-to-end tests cover the output).
* A pre-commit that fails fails the subtask: the checkpoint is declined, the job
  restarts from the latest completed checkpoint, and the output is still exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime import (
    FileSink,
    FixedDelayRestart,
    JobStatus,
    NoRestart,
    StreamEnvironment,
    read_committed,
)
from runtime.testing import FailingSink, FailureSchedule, InjectedFailure
from runtime.testing.failures import Phase

COUNT = 2_000


class FailsOnce(FileSink):
    """Its first pre-commit with data fails (once over all subtasks and restarts)."""

    failures: list[str] = []  # shared by the per-subtask copies, on purpose

    async def _finish_part(self, part: Any) -> None:
        if not FailsOnce.failures:
            FailsOnce.failures.append(part.path.name)
            part.raw.close()
            raise OSError(f"no space left on device (injected) writing {part.path.name}")
        await super()._finish_part(part)


async def test_a_failed_pre_commit_restarts_the_job_and_the_output_stays_exactly_once(
    tmp_path: Path,
) -> None:
    FailsOnce.failures = []
    out = tmp_path / "out"
    env = StreamEnvironment(parallelism=2, buffer_size=64)
    env.enable_checkpointing(0.01, storage=(tmp_path / "checkpoints").as_uri())
    env.set_restart_strategy(FixedDelayRestart(attempts=3, delay=0.0))
    (
        env.from_sequence(0, COUNT - 1, uid="numbers")
        .map(lambda x: x, name="identity", uid="identity")
        .sink_to(FailsOnce(out), name="files", uid="files")
    )
    result = await env.execute("pre-commit fails")
    assert FailsOnce.failures, "the injected failure never happened"
    assert result.status is JobStatus.FINISHED
    assert result.restarts >= 1
    lines = [int(line) for line in read_committed(out)]
    assert sorted(lines) == list(range(COUNT)), "records lost or duplicated"
    # Nothing of the failed transaction is left in the folders of part files.
    leftovers = [p.name for p in (out / ".pending").iterdir()]
    assert leftovers == []


async def test_pre_commit_is_asynchronous_and_records_flow_into_the_next_transaction(
    tmp_path: Path,
) -> None:
    from runtime.tasks.context import RuntimeContext
    from storage import OperatorStateBackend

    sink = FileSink(tmp_path / "out")
    ctx = RuntimeContext(
        operator_name="files",
        subtask_index=0,
        parallelism=1,
        max_parallelism=128,
        job_name="files",
        operator_backend=OperatorStateBackend(allow_pickle=False),
        checkpointing_enabled=True,
    )
    sink.initialize_state(ctx)
    await sink.write_batch(["a", "b"])
    pre_commit = sink.snapshot_state(1)
    assert pre_commit is not None  # the file is not pending yet
    assert list((tmp_path / "out" / ".pending").iterdir()) == []
    await sink.write_batch(["c"])  # the next transaction, while the pre-commit waits
    await pre_commit
    assert len(list((tmp_path / "out" / ".pending").iterdir())) == 1
    sink.notify_checkpoint_complete(1)
    assert read_committed(tmp_path / "out") == ["a", "b"]
    sink.close()  # the open transaction ("c") is aborted: its records come again
    assert read_committed(tmp_path / "out") == ["a", "b"]


def counted_job(tmp_path: Path, sink: Any) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=2, buffer_size=64)
    env.enable_checkpointing(0.01, storage=(tmp_path / "checkpoints").as_uri())
    (
        env.from_sequence(0, COUNT - 1, uid="numbers")
        .map(lambda x: x, name="identity", uid="identity")
        .rebalance()
        .sink_to(sink, name="files", uid="files")
    )
    return env


@pytest.mark.parametrize("when", ["snapshot", "processing"])
async def test_a_wrapped_file_sink_hands_its_pre_commit_on(tmp_path: Path, when: str) -> None:
    """The testing kit's FailingSink around a FileSink (no rolling: every pre-commit is
    asynchronous), with a failure in the snapshot or in processing: exactly once."""
    out = tmp_path / "out"
    if when == "snapshot":
        failure = InjectedFailure("sink", subtask=0, phase=Phase.SNAPSHOT, after_records=10)
    else:
        failure = InjectedFailure("sink", subtask=0, after_records=500)
    schedule = FailureSchedule([failure])
    env = counted_job(tmp_path, FailingSink(FileSink(out), schedule))
    env.set_restart_strategy(FixedDelayRestart(attempts=3, delay=0.0))
    result = await env.execute("wrapped")
    assert [f.failure for f in schedule.fired] == [failure]
    assert result.status is JobStatus.FINISHED
    assert sorted(int(line) for line in read_committed(out)) == list(range(COUNT))


class DropsItsPreCommit(FileSink):
    """A subclass written to the old contract: it drops what snapshot_state returned."""

    def snapshot_state(self, checkpoint_id: int) -> None:  # type: ignore[override]
        work = super().snapshot_state(checkpoint_id)
        if work is not None:
            work.close()  # type: ignore[attr-defined]  # dropped (closed: no warning)


async def test_a_dropped_pre_commit_fails_the_job_instead_of_losing_records(
    tmp_path: Path,
) -> None:
    env = counted_job(tmp_path, DropsItsPreCommit(tmp_path / "out"))
    env.set_restart_strategy(NoRestart())
    with pytest.raises(Exception, match="did not finish"):
        await env.execute("drops")
