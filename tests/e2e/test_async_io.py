"""Async I/O (``async_map``) in whole jobs: results, limits, failures and checkpoints.

Calls that must stay in flight wait on ``asyncio.Event``s the test sets; nothing waits
for time to pass. What is checked:

* ordered mode emits in input order although calls complete out of order; unordered
  emits each result once; a list result is many records; keyed streams work;
* at most ``capacity`` calls are in flight per subtask, and the operator reaches it;
* the ``AsyncFunction`` class form: ``open``/``close``, the ``timeout`` hook; without a
  hook a timeout fails the job naming the operator, subtask and record, as does a call
  that raises; retry strategies retry on exceptions and on results;
* an unaligned checkpoint completes while calls are held in flight; restored from it
  (at the same parallelism, or rescaled), the records in flight are called again before
  any new input and the output is exactly-once; so with a stop-with-savepoint (canonical
  and native) and a two-phase-commit sink;
* a record that cannot be stored in the checkpoint declines it, naming the operator;
* what an operator emitted before it awaits reaches the next task within the buffer
  timeout (plain ``async def`` map and ``async_map``): the tests deadlock otherwise.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    AsyncFunction,
    CheckpointError,
    ExponentialBackoffRetry,
    ExternalizedCheckpointRetention,
    FileSink,
    FixedDelayRetry,
    JobFailedError,
    JobStatus,
    NumberSequenceSource,
    RuntimeContext,
    SavepointFormat,
    SinkFunction,
    StreamEnvironment,
    read_committed,
)
from runtime.testing.gates import GatedSource, SourceGate


async def yields(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_results_in_order_or_as_they_complete(ordered: bool) -> None:
    async def call(x: int) -> Any:
        await yields(x % 7)  # later records often complete first
        return [] if x % 10 == 3 else ([x, -x] if x % 10 == 5 else x * 2)

    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 299).async_map(call, capacity=8, ordered=ordered).collect(name="out")
    result = await env.execute("results")

    expected: list[int] = []
    for x in range(300):
        expected.extend([] if x % 10 == 3 else ([x, -x] if x % 10 == 5 else [x * 2]))
    out = result.collected["out"]
    if ordered:
        assert out == expected
    else:
        assert sorted(out) == sorted(expected) and out != expected


async def test_at_most_capacity_calls_in_flight_and_it_is_reached() -> None:
    capacity = 5
    state = {"now": 0, "most": 0}
    full = asyncio.Event()

    async def call(x: int) -> int:
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        if state["now"] == capacity:
            full.set()
        await full.wait()
        await yields(x % 3)
        state["now"] -= 1
        return x

    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 99).async_map(call, capacity=capacity).collect(name="out")
    result = await env.execute("capacity")
    assert result.collected["out"] == list(range(100))
    assert state["most"] == capacity


async def test_keyed_stream_async_map() -> None:
    async def call(x: int) -> tuple[int, int]:
        await yields(1)
        return (x % 3, x)

    env = StreamEnvironment(parallelism=2)
    (
        env.from_sequence(0, 59)
        .key_by(lambda x: x % 3)
        .async_map(call, name="enrich")
        .collect(name="out")
    )
    result = await env.execute("keyed")
    assert sorted(result.collected["out"]) == sorted((x % 3, x) for x in range(60))


class Lookup(AsyncFunction[int, str]):
    """Calls that never complete for multiples of 4 (they time out)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def open(self, ctx: RuntimeContext) -> None:
        self.log.append(f"open {ctx.subtask_index}")
        self.never = asyncio.Event()

    async def async_invoke(self, value: int) -> str:
        if value % 4 == 0:
            await self.never.wait()
        return f"ok {value}"

    def timeout(self, value: int) -> str:
        return f"timed out {value}"

    async def close(self) -> None:
        self.log.append("close")


async def test_function_class_with_timeout_hook() -> None:
    log: list[str] = []
    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 11).async_map(Lookup(log), timeout=0.01).collect(name="out")
    result = await env.execute("lookup")
    assert result.collected["out"] == [
        f"timed out {x}" if x % 4 == 0 else f"ok {x}" for x in range(12)
    ]
    # Each subtask works on its own copy: the log list was copied with it.
    assert log == []


async def test_timeout_without_hook_fails_naming_operator_subtask_and_record() -> None:
    never = asyncio.Event()

    async def call(x: int) -> int:
        if x == 7:
            await never.wait()
        return x

    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 9).async_map(call, timeout=0.01, name="enrich").collect()
    with pytest.raises(JobFailedError) as caught:
        await env.execute("timeout")
    message = str(caught.value)
    assert "operator 'enrich' (subtask 1/1)" in message
    assert "TimeoutError" in message and "timeout=0.01" in message
    assert "while processing record 7" in message


async def test_failing_call_fails_naming_operator_subtask_and_record() -> None:
    async def call(x: int) -> int:
        await yields(2)
        if x == 42:
            raise ValueError("service said no")
        return x

    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 99).async_map(call, name="enrich").collect()
    with pytest.raises(
        JobFailedError,
        match=r"operator 'enrich' \(subtask 1/1\) raised "
        r"ValueError: service said no while processing record 42",
    ):
        await env.execute("failing")


@pytest.mark.parametrize(
    "retry",
    [
        FixedDelayRetry(max_attempts=3, backoff=0.0),
        ExponentialBackoffRetry(max_attempts=3, initial_backoff=0.0, max_backoff=0.0),
    ],
    ids=["fixed", "exponential"],
)
async def test_retry_on_exception_and_on_result(retry: Any) -> None:
    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int | None:
        attempts[x] = attempts.get(x, 0) + 1
        if x % 2 and attempts[x] < 3:
            raise ConnectionError("try again")
        if x % 3 == 0 and attempts[x] < 2:
            return None  # retried by the result predicate
        return x

    strategy = type(retry)(
        **{
            **{f: getattr(retry, f) for f in retry.__dataclass_fields__},
            "retry_on_result": lambda r: r is None,
            "retry_on_exception": lambda e: isinstance(e, ConnectionError),
        }
    )
    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 29).async_map(flaky, retry=strategy).collect(name="out")
    result = await env.execute("retry")
    assert result.collected["out"] == list(range(30))
    assert all(attempts[x] == (3 if x % 2 else 2 if x % 3 == 0 else 1) for x in range(30))


async def test_retries_exhausted_fail_with_the_last_error() -> None:
    async def down(x: int) -> int:
        raise ConnectionError(f"down for {x}")

    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 3).async_map(
        down, retry=FixedDelayRetry(max_attempts=2, backoff=0.0), name="enrich"
    ).collect()
    with pytest.raises(JobFailedError, match="ConnectionError: down for 0"):
        await env.execute("exhausted")


def test_exponential_backoff_delays() -> None:
    retry = ExponentialBackoffRetry(initial_backoff=0.1, max_backoff=0.5, multiplier=2.0)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    assert FixedDelayRetry(backoff=0.3).delay(5) == 0.3


# -- checkpoints ------------------------------------------------------------------------


class Held:
    """A service whose calls wait until released; counts calls per record."""

    def __init__(self, hold_from: int, started_target: int) -> None:
        self.hold_from = hold_from
        self.calls: list[int] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.started_target = started_target

    async def __call__(self, x: int) -> int:
        self.calls.append(x)
        if len(self.calls) >= self.started_target:
            self.started.set()
        if x >= self.hold_from:
            await self.release.wait()
        return x * 10


def checkpointed_env(tmp_path: Path, parallelism: int, unaligned: bool = True) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(
        3600.0,
        unaligned=unaligned,
        aligned_timeout=0.0,
        storage=(tmp_path / "checkpoints").as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    return env


def held_job(env: StreamEnvironment, service: Any, count: int, capacity: int) -> None:
    (
        env.from_sequence(0, count - 1, uid="numbers")
        .async_map(service, capacity=capacity, name="enrich", uid="enrich")
        .collect(name="out", uid="out")
    )


@pytest.mark.parametrize(("before", "after"), [(1, 1), (2, 1), (2, 3)], ids=str)
async def test_checkpoint_does_not_wait_for_calls_and_restore_calls_them_again(
    tmp_path: Path, before: int, after: int
) -> None:
    count, capacity = 40, 4
    first = Held(hold_from=0, started_target=capacity * before)
    env = checkpointed_env(tmp_path, before)
    held_job(env, first, count, capacity)
    client = await env.start("first")
    await first.started.wait()  # every subtask has `capacity` calls held in flight
    completed = await client.trigger_checkpoint()  # completes with the calls held
    assert completed.checkpoint_id > 0
    stats = client.checkpoint_stats()
    assert stats is not None
    client.cancel()
    assert (await client.wait()).status is JobStatus.CANCELED
    assert client.metrics()["out"].records_in == 0

    second = Held(hold_from=count, started_target=1)
    env = checkpointed_env(tmp_path, after)
    held_job(env, second, count, capacity)
    result = await env.execute("second", restore_from=completed.pointer)
    out = result.collected["out"]
    assert sorted(out) == [x * 10 for x in range(count)], "exactly-once output"
    # The records held in flight were called again, in each subtask before new input.
    held = set(first.calls)
    assert held <= set(second.calls)
    if before == after == 1:
        assert second.calls[: len(first.calls)] == first.calls
        assert out == [x * 10 for x in range(count)], "ordered across the restore"


@pytest.mark.parametrize("savepoint_format", ["canonical", "native"])
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_stop_with_savepoint_with_calls_in_flight_then_resume_exactly_once(
    tmp_path: Path, ordered: bool, savepoint_format: str
) -> None:
    """A savepoint stores the calls in flight (canonical: without pickle); resumed
    from it, they are called again, and the two-phase-commit output of both runs holds
    every record once.

    The source holds after record 599 (a gate), and the calls of records 590..599
    never complete in the first run: the savepoint's aligned barrier follows record 599
    and finds those 10 calls in flight.
    """
    count, held = 1000, range(590, 600)
    holding = [True]
    all_held_started = asyncio.Event()
    never = asyncio.Event()
    calls: list[int] = []

    async def call(x: int) -> int:
        calls.append(x)
        if holding[0] and x in held:
            if sum(1 for c in calls if c in held) == len(held):
                all_held_started.set()
            await never.wait()
        await yields(x % 5)
        return x * 10

    def job(source: Any) -> StreamEnvironment:
        env = checkpointed_env(tmp_path, 1)
        (
            env.from_source(source, uid="numbers")
            .async_map(call, capacity=50, ordered=ordered, name="enrich", uid="enrich")
            .sink_to(FileSink(tmp_path / "out"), uid="out")
        )
        return env

    gate = SourceGate(hold_after=held.stop)
    client = await job(GatedSource(NumberSequenceSource(0, count - 1), gate)).start("first")
    await all_held_started.wait()
    path = await client.stop_with_savepoint(
        tmp_path / "savepoints", format=SavepointFormat(savepoint_format)
    )
    assert (await client.wait()).status is JobStatus.FINISHED
    first_calls = len(calls)
    holding[0] = False
    result = await job(NumberSequenceSource(0, count - 1)).execute("second", restore_from=path)
    assert result.status is JobStatus.FINISHED
    assert sorted(int(line) for line in read_committed(tmp_path / "out")) == [
        x * 10 for x in range(count)
    ]
    assert calls[first_calls : first_calls + len(held)] == list(held), "called again first"


class Unstorable:
    """A record the checkpoint cannot encode (a lock pickles no better than msgspec)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock()


async def test_record_that_cannot_be_stored_declines_the_checkpoint(tmp_path: Path) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def call(record: Unstorable) -> int:
        started.set()
        await release.wait()
        return record.n

    # Aligned, with a source that trickles and never ends: the barrier comes after a
    # buffer whose calls are all in flight, and no channel state (which would hold such
    # records too) is written.
    env = checkpointed_env(tmp_path, 1, unaligned=False)
    (
        env.generate(Unstorable, records_per_second=50)
        .rebalance()
        .async_map(call, name="enrich", uid="enrich")
        .collect(name="out")
    )
    client = await env.start("unstorable")
    await started.wait()
    with pytest.raises(
        CheckpointError,
        match=r"operator 'enrich' \(subtask 1/1\) cannot "
        r"store its record in flight",
    ):
        await client.trigger_checkpoint()
    stats = client.checkpoint_stats()
    assert stats is not None and stats.counts.failed >= 1
    release.set()
    client.cancel()
    assert (await client.wait()).status is JobStatus.CANCELED


# -- flushing while an operator awaits --------------------------------------------------


async def test_plain_async_map_sends_what_it_emitted_before_it_awaits() -> None:
    """Record 1's call waits until the sink (another task) has record 0: it deadlocks
    unless record 0 leaves within the buffer timeout while the map awaits."""
    seen = asyncio.Event()

    async def call(x: int) -> int:
        if x == 1:
            await seen.wait()
        return x

    def sink(x: int) -> None:
        if x == 0:
            seen.set()

    for rebalance_first in (False, True):
        seen.clear()
        env = StreamEnvironment(parallelism=1, buffer_timeout=0.01)
        stream = env.from_sequence(0, 3)
        if rebalance_first:  # the map in a stream task, not chained to the source
            stream = stream.rebalance()
        stream.map(call).rebalance().sink_to(sink)
        result = await env.execute("flush while awaiting")
        assert result.status is JobStatus.FINISHED


class BatchSizes(SinkFunction[int]):
    """An ``async def write_batch`` sink that notes the size of every batch."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __deepcopy__(self, memo: dict[int, Any]) -> BatchSizes:
        return self  # the test reads the sizes

    async def write_batch(self, values: list[int]) -> None:
        await yields(1)
        self.sizes.append(len(values))


async def test_async_batch_sink_chained_to_a_source_gets_whole_buffers() -> None:
    """Only chains whose async operators emit run record by record (a sink does not)."""
    sizes: list[int] = []
    env = StreamEnvironment(parallelism=1)
    env.from_sequence(0, 999).sink_to(BatchSizes(sizes))
    await env.execute("batches")
    assert sum(sizes) == 1000 and max(sizes) > 1, sizes


async def test_async_map_sends_results_while_calls_are_in_flight() -> None:
    """Record 0's call waits until the sink has record 1's result (unordered)."""
    seen = asyncio.Event()

    async def call(x: int) -> int:
        if x == 0:
            await seen.wait()
        return x

    def sink(x: int) -> None:
        if x == 1:
            seen.set()

    env = StreamEnvironment(parallelism=1, buffer_timeout=0.01)
    env.from_sequence(0, 1).async_map(call, ordered=False).sink_to(sink)
    result = await env.execute("results while in flight")
    assert result.status is JobStatus.FINISHED


# -- event time ---------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_watermarks_are_order_boundaries(ordered: bool) -> None:
    """Later records complete first, and a watermark follows every record: if one
    overtook a result, that record would be late and missing from its window."""
    from runtime.time import WatermarkStrategy
    from runtime.windows import TumblingEventTimeWindows

    async def call(record: tuple[str, int, int]) -> tuple[str, int, int]:
        await yields(10 - record[1] % 10)
        return record

    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(0)
        .with_timestamp_assigner(lambda r: r[1])
        .with_emit_interval(0)
    )
    env = StreamEnvironment(parallelism=1, buffer_size=1)  # a watermark after each record
    (
        env.from_collection([("k", t, 1) for t in range(200)])
        .assign_timestamps_and_watermarks(strategy)
        .async_map(call, capacity=20, ordered=ordered)
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(10), timestamp=lambda r: r[1])
        .reduce(lambda a, b: (a[0], max(a[1], b[1]), a[2] + b[2]))
        .collect(name="windows")
    )
    result = await env.execute("watermarks")
    assert sorted(count for _, _, count in result.collected["windows"]) == [10] * 20
