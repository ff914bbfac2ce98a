"""Failures are visible: logged under ``weir``, and the ones that cannot heal end the job.

* A user function that fails on a record, every time: each failure is logged on
  ``weir.scheduler`` with its operator, subtask and record (and the traceback), each
  restart with its number and delay, and the job fails when the restart strategy gives
  up, saying why.
* A checkpoint storage that cannot be written fails the job when it starts, with one
  error naming the folder, even with the default (unbounded) restart strategy: no
  attempt runs, nothing restarts.
* The library adds only a ``NullHandler`` to ``weir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runtime import FixedDelayRestart, JobFailedError, StreamEnvironment
from storage.checkpoint import StorageNotWritableError


def explode_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is not allowed")
    return value


def test_the_library_adds_a_null_handler() -> None:
    handlers = logging.getLogger("weir").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


async def test_failures_and_restarts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    env = StreamEnvironment(parallelism=1)
    env.set_restart_strategy(FixedDelayRestart(attempts=2, delay=0.0))
    env.from_collection([1, 2, 3, 4]).map(explode_on_three, name="checker").collect()
    with caplog.at_level(logging.INFO, logger="weir"), pytest.raises(JobFailedError) as raised:
        await env.execute("always fails")
    assert raised.value.result.restarts == 2
    scheduler = [r for r in caplog.records if r.name == "weir.scheduler"]
    failures = [r for r in scheduler if "failed:" in r.getMessage()]
    assert len(failures) == 3
    for attempt, record in enumerate(failures, start=1):
        message = record.getMessage()
        assert record.levelno == logging.ERROR
        assert f"job 'always fails', attempt {attempt}, failed" in message
        assert "operator 'checker' (subtask 1/1)" in message
        assert "ValueError: three is not allowed while processing record 3" in message
        assert record.exc_info is not None  # the traceback goes with it
    restarts = [r.getMessage() for r in scheduler if "restarts in" in r.getMessage()]
    assert restarts == [
        f"job 'always fails' restarts in 0s (restart {n}, restart strategy "
        "fixed-delay(attempts=2, delay=0s))"
        for n in (1, 2)
    ]
    assert scheduler[-1].getMessage() == (
        "job 'always fails' fails: the fixed-delay restart strategy used all 2 attempts"
    )


async def test_unwritable_checkpoint_storage_fails_the_job_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "checkpoints"
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(0.01, storage=folder.as_uri())  # default restarts: unbounded
    env.from_collection(list(range(10))).map(explode_on_three).collect()
    with caplog.at_level(logging.INFO, logger="weir"), pytest.raises(Exception) as raised:
        await env.execute("no storage")
    error = raised.value
    if isinstance(error, JobFailedError):  # raised by the run rather than before it
        assert error.result.restarts == 0
        error = error.__cause__  # type: ignore[assignment]
    assert isinstance(error, StorageNotWritableError)
    assert str(folder) in str(error)
    assert "choose another checkpoint directory" in str(error)
    assert not any("attempt" in r.getMessage() for r in caplog.records)  # no task ran
    logged = [r.getMessage() for r in caplog.records if r.name == "weir.scheduler"]
    assert logged and all(str(folder) in message for message in logged)
    assert "job 'no storage' cannot run" in logged[0]
