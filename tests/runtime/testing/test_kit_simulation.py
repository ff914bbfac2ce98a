"""The testing kit's deterministic simulation: virtual time, seeds, replay, refusals."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import KeyedProcessFunction, ValueStateDescriptor
from runtime.api.datastream import DataStream
from runtime.testing import (
    TOPOLOGIES,
    InjectedFailure,
    JobKit,
    KitOptions,
    OrderDependenceError,
    SimulationError,
    ValidationError,
    check_exactly_once,
    run_job,
    simulate,
)

KEYED = next(t for t in TOPOLOGIES if t.name == "keyed")
SMALL = KitOptions(splits=4, records_per_split=100, keys=8)


def fingerprint(outcome: Any) -> tuple[Any, ...]:
    """Everything a run committed, with transaction names, and its checkpoints."""
    stats = outcome.result.checkpoints
    return (
        tuple(
            (t.subtask, t.txn_id, tuple(map(repr, t.records))) for t in outcome.output.transactions
        ),
        tuple((c.checkpoint_id, c.state_size, c.trigger_time) for c in stats.completed()),
        outcome.result.restarts,
    )


def simulated_run(seed: int, schedule: list[InjectedFailure]) -> tuple[Any, float]:
    with simulate(seed) as sim:
        outcome = sim.run(run_job(KEYED, schedule=schedule, options=SMALL))
        assert sim.loop is not None
        return fingerprint(outcome), sim.loop.time()


def test_the_same_seed_gives_the_same_run_bit_for_bit() -> None:
    schedule = [InjectedFailure("count", subtask=1, after_records=60)]
    first = simulated_run(3, schedule)
    assert first[0][2] == 1, "the failure fired and the job restarted"
    assert simulated_run(3, schedule) == first


def test_seeds_choose_different_interleavings() -> None:
    runs = {simulated_run(seed, [])[0] for seed in range(5)}
    assert len(runs) > 1


def test_virtual_time_makes_long_intervals_and_rate_limits_free() -> None:
    """A 60 s checkpoint interval and a source of one record per 5 s: ~5 virtual minutes."""
    options = KitOptions(
        splits=2, records_per_split=60, keys=4, records_per_second=0.2, interval=60.0, timeout=3600
    )
    with simulate(1) as sim:
        outcome = sim.run(run_job(KEYED, options=options))
        assert sim.loop is not None
        assert sim.loop.time() >= 295.0
    assert len(outcome.output) == 120
    assert len(outcome.result.checkpoints.completed()) >= 4


def test_a_simulated_check_runs_from_async_code_in_a_thread_of_its_own() -> None:
    async def main() -> Any:
        return await check_exactly_once(
            KEYED,
            schedule=[InjectedFailure("count", after_records=50)],
            expected=KEYED.expected,
            options=SMALL,
            simulate=True,
            seed=5,
        )

    report = asyncio.run(main())
    assert report.validation.exactly_once and len(report.run.fired) == 1


def test_rocksdb_is_refused_in_simulation() -> None:
    options = KitOptions(state_backend="rocksdb", storage="file:///tmp/unused")
    with pytest.raises(SimulationError, match=r"state_backend='rocksdb'.*simulate=False"):
        asyncio.run(check_exactly_once(KEYED, options=options, simulate=True, seed=1))


class CallAService:
    """An async map that calls a real service."""

    async def __call__(self, record: Any) -> Any:
        await asyncio.open_connection("127.0.0.1", 9)
        return record


def calls_a_service(kit: JobKit) -> DataStream:
    return kit.source().map(CallAService(), name="enrich", uid="enrich")


def test_a_real_socket_is_refused_naming_the_subtask() -> None:
    with (
        pytest.raises(
            SimulationError, match=r"subtask '[^']*enrich[^']*' uses a network connection.*fake"
        ),
        simulate(1) as sim,
    ):
        sim.run(run_job(calls_a_service, options=SMALL))


# -- order dependence is told apart from lost exactly-once -------------------------------


class RunningMax(KeyedProcessFunction):
    """The largest sequence number seen per key: depends on how splits interleave."""

    def open(self, ctx: Any) -> None:
        self.top = ctx.get_state(ValueStateDescriptor("max", default=-1, type=int))

    def process_element(self, record: Any, ctx: Any) -> list[Any]:
        self.top.update(max(self.top.value(), record.seq))
        return [record.with_value(self.top.value())]


def running_max(kit: JobKit) -> DataStream:
    return kit.source().key_by(lambda r: r.key).process(RunningMax(), name="max", uid="max")


def test_a_result_that_depends_on_interleaving_is_not_blamed_on_exactly_once() -> None:
    with (
        pytest.raises(
            OrderDependenceError, match=r"depends on how its inputs interleave"
        ) as caught,
        simulate(2) as sim,
    ):
        sim.run(
            check_exactly_once(
                running_max, options=KitOptions(splits=2, keys=2), simulate=True, seed=2
            )
        )
    assert re.search(r"different values for keys \d", str(caught.value))
    assert "one split per source" in str(caught.value)
    assert "replay: python -c" in str(caught.value)


def test_the_same_job_on_one_split_passes() -> None:
    with simulate(2) as sim:
        report = sim.run(
            check_exactly_once(
                running_max, options=KitOptions(splits=1, keys=2), simulate=True, seed=2
            )
        )
    assert report.validation.exactly_once


# -- a planted bug: every failing example replays identically from its line -------------


class ForgetfulCount(KeyedProcessFunction):
    """A running count kept outside Weir's state (the planted bug).

    A restart from a checkpoint starts counting again from 0; one before the first
    checkpoint is right by chance (both start from nothing), so the failures the test
    plants wait for checkpoint 1.
    """

    def open(self, ctx: Any) -> None:
        self.counts: dict[Any, int] = {}

    def process_element(self, record: Any, ctx: Any) -> list[Any]:
        self.counts[record.key] = self.counts.get(record.key, 0) + 1
        return [record.with_value(self.counts[record.key])]


def forgetful(kit: JobKit) -> DataStream:
    counted = kit.source().key_by(lambda r: r.key).process(ForgetfulCount(), uid="count")
    return kit.failure_point(counted, "count")


def failing_message(seed: int, after: int, subtask: int) -> str:
    with pytest.raises(ValidationError) as caught, simulate(seed) as sim:
        sim.run(
            check_exactly_once(
                forgetful,
                schedule=[
                    InjectedFailure("count", subtask=subtask, after_records=after, checkpoint=1)
                ],
                options=SMALL,
                simulate=True,
                seed=seed,
            )
        )
    assert not isinstance(caught.value, OrderDependenceError)
    return str(caught.value)


def replayed_message(message: str) -> str:
    line = re.search(r'replay: python -c "(.*)"$', message, re.MULTILINE)
    assert line is not None, f"no replay line in: {message}"
    with pytest.raises(ValidationError) as caught:
        exec(line.group(1), {})
    return str(caught.value)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), after=st.integers(0, 150), subtask=st.integers(0, 1))
def test_every_failing_example_replays_identically_from_its_line(
    seed: int, after: int, subtask: int
) -> None:
    message = failing_message(seed, after, subtask)
    assert "state is not exactly-once" in message
    assert "per key, the run without failures (expected)" in message
    assert replayed_message(message) == message


# -- the loop itself -------------------------------------------------------------------


def test_a_ten_minute_sleep_is_virtual_and_the_clocks_read_it() -> None:
    import threading
    import time

    import anyio.to_thread

    async def main() -> tuple[float, float, float, int]:
        start = time.monotonic()
        await asyncio.sleep(600)
        worker = await anyio.to_thread.run_sync(threading.get_ident)
        return start, time.monotonic(), time.time(), worker

    with simulate(4) as sim:
        start, end, wall, worker = sim.run(main())
    assert start == 0.0
    assert 600.0 <= end <= 600.0 * 1.1 + 0.001  # late by the seeded jitter at most
    assert wall == pytest.approx(1_700_000_000.0 + end)
    assert worker == threading.get_ident(), "the thread hop ran inline"
    assert time.monotonic() != end, "outside the simulation the real clock is back"


def test_a_deadlock_is_reported_at_once() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationError, match=r"deadlocked.*every task waits"), simulate(1) as sim:
        sim.run(main())


def test_a_task_that_only_yields_is_stopped_by_the_watchdog() -> None:
    async def main() -> None:
        while True:  # noqa: ASYNC110 - the spin under test
            await asyncio.sleep(0)

    with (
        pytest.raises(SimulationError, match=r"without ending.*never lets virtual time move"),
        simulate(1, real_timeout=0.2) as sim,
    ):
        sim.run(main())


def calls_a_service_blocking(kit: JobKit) -> DataStream:
    def call(record: Any) -> Any:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        return record

    return kit.source().map(call, name="lookup", uid="lookup")


def test_a_blocking_socket_is_refused_too() -> None:
    with (
        pytest.raises(SimulationError, match=r"'[^']*lookup[^']*' uses a blocking socket"),
        simulate(1) as sim,
    ):
        sim.run(run_job(calls_a_service_blocking, options=SMALL))
