"""A ``Waker``: the one thing an actor waits on.

Every actor has exactly one waker. Everything that could let the actor make progress
wakes it: a buffer or a priority event arriving on one of its input channels, room
appearing in one of its output channels, a message in its control mailbox, a timer.
The actor then re-checks, without awaiting, everything it could do. One wait point per
actor keeps the hot path free of per-record awaits and makes "blocked on a full output,
but a checkpoint barrier arrived" an ordinary wake-up rather than a race between tasks.

``wake`` is a plain ``def``: any code in the event loop's thread may call it, any number
of times; wake-ups coalesce. It must not be called from another thread.
"""

from __future__ import annotations

import asyncio


class Waker:
    """An auto-resetting, coalescing wake-up signal for one waiting actor."""

    __slots__ = ("_future", "_pending", "wakeups")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self._pending = False
        self.wakeups = 0

    def wake(self) -> None:
        """Wake the waiting actor, or make its next ``wait`` return at once. Never blocks."""
        fut = self._future
        if fut is not None:
            self._future = None
            if not fut.done():
                fut.set_result(None)
                return
        # No waiter, or one whose wait was cancelled before it resumed: keep the wake-up
        # for the next wait.
        self._pending = True

    @property
    def pending(self) -> bool:
        """Whether a wake-up arrived that no ``wait`` has consumed yet."""
        return self._pending

    async def wait(self) -> None:
        """Wait until ``wake`` is called (returns at once if it was called since the last wait).

        Cancellation leaves the waker usable; a wake-up that raced with the cancellation is
        kept for the next ``wait``.
        """
        if self._pending:
            self._pending = False
            return
        fut = asyncio.get_running_loop().create_future()
        self._future = fut
        try:
            await fut
        except BaseException:
            if self._future is fut:
                self._future = None
            elif fut.done() and not fut.cancelled():
                self._pending = True
            raise
        self.wakeups += 1
