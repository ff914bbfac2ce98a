"""The testing kit: prove that a job, or the runtime, recovers with exactly-once results.

Weir promises Flink's guarantees: after any number of failures and restores from the
latest completed checkpoint, an exactly-once job's state and its two-phase-commit
output are as if nothing had failed, and an at-least-once job loses nothing. This
package lets you test that promise on **your own job**, deterministically, and lets
property tests search for the failure that breaks it.

The pieces:

* **Tagged records and sources** (``Tagged``, ``TaggedSequenceSource``): each record
  names its split and sequence number, has a key, and carries a checksum of both, so
  loss, duplication, reordering and corruption can be told apart downstream.
* **Validating sinks** (``ValidatingSink``: exactly-once, on ``TwoPhaseCommitSink``;
  ``AtLeastOnceSink``): they write into a ``CommittedOutput`` shared by every subtask
  and attempt; ``output.validate(expected)`` returns a ``Validation`` report (lost,
  duplicated, unexpected, out of order per split or per key, corrupt) with
  ``assert_exactly_once()`` and ``assert_at_least_once()``.
* **Deterministic failures** (``FailureSchedule`` of ``InjectedFailure(point, subtask,
  phase, after_records, checkpoint)``, phases ``PROCESSING``, ``SNAPSHOT``,
  ``AFTER_ACK``, ``BEFORE_NOTIFY``, ``AFTER_NOTIFY``, ``RESTORE``): raised at failure
  points, ``failure_point(schedule, name)`` (an identity map to put anywhere) and
  ``FailingSink(sink, schedule)`` (around any sink). Each failure fires once over the
  whole run and at most one per attempt, so the job restarts exactly
  ``len(schedule.fired)`` times.
* **Notification chaos** (``NotificationChaos(drop=, repeat=, delay=, seed=)``): drops,
  repeats and delays a sink's ``notify_checkpoint_complete`` the way Flink's contract
  allows, to prove that the sink commits each transaction once all the same.
* **The harness** (``check_exactly_once``, ``check_at_least_once``): runs your job
  factory without failures and with them, and asserts the guarantee on output, state
  and restarts.
* **Gates** (``GatedSource(source, SourceGate(...))``): a source that holds back after
  ``n`` records, or at its end, or blocks its subtask, until the test opens the gate;
  with ``wait_held``, ``wait_flushed`` and ``wait_snapshots`` a test synchronises with
  the job instead of sleeping (a job that cannot end before it is cancelled, data
  queued when a barrier arrives).
* **Topologies and Hypothesis strategies** (``TOPOLOGIES``; the module
  ``runtime.testing.strategies``, which needs Hypothesis): job shapes, parallelism,
  checkpointing modes (``CheckpointSetup``), failure schedules and chaos to draw from.

Checking your own job
---------------------

Write a job factory: it gets a ``JobKit``, builds the job on ``kit.env`` from
``kit.source(name)`` (a tagged source, followed by a failure point of the same name),
and returns the stream to validate. Keep the ``Tagged`` records flowing to the end and
put what your job computes in their ``value`` (``record.with_value(...)``); the harness
attaches the sink (failure point ``"sink"``)::

    import asyncio
    from runtime import KeyedProcessFunction, ValueStateDescriptor
    from runtime.testing import (CheckpointSetup, InjectedFailure, JobKit, Phase,
                                 check_exactly_once)

    class Count(KeyedProcessFunction):
        def open(self, ctx):
            self.n = ctx.get_state(ValueStateDescriptor("n", default=0, type=int))

        def process_element(self, record, ctx):
            self.n.update(self.n.value() + 1)
            return [record.with_value(self.n.value())]

    def job(kit: JobKit):
        counted = (kit.source()
                   .key_by(lambda r: r.key)
                   .process(Count(), name="count", uid="count"))
        return kit.failure_point(counted, "count")      # a place to fail at

    report = asyncio.run(check_exactly_once(
        job,
        setup=CheckpointSetup.UNALIGNED,
        parallelism=2,
        schedule=[
            InjectedFailure("count", subtask=1, after_records=150),
            InjectedFailure("sink", phase=Phase.BEFORE_NOTIFY, checkpoint=2),
            InjectedFailure("source", phase=Phase.RESTORE),
        ],
    ))
    print(report.summary())

The check raises ``ValidationError`` (an ``AssertionError``) naming the lost,
duplicated or reordered records, the state that differs, or the restarts that do not
match the failures that fired. ``KitOptions`` sets the size and pace of the job
(splits, records, keys, rate, checkpoint interval, buffer and channel sizes).

Without the harness, the pieces compose by hand: ``TaggedSequenceSource`` in
``env.from_source``, ``stream.map(failure_point(schedule, "here"))``,
``stream.sink_to(FailingSink(chaos.wrap(ValidatingSink(output)), schedule))``,
``FixedDelayRestart(attempts=len(schedule) + 2, delay=0)``, then
``output.validate(source.expected()).assert_exactly_once()`` and
``result.restarts == len(schedule.fired)``.

Property tests
--------------

``tests/e2e/test_exactly_once_properties.py`` checks the runtime itself with the kit:
every topology, parallelism 1, 2 and 4, failure schedules and notification chaos, for
each of aligned, unaligned, aligned-with-timeout (exactly-once: 0 lost, 0 duplicated,
same state) and at-least-once (0 lost), in simulation. CI runs
``WEIR_PROPERTY_EXAMPLES`` examples per mode (20 by default); the long run::

    WEIR_PROPERTY_EXAMPLES=5000 python -m pytest tests/e2e/test_exactly_once_properties.py \
        --hypothesis-profile=weir-long

Deterministic simulation
------------------------

``check_exactly_once(job, ..., simulate=True, seed=N)`` runs both runs of the check on
virtual time with a seeded interleaving (``runtime.testing.simulation``; ``simulate(N)``
runs any coroutine so). The same seed gives the same run bit for bit; a failing check
ends with a ``replay:`` line (``runtime.testing.replay``); runs without failures that
disagree raise ``OrderDependenceError`` (``runtime.testing.diagnosis``). The pytest
plugin (``runtime.testing.plugin``) turns a job factory into a Hypothesis property with
one marked test. RocksDB, sockets and subprocesses are refused (``SimulationError``).
"""

from __future__ import annotations

from runtime.testing.chaos import ChaosSink, ChaosStatistics, NotificationChaos
from runtime.testing.diagnosis import OrderDependenceError
from runtime.testing.failures import (
    FailureSchedule,
    FiredFailure,
    InjectedFailure,
    InjectedFailureError,
    Phase,
)
from runtime.testing.gates import GatedSource, SourceGate
from runtime.testing.harness import (
    CheckReport,
    RunOutcome,
    check_at_least_once,
    check_exactly_once,
    run_job,
)
from runtime.testing.injection import FailingIdentity, FailingSink, SinkWrapper, failure_point
from runtime.testing.kit import JobFactory, JobKit, KitOptions
from runtime.testing.modes import CheckpointSetup
from runtime.testing.replay import replay
from runtime.testing.simulation import (
    Simulation,
    SimulationError,
    SimulationLoop,
    current_simulation,
    simulate,
)
from runtime.testing.sinks import (
    AtLeastOnceSink,
    CommittedOutput,
    CommittedTransaction,
    OutputStatistics,
    ValidatingSink,
    ValidatingTransaction,
)
from runtime.testing.sources import TaggedSequenceSource, TaggedSplit
from runtime.testing.tagged import RecordId, Tagged, checksum
from runtime.testing.topologies import TOPOLOGIES, CopyNumber, RunningCount, Topology
from runtime.testing.validation import (
    OrderViolation,
    Validation,
    ValidationError,
    compare_values,
    validate,
)

__all__ = [
    "TOPOLOGIES",
    "AtLeastOnceSink",
    "ChaosSink",
    "ChaosStatistics",
    "CheckReport",
    "CheckpointSetup",
    "CommittedOutput",
    "CommittedTransaction",
    "CopyNumber",
    "FailingIdentity",
    "FailingSink",
    "FailureSchedule",
    "FiredFailure",
    "GatedSource",
    "InjectedFailure",
    "InjectedFailureError",
    "JobFactory",
    "JobKit",
    "KitOptions",
    "NotificationChaos",
    "OrderDependenceError",
    "OrderViolation",
    "OutputStatistics",
    "Phase",
    "RecordId",
    "RunOutcome",
    "RunningCount",
    "Simulation",
    "SimulationError",
    "SimulationLoop",
    "SinkWrapper",
    "SourceGate",
    "Tagged",
    "TaggedSequenceSource",
    "TaggedSplit",
    "Topology",
    "ValidatingSink",
    "ValidatingTransaction",
    "Validation",
    "ValidationError",
    "check_at_least_once",
    "check_exactly_once",
    "checksum",
    "compare_values",
    "current_simulation",
    "failure_point",
    "replay",
    "run_job",
    "simulate",
    "validate",
]
