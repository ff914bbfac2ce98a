"""``check_exactly_once`` / ``check_at_least_once``: test a job's guarantees in one call.

A user points the check at a **job factory**: a function that takes a ``JobKit`` and
builds the job on ``kit.env``, reading from ``kit.source(...)`` (a
``TaggedSequenceSource`` followed by a failure point of the same name) and returning
the stream to validate, whose records are the ``Tagged`` records it read (with
``value`` set to what it computed, if anything). The check then

1. runs the job once **without failures** (the reference run) into a ``ValidatingSink``;
2. runs it again **with the failure schedule** (and the notification chaos, if given),
   under ``FixedDelayRestart(attempts=len(schedule) + 2, delay=0)``, into a
   ``ValidatingSink`` wrapped by ``FailingSink`` (failure point ``"sink"``);
3. asserts that the second run restarted exactly once per failure that fired, and
   that its committed output is what the guarantee says: for exactly-once, every
   record of the reference (or of ``expected``) once, in order per split, intact, and
   the same state (the ``(key, value)`` pairs and the last value of each key equal
   the reference's); for at-least-once, no record lost.

Both runs build the job anew with a fresh ``StreamEnvironment`` and fresh sources, so a
factory must be deterministic: the same job from the same kit.

Everything runs on the caller's event loop; a run that does not end within
``timeout`` seconds is cancelled and reported as a failure of the check.

With ``simulate=True`` (and a ``seed``), the check runs in a deterministic simulation
(``runtime.testing.simulation``): virtual time, a seeded interleaving, the same result
for the same seed. Each run of the check gets its own stream of the seed. A failing
check then ends its message with a ``replay:`` line that reproduces it
(``runtime.testing.replay``). When the state differs from the reference, the reference
is run again (under other seeds in a simulation); if the runs without failures already
disagree, the check raises ``OrderDependenceError`` (the job's result depends on the
interleaving of its inputs) instead of blaming exactly-once.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.api.datastream import DataStream
from runtime.api.environment import StreamEnvironment
from runtime.errors import ConfigError
from runtime.scheduler.restart import FixedDelayRestart
from runtime.scheduler.result import JobFailedError, JobResult
from runtime.testing.chaos import ChaosStatistics, NotificationChaos
from runtime.testing.diagnosis import order_dependence, value_diff
from runtime.testing.failures import (
    FailureSchedule,
    FiredFailure,
    InjectedFailure,
    InjectedFailureError,
)
from runtime.testing.injection import FailingSink
from runtime.testing.kit import SINK_POINT, JobFactory, JobKit, KitOptions, SlowIdentity
from runtime.testing.modes import CheckpointSetup
from runtime.testing.replay import replay_line
from runtime.testing.simulation import SimulationError, current_simulation, run_simulated
from runtime.testing.sinks import AtLeastOnceSink, CommittedOutput, ValidatingSink
from runtime.testing.tagged import RecordId
from runtime.testing.validation import (
    Order,
    Validation,
    ValidationError,
    compare_values,
    expected_from,
)
from storage.changelog import ChangelogOptions


@dataclass(slots=True)
class RunOutcome:
    """One run of a checked job.

    Attributes:
        result: the job's result (restarts, failures, checkpoint statistics).
        output: what its validating sink committed.
        fired: the injected failures that fired.
        unfired: the scheduled failures that did not.
        kit: the kit the job was built with (its sources know their records).
    """

    result: JobResult
    output: CommittedOutput
    fired: list[FiredFailure]
    unfired: list[InjectedFailure]
    kit: JobKit

    def describe(self) -> str:
        """A line: restarts, checkpoints, records."""
        stats = self.result.checkpoints
        completed = len(stats.completed()) if stats is not None else 0
        return (
            f"{self.result.restarts} restarts, {len(self.fired)} failures fired, "
            f"{completed} checkpoints completed, {len(self.output)} records committed, "
            f"{self.result.duration:.3f} s"
        )


@dataclass(slots=True)
class CheckReport:
    """What a check found (it raised if anything was wrong).

    Attributes:
        setup: the checkpointing mode.
        parallelism: the job's default parallelism.
        reference: the run without failures.
        run: the run with failures.
        validation: the run's output against the expected records.
        chaos: what the notification chaos did, if any.
    """

    setup: CheckpointSetup
    parallelism: int
    reference: RunOutcome
    run: RunOutcome
    validation: Validation
    chaos: ChaosStatistics | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for logs."""
        lines = [
            f"{self.setup.value}, parallelism {self.parallelism}",
            f"  reference: {self.reference.describe()}",
            f"  with failures: {self.run.describe()}",
            f"  {self.validation.summary()}",
        ]
        if self.chaos is not None:
            lines.append(f"  chaos: {self.chaos}")
        return "\n".join(lines)


ORDER_RUNS = 3
"""Further runs without failures that look for order dependence when the state differs."""


def _reseed(seed: int | None, stream: int) -> None:
    # Only a check asked to simulate chooses its seeds; others use the loop's as it is.
    loop = current_simulation()
    if loop is not None and seed is not None:
        loop.reseed(seed, stream)


def _check_simulatable(options: KitOptions | None) -> None:
    if options is not None and options.state_backend == "rocksdb":
        raise SimulationError(
            "KitOptions(state_backend='rocksdb') cannot be simulated: RocksDB flushes and "
            "compacts on its own threads; use state_backend='heap' with simulate=True, or "
            "simulate=False for RocksDB"
        )


def _schedule_of(schedule: FailureSchedule | Iterable[InjectedFailure]) -> FailureSchedule:
    # A fresh schedule per run: one that fired before would not fire again.
    return FailureSchedule(schedule)


async def run_job(
    job: JobFactory,
    *,
    setup: CheckpointSetup = CheckpointSetup.ALIGNED,
    parallelism: int = 2,
    schedule: FailureSchedule | Iterable[InjectedFailure] = (),
    chaos: NotificationChaos | None = None,
    transactional: bool = True,
    sink: Callable[[CommittedOutput], Any] | None = None,
    options: KitOptions | None = None,
) -> RunOutcome:
    """Build ``job`` with a kit, attach a validating sink, and run it to its end.

    Args:
        job: the job factory.
        setup: the checkpointing mode.
        parallelism: the environment's default parallelism.
        schedule: failures to inject: a ``FailureSchedule`` is used as it is (its
            ``fired`` list fills in), a list of failures becomes a fresh one.
        chaos: mistreat the sink's notifications, if given.
        transactional: a ``ValidatingSink`` (two-phase commit) if true, else an
            ``AtLeastOnceSink``.
        sink: makes the sink instead, given the ``CommittedOutput`` to write to (to
            test a sink of your own, such as a ``ValidatingSink`` subclass).
        options: sizes and pace (``KitOptions()`` if None).

    Returns:
        The run's result and committed output.

    Raises:
        ValidationError: the job failed for good, or did not end within the timeout.
        ConfigError: the job is invalid.
    """
    options = options or KitOptions()
    failures = schedule if isinstance(schedule, FailureSchedule) else _schedule_of(schedule)
    env = StreamEnvironment(
        parallelism,
        options.max_parallelism,
        buffer_size=options.buffer_size,
        buffer_timeout=options.buffer_timeout,
        channel_capacity=options.channel_capacity,
        state_backend=options.state_backend,
        changelog=(
            ChangelogOptions(upload_interval=0.005, file_size=4096, materialization_size=16384)
            if options.changelog
            else False
        ),
    )
    env.enable_checkpointing(options.interval, storage=options.storage, **setup.options())
    env.set_restart_strategy(FixedDelayRestart(attempts=len(failures) + 2, delay=0.0))
    kit = JobKit(env, failures, options)
    stream = job(kit)
    if not isinstance(stream, DataStream):
        raise ConfigError(
            f"the job factory must return the DataStream to validate, got {type(stream).__name__}"
        )
    if options.sink_yields:
        stream = stream.map(SlowIdentity(options.sink_yields), name="slow sink", uid="slow-sink")
    output = CommittedOutput()
    if sink is not None:
        writer: Any = sink(output)
    elif transactional:
        writer = ValidatingSink(output)
    else:
        writer = AtLeastOnceSink(output)
    if chaos is not None:
        writer = chaos.wrap(writer)
    stream.sink_to(FailingSink(writer, failures, SINK_POINT), name=SINK_POINT, uid=SINK_POINT)
    client = await env.start("weir testing kit")
    try:
        async with asyncio.timeout(options.timeout):
            result = await client.wait()
    except TimeoutError:
        client.cancel()
        stuck = await _result_after_cancel(client)
        raise ValidationError(
            f"the job did not end within {options.timeout:g} s "
            f"(status {client.status.value}); schedule:\n{failures.describe()}\n{stuck}"
        ) from None
    except JobFailedError as error:
        raise ValidationError(
            f"the job failed for good after {error.result.restarts} restarts: {error}; "
            f"failures: {error.result.failures}; schedule:\n{failures.describe()}"
        ) from error
    return RunOutcome(result, output, list(failures.fired), failures.unfired, kit)


async def _result_after_cancel(client: Any) -> str:
    try:
        result = await client.wait()
    except JobFailedError as error:
        result = error.result
    summary: str = result.summary()
    return summary


def _check_restarts(outcome: RunOutcome) -> None:
    result = outcome.result
    if result.restarts != len(outcome.fired):
        raise ValidationError(
            f"the job restarted {result.restarts} times but {len(outcome.fired)} injected "
            f"failures fired; failures: {result.failures}"
        )
    foreign = [f for f in result.failures if InjectedFailureError.__name__ not in f]
    if foreign:
        raise ValidationError(f"the job failed for reasons not injected: {foreign}")


async def _check(
    job: JobFactory,
    *,
    exactly_once: bool,
    schedule: FailureSchedule | Iterable[InjectedFailure],
    setup: CheckpointSetup,
    parallelism: int,
    chaos: NotificationChaos | None,
    transactional: bool,
    expected: Callable[[JobKit], Counter[RecordId]] | Counter[RecordId] | None,
    order: Order,
    final_values: bool,
    options: KitOptions | None,
    simulate: bool = False,
    seed: int = 0,
) -> CheckReport:
    if simulate and current_simulation() is None:
        _check_simulatable(options)
        again = functools.partial(
            _check,
            job,
            exactly_once=exactly_once,
            schedule=list(schedule),
            setup=setup,
            parallelism=parallelism,
            chaos=chaos,
            transactional=transactional,
            expected=expected,
            order=order,
            final_values=final_values,
            options=options,
            simulate=True,
            seed=seed,
        )
        return await run_simulated(again, seed, real_timeout=_real_timeout(options))
    failures = list(schedule)
    replay = (
        replay_line(
            job,
            check="exactly_once" if exactly_once else "at_least_once",
            seed=seed,
            setup=setup,
            parallelism=parallelism,
            schedule=failures,
            chaos=chaos,
            options=options,
            expected=expected,
            order=order,
            final_values=final_values,
            transactional=transactional,
        )
        if simulate
        else None
    )
    try:
        return await _check_runs(
            job,
            exactly_once=exactly_once,
            failures=failures,
            setup=setup,
            parallelism=parallelism,
            chaos=chaos,
            transactional=transactional,
            expected=expected,
            order=order,
            final_values=final_values,
            options=options,
            seed=seed if simulate else None,
        )
    except ValidationError as error:
        if replay is None:
            raise
        raise type(error)(f"{error}\n{replay}") from None


def _real_timeout(options: KitOptions | None) -> float:
    # A simulation spends no real time waiting; this bounds a run that spins instead.
    return 4 * (options or KitOptions()).timeout


async def _check_runs(
    job: JobFactory,
    *,
    exactly_once: bool,
    failures: list[InjectedFailure],
    setup: CheckpointSetup,
    parallelism: int,
    chaos: NotificationChaos | None,
    transactional: bool,
    expected: Callable[[JobKit], Counter[RecordId]] | Counter[RecordId] | None,
    order: Order,
    final_values: bool,
    options: KitOptions | None,
    seed: int | None,
) -> CheckReport:
    _reseed(seed, 0)
    reference = await run_job(
        job, setup=setup, parallelism=parallelism, options=options, transactional=True
    )
    _check_restarts(reference)
    if expected is None:
        want = expected_from(reference.output.records())
    elif isinstance(expected, Counter):
        want = expected
    else:
        want = expected(reference.kit)
    if expected is not None:
        try:
            reference.output.validate(want, order=order).assert_exactly_once()
        except ValidationError as error:
            raise ValidationError(f"the run without failures is wrong already: {error}") from None
    _reseed(seed, 1)
    run = await run_job(
        job,
        setup=setup,
        parallelism=parallelism,
        schedule=failures,
        chaos=chaos,
        transactional=transactional,
        options=options,
    )
    report = CheckReport(
        setup,
        parallelism,
        reference,
        run,
        run.output.validate(want, order=order if exactly_once else "none"),
        None if chaos is None else chaos.stats,
    )
    context = f"\n{report.summary()}\nschedule: {[f.describe() for f in failures]}"
    try:
        _check_restarts(run)
        if exactly_once:
            report.validation.assert_exactly_once()
            problems = compare_values(
                list(reference.output.by_subtask()), list(run.output.by_subtask())
            )
            if not final_values:
                problems = [p for p in problems if "final value" not in p]
            if problems:
                reference_values = list(reference.output.by_subtask())
                others = []
                for stream in range(2, 2 + ORDER_RUNS):
                    _reseed(seed, stream)
                    other = await run_job(
                        job, setup=setup, parallelism=parallelism, options=options
                    )
                    others.append(list(other.output.by_subtask()))
                dependence = order_dependence(reference_values, others)
                if dependence is not None:
                    raise dependence
                raise ValidationError(
                    "state is not exactly-once: "
                    + "; ".join(problems)
                    + "\nper key, the run without failures (expected) and the run with them "
                    + "(actual):\n"
                    + value_diff(reference_values, list(run.output.by_subtask()))
                )
        else:
            report.validation.assert_at_least_once()
    except ValidationError as error:
        raise type(error)(f"{error}{context}") from None
    return report


async def check_exactly_once(
    job: JobFactory,
    *,
    schedule: FailureSchedule | Iterable[InjectedFailure] = (),
    setup: CheckpointSetup = CheckpointSetup.ALIGNED,
    parallelism: int = 2,
    chaos: NotificationChaos | None = None,
    expected: Callable[[JobKit], Counter[RecordId]] | Counter[RecordId] | None = None,
    order: Order = "split",
    final_values: bool = True,
    options: KitOptions | None = None,
    simulate: bool = False,
    seed: int = 0,
) -> CheckReport:
    """Check that ``job`` gives exactly-once output and state despite ``schedule``.

    Args:
        job: the job factory (see the module docstring).
        schedule: the failures to inject into the second run.
        setup: an exactly-once checkpointing mode.
        parallelism: the environment's default parallelism.
        chaos: mistreat the sink's notifications in the second run.
        expected: the record ids the job should deliver (a ``Counter``, or a function
            of the kit such as ``lambda kit: kit.expected()``); None: what the run
            without failures delivered.
        order: the order guarantee to check (``"split"``, ``"key"``, ``"none"``).
        final_values: also compare the last value of each key (turn off when values
            are not running aggregates per key).
        options: sizes and pace of the job.
        simulate: run in a deterministic simulation (virtual time, seeded interleaving).
        seed: the simulation's seed.

    Returns:
        The report of both runs.

    Raises:
        ValidationError: a guarantee does not hold; the message says which records
            (and, in a simulation, ends with the line that replays the check).
        OrderDependenceError: runs without failures disagree with each other.
        SimulationError: the job uses what a simulation cannot run (RocksDB, sockets).
        ConfigError: ``setup`` is at-least-once, or the job is invalid.
    """
    if not setup.exactly_once:
        raise ConfigError(
            f"check_exactly_once: {setup.value} checkpoints do not give exactly-once "
            f"state; use check_at_least_once"
        )
    return await _check(
        job,
        exactly_once=True,
        schedule=schedule,
        setup=setup,
        parallelism=parallelism,
        chaos=chaos,
        transactional=True,
        expected=expected,
        order=order,
        final_values=final_values,
        options=options,
        simulate=simulate,
        seed=seed,
    )


async def check_at_least_once(
    job: JobFactory,
    *,
    schedule: FailureSchedule | Iterable[InjectedFailure] = (),
    setup: CheckpointSetup = CheckpointSetup.AT_LEAST_ONCE,
    parallelism: int = 2,
    chaos: NotificationChaos | None = None,
    transactional: bool = True,
    expected: Callable[[JobKit], Counter[RecordId]] | Counter[RecordId] | None = None,
    options: KitOptions | None = None,
    simulate: bool = False,
    seed: int = 0,
) -> CheckReport:
    """Check that ``job`` loses no record despite ``schedule`` (repeats are allowed).

    Args:
        job: the job factory (see the module docstring).
        schedule: the failures to inject into the second run.
        setup: any checkpointing mode.
        parallelism: the environment's default parallelism.
        chaos: mistreat the sink's notifications in the second run.
        transactional: through a ``ValidatingSink`` (two-phase commit) if true, else
            an ``AtLeastOnceSink`` that writes records as they come.
        expected: as for ``check_exactly_once``.
        options: sizes and pace of the job.
        simulate: run in a deterministic simulation (virtual time, seeded interleaving).
        seed: the simulation's seed.

    Returns:
        The report of both runs.

    Raises:
        ValidationError: a record was lost; the message says which.
    """
    return await _check(
        job,
        exactly_once=False,
        schedule=schedule,
        setup=setup,
        parallelism=parallelism,
        chaos=chaos,
        transactional=transactional,
        expected=expected,
        order="none",
        final_values=False,
        options=options,
        simulate=simulate,
        seed=seed,
    )
