"""Failure schedules and failure points: each failure fires once, and costs one restart."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runtime import ConfigError, RuntimeContext, SinkFunction, TwoPhaseCommitSink
from runtime.testing import (
    CheckpointSetup,
    CommittedOutput,
    FailingIdentity,
    FailingSink,
    FailureSchedule,
    InjectedFailure,
    InjectedFailureError,
    JobKit,
    KitOptions,
    Phase,
    ValidatingSink,
    failure_point,
    run_job,
)
from runtime.testing.topologies import KEYED, PIPELINE

# -- the schedule (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"point": ""}, "point must be a non-empty str"),
        ({"point": "x", "subtask": -1}, "subtask must be None or an int >= 0"),
        ({"point": "x", "after_records": -1}, "after_records must be None or an int >= 0"),
        ({"point": "x", "checkpoint": 0}, "checkpoint must be None or an int >= 1"),
        ({"point": "x", "phase": "snapshot"}, "phase must be a Phase"),
        (
            {"point": "x", "phase": Phase.RESTORE, "checkpoint": 2},
            "a RESTORE failure fires when a subtask is restored",
        ),
    ],
)
def test_bad_failures_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InjectedFailure(**kwargs)


def test_a_schedule_takes_only_injected_failures() -> None:
    with pytest.raises(ConfigError, match="expected InjectedFailure objects"):
        FailureSchedule(["sink"])  # type: ignore[list-item]


def test_a_failure_fires_once_and_only_where_and_when_it_is_due() -> None:
    schedule = FailureSchedule(
        [InjectedFailure("map", subtask=1, phase=Phase.PROCESSING, after_records=10)]
    )
    check = schedule.check
    assert check("other", 1, 0, Phase.PROCESSING, records=50) is None
    assert check("map", 0, 0, Phase.PROCESSING, records=50) is None  # another subtask
    assert check("map", 1, 0, Phase.SNAPSHOT, records=50, checkpoint_id=3) is None
    assert check("map", 1, 0, Phase.PROCESSING, records=9) is None  # not yet
    fired = check("map", 1, 0, Phase.PROCESSING, records=10)
    assert fired is not None and (fired.subtask, fired.attempt, fired.records) == (1, 0, 10)
    assert check("map", 1, 1, Phase.PROCESSING, records=10) is None  # once over the run
    assert schedule.fired == [fired] and schedule.unfired == []


def test_at_most_one_failure_fires_per_attempt() -> None:
    schedule = FailureSchedule([InjectedFailure("a"), InjectedFailure("b")])
    assert schedule.check("a", 0, 0, Phase.PROCESSING, records=0) is not None
    assert schedule.check("b", 0, 0, Phase.PROCESSING, records=0) is None
    assert schedule.check("b", 3, 1, Phase.PROCESSING, records=0) is not None
    assert [f.attempt for f in schedule.fired] == [0, 1]


def test_checkpoint_bounds_the_checkpoint_id_or_the_completed_one() -> None:
    schedule = FailureSchedule(
        [
            InjectedFailure("s", phase=Phase.AFTER_ACK, checkpoint=3),
            InjectedFailure("p", phase=Phase.PROCESSING, checkpoint=2),
        ]
    )
    assert schedule.check("s", 0, 0, Phase.AFTER_ACK, records=0, checkpoint_id=2) is None
    assert schedule.check("s", 0, 0, Phase.AFTER_ACK, records=0, checkpoint_id=4) is not None
    assert schedule.check("p", 0, 1, Phase.PROCESSING, records=5, completed=1) is None
    assert schedule.check("p", 0, 1, Phase.PROCESSING, records=5, completed=2) is not None


def test_every_copy_shares_the_schedule() -> None:
    schedule = FailureSchedule([InjectedFailure("x")])
    assert copy.deepcopy(schedule) is schedule
    identity = copy.deepcopy(FailingIdentity(schedule, "x"))
    assert identity.site.schedule is schedule
    sink = copy.deepcopy(FailingSink(ValidatingSink(CommittedOutput()), schedule))
    assert sink.site.schedule is schedule
    assert "'x' any subtask, processing (not fired)" in schedule.describe()


def test_failure_points_need_a_schedule_and_a_name() -> None:
    with pytest.raises(ConfigError, match="schedule must be a FailureSchedule"):
        failure_point([InjectedFailure("x")], "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="failure point name must be a non-empty str"):
        failure_point(FailureSchedule(), "")


def context(subtask: int = 0, attempt: int = 0, restored: bool = False) -> RuntimeContext:
    return RuntimeContext(
        operator_name="op",
        subtask_index=subtask,
        parallelism=2,
        max_parallelism=128,
        job_name="job",
        attempt=attempt,
        is_restored=restored,
        checkpointing_enabled=True,
    )


def test_the_identity_lets_after_records_through_then_fails() -> None:
    schedule = FailureSchedule([InjectedFailure("x", after_records=3)])
    point = failure_point(schedule, "x")
    point.initialize_state(context())
    assert [point.map(i) for i in range(3)] == [0, 1, 2]
    with pytest.raises(InjectedFailureError, match="injected failure at 'x' subtask 0, processing"):
        point.map(3)
    point.map(4)  # fired once: never again


class Recording(SinkFunction[Any]):
    """A sink that logs its hooks (one log for the test)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def __deepcopy__(self, memo: dict[int, Any]) -> Recording:
        return self

    def initialize_state(self, ctx: RuntimeContext) -> None:
        self.log.append("initialize_state")

    def write_batch(self, values: list[Any]) -> None:
        self.log.append(("write", list(values)))

    def snapshot_state(self, checkpoint_id: int) -> None:
        self.log.append(("snapshot", checkpoint_id))

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.log.append(("complete", checkpoint_id))


def test_the_failing_sink_hands_on_the_records_before_the_failing_one() -> None:
    log: list[Any] = []
    schedule = FailureSchedule([InjectedFailure("sink", after_records=5)])
    sink = FailingSink(Recording(log), schedule)
    sink.write_batch([0, 1, 2])
    with pytest.raises(InjectedFailureError):
        sink.write_batch([3, 4, 5, 6])
    assert log == [("write", [0, 1, 2]), ("write", [3, 4])]


def test_the_failing_sink_fails_around_the_wrapped_sinks_hooks() -> None:
    log: list[Any] = []
    schedule = FailureSchedule(
        [
            InjectedFailure("sink", phase=Phase.SNAPSHOT),
            InjectedFailure("sink", phase=Phase.BEFORE_NOTIFY),
            InjectedFailure("sink", phase=Phase.AFTER_NOTIFY),
        ]
    )
    for attempt in range(3):
        sink = FailingSink(Recording(log), schedule)
        sink.site.bind(context(attempt=attempt))
        with pytest.raises(InjectedFailureError):
            sink.snapshot_state(1)
            sink.notify_checkpoint_complete(1)
    # SNAPSHOT after the sink's own snapshot; BEFORE_NOTIFY before its commit, and
    # AFTER_NOTIFY after it.
    assert log == [("snapshot", 1), ("snapshot", 1), ("snapshot", 1), ("complete", 1)]


async def test_the_failing_sink_reads_two_phase_commit_attributes_through() -> None:
    output = CommittedOutput()
    sink = FailingSink(ValidatingSink(output), FailureSchedule())
    await sink.initialize_state(context())
    sink.write_batch(["a", "b"])
    sink.snapshot_state(1)
    assert list(sink.pending_transactions) == [1]
    sink.notify_checkpoint_complete(1)
    assert output.records() == ["a", "b"]
    assert isinstance(sink.sink, TwoPhaseCommitSink)


class AsyncSink(SinkFunction[Any]):
    def __init__(self) -> None:
        self.items: list[Any] = []

    async def invoke(self, value: Any) -> None:
        self.items.append(value)


async def test_a_sink_that_writes_async_gets_an_async_wrapper() -> None:
    schedule = FailureSchedule([InjectedFailure("sink", after_records=1)])
    inner = AsyncSink()
    sink = FailingSink(inner, schedule)
    assert isinstance(sink, FailingSink)
    with pytest.raises(InjectedFailureError):
        await sink.write_batch(["a", "b"])  # type: ignore[misc]
    assert inner.items == ["a"]
    assert type(copy.deepcopy(sink)) is type(sink)


# -- in jobs: each phase fires once and costs one restart -------------------------------

SMALL = KitOptions(splits=2, records_per_split=400, records_per_second=10_000)

PHASES = [
    Phase.PROCESSING,
    Phase.SNAPSHOT,
    Phase.AFTER_ACK,
    Phase.BEFORE_NOTIFY,
    Phase.AFTER_NOTIFY,
]


@pytest.mark.parametrize("point", ["source", "count", "sink"])
@pytest.mark.parametrize("phase", PHASES, ids=lambda phase: phase.value)
async def test_each_phase_fires_once_and_the_job_restarts_once(point: str, phase: Phase) -> None:
    after = 40 if phase is Phase.PROCESSING else None
    checkpoint = None if phase is Phase.PROCESSING else 2
    schedule = [
        InjectedFailure(point, subtask=1, phase=phase, after_records=after, checkpoint=checkpoint)
    ]
    outcome = await run_job(KEYED, parallelism=2, schedule=schedule, options=SMALL)
    assert len(outcome.fired) == 1 and outcome.unfired == []
    fired = outcome.fired[0]
    assert (fired.subtask, fired.attempt) == (1, 0)
    if checkpoint is not None:
        assert fired.checkpoint_id is not None and fired.checkpoint_id >= checkpoint
    assert outcome.result.restarts == 1
    assert len(outcome.result.failures) == 1
    assert "InjectedFailureError" in outcome.result.failures[0]
    assert phase.value in outcome.result.failures[0]
    outcome.output.validate(KEYED.expected(outcome.kit)).assert_exactly_once()


@pytest.mark.parametrize("point", ["source", "sink"])
async def test_a_restore_failure_fires_on_the_restored_attempt(point: str) -> None:
    schedule = [
        InjectedFailure("count", phase=Phase.PROCESSING, checkpoint=2),
        InjectedFailure(point, phase=Phase.RESTORE),
    ]
    outcome = await run_job(KEYED, parallelism=2, schedule=schedule, options=SMALL)
    assert [(f.failure.phase, f.attempt) for f in outcome.fired] == [
        (Phase.PROCESSING, 0),
        (Phase.RESTORE, 1),
    ]
    assert outcome.result.restarts == 2
    outcome.output.validate(KEYED.expected(outcome.kit)).assert_exactly_once()


async def test_a_restore_failure_does_not_fire_without_a_restore() -> None:
    outcome = await run_job(
        PIPELINE, schedule=[InjectedFailure("map", phase=Phase.RESTORE)], options=SMALL
    )
    assert outcome.fired == [] and outcome.result.restarts == 0
    assert [f.phase for f in outcome.unfired] == [Phase.RESTORE]


async def test_a_failure_whose_moment_never_comes_does_not_fire() -> None:
    schedule = [
        InjectedFailure("map", subtask=3),  # parallelism 2: no subtask 3
        InjectedFailure("map", after_records=10**6),
        InjectedFailure("sink", phase=Phase.SNAPSHOT, checkpoint=10**6),
    ]
    outcome = await run_job(PIPELINE, schedule=schedule, options=SMALL)
    assert outcome.fired == [] and len(outcome.unfired) == 3
    assert outcome.result.restarts == 0


async def test_failures_fire_one_per_attempt_in_any_order() -> None:
    schedule = [InjectedFailure("source"), InjectedFailure("map"), InjectedFailure("sink")]
    outcome = await run_job(
        PIPELINE, setup=CheckpointSetup.UNALIGNED, schedule=schedule, options=SMALL
    )
    assert sorted(f.attempt for f in outcome.fired) == [0, 1, 2]
    assert outcome.result.restarts == 3


def test_a_failure_point_in_a_hand_built_job_takes_the_kits_schedule() -> None:
    from runtime import StreamEnvironment

    schedule = FailureSchedule([InjectedFailure("mine")])
    env = StreamEnvironment()
    kit = JobKit(env, schedule, SMALL)
    stream = kit.failure_point(kit.source("in"), "mine")
    assert stream.transformation.name == "mine (failure point)"
    assert set(kit.sources) == {"in"}
    with pytest.raises(ConfigError, match="a source named 'in' exists already"):
        kit.source("in")
