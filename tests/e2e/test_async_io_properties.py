"""Exactly-once recovery of a job with ``async_map``, in every checkpoint mode.

The kit's ``async_io`` topologies (``runtime.testing.async_calls``): source -> async_map
(ordered or unordered, 16 calls in flight, completions overtaking each other) -> sink. Hypothesis
draws the parallelism, failures at the source, inside the calls (while others are in
flight), in the snapshot that stores the calls in flight, after it was acknowledged,
around notify-complete and at restore, sometimes notification chaos and a slow sink.
``check_exactly_once`` / ``check_at_least_once`` assert, as for the other topologies:
aligned, unaligned and aligned-with-timeout commit every record exactly once (in
order per split when ordered); at-least-once loses nothing; the job restarted once per
failure fired.

The properties run in deterministic simulation (virtual time: the calls' latencies cost
nothing; a seeded interleaving, drawn with the case, so a failing example replays from
its ``replay:`` line): ``WEIR_PROPERTY_EXAMPLES`` examples per mode (20 by default; see
``test_exactly_once_properties.py`` for why not 50), and
``WEIR_REAL_TIME_EXAMPLES`` (5) of the exactly-once property on real time as well. The
long run::

    WEIR_PROPERTY_EXAMPLES=5000 python -m pytest tests/e2e/test_async_io_properties.py \
        --hypothesis-profile=weir-long
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runtime.testing import (
    CheckpointSetup,
    CheckReport,
    InjectedFailure,
    KitOptions,
    Phase,
    check_at_least_once,
    check_exactly_once,
    simulate,
)
from runtime.testing.async_calls import ASYNC_IO, ASYNC_IO_UNORDERED
from runtime.testing.strategies import JobCase, job_cases

EXAMPLES = int(os.environ.get("WEIR_PROPERTY_EXAMPLES", "20"))
REAL_TIME_EXAMPLES = int(os.environ.get("WEIR_REAL_TIME_EXAMPLES", "5"))

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
REAL_TIME = settings(PROPERTY, max_examples=REAL_TIME_EXAMPLES)
SEEDS = st.integers(0, 2**32 - 1)
"""The simulation's seed, drawn with the case."""

SMALL = KitOptions(splits=4, records_per_split=150, keys=8, records_per_second=15_000)
"""600 records over ~40 ms: a handful of checkpoints per run, calls in flight at each."""


BOTH = [ASYNC_IO, ASYNC_IO_UNORDERED]


def order_of(case: JobCase) -> str:
    """Ordered async I/O keeps the order per split; unordered keeps none."""
    return "none" if case.topology is ASYNC_IO_UNORDERED else "split"


def note(case: JobCase, report: CheckReport) -> None:
    """Statistics for ``--hypothesis-show-statistics``."""
    event(f"{case.topology.name}, parallelism {case.parallelism}")
    event(f"{len(report.run.fired)} of {len(case.schedule)} failures fired")
    for fired in report.run.fired:
        event(f"fired: {fired.failure.point} {fired.failure.phase.value}")


def run(check: Any, seed: int | None) -> CheckReport:
    """``check`` in simulation under ``seed``, or on real time if ``seed`` is None."""
    if seed is None:
        return asyncio.run(check)  # type: ignore[no-any-return]
    with simulate(seed) as sim:
        return sim.run(check)  # type: ignore[no-any-return]


def exactly_once_case(setup: CheckpointSetup, data: st.DataObject, seed: int | None) -> None:
    case = data.draw(
        job_cases(setups=[setup], topology_choices=BOTH, min_failures=1, options=SMALL),
        label="case",
    )
    report = run(
        check_exactly_once(
            case.topology,
            schedule=case.schedule,
            setup=case.setup,
            parallelism=case.parallelism,
            chaos=case.chaos,
            expected=case.topology.expected,
            order=order_of(case),
            options=case.options(SMALL),
            simulate=seed is not None,
            seed=seed or 0,
        ),
        seed,
    )
    assert report.validation.exactly_once
    note(case, report)


by_setup = pytest.mark.parametrize(
    "setup",
    [CheckpointSetup.ALIGNED, CheckpointSetup.UNALIGNED, CheckpointSetup.ALIGNED_TIMEOUT],
    ids=lambda setup: setup.value,
)


@by_setup
@PROPERTY
@given(data=st.data(), seed=SEEDS)
def test_async_io_exactly_once(setup: CheckpointSetup, data: st.DataObject, seed: int) -> None:
    exactly_once_case(setup, data, seed)


@by_setup
@REAL_TIME
@given(data=st.data())
def test_async_io_exactly_once_on_real_time(setup: CheckpointSetup, data: st.DataObject) -> None:
    """The same property on real time, with fewer examples."""
    exactly_once_case(setup, data, None)


@PROPERTY
@given(data=st.data(), seed=SEEDS)
def test_async_io_at_least_once(data: st.DataObject, seed: int) -> None:
    case = data.draw(
        job_cases(
            setups=[CheckpointSetup.AT_LEAST_ONCE],
            topology_choices=BOTH,
            min_failures=1,
            options=SMALL,
        ),
        label="case",
    )
    report = run(
        check_at_least_once(
            case.topology,
            schedule=case.schedule,
            setup=case.setup,
            parallelism=case.parallelism,
            chaos=case.chaos,
            transactional=data.draw(st.booleans(), label="two-phase-commit sink"),
            expected=case.topology.expected,
            options=case.options(SMALL),
            simulate=True,
            seed=seed,
        ),
        seed,
    )
    assert not report.validation.lost
    note(case, report)


@pytest.mark.parametrize(
    "setup",
    [CheckpointSetup.ALIGNED, CheckpointSetup.UNALIGNED, CheckpointSetup.ALIGNED_TIMEOUT],
    ids=lambda setup: setup.value,
)
@pytest.mark.parametrize(
    "failure",
    [
        InjectedFailure("enrich", subtask=1, after_records=120),
        InjectedFailure("enrich", subtask=0, phase=Phase.SNAPSHOT, checkpoint=2),
        InjectedFailure("enrich", subtask=1, phase=Phase.AFTER_ACK, checkpoint=1),
        InjectedFailure("enrich", subtask=0, phase=Phase.BEFORE_NOTIFY, checkpoint=2),
    ],
    ids=["in-a-call", "in-the-snapshot", "after-ack", "before-notify"],
)
def test_async_io_failure_while_calls_in_flight(
    setup: CheckpointSetup, failure: InjectedFailure
) -> None:
    """Deterministic cases: one failure, before, during and after a checkpoint."""
    report = asyncio.run(
        check_exactly_once(
            ASYNC_IO,
            schedule=[failure],
            setup=setup,
            parallelism=2,
            expected=ASYNC_IO.expected,
            options=SMALL,
        )
    )
    assert report.validation.exactly_once
    assert len(report.run.fired) == 1, "the failure fired"
