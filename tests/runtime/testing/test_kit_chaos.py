"""``NotificationChaos``: lost, repeated and delayed notifications, and sinks that break."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import ConfigError, RuntimeContext, SinkFunction
from runtime.testing import (
    ChaosSink,
    CheckpointSetup,
    InjectedFailure,
    KitOptions,
    NotificationChaos,
    Phase,
    ValidatingSink,
    ValidatingTransaction,
    ValidationError,
    check_exactly_once,
    run_job,
)
from runtime.testing.topologies import KEYED, PIPELINE


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop": 1.5}, "drop must be a probability"),
        ({"repeat": -0.1}, "repeat must be a probability"),
        ({"delay": True}, "delay must be a probability"),
        ({"drop": 0.6, "delay": 0.6}, "drop \\+ delay must be <= 1"),
    ],
)
def test_bad_probabilities_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NotificationChaos(**kwargs)


class Heard(SinkFunction[Any]):
    def __init__(self) -> None:
        self.ids: list[int] = []

    def write_batch(self, values: list[Any]) -> None:
        pass

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.ids.append(checkpoint_id)


def context(subtask: int = 0) -> RuntimeContext:
    return RuntimeContext(
        operator_name="sink",
        subtask_index=subtask,
        parallelism=2,
        max_parallelism=128,
        job_name="job",
    )


async def notify(chaos: NotificationChaos, ids: list[int], *, failed: bool = False) -> list[int]:
    inner = Heard()
    sink = chaos.wrap(inner)
    await sink.initialize_state(context())
    if not failed:
        sink.finish()  # a sink chained to its source finishes before the final checkpoint
    for checkpoint_id in ids:
        sink.notify_checkpoint_complete(checkpoint_id)
    sink.close()
    return inner.ids


async def test_no_chaos_delivers_every_notification_once() -> None:
    assert await notify(NotificationChaos(), [1, 2, 3]) == [1, 2, 3]


async def test_drops_are_lost_but_the_last_one_comes_at_the_end() -> None:
    chaos = NotificationChaos(drop=1.0)
    assert await notify(chaos, [1, 2, 3]) == [3]
    assert (chaos.stats.dropped, chaos.stats.redelivered_at_end) == (3, 1)


async def test_after_a_failure_held_and_dropped_notifications_are_lost() -> None:
    assert await notify(NotificationChaos(delay=1.0), [1, 2], failed=True) == []
    assert await notify(NotificationChaos(drop=1.0), [1, 2], failed=True) == []


async def test_delays_deliver_held_notifications_before_the_next_one() -> None:
    chaos = NotificationChaos(delay=1.0)
    assert await notify(chaos, [1, 2, 3]) == [1, 2, 3]  # all held, released at the end
    assert chaos.stats.delayed == 3


async def test_repeats_deliver_twice_in_a_row() -> None:
    chaos = NotificationChaos(repeat=1.0)
    assert await notify(chaos, [1, 2]) == [1, 1, 2, 2]
    assert chaos.stats.repeated == 2


@settings(max_examples=200, deadline=None)
@given(
    drop=st.sampled_from([0.0, 0.3, 0.6]),
    repeat=st.sampled_from([0.0, 0.3, 1.0]),
    delay=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 1000),
    count=st.integers(1, 30),
)
def test_notifications_never_go_backwards_and_the_last_one_arrives(
    drop: float, repeat: float, delay: float, seed: int, count: int
) -> None:
    import asyncio

    chaos = NotificationChaos(drop=drop, repeat=repeat, delay=delay, seed=seed)
    heard = asyncio.run(notify(chaos, list(range(1, count + 1))))
    assert heard == sorted(heard)
    assert heard[-1] == count
    assert set(heard) <= set(range(1, count + 1))
    stats = chaos.stats
    assert stats.seen == count
    assert stats.delivered == len(heard)


async def test_the_same_seed_makes_the_same_decisions_per_subtask() -> None:
    first = await notify(NotificationChaos(drop=0.5, repeat=0.5, seed=7), list(range(1, 40)))
    again = await notify(NotificationChaos(drop=0.5, repeat=0.5, seed=7), list(range(1, 40)))
    assert first == again


def test_copies_share_the_chaos_and_keep_their_class() -> None:
    chaos = NotificationChaos(drop=0.1)
    sink = chaos.wrap(ValidatingSink.__new__(ValidatingSink))
    assert isinstance(sink, ChaosSink)
    assert copy.deepcopy(chaos) is chaos
    assert repr(chaos) == "NotificationChaos(drop=0.1, repeat=0, delay=0, seed=0)"


# -- in jobs ----------------------------------------------------------------------------

SMALL = KitOptions(splits=3, records_per_split=200, records_per_second=15_000)


@pytest.mark.parametrize("setup", [CheckpointSetup.ALIGNED, CheckpointSetup.UNALIGNED])
async def test_the_two_phase_commit_sink_honours_the_contract_under_chaos(
    setup: CheckpointSetup,
) -> None:
    # Seed 10 makes subtask 0 of the first attempt delay its first notification, deliver
    # and repeat its second, and drop its third.
    chaos = NotificationChaos(drop=0.4, repeat=0.4, delay=0.3, seed=10)
    report = await check_exactly_once(
        KEYED,
        setup=setup,
        parallelism=2,
        chaos=chaos,
        schedule=[InjectedFailure("sink", phase=Phase.BEFORE_NOTIFY, checkpoint=4)],
        expected=KEYED.expected,
        options=KitOptions(splits=3, records_per_split=300, records_per_second=15_000),
    )
    assert chaos.stats.dropped and chaos.stats.repeated and chaos.stats.delayed
    assert report.chaos is chaos.stats


class CommitsOnlyItsOwnCheckpoint(ValidatingSink):
    """On ``notify(n)`` commits the transaction of ``n`` only (wrong: n subsumes older)."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        pending = self._pending.pop(checkpoint_id, None)
        if pending is not None:
            self.commit(pending)
        self._store()

    def __deepcopy__(self, memo: dict[int, Any]) -> CommitsOnlyItsOwnCheckpoint:
        return CommitsOnlyItsOwnCheckpoint(self.output)


class CommitsOnEveryNotification(ValidatingSink):
    """Keeps committed transactions pending and appends them again (wrong: not idempotent)."""

    staged: dict[str, list[Any]] = {}

    def pre_commit(self, transaction: ValidatingTransaction) -> None:
        self.staged[transaction.txn_id] = self._buffers.pop(transaction.txn_id, [])

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        for pending_id, transaction in sorted(self._pending.items()):
            if pending_id == checkpoint_id:
                self.output.append(transaction.subtask, self.staged[transaction.txn_id])

    def __deepcopy__(self, memo: dict[int, Any]) -> CommitsOnEveryNotification:
        return CommitsOnEveryNotification(self.output)


@pytest.mark.parametrize(
    ("sink", "chaos", "finding"),
    [
        (CommitsOnlyItsOwnCheckpoint, NotificationChaos(drop=1.0), "first lost"),
        (CommitsOnEveryNotification, NotificationChaos(repeat=1.0), "first duplicated"),
    ],
    ids=["drops", "repeats"],
)
async def test_chaos_exposes_a_sink_that_breaks_the_contract(
    sink: type[ValidatingSink], chaos: NotificationChaos, finding: str
) -> None:
    # Without chaos, and without failures, the broken sink looks right.
    calm = await run_job(PIPELINE, parallelism=1, sink=sink, options=SMALL)
    calm.output.validate(PIPELINE.expected(calm.kit)).assert_exactly_once()
    stormy = await run_job(PIPELINE, parallelism=1, sink=sink, chaos=chaos, options=SMALL)
    with pytest.raises(ValidationError, match=finding):
        stormy.output.validate(PIPELINE.expected(stormy.kit)).assert_exactly_once()
