"""Hypothesis strategies for property tests of exactly-once recovery.

Needs Hypothesis (``pip install 'weir[test]'``); the rest of ``runtime.testing`` does
not, so import this module explicitly::

    from runtime.testing import strategies as weir_st

* ``topologies()``: one of the kit's job shapes (``runtime.testing.topologies``);
* ``parallelisms()``: 1 to 4;
* ``checkpoint_setups()`` / ``checkpoint_options()``: a ``CheckpointSetup``, or the
  keyword arguments of ``env.enable_checkpointing`` for one;
* ``injected_failures(points, parallelism)`` / ``failure_schedules(...)``: failures at
  the given failure points, in any phase, any subtask (or whichever comes first);
* ``sure_failures(points, parallelism, records)``: a failure that is sure to fire in the
  first attempt of a run, whatever the timing (the first of every schedule that
  ``job_cases`` draws, so every case injects at least one failure);
* ``notification_chaos()``: None or a ``NotificationChaos``;
* ``job_cases(...)``: all of the above for one run of the harness, with or without a
  slow sink (backpressure, so that unaligned barriers overtake data in flight).

Failures are drawn small (a few, early) so that they fire in small jobs; shrinking
goes towards fewer failures, in the processing phase, at the first subtask.

Why a sure failure fires: it is a ``PROCESSING`` failure at any subtask (whichever gets
there first) after fewer records than the busiest subtask of its failure point sees in
a run without failures. In the first attempt every record of the input goes through
every failure point (the kit's topologies lose no record, and nothing was restored),
so either another failure of the schedule fires first in that attempt or this one
fires: each attempt that starts from scratch fires at least one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from runtime.errors import ConfigError
from runtime.testing.chaos import NotificationChaos
from runtime.testing.failures import InjectedFailure, Phase
from runtime.testing.kit import KitOptions
from runtime.testing.modes import CheckpointSetup
from runtime.testing.topologies import TOPOLOGIES, Topology

MAX_AFTER_RECORDS = 200
"""The largest ``after_records`` drawn: within what a subtask of a small job sees."""
MAX_CHECKPOINT = 4
"""The largest ``checkpoint`` drawn: small jobs take a handful of checkpoints."""


def topologies(choices: Sequence[Topology] = TOPOLOGIES) -> st.SearchStrategy[Topology]:
    """One of ``choices`` (every topology of the kit by default)."""
    return st.sampled_from(list(choices))


def parallelisms(choices: Sequence[int] = (1, 2, 3, 4)) -> st.SearchStrategy[int]:
    """A parallelism among ``choices``."""
    return st.sampled_from(list(choices))


def checkpoint_setups(
    choices: Sequence[CheckpointSetup] = tuple(CheckpointSetup),
) -> st.SearchStrategy[CheckpointSetup]:
    """A checkpointing mode among ``choices``."""
    return st.sampled_from(list(choices))


def checkpoint_options(
    choices: Sequence[CheckpointSetup] = tuple(CheckpointSetup),
) -> st.SearchStrategy[dict[str, Any]]:
    """The keyword arguments of ``env.enable_checkpointing`` for a mode in ``choices``."""
    return checkpoint_setups(choices).map(lambda setup: setup.options())


def injected_failures(
    points: Sequence[str],
    parallelism: int,
    phases: Sequence[Phase] = tuple(Phase),
    *,
    max_after_records: int = MAX_AFTER_RECORDS,
    max_checkpoint: int = MAX_CHECKPOINT,
) -> st.SearchStrategy[InjectedFailure]:
    """A failure at one of ``points`` in one of ``phases``, early enough to fire."""

    @st.composite
    def draw_failure(draw: st.DrawFn) -> InjectedFailure:
        phase = draw(st.sampled_from(list(phases)))
        point = draw(st.sampled_from(list(points)))
        subtask = draw(st.none() | st.integers(0, parallelism - 1))
        if phase is Phase.RESTORE:
            return InjectedFailure(point, subtask, phase)
        after = draw(st.none() | st.integers(0, max_after_records))
        checkpoint = draw(st.none() | st.integers(1, max_checkpoint))
        return InjectedFailure(point, subtask, phase, after, checkpoint)

    return draw_failure()


def sure_failures(
    points: Sequence[str], parallelism: int, records: int
) -> st.SearchStrategy[InjectedFailure]:
    """A failure that fires in a run's first attempt unless another one fired before.

    A ``PROCESSING`` failure at one of ``points``, at whichever subtask gets there first,
    after fewer than ``records // parallelism`` records: the busiest of ``parallelism``
    subtasks sees at least that many when ``records`` go through the point.

    Args:
        points: failure points that each see at least ``records`` records in a run
            without failures (every point of a kit topology sees every record of one
            of its sources).
        parallelism: the subtasks of each point.
        records: the fewest records any of ``points`` sees in a run without failures.

    Raises:
        ConfigError: fewer records than subtasks: no failure is sure to fire.
    """
    if records < parallelism:
        raise ConfigError(
            f"sure_failures: {records} records over {parallelism} subtasks leave a subtask "
            f"without records; give each point at least as many records as subtasks"
        )
    return st.builds(
        InjectedFailure,
        point=st.sampled_from(list(points)),
        subtask=st.none(),
        phase=st.just(Phase.PROCESSING),
        after_records=st.integers(0, min(MAX_AFTER_RECORDS, records // parallelism - 1)),
    )


def failure_schedules(
    points: Sequence[str],
    parallelism: int,
    *,
    min_failures: int = 0,
    max_failures: int = 3,
    phases: Sequence[Phase] = tuple(Phase),
    max_after_records: int = MAX_AFTER_RECORDS,
    max_checkpoint: int = MAX_CHECKPOINT,
    sure_records: int | None = None,
) -> st.SearchStrategy[list[InjectedFailure]]:
    """Between ``min_failures`` and ``max_failures`` failures (see ``injected_failures``).

    With ``sure_records`` (the fewest records any of ``points`` sees in a run without
    failures) and ``min_failures >= 1``, the first failure is a ``sure_failures`` one: at
    least one failure of the schedule fires in the run.
    """
    others = injected_failures(
        points,
        parallelism,
        phases,
        max_after_records=max_after_records,
        max_checkpoint=max_checkpoint,
    )
    if sure_records is None or min_failures < 1:
        return st.lists(others, min_size=min_failures, max_size=max_failures)
    sure = sure_failures(points, parallelism, sure_records)
    rest = st.lists(others, min_size=min_failures - 1, max_size=max_failures - 1)
    return st.tuples(sure, rest).map(lambda drawn: [drawn[0], *drawn[1]])


def notification_chaos() -> st.SearchStrategy[NotificationChaos | None]:
    """None, or a seeded ``NotificationChaos`` dropping, repeating, delaying some.

    At least 40% of the notifications get through (``drop + delay <= 0.6``): a sink that
    hears none keeps every transaction pending in its state until it closes, which is
    within the contract but makes each snapshot slower than the last (the pending
    transactions are encoded in the synchronous part), and a run with checkpoints every
    few milliseconds then crawls.
    """
    chaos = st.builds(
        NotificationChaos,
        drop=st.sampled_from([0.0, 0.2, 0.4]),
        repeat=st.sampled_from([0.0, 0.2, 0.5]),
        delay=st.sampled_from([0.0, 0.2]),
        seed=st.integers(0, 2**16),
    )
    return st.none() | chaos


SLOW_SINK_YIELDS = 10
"""``KitOptions.sink_yields`` of a case with a slow sink."""


@dataclass(frozen=True, slots=True)
class JobCase:
    """One drawn case: a job shape, its parallelism, a mode, failures, chaos, pace.

    Attributes:
        slow_sink: whether the sink is slow (its inputs backpressured, so barriers meet
            data in flight) and the sources unthrottled.
    """

    topology: Topology
    parallelism: int
    setup: CheckpointSetup
    schedule: list[InjectedFailure]
    chaos: NotificationChaos | None
    slow_sink: bool = False

    def options(self, base: KitOptions) -> KitOptions:
        """``base`` with this case's pace."""
        if not self.slow_sink:
            return base
        return dataclasses.replace(base, sink_yields=SLOW_SINK_YIELDS, records_per_second=None)


def job_cases(
    *,
    setups: Sequence[CheckpointSetup] = tuple(CheckpointSetup),
    parallelism: Sequence[int] = (1, 2, 4),
    topology_choices: Sequence[Topology] = TOPOLOGIES,
    min_failures: int = 1,
    max_failures: int = 3,
    chaos: bool = True,
    slow_sink: bool = True,
    options: KitOptions | None = None,
) -> st.SearchStrategy[JobCase]:
    """A whole case for ``check_exactly_once`` / ``check_at_least_once``.

    Every case injects at least one failure by default: its schedule starts with a
    ``sure_failures`` one, sized for the records of ``options``.

    Args:
        setups: the modes to draw from.
        parallelism: the parallelisms to draw from.
        topology_choices: the job shapes to draw from (the kit's, or factories whose
            failure points each see every record of one ``kit.source()``).
        min_failures: the fewest failures in a schedule (0 allows runs without one).
        max_failures: the most failures in a schedule.
        chaos: whether to draw notification chaos (else never).
        slow_sink: whether to draw slow sinks (else never).
        options: the sizes the cases will run with (``KitOptions()`` if None): the
            records of one source decide how late a sure failure may come.

    Raises:
        ConfigError: ``min_failures`` is more than ``max_failures``.
    """
    if min_failures > max_failures:
        raise ConfigError(
            f"job_cases: min_failures ({min_failures}) is more than max_failures ({max_failures})"
        )
    sizes = options or KitOptions()
    records = sizes.splits * sizes.records_per_split

    @st.composite
    def draw_case(draw: st.DrawFn) -> JobCase:
        topology = draw(topologies(topology_choices))
        p = draw(parallelisms(parallelism))
        setup = draw(checkpoint_setups(setups))
        schedule = draw(
            failure_schedules(
                topology.points,
                p,
                min_failures=min_failures,
                max_failures=max_failures,
                sure_records=records,
            )
        )
        mistreat = draw(notification_chaos()) if chaos else None
        slow = draw(st.booleans()) if slow_sink else False
        return JobCase(topology, p, setup, schedule, mistreat, slow)

    return draw_case()
