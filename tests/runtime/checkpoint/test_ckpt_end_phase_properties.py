"""The coordinator's end of the job (FLIP-147) under random schedules (Hypothesis).

A schedule interleaves tasks ending their input, periodic triggers (the clock moving one
interval), acknowledgements of the oldest pending checkpoint (a task's acknowledgement
says "after the end of its input" exactly when the task had ended it by then: its
snapshot is taken when it acknowledges) and declines. Whatever the schedule:

* a completion is notified ``final`` only if every task acknowledged it after its end;
* there is at most one final checkpoint, and nothing is triggered after it;
* once every task ended its input, the schedule's tail (acknowledge whatever is
  pending, let the clock move) always reaches a final checkpoint: the job ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.checkpoint import CheckpointConfig
from runtime.checkpoint.events import NotifyCheckpointComplete, TriggerCheckpoint

TASKS = ("src:0", "src:1", "map:0", "map:1")

steps = st.one_of(
    st.tuples(st.just("end"), st.sampled_from(TASKS)),
    st.tuples(st.just("tick"), st.none()),
    st.tuples(st.just("ack"), st.none()),
    st.tuples(st.just("decline"), st.sampled_from(TASKS)),
)


async def run_schedule(make: Callable[..., Any], schedule: list[tuple[str, Any]]) -> None:
    h = make(
        CheckpointConfig(interval=10.0, tolerable_failures=1_000),
        sources=TASKS[:2],
        others=TASKS[2:],
    )
    await h.start()
    ended: set[str] = set()
    flags: dict[int, dict[str, bool]] = {}  # per checkpoint: task -> after its end

    def triggered() -> list[int]:
        return [m.barrier.checkpoint_id for m in h.of_type("src:0", TriggerCheckpoint)]

    def notifications() -> list[NotifyCheckpointComplete]:
        return h.of_type("map:0", NotifyCheckpointComplete)

    def check() -> None:
        finals = [n.checkpoint_id for n in notifications() if n.final]
        assert len(finals) <= 1, f"more than one final checkpoint: {finals}"
        for final in finals:
            assert flags.get(final) and all(flags[final].values()), (
                f"checkpoint {final} notified final, acknowledged {flags.get(final)}"
            )
            assert len(flags[final]) == len(TASKS)
            assert max(triggered()) == final, f"triggered after the final {final}"

    async def ack_oldest() -> None:
        pending = sorted(h.coordinator.pending)
        if pending:
            checkpoint_id = pending[0]
            flags[checkpoint_id] = {task: task in ended for task in TASKS}
            for task in TASKS:
                h.ack(checkpoint_id, task, after_end=task in ended)

    for kind, arg in schedule:
        if kind == "end" and arg not in ended:
            ended.add(arg)
            h.input_ended(arg)
        elif kind == "tick":
            h.advance(10.0)
        elif kind == "ack":
            await ack_oldest()
        elif kind == "decline" and h.coordinator.pending:
            h.decline(min(h.coordinator.pending), arg, "random decline")
        await h.one_turn()
        check()

    # The tail: every task ends; acknowledge and let time pass until the final one.
    for task in TASKS:
        if task not in ended:
            ended.add(task)
            h.input_ended(task)
    for _ in range(20):
        await h.one_turn()
        if any(n.final for n in notifications()):
            break
        await ack_oldest()
        h.advance(10.0)
        await h.one_turn()
        check()
    check()
    assert any(n.final for n in notifications()), "every task ended, but no final checkpoint"
    await h.finish()


# The fixture is a class (a factory): nothing in it carries over between examples.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schedule=st.lists(steps, max_size=25))
def test_end_of_job_under_random_schedules(
    harness: Callable[..., Any], schedule: list[tuple[str, Any]]
) -> None:
    asyncio.run(run_schedule(harness, schedule))
