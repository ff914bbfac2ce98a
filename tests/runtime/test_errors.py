"""Failures while a job runs, and the ``JobClient`` that starts, watches and cancels one.

A user function that raises fails the job: ``execute`` raises ``JobFailedError`` whose
``__cause__`` is an ``OperatorError`` naming the operator, the subtask and the record,
whose own ``__cause__`` is the user's exception. Every actor has stopped by then: no
asyncio task outlives the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from runtime import (
    JobFailedError,
    JobResult,
    JobStatus,
    MapFunction,
    OperatorError,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage import KeyEncodingError


class Boom(Exception):
    """The user's exception."""


def fail_on_42(value: int) -> int:
    if value == 42:
        raise Boom("no 42 here")
    return value


async def fail_on_42_async(value: int) -> int:
    await asyncio.sleep(0)
    return fail_on_42(value)


def subtask_reading(value: int, start: int, end: int, p: int) -> int:
    """Which subtask of ``from_sequence(start, end)`` at parallelism p reads ``value``."""
    total = end + 1 - start
    return next(i for i in range(p) if value < start + total * (i + 1) // p)


async def run_failing(env: StreamEnvironment) -> JobFailedError:
    """Execute a job that must fail; check that it left no task behind."""
    tasks_before = asyncio.all_tasks()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("failing")
    assert asyncio.all_tasks() == tasks_before
    assert caught.value.result.status is JobStatus.FAILED
    return caught.value


# -- a record fails ---------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2, 4], ids=lambda p: f"p{p}")
@pytest.mark.parametrize("fn", [fail_on_42, fail_on_42_async], ids=["sync", "async"])
async def test_map_raising_on_a_record_fails_the_job_naming_it(
    p: int, fn: Callable[[int], Any]
) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(0, 999).map(fn, name="picky").collect()

    error = await run_failing(env)

    k = subtask_reading(42, 0, 999, p)
    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert str(cause) == (
        f"operator 'picky' (subtask {k + 1}/{p}) raised Boom: no 42 here while processing record 42"
    )
    assert (cause.operator, cause.subtask, cause.parallelism, cause.record) == ("picky", k, p, 42)
    assert isinstance(cause.__cause__, Boom)
    assert str(error) == f"job 'failing' failed: {cause}"
    assert error.result.error == str(cause)
    assert error.result.job_name == "failing"


def _keyed_fail(value: int, ctx: RuntimeContext) -> list[int]:
    return [fail_on_42(value)]


@pytest.mark.parametrize(
    "attach",
    [
        lambda s: s.filter(lambda x: fail_on_42(x) > 0, name="picky").collect(),
        lambda s: s.flat_map(lambda x: [fail_on_42(x)], name="picky").collect(),
        lambda s: s.key_by(lambda x: x % 5).process(_keyed_fail, name="picky").collect(),
        lambda s: (
            s.key_by(lambda x: x % 5).reduce(lambda a, b: fail_on_42(b) + a, name="picky").collect()
        ),
        lambda s: s.sink_to(fail_on_42, name="picky"),
    ],
    ids=["filter", "flat_map", "process", "reduce", "sink"],
)
async def test_every_operator_names_the_failing_record(attach: Callable[[Any], Any]) -> None:
    env = StreamEnvironment(parallelism=2)
    attach(env.from_sequence(0, 99))

    error = await run_failing(env)

    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert cause.operator == "picky"
    assert "raised Boom: no 42 here while processing record 42" in str(cause)
    assert isinstance(cause.__cause__, Boom)


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "p"),
    [
        *(pytest.param(lambda x: object(), p, id=f"object-p{p}") for p in (1, 2, 4)),
        *(pytest.param(lambda x: [x], p, id=f"list-p{p}") for p in (1, 2, 4)),
    ],
)
async def test_a_key_the_stable_hash_cannot_encode_fails_the_job_naming_key_by(
    key: Callable[[int], Any], p: int
) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, 10).key_by(key).sum(name="total").collect()

    error = await run_failing(env)

    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert isinstance(cause.__cause__, KeyEncodingError)
    assert "key_by" in str(cause)
    assert "cannot hash key" in str(cause)
    if p > 1:
        # The record writer computes the key to route the record.
        assert cause.operator == "key_by before 'total -> collect'"
    else:
        # One consumer: nothing to route, the keyed operator finds the bad key.
        assert cause.operator == "total"


@pytest.mark.parametrize("p", [1, 2], ids=lambda p: f"p{p}")
async def test_an_unhashable_key_in_process_names_key_by(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, 10).key_by(lambda x: [x]).process(_keyed_fail).collect()

    error = await run_failing(env)

    assert isinstance(error.__cause__, OperatorError)
    assert isinstance(error.__cause__.__cause__, KeyEncodingError)
    assert "cannot hash key [1] of type 'list'" in str(error.__cause__)
    assert "key_by" in str(error.__cause__)


async def test_a_failing_key_selector_names_key_by() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(0, 99).key_by(fail_on_42).process(_keyed_fail, name="count").collect()

    error = await run_failing(env)

    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert cause.operator == "key_by before 'count -> collect'"
    assert "raised Boom: no 42 here while processing record 42" in str(cause)


# -- open and close ---------------------------------------------------------------------


class FailingHooks(MapFunction[int, int]):
    def __init__(self, phase: str, log: Any) -> None:
        self.phase = phase
        self.log = log
        self.subtask = -1

    def open(self, ctx: RuntimeContext) -> None:
        self.subtask = ctx.subtask_index
        self.log.append(("open", self.subtask))
        if self.phase == "open":
            raise Boom(f"cannot open {self.subtask}")

    def map(self, value: int) -> int:
        return value

    def close(self) -> None:
        self.log.append(("close", self.subtask))
        if self.phase == "close":
            raise Boom(f"cannot close {self.subtask}")


@pytest.mark.parametrize("phase", ["open", "close"])
async def test_an_error_in_open_or_close_names_the_phase(phase: str, log: Any) -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 100).map(FailingHooks(phase, log), name="hooks").collect()

    error = await run_failing(env)

    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert cause.operator == "hooks"
    assert str(cause) == (
        f"operator 'hooks' (subtask {cause.subtask + 1}/2) raised Boom: "
        f"cannot {phase} {cause.subtask} during {phase}()"
    )
    assert cause.record is None
    # Whatever ran: close at most once per subtask, and only after its open.
    for i in range(2):
        assert log.items.count(("close", i)) <= 1
        if ("close", i) in log.items:
            assert log.items.index(("open", i)) < log.items.index(("close", i))


async def test_keyed_state_without_key_by_fails_naming_the_operator() -> None:
    class NotKeyed(MapFunction[int, int]):
        def open(self, ctx: RuntimeContext) -> None:
            self.state = ctx.get_state(ValueStateDescriptor("count"))

        def map(self, value: int) -> int:
            return value

    env = StreamEnvironment()
    env.from_sequence(1, 10).map(NotKeyed(), name="counter").collect()

    error = await run_failing(env)

    assert "operator 'counter' (subtask 1/1) raised ConfigError" in str(error.__cause__)
    assert "keyed state 'count' is only available after key_by()" in str(error.__cause__)
    assert "during open()" in str(error.__cause__)


# -- sources ----------------------------------------------------------------------------


async def test_a_source_that_cannot_create_its_reader_fails_the_job() -> None:
    class Unreadable:
        def create_enumerator(self) -> Any:
            return self

        def assign_splits(self, parallelism: int) -> list[list[Any]]:
            return [[] for _ in range(parallelism)]

        def create_reader(self, subtask_index: int) -> Any:
            raise Boom("no reader")

    env = StreamEnvironment()
    env.from_source(Unreadable()).collect()

    error = await run_failing(env)

    assert isinstance(error.__cause__, Boom)


class FailingReader:
    """A custom reader whose read() fails on the batch holding record 42."""

    def __init__(self) -> None:
        self.next = 0

    def add_splits(self, splits: Any) -> None:
        pass

    def read(self, max_records: int) -> list[int] | None:
        batch = list(range(self.next, min(self.next + max_records, 100)))
        self.next += len(batch)
        for value in batch:
            fail_on_42(value)
        return batch or None

    def snapshot_state(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class FailingSource:
    max_source_parallelism = 1

    def create_enumerator(self) -> Any:
        return self

    def assign_splits(self, parallelism: int) -> list[list[Any]]:
        return [[] for _ in range(parallelism)]

    def create_reader(self, subtask_index: int) -> FailingReader:
        return FailingReader()


@pytest.mark.parametrize("source", ["generate", "custom"])
async def test_a_failing_source_fails_the_job_naming_the_source(source: str) -> None:
    env = StreamEnvironment(parallelism=2, buffer_size=10)
    if source == "generate":
        env.generate(fail_on_42, 100, name="numbers").collect()
    else:
        env.from_source(FailingSource(), name="numbers").collect()

    error = await run_failing(env)

    cause = error.__cause__
    assert isinstance(cause, OperatorError)
    assert cause.operator == "numbers"
    p = 2 if source == "generate" else 1
    assert str(cause) == (
        f"operator 'numbers' (subtask 1/{p}) raised Boom: no 42 here during reading the source"
    )
    assert isinstance(cause.__cause__, Boom)


# -- JobClient --------------------------------------------------------------------------


async def test_job_client_reports_running_then_finished() -> None:
    reached = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    async def gated(value: int) -> None:
        seen.append(value)
        reached.set()
        await release.wait()

    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 100).map(lambda x: x, name="copy").sink_to(gated, name="gated")

    client = await env.start("gated job")
    assert client.job_name == "gated job"
    assert len(client.job_id) == 32
    await reached.wait()

    assert client.status is JobStatus.RUNNING
    metrics = client.metrics()
    assert metrics["copy"].records_out > 0
    assert metrics["gated"].parallelism == 2

    release.set()
    result = await client.wait()

    assert client.status is JobStatus.FINISHED
    assert result.status is JobStatus.FINISHED
    assert result.job_id == client.job_id
    assert sorted(seen) == list(range(1, 101))
    assert client.metrics()["gated"].records_in == 100
    assert await client.wait() is result


async def test_job_client_cancels_an_unbounded_job() -> None:
    enough = asyncio.Event()
    seen = 0

    def count(value: int) -> None:
        nonlocal seen
        seen += 1
        if seen >= 1000:
            enough.set()

    env = StreamEnvironment(parallelism=2)
    env.generate(lambda i: i).sink_to(count, name="count")
    client = await env.start("unbounded")
    await enough.wait()
    assert client.status is JobStatus.RUNNING

    client.cancel()

    assert client.status is JobStatus.CANCELLING
    result = await client.wait()
    assert result.status is JobStatus.CANCELED
    assert client.status is JobStatus.CANCELED
    assert result.records_in("count") == seen >= 1000


async def test_job_client_wait_raises_when_the_job_fails() -> None:
    env = StreamEnvironment()
    env.from_sequence(0, 99).map(fail_on_42).collect()
    client = await env.start()

    with pytest.raises(JobFailedError) as caught:
        await client.wait()

    assert client.status is JobStatus.FAILED
    assert isinstance(caught.value.__cause__, OperatorError)


async def test_cancel_after_the_end_changes_nothing() -> None:
    env = StreamEnvironment()
    env.from_sequence(1, 10).collect()
    client = await env.start()
    result = await client.wait()

    client.cancel()

    assert client.status is JobStatus.FINISHED
    assert await client.wait() is result


async def test_cancel_before_the_job_started_runs_nothing() -> None:
    """The job's actors have not taken a step yet: none of them may run its body."""
    env = StreamEnvironment()
    env.generate(lambda i: i, name="numbers").collect()
    client = await env.start()

    client.cancel()
    result = await client.wait()

    assert result.status is JobStatus.CANCELED
    assert result.records_out("numbers") == 0


async def test_cancelling_the_task_that_runs_execute_stops_every_actor() -> None:
    """The conftest deadline wrapper then checks that no actor task is left."""
    enough = asyncio.Event()

    def watch(value: int) -> None:
        if value >= 1000:
            enough.set()

    env = StreamEnvironment(parallelism=2)
    env.generate(lambda i: i).sink_to(watch)
    job: asyncio.Task[JobResult] = asyncio.get_running_loop().create_task(env.execute())
    await enough.wait()

    job.cancel()

    with pytest.raises(asyncio.CancelledError):
        await job
