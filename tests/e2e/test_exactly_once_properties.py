"""Exactly-once recovery as a property, checked with the testing kit (``runtime.testing``).

For every checkpointing mode, Hypothesis draws a job shape (pipeline, rebalance, keyed
state, union of two sources, two differently processed inputs, broadcast), a
parallelism (1, 2 or 4), a schedule of failures (any failure point, any phase:
processing, snapshot, after acknowledging, before and after notify-complete, restore;
the first one sure to fire, so every example injects at least one failure) and, often,
chaos on the sink's notifications and a slow sink (its inputs
backpressured, so that barriers meet data in flight and unaligned checkpoints persist
it). ``check_exactly_once`` / ``check_at_least_once`` run the job without failures and
with them, and assert:

* aligned, unaligned and aligned-with-timeout checkpoints: the two-phase-commit sink
  commits every record exactly once (0 lost, 0 duplicated, in order per split), and
  the keyed state (the running counts the records carry) equals the run without
  failures;
* at-least-once checkpoints: 0 lost;
* and in every mode, at least one injected failure fired, and the job restarted exactly
  once per injected failure that fired.

Every test draws ``WEIR_PROPERTY_EXAMPLES`` examples per mode (5 by default), on the
heap and on the RocksDB backend alike; the ``stress`` ones draw bigger jobs and more
failures. CI runs the Hypothesis profile ``weir-ci`` (``tests/conftest.py``): a fixed
seed (``derandomize``), so every CI run checks the same examples. The long run draws
new random examples, 1,000 per mode and backend (add ``--hypothesis-show-statistics``
to see what was drawn)::

    WEIR_PROPERTY_EXAMPLES=1000 python -m pytest tests/e2e/test_exactly_once_properties.py \
        --hypothesis-profile=weir-long
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors import Channel, InputGate
from runtime.api.functions import Adapted
from runtime.graph.partitioning import FORWARD
from runtime.tasks.chain import OperatorChain
from runtime.tasks.context import RuntimeContext
from runtime.tasks.operators import MapOperator
from runtime.tasks.record_writer import RecordWriter
from runtime.tasks.stream_task import StreamTask
from runtime.testing import (
    CheckpointSetup,
    CheckReport,
    KitOptions,
    check_at_least_once,
    check_exactly_once,
)
from runtime.testing.strategies import JobCase, job_cases

EXAMPLES = int(os.environ.get("WEIR_PROPERTY_EXAMPLES", "5"))

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
"""The examples per mode and backend; the rest (seed, database) comes from the profile."""

EXACTLY_ONCE = [
    CheckpointSetup.ALIGNED,
    CheckpointSetup.UNALIGNED,
    CheckpointSetup.ALIGNED_TIMEOUT,
]

SMALL = KitOptions(splits=4, records_per_split=150, keys=8, records_per_second=15_000)
"""600 records per source over ~40 ms: a handful of checkpoints per run."""
BIGGER = KitOptions(splits=6, records_per_split=250, keys=16, records_per_second=25_000)
"""1,500 records per source over ~60 ms, for the stress runs."""

by_name = pytest.mark.parametrize("setup", EXACTLY_ONCE, ids=lambda setup: setup.value)


def note(case: JobCase, report: CheckReport) -> None:
    """Check that a failure was injected; statistics for ``--hypothesis-show-statistics``."""
    assert report.run.fired, f"no injected failure fired: {report.summary()}"
    assert report.run.result.restarts == len(report.run.fired)
    event(f"topology {case.topology.name}, parallelism {case.parallelism}")
    event(f"{len(report.run.fired)} of {len(case.schedule)} failures fired")
    for fired in report.run.fired:
        event(f"fired: {fired.failure.phase.value}")
    if case.chaos is not None:
        event("notification chaos")
    if case.slow_sink:
        event("slow sink")
    stats = report.run.result.checkpoints
    if stats is not None and any(c.in_flight_bytes for c in stats.completed()):
        event("in-flight data persisted")


def exactly_once(case: JobCase, options: KitOptions) -> CheckReport:
    return asyncio.run(
        check_exactly_once(
            case.topology,
            schedule=case.schedule,
            setup=case.setup,
            parallelism=case.parallelism,
            chaos=case.chaos,
            expected=case.topology.expected,
            options=case.options(options),
        )
    )


def at_least_once(case: JobCase, transactional: bool, options: KitOptions) -> CheckReport:
    return asyncio.run(
        check_at_least_once(
            case.topology,
            schedule=case.schedule,
            setup=case.setup,
            parallelism=case.parallelism,
            chaos=case.chaos,
            transactional=transactional,
            expected=case.topology.expected,
            options=case.options(options),
        )
    )


@by_name
@PROPERTY
@given(data=st.data())
def test_exactly_once_modes_lose_and_duplicate_nothing(
    setup: CheckpointSetup, data: st.DataObject
) -> None:
    case = data.draw(job_cases(setups=[setup], options=SMALL), label="case")
    report = exactly_once(case, SMALL)
    assert report.validation.exactly_once
    note(case, report)


@by_name
@PROPERTY
@given(data=st.data())
def test_exactly_once_modes_lose_and_duplicate_nothing_on_rocksdb(
    setup: CheckpointSetup, data: st.DataObject
) -> None:
    """The same property with keyed state in RocksDB and incremental file checkpoints."""
    case = data.draw(job_cases(setups=[setup], options=SMALL), label="case")
    with tempfile.TemporaryDirectory() as folder:
        options = dataclasses.replace(SMALL, state_backend="rocksdb", storage=f"file://{folder}")
        report = exactly_once(case, options)
    assert report.validation.exactly_once
    note(case, report)


@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
@PROPERTY
@given(data=st.data())
def test_exactly_once_with_the_changelog_backend(backend: str, data: st.DataObject) -> None:
    """The same property with the changelog state backend (tiny files, frequent
    materializations), unaligned checkpoints, on heap and on RocksDB."""
    setup = CheckpointSetup.UNALIGNED
    case = data.draw(job_cases(setups=[setup], options=SMALL), label="case")
    with tempfile.TemporaryDirectory() as folder:
        options = dataclasses.replace(
            SMALL, state_backend=backend, storage=f"file://{folder}", changelog=True
        )
        report = exactly_once(case, options)
    assert report.validation.exactly_once
    note(case, report)


@PROPERTY
@given(data=st.data())
def test_at_least_once_loses_nothing(data: st.DataObject) -> None:
    case = data.draw(job_cases(setups=[CheckpointSetup.AT_LEAST_ONCE], options=SMALL), label="case")
    transactional = data.draw(st.booleans(), label="two-phase-commit sink")
    report = at_least_once(case, transactional, SMALL)
    assert not report.validation.lost
    note(case, report)


@pytest.mark.stress
@by_name
@PROPERTY
@given(data=st.data())
def test_exactly_once_modes_lose_and_duplicate_nothing_stress(
    setup: CheckpointSetup, data: st.DataObject
) -> None:
    case = data.draw(
        job_cases(setups=[setup], min_failures=1, max_failures=5, options=BIGGER), label="case"
    )
    report = exactly_once(case, BIGGER)
    assert report.validation.exactly_once
    note(case, report)


@pytest.mark.stress
@PROPERTY
@given(data=st.data())
def test_at_least_once_loses_nothing_stress(data: st.DataObject) -> None:
    case = data.draw(
        job_cases(
            setups=[CheckpointSetup.AT_LEAST_ONCE], min_failures=1, max_failures=5, options=BIGGER
        ),
        label="case",
    )
    transactional = data.draw(st.booleans(), label="two-phase-commit sink")
    report = at_least_once(case, transactional, BIGGER)
    assert not report.validation.lost
    note(case, report)


# -- what the properties found, as deterministic regression tests ---------------------------


def _one_task(inp: Channel[Any], out: Channel[Any]) -> StreamTask:
    operator = MapOperator("map", "map", Adapted(lambda record: record, False, None))
    operator.setup(
        RuntimeContext(
            operator_name="map",
            subtask_index=0,
            parallelism=1,
            max_parallelism=128,
            job_name="lost wake-up",
        )
    )
    writer = RecordWriter([out], FORWARD, 2, 128, 0, lambda error, record: error)
    return StreamTask(
        "map (1/1)", OperatorChain([operator], [writer]), InputGate([inp]), buffer_timeout=3600.0
    )


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_input_that_arrives_while_a_task_flushes_before_idling_is_read() -> None:
    """A lost wake-up the properties found (fixed in d62491a); deterministic, no clock.

    With nothing to read, a stream task flushed its partial buffers before idling; when
    an output was full, that flush waited on the task's one waker, and the wait consumed
    the wake-ups of input arriving meanwhile. The task then waited idle with data in its
    inputs; upstream filled them and blocked, and an aligned barrier queued behind the
    data was never read: the job hung with a checkpoint in progress ("the job did not
    end within 30 s": two_inputs, parallelism 4, aligned, about 1 example in 2,000).
    """
    inp: Channel[Any] = Channel(4, name="in")
    out: Channel[Any] = Channel(1, name="out")
    task = _one_task(inp, out)
    out.force_send(["x"])  # the consumer is behind: the output is full
    inp.try_send([1])  # one record: a partial buffer (buffer size 2)
    runner = asyncio.create_task(task.run())
    try:
        await _turns(100)
        # [1] was processed; the input is empty, so the task flushes its partial buffer
        # before idling, and waits for room in the full output.
        assert inp.statistics().received == 1 and out.queued() == (["x"],)
        inp.try_send([2])  # input arrives: the task wakes, the output is still full,
        await _turns(100)  # it waits again
        assert out.poll() == ["x"]  # room: the task sends [1] ...
        await _turns(1000)
        assert out.queued() == ([1],)
        # ... and must now read [2]; it waits idle instead, [2] still in its input.
        assert inp.queued() == ()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
