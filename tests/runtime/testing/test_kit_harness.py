"""The harness: a user's job factory checked with and without failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime import (
    ConfigError,
    FilterFunction,
    KeyedProcessFunction,
    MapFunction,
    RuntimeContext,
    ValueStateDescriptor,
)
from runtime.api.datastream import DataStream
from runtime.testing import (
    CheckpointSetup,
    InjectedFailure,
    JobKit,
    KitOptions,
    Phase,
    Tagged,
    ValidationError,
    check_at_least_once,
    check_exactly_once,
)

SMALL = KitOptions(splits=3, records_per_split=200, records_per_second=15_000)


class Count(KeyedProcessFunction[Tagged, Tagged]):
    """The example of the kit's documentation: a running count per key in keyed state."""

    def open(self, ctx: RuntimeContext) -> None:
        self.n = ctx.get_state(ValueStateDescriptor("n", default=0, type=int))

    def process_element(self, record: Tagged, ctx: RuntimeContext) -> list[Tagged]:
        self.n.update(self.n.value() + 1)
        return [record.with_value(self.n.value())]


def counting_job(kit: JobKit) -> DataStream:
    counted = kit.source().key_by(lambda r: r.key).process(Count(), name="count", uid="count")
    return kit.failure_point(counted, "count")


@pytest.mark.parametrize("setup", [CheckpointSetup.ALIGNED, CheckpointSetup.UNALIGNED])
async def test_the_documented_example_holds(setup: CheckpointSetup) -> None:
    report = await check_exactly_once(
        counting_job,
        setup=setup,
        parallelism=2,
        schedule=[
            InjectedFailure("count", subtask=1, after_records=150),
            InjectedFailure("sink", phase=Phase.BEFORE_NOTIFY, checkpoint=2),
            InjectedFailure("source", phase=Phase.RESTORE),
        ],
        expected=lambda kit: kit.expected(),
        options=SMALL,
    )
    assert report.run.result.restarts == len(report.run.fired) >= 2
    assert report.reference.result.restarts == 0
    assert report.validation.exactly_once
    assert "with failures:" in report.summary()


class CountInAnAttribute(KeyedProcessFunction[Tagged, Tagged]):
    """Keeps its counts in a dict instead of keyed state: lost on a restore (wrong)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def process_element(self, record: Tagged, ctx: RuntimeContext) -> list[Tagged]:
        count = self.counts[record.key] = self.counts.get(record.key, 0) + 1
        return [record.with_value(count)]


def attribute_job(kit: JobKit) -> DataStream:
    counted = kit.source().key_by(lambda r: r.key).process(CountInAnAttribute(), name="count")
    return kit.failure_point(counted, "count")


async def test_state_kept_outside_checkpoints_is_caught() -> None:
    with pytest.raises(ValidationError, match="state is not exactly-once") as caught:
        await check_exactly_once(
            attribute_job,
            schedule=[InjectedFailure("count", checkpoint=2)],
            # ~0.1 s of input: checkpoint 2 completes well before its end.
            options=KitOptions(splits=3, records_per_split=500, records_per_second=15_000),
        )
    message = str(caught.value)
    assert "the (key, value) pairs differ" in message
    assert "the final value per key differs" in message
    assert "schedule: [\"'count' any subtask, processing, checkpoint >= 2\"]" in message


class DropsAfterARestart(FilterFunction[Tagged]):
    """Drops every tenth record once the job has restarted (wrong)."""

    def open(self, ctx: RuntimeContext) -> None:
        self.attempt = ctx.attempt

    def filter(self, value: Tagged) -> bool:
        return self.attempt == 0 or value.seq % 10 != 0


def lossy_job(kit: JobKit) -> DataStream:
    return kit.source().filter(DropsAfterARestart(), name="lossy")


async def test_records_lost_after_a_restart_are_caught_against_the_reference() -> None:
    schedule = [InjectedFailure("source", after_records=20)]
    with pytest.raises(ValidationError, match=r"exactly-once violated: .* lost"):
        await check_exactly_once(lossy_job, schedule=schedule, options=SMALL)
    with pytest.raises(ValidationError, match=r"at-least-once violated: .* lost"):
        await check_at_least_once(lossy_job, schedule=schedule, options=SMALL)


class FailsOnItsOwn(MapFunction[Tagged, Tagged]):
    """Fails in its first attempt on record 50 of split ``source/0``."""

    def open(self, ctx: RuntimeContext) -> None:
        self.attempt = ctx.attempt

    def map(self, value: Tagged) -> Tagged:
        if self.attempt == 0 and value.record_id == ("source/0", 50, 0):
            raise RuntimeError("a bug in the job")
        return value


async def test_a_failure_that_was_not_injected_is_reported() -> None:
    def job(kit: JobKit) -> DataStream:
        return kit.source().map(FailsOnItsOwn(), name="buggy")

    with pytest.raises(ValidationError, match="the job restarted 1 times but 0 injected"):
        await check_exactly_once(job, options=SMALL)


async def test_at_least_once_through_a_sink_without_transactions() -> None:
    report = await check_at_least_once(
        counting_job,
        setup=CheckpointSetup.AT_LEAST_ONCE,
        schedule=[InjectedFailure("sink", after_records=300)],
        transactional=False,
        expected=lambda kit: kit.expected(),
        options=SMALL,
    )
    assert report.validation.at_least_once
    assert report.run.result.restarts == 1


async def test_exactly_once_needs_an_exactly_once_mode() -> None:
    with pytest.raises(ConfigError, match="at_least_once checkpoints do not give exactly-once"):
        await check_exactly_once(counting_job, setup=CheckpointSetup.AT_LEAST_ONCE)


async def test_the_factory_must_return_a_stream() -> None:
    def job(kit: JobKit) -> Any:
        kit.source()
        return None

    with pytest.raises(ConfigError, match="must return the DataStream to validate, got NoneType"):
        await check_exactly_once(job, options=SMALL)


async def test_a_job_that_does_not_end_is_cancelled_and_reported() -> None:
    async def forever(record: Tagged) -> Tagged:
        await asyncio.Event().wait()
        return record

    def job(kit: JobKit) -> DataStream:
        return kit.source().map(forever, name="stuck")

    options = KitOptions(splits=1, records_per_split=10, timeout=0.3)
    with pytest.raises(ValidationError, match=r"the job did not end within 0\.3 s"):
        await check_exactly_once(job, options=options)


def test_the_setups_select_the_checkpointing_options() -> None:
    from runtime import CheckpointingMode

    assert CheckpointSetup.ALIGNED.options() == {
        "mode": CheckpointingMode.EXACTLY_ONCE,
        "unaligned": False,
    }
    assert CheckpointSetup.UNALIGNED.options()["aligned_timeout"] == 0.0
    assert CheckpointSetup.ALIGNED_TIMEOUT.options(0.5)["aligned_timeout"] == 0.5
    assert CheckpointSetup.AT_LEAST_ONCE.options()["mode"] is CheckpointingMode.AT_LEAST_ONCE
    assert [s.exactly_once for s in CheckpointSetup] == [True, True, True, False]
