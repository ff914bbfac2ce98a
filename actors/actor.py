"""``Actor``: a long-lived asyncio task with a lifecycle, a control mailbox and one waker.

Every operator subtask, the checkpoint coordinator and the job master are actors. An
actor's ``run`` is its whole life: it loops, handling control messages before data
(subclasses call ``mailbox.poll`` first in each turn), and waits only on its ``waker``.

Lifecycle: ``CREATED`` -> ``RUNNING`` -> one of ``FINISHED`` (``run`` returned),
``FAILED`` (``run`` raised) or ``CANCELLED`` (the group was cancelled). The supervisor
(``actors.supervisor``) drives the transitions.

Time accounting, for statistics: an actor is *idle* while it waits for input
(``wait_idle``), *backpressured* while it waits for room in an output
(``wait_backpressured``), and *busy* otherwise while running.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from actors.waker import Waker

M = TypeVar("M")


class ActorState(enum.Enum):
    """Where an actor is in its life."""

    CREATED = "created"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the actor will never run again."""
        return self in (ActorState.FINISHED, ActorState.FAILED, ActorState.CANCELLED)


class Mailbox(Generic[M]):
    """An actor's control mailbox: unbounded, FIFO, and read before data.

    Control messages (trigger a checkpoint, notify complete, cancel) are few, so ``put``
    never blocks and may be called from any actor in the loop's thread. Putting a message
    wakes the owner.
    """

    __slots__ = ("_messages", "_waker")

    def __init__(self, waker: Waker) -> None:
        self._messages: deque[M] = deque()
        self._waker = waker

    def put(self, message: M) -> None:
        """Queue ``message`` and wake the owning actor. Never blocks."""
        self._messages.append(message)
        self._waker.wake()

    def poll(self) -> M | None:
        """Take the oldest message, or None if there is none."""
        if self._messages:
            return self._messages.popleft()
        return None

    def __bool__(self) -> bool:
        return bool(self._messages)

    def __len__(self) -> int:
        return len(self._messages)


@dataclass(slots=True)
class ActorStatistics:
    """Time and state of one actor; see ``Actor.statistics()``.

    Attributes:
        name: the actor's name.
        state: its lifecycle state.
        busy_seconds: running and neither idle nor backpressured.
        idle_seconds: waiting for input.
        backpressured_seconds: waiting for room in an output.
        wakeups: how many times its waker woke it.
    """

    name: str
    state: ActorState
    busy_seconds: float
    idle_seconds: float
    backpressured_seconds: float
    wakeups: int


class Actor:
    """Base class of every actor. Subclasses implement ``run``.

    Args:
        name: unique within its group; used in errors, e.g. ``"count (2/4)"``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.waker = Waker()
        self.mailbox: Mailbox[object] = Mailbox(self.waker)
        self.state = ActorState.CREATED
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._idle = 0.0
        self._backpressured = 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.state.value}>"

    async def run(self) -> None:
        """The actor's life. Returns when it finished its work; raises when it failed."""
        raise NotImplementedError

    def on_cancel(self) -> None:
        """Called once, synchronously, when the actor's group is cancelled or failed.

        Subclasses release what they hold that others may wait on (close channels).
        Must not block.
        """

    async def wait_idle(self) -> None:
        """Wait on the waker, counting the time as idle (waiting for input)."""
        start = time.perf_counter()
        try:
            await self.waker.wait()
        finally:
            self._idle += time.perf_counter() - start

    async def wait_backpressured(self) -> None:
        """Wait on the waker, counting the time as backpressured (output full)."""
        start = time.perf_counter()
        try:
            await self.waker.wait()
        finally:
            self._backpressured += time.perf_counter() - start

    def statistics(self) -> ActorStatistics:
        """A snapshot of the actor's time accounting."""
        if self._started_at is None:
            total = 0.0
        else:
            end = self._stopped_at if self._stopped_at is not None else time.perf_counter()
            total = end - self._started_at
        return ActorStatistics(
            name=self.name,
            state=self.state,
            busy_seconds=max(0.0, total - self._idle - self._backpressured),
            idle_seconds=self._idle,
            backpressured_seconds=self._backpressured,
            wakeups=self.waker.wakeups,
        )

    def _mark_started(self) -> None:
        self.state = ActorState.RUNNING
        self._started_at = time.perf_counter()

    def _mark_stopped(self, state: ActorState) -> None:
        self.state = state
        self._stopped_at = time.perf_counter()
