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
* ``notification_chaos()``: None or a ``NotificationChaos``;
* ``job_cases(...)``: all of the above for one run of the harness, with or without a
  slow sink (backpressure, so that unaligned barriers overtake data in flight).

Failures are drawn small (a few, early) so that they fire in small jobs; shrinking
goes towards fewer failures, in the processing phase, at the first subtask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

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


def failure_schedules(
    points: Sequence[str],
    parallelism: int,
    *,
    min_failures: int = 0,
    max_failures: int = 3,
    phases: Sequence[Phase] = tuple(Phase),
    max_after_records: int = MAX_AFTER_RECORDS,
    max_checkpoint: int = MAX_CHECKPOINT,
) -> st.SearchStrategy[list[InjectedFailure]]:
    """Between ``min_failures`` and ``max_failures`` failures (see ``injected_failures``)."""
    return st.lists(
        injected_failures(
            points,
            parallelism,
            phases,
            max_after_records=max_after_records,
            max_checkpoint=max_checkpoint,
        ),
        min_size=min_failures,
        max_size=max_failures,
    )


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
    min_failures: int = 0,
    max_failures: int = 3,
    chaos: bool = True,
    slow_sink: bool = True,
) -> st.SearchStrategy[JobCase]:
    """A whole case for ``check_exactly_once`` / ``check_at_least_once``.

    Args:
        setups: the modes to draw from.
        parallelism: the parallelisms to draw from.
        topology_choices: the job shapes to draw from.
        min_failures: the fewest failures in a schedule.
        max_failures: the most failures in a schedule.
        chaos: whether to draw notification chaos (else never).
        slow_sink: whether to draw slow sinks (else never).
    """

    @st.composite
    def draw_case(draw: st.DrawFn) -> JobCase:
        topology = draw(topologies(topology_choices))
        p = draw(parallelisms(parallelism))
        setup = draw(checkpoint_setups(setups))
        schedule = draw(
            failure_schedules(
                topology.points, p, min_failures=min_failures, max_failures=max_failures
            )
        )
        mistreat = draw(notification_chaos()) if chaos else None
        slow = draw(st.booleans()) if slow_sink else False
        return JobCase(topology, p, setup, schedule, mistreat, slow)

    return draw_case()
