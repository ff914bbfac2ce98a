"""Shared machinery of the checkpoint tests: a deadline, a manual clock, a coordinator harness.

Every async test in this directory runs under ``anyio.fail_after(DEADLINE_SECONDS)``,
applied by the ``pytest_runtest_call`` hook below inside the test's own task (an async
fixture would run in another task under pytest-asyncio, and a cancel scope cannot span
two tasks); the wrappers of ``tests/conftest.py`` nest around it and the shortest wins.

The coordinator tests drive a real ``CheckpointCoordinator`` with in-memory storage, fake
task mailboxes and a ``ManualClock``. Nothing sleeps: the harness moves the clock and
wakes the coordinator, and waits for an observable condition in a bounded loop of
``asyncio.sleep(0)`` (one event-loop turn each).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

import anyio
import pytest

from actors import Mailbox, Waker
from runtime.checkpoint.config import CheckpointConfig
from runtime.checkpoint.coordinator import CheckpointCoordinator, OperatorInfo
from runtime.checkpoint.events import (
    CheckpointAcknowledged,
    CheckpointDeclined,
    InputEnded,
    SubtaskCheckpointMetrics,
    SubtaskStateReport,
    TaskFinished,
)
from runtime.checkpoint.ids import CheckpointId, TaskId
from storage.checkpoint import CheckpointStorage, MemoryCheckpointStorage, SubtaskStateHandle

DEADLINE_SECONDS = 5.0
"""How long any one async test in this directory may run before it fails."""

SPIN_LIMIT = 20_000
"""Event-loop turns a harness waits for a condition before it declares a hang.

Generous because savepoints write files in worker threads; each turn is microseconds.
"""

JOB_ID = "job"

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _under_deadline(test: AsyncTest) -> AsyncTest:
    @functools.wraps(test)
    async def run_under_deadline(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(DEADLINE_SECONDS):
            return await test(*args, **kwargs)

    return run_under_deadline


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if not (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj)):
        return (yield)
    original = item.obj
    # pytest-asyncio reads ``item.obj`` inside ``runtest`` (which runs after this point).
    item.obj = _under_deadline(original)
    try:
        return (yield)
    finally:
        item.obj = original


class ManualClock:
    """A monotonic clock that moves only when the test says so; counts its readings."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.now


class CoordinatorHarness:
    """A coordinator with fake task mailboxes, driven message by message.

    Args:
        config: the checkpointing options.
        sources: the source tasks (they receive ``TriggerCheckpoint``).
        others: the other tasks.
        storage: the checkpoint storage (in-memory by default).
    """

    def __init__(
        self,
        config: CheckpointConfig,
        *,
        sources: Iterable[str] = ("src:0",),
        others: Iterable[str] = ("map:0",),
        storage: CheckpointStorage | None = None,
    ) -> None:
        config.validate()
        self.clock = ManualClock()
        self.sources = [TaskId(t) for t in sources]
        self.tasks = [*self.sources, *(TaskId(t) for t in others)]
        self.mailboxes: dict[TaskId, Mailbox[object]] = {t: Mailbox(Waker()) for t in self.tasks}
        self.received: dict[TaskId, list[object]] = {t: [] for t in self.tasks}
        self.storage = storage if storage is not None else MemoryCheckpointStorage(JOB_ID)
        uids = Counter(t.split(":")[0] for t in self.tasks)
        operators = [OperatorInfo(uid, uid, count, 128) for uid, count in uids.items()]
        self.coordinator = CheckpointCoordinator(
            config, self.storage, self.mailboxes, self.sources, operators, JOB_ID, clock=self.clock
        )
        self.run_task: asyncio.Task[None] | None = None

    # -- driving ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the coordinator in a task and wait until it read the clock (it started)."""
        before = self.clock.readings
        self.run_task = asyncio.create_task(self.coordinator.run())
        await self.until(lambda: self.clock.readings > before, "the coordinator started")

    async def next_attempt(self) -> None:
        """After ``run`` returned: new task mailboxes, ``prepare_attempt``, run again."""
        self.mailboxes = {t: Mailbox(Waker()) for t in self.tasks}
        self.received = {t: [] for t in self.tasks}
        await self.coordinator.prepare_attempt(self.mailboxes, self.sources)
        await self.start()

    def send(self, message: object) -> None:
        self.coordinator.mailbox.put(message)

    def advance(self, seconds: float) -> None:
        """Move the clock and wake the coordinator (its own timer waits on real time)."""
        self.clock.now += seconds
        self.coordinator.waker.wake()

    def ack(
        self, checkpoint_id: int, task: str, *, state_size: int = 0, after_end: bool = False
    ) -> None:
        reports = [
            SubtaskStateReport(
                task.split(":")[0],
                SubtaskStateHandle(
                    subtask_index=int(task.split(":")[1]),
                    handle=None,
                    state_size=state_size,
                    in_flight_bytes=0,
                ),
            )
        ]
        self.send(
            CheckpointAcknowledged(
                CheckpointId(checkpoint_id),
                TaskId(task),
                SubtaskCheckpointMetrics(state_size=state_size),
                reports,
                after_end_of_input=after_end,
            )
        )

    def ack_all(self, checkpoint_id: int, *, after_end: bool = False) -> None:
        for task in self.tasks:
            self.ack(checkpoint_id, task, after_end=after_end)

    def decline(self, checkpoint_id: int, task: str, reason: str) -> None:
        self.send(CheckpointDeclined(CheckpointId(checkpoint_id), TaskId(task), reason))

    def input_ended(self, *tasks: str) -> None:
        """Report ``InputEnded`` for ``tasks`` (every task if none is named)."""
        for task in tasks or self.tasks:
            self.send(InputEnded(TaskId(task)))

    # -- observing --------------------------------------------------------------------------

    def inbox(self, task: str) -> list[object]:
        """Every message the coordinator put in ``task``'s mailbox so far, in order."""
        mailbox = self.mailboxes[TaskId(task)]
        received = self.received[TaskId(task)]
        while mailbox:
            received.append(mailbox.poll())
        return received

    def of_type(self, task: str, kind: type) -> list[Any]:
        return [m for m in self.inbox(task) if isinstance(m, kind)]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let the coordinator run until ``condition()`` holds (bounded; fails on a hang)."""
        for _ in range(SPIN_LIMIT):
            if condition():
                return
            if self.run_task is not None and self.run_task.done():
                self.run_task.result()  # raises what the coordinator raised
                raise AssertionError(f"the coordinator returned before: {what}")
            await asyncio.sleep(0)
        raise AssertionError(f"never happened within {SPIN_LIMIT} loop turns: {what}")

    async def one_turn(self) -> None:
        """Wait until the coordinator went around its loop once more.

        Each turn reads the clock; with in-memory storage the coordinator suspends only
        in its wait, so once the reading count moved, that turn's decisions are made
        (not so with file I/O, e.g. savepoints: wait for what it produces instead).
        """
        before = self.clock.readings
        self.coordinator.waker.wake()
        await self.until(lambda: self.clock.readings > before, "one more coordinator turn")

    async def finish(self) -> None:
        """Report every task finished and wait for ``run`` to return."""
        for task in self.tasks:
            self.send(TaskFinished(task))
        assert self.run_task is not None
        await self.run_task

    async def stopped(self) -> None:
        """Wait for ``run`` to end; returns or raises as it did."""
        assert self.run_task is not None
        await self.run_task

    def pointer(self, checkpoint_id: int) -> str:
        return f"memory://{JOB_ID}/{checkpoint_id}"


@pytest.fixture
def harness() -> Callable[..., CoordinatorHarness]:
    """A factory of ``CoordinatorHarness``es; each test starts and finishes its own."""
    return CoordinatorHarness
