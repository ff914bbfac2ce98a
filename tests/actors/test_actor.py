"""``Actor``, its ``Mailbox`` and its time accounting."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors import Actor, ActorState, ActorStatistics, Mailbox, Supervisor, Waker


class Sleeper(Actor):
    """Waits on its waker once, as idle or as backpressured, then finishes."""

    def __init__(self, name: str, *, backpressured: bool = False) -> None:
        super().__init__(name)
        self.backpressured = backpressured
        self.waiting = asyncio.Event()

    async def run(self) -> None:
        self.waiting.set()
        if self.backpressured:
            await self.wait_backpressured()
        else:
            await self.wait_idle()


class Nudger(Actor):
    """Waits until ``target`` is waiting, then puts a message into its mailbox."""

    def __init__(self, name: str, target: Sleeper) -> None:
        super().__init__(name)
        self.target = target

    async def run(self) -> None:
        await self.target.waiting.wait()
        # One more loop turn, so that the target's wait has measurably begun.
        await asyncio.sleep(0)
        self.target.mailbox.put("go")


def test_terminal_states() -> None:
    assert {state for state in ActorState if state.is_terminal} == {
        ActorState.FINISHED,
        ActorState.FAILED,
        ActorState.CANCELLED,
    }


def test_mailbox_is_fifo_and_put_wakes_the_owner() -> None:
    waker = Waker()
    mailbox: Mailbox[str] = Mailbox(waker)
    assert not mailbox
    assert len(mailbox) == 0
    assert mailbox.poll() is None
    mailbox.put("trigger 1")
    assert waker.pending
    mailbox.put("notify 1")
    mailbox.put("trigger 2")
    assert mailbox
    assert len(mailbox) == 3
    assert [mailbox.poll() for _ in range(4)] == ["trigger 1", "notify 1", "trigger 2", None]


async def test_mailbox_put_resumes_an_actor_waiting_idle(spin) -> None:
    actor = Sleeper("sleeper")
    waiting = asyncio.create_task(actor.wait_idle())
    await spin()
    assert not waiting.done()
    actor.mailbox.put("trigger")
    await waiting
    assert actor.mailbox.poll() == "trigger"
    assert actor.waker.wakeups == 1


def test_new_actor_statistics_are_zero() -> None:
    actor = Sleeper("count (1/2)")
    assert actor.state is ActorState.CREATED
    assert actor.statistics() == ActorStatistics(
        name="count (1/2)",
        state=ActorState.CREATED,
        busy_seconds=0.0,
        idle_seconds=0.0,
        backpressured_seconds=0.0,
        wakeups=0,
    )
    assert "count (1/2)" in repr(actor)
    assert "created" in repr(actor)


async def test_base_actor_run_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        await Actor("abstract").run()


@pytest.mark.parametrize("backpressured", [False, True], ids=["idle", "backpressured"])
async def test_waiting_time_is_accounted_to_idle_or_backpressured(backpressured: bool) -> None:
    sleeper = Sleeper("sleeper", backpressured=backpressured)
    waker = Nudger("waker", sleeper)
    before = time.perf_counter()
    await Supervisor([sleeper, waker]).run()
    elapsed = time.perf_counter() - before
    assert sleeper.state is ActorState.FINISHED
    stats = sleeper.statistics()
    waited, not_waited = (
        (stats.backpressured_seconds, stats.idle_seconds)
        if backpressured
        else (stats.idle_seconds, stats.backpressured_seconds)
    )
    assert waited > 0
    assert not_waited == 0
    assert stats.busy_seconds >= 0
    assert stats.wakeups == 1
    # The three shares add up to the actor's life, which lies inside the measured span.
    assert stats.busy_seconds + stats.idle_seconds + stats.backpressured_seconds <= elapsed
    # After the actor stopped, its statistics no longer change.
    assert sleeper.statistics() == stats


async def test_a_wait_ended_by_cancellation_is_still_accounted() -> None:
    sleeper = Sleeper("sleeper")
    supervisor = Supervisor([sleeper])

    async def cancel_once_waiting() -> None:
        await sleeper.waiting.wait()
        await asyncio.sleep(0)
        supervisor.cancel()

    async with asyncio.TaskGroup() as group:
        group.create_task(supervisor.run())
        group.create_task(cancel_once_waiting())
    assert sleeper.state is ActorState.CANCELLED
    stats = sleeper.statistics()
    assert stats.idle_seconds > 0
    assert stats.wakeups == 0
