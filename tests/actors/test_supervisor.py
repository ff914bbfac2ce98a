"""``Supervisor``: finish together, fail and cancel as one, leave no task behind."""

from __future__ import annotations

import asyncio
import re

import pytest

from actors import (
    Actor,
    ActorFailedError,
    ActorState,
    Channel,
    EndOfChannel,
    Supervisor,
)


class Recorder(Actor):
    """Counts ``on_cancel`` calls and signals once its ``run`` is waiting."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cancel_calls = 0
        self.waiting = asyncio.Event()

    def on_cancel(self) -> None:
        self.cancel_calls += 1


class Finisher(Recorder):
    """Yields to the loop a few times, then returns."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.done = asyncio.Event()

    async def run(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        self.done.set()  # run returns in this same step, so the actor is FINISHED next


class Forever(Recorder):
    """Waits on its waker for ever (until cancelled)."""

    async def run(self) -> None:
        self.waiting.set()
        while True:
            await self.wait_idle()


class Failer(Recorder):
    """Raises ``error`` once every actor in ``others`` is waiting (at once if none)."""

    def __init__(self, name: str, error: Exception, others: list[Recorder] = ()) -> None:
        super().__init__(name)
        self.error = error
        self.others = list(others)

    async def run(self) -> None:
        for other in self.others:
            await other.waiting.wait()
        raise self.error


class Source(Recorder):
    """Sends on ``out`` first thing in ``run``; ``on_cancel`` closes ``out``, as advised."""

    def __init__(self, name: str, out: Channel[int]) -> None:
        super().__init__(name)
        self.out = out
        self.events: list[str] = []

    def on_cancel(self) -> None:
        super().on_cancel()
        self.events.append("on_cancel")
        self.out.close()

    async def run(self) -> None:
        self.events.append("run")
        self.out.send_nowait(1)
        self.waiting.set()
        while True:
            await self.wait_idle()


class Sink(Recorder):
    """Receives from ``inp`` until cancelled; its input ending early is an error."""

    def __init__(self, name: str, inp: Channel[int]) -> None:
        super().__init__(name)
        self.inp = inp

    async def run(self) -> None:
        self.waiting.set()
        while True:
            try:
                await self.inp.receive()
            except EndOfChannel:
                raise RuntimeError("input ended before end of stream") from None


async def test_actors_that_return_are_finished() -> None:
    actors = [Finisher("a"), Finisher("b"), Finisher("c")]
    supervisor = Supervisor(actors)
    assert all(actor.state is ActorState.CREATED for actor in actors)
    await supervisor.run()
    assert [actor.state for actor in actors] == [ActorState.FINISHED] * 3
    assert [actor.cancel_calls for actor in actors] == [0, 0, 0]
    assert supervisor.failure is None
    assert not supervisor.cancelled


async def test_an_empty_group_returns_at_once() -> None:
    await Supervisor([]).run()


@pytest.mark.parametrize("failer_first", [True, False], ids=["failer-first", "failer-last"])
async def test_a_failing_actor_fails_the_group_and_cancels_the_others(failer_first: bool) -> None:
    tasks_before = asyncio.all_tasks()
    error = ValueError("boom")
    others = [Forever("source (1/2)"), Forever("sink (2/2)")]
    failer = Failer("map (1/1)", error, others)
    actors = [failer, *others] if failer_first else [*others, failer]
    supervisor = Supervisor(actors)

    with pytest.raises(
        ActorFailedError, match=re.escape("actor 'map (1/1)' failed: ValueError: boom")
    ) as raised:
        await supervisor.run()

    assert raised.value.actor == "map (1/1)"
    assert raised.value.__cause__ is error
    assert supervisor.failure == (failer, error)
    assert failer.state is ActorState.FAILED
    assert failer.cancel_calls == 0
    for other in others:
        assert other.state is ActorState.CANCELLED
        assert other.cancel_calls == 1
    assert asyncio.all_tasks() == tasks_before


async def test_an_actor_failing_before_the_others_wait_still_cancels_them() -> None:
    tasks_before = asyncio.all_tasks()
    error = KeyError("no such key")
    others = [Forever("b"), Forever("c")]
    supervisor = Supervisor([Failer("a", error), *others])
    with pytest.raises(ActorFailedError) as raised:
        await supervisor.run()
    assert raised.value.__cause__ is error
    assert [other.state for other in others] == [ActorState.CANCELLED] * 2
    assert [other.cancel_calls for other in others] == [1, 1]
    assert asyncio.all_tasks() == tasks_before


async def test_finished_actors_are_not_cancelled_when_another_fails() -> None:
    finisher = Finisher("done")
    forever = Forever("waiting")

    class LateFailer(Recorder):
        async def run(self) -> None:
            await forever.waiting.wait()
            await finisher.done.wait()
            assert finisher.state is ActorState.FINISHED
            raise RuntimeError("late")

    supervisor = Supervisor([finisher, forever, LateFailer("late")])
    with pytest.raises(ActorFailedError, match="actor 'late' failed"):
        await supervisor.run()
    assert finisher.state is ActorState.FINISHED
    assert finisher.cancel_calls == 0
    assert forever.state is ActorState.CANCELLED
    assert forever.cancel_calls == 1


async def test_the_first_failure_wins_over_errors_caused_by_the_cancellation() -> None:
    # The source's on_cancel closes its channel; the sink then sees its input end early
    # and raises. That second error is a consequence and must not be reported.
    channel: Channel[int] = Channel(2, name="source->sink")
    source, sink = Source("source", channel), Sink("sink", channel)
    error = ValueError("first")
    failer = Failer("failer", error, [source, sink])
    supervisor = Supervisor([source, sink, failer])
    with pytest.raises(ActorFailedError, match="actor 'failer' failed") as raised:
        await supervisor.run()
    assert raised.value.__cause__ is error
    assert supervisor.failure == (failer, error)
    assert source.state is ActorState.CANCELLED
    # The sink was woken by the close before the cancellation reached it, so it did
    # raise its own error: that is what makes this test about "first failure wins".
    assert sink.state is ActorState.FAILED


async def test_cancel_from_another_task_cancels_every_actor() -> None:
    tasks_before = asyncio.all_tasks()
    actors = [Forever("a"), Forever("b"), Forever("c")]
    supervisor = Supervisor(actors)

    async def cancel_when_all_wait() -> None:
        for actor in actors:
            await actor.waiting.wait()
        supervisor.cancel()
        supervisor.cancel()  # idempotent

    async with asyncio.TaskGroup() as group:
        run = group.create_task(supervisor.run())
        group.create_task(cancel_when_all_wait())
    assert run.result() is None  # returned, no error
    assert supervisor.cancelled
    assert supervisor.failure is None
    assert [actor.state for actor in actors] == [ActorState.CANCELLED] * 3
    assert [actor.cancel_calls for actor in actors] == [1, 1, 1]
    assert asyncio.all_tasks() == tasks_before


async def test_cancel_before_run_cancels_every_actor() -> None:
    actors = [Forever("a"), Forever("b")]
    supervisor = Supervisor(actors)
    supervisor.cancel()
    await supervisor.run()
    assert [actor.state for actor in actors] == [ActorState.CANCELLED] * 2
    assert [actor.cancel_calls for actor in actors] == [1, 1]


async def test_cancel_after_run_returned_changes_nothing() -> None:
    actors = [Finisher("a")]
    supervisor = Supervisor(actors)
    await supervisor.run()
    supervisor.cancel()
    assert supervisor.cancelled
    assert actors[0].state is ActorState.FINISHED
    assert actors[0].cancel_calls == 0


async def test_cancelling_the_task_running_the_supervisor_leaves_no_task() -> None:
    # The task running the supervisor is itself cancelled (e.g. by a job-level timeout).
    tasks_before = asyncio.all_tasks()
    actors = [Forever("a"), Forever("b")]
    supervisor = Supervisor(actors)
    runner = asyncio.create_task(supervisor.run())
    for actor in actors:
        await actor.waiting.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert [actor.state for actor in actors] == [ActorState.CANCELLED] * 2
    assert asyncio.all_tasks() == tasks_before


# -- known bug: actors whose task had not started yet run their body after on_cancel --------


async def test_cancel_before_run_runs_no_actor_body() -> None:
    channel: Channel[int] = Channel(2, name="source->sink")
    source = Source("source", channel)
    supervisor = Supervisor([source])
    supervisor.cancel()
    await supervisor.run()
    assert source.events == ["on_cancel"]
    assert source.state is ActorState.CANCELLED


async def test_an_actor_failing_at_once_cancels_a_source_listed_after_it() -> None:
    channel: Channel[int] = Channel(2, name="source->sink")
    source = Source("source", channel)
    supervisor = Supervisor([Failer("a", ValueError("boom")), source])
    with pytest.raises(ActorFailedError, match="actor 'a' failed"):
        await supervisor.run()
    # Actual: ["on_cancel", "run"] and FAILED (ChannelClosedError from send_nowait).
    assert source.events == ["on_cancel"]
    assert source.state is ActorState.CANCELLED


async def test_a_started_source_is_cancelled_cleanly() -> None:
    # Control for the two tests above: once the source's task has started, on_cancel and
    # then cancellation give CANCELLED; the failures above come from the ordering.
    channel: Channel[int] = Channel(2, name="source->sink")
    source = Source("source", channel)
    supervisor = Supervisor([source, Failer("a", ValueError("boom"), [source])])
    with pytest.raises(ActorFailedError, match="actor 'a' failed"):
        await supervisor.run()
    assert source.events == ["run", "on_cancel"]
    assert source.state is ActorState.CANCELLED
    assert channel.closed
