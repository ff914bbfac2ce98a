"""Yielding the event loop's thread: to the other tasks, and to worker threads.

A task that never has to wait (a chained source running flat out) yields to the event
loop every ``YIELD_INTERVAL`` seconds so that the other actors get their turn. That is
not enough for *worker threads* (checkpoint files, RocksDB, ``anyio.to_thread`` and
``asyncio.to_thread`` in user code): a thread needs the GIL to start its function and to
hand the result back, and CPython gives it the GIL only when the event loop's thread
lets go of it long enough. A busy loop releases the GIL at every ``select(0)`` and
takes it back a few microseconds later; each release wakes the waiting thread, which
then finds the GIL taken again and starts a new wait, so it never asks for a forced
switch (CPython asks only after a whole switch interval, 5 ms, *without* a release).
Measured on CPython 3.11 with one busy task yielding every 2 ms: a thread hop took
2.6 s (median of 20) and up to 19 s; a checkpoint's file writes, and with them a
stop-with-savepoint, could wait for minutes.

``yield_turn`` therefore sleeps for ``THREAD_HANDOFF`` seconds (with the GIL released)
before it yields, whenever a worker thread is busy: the woken thread takes the GIL in
that window. Costs nothing while no thread works; while one does (an ``fsync`` of a
checkpoint file), a busy task gives up ``THREAD_HANDOFF`` of every ``YIELD_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio.to_thread

THREAD_HANDOFF = 50e-6
"""Seconds a yielding task holds the event loop's thread still while a worker thread
works (the GIL is free meanwhile)."""


def threads_busy() -> bool:
    """Whether a worker thread of this event loop may be waiting for the GIL.

    Counts ``anyio.to_thread.run_sync`` calls in flight (every thread hop of Weir) and
    busy threads of the loop's default executor (``asyncio.to_thread``,
    ``loop.run_in_executor(None, ...)``): the latter read the executor's internals, so
    an unknown executor counts as idle.
    """
    if anyio.to_thread.current_default_thread_limiter().borrowed_tokens:
        return True
    return _default_executor_busy(asyncio.get_running_loop())


def _default_executor_busy(loop: Any) -> bool:
    executor = getattr(loop, "_default_executor", None)
    if executor is None:
        return False
    try:
        if executor._work_queue.qsize():
            return True
        return bool(len(executor._threads) > executor._idle_semaphore._value)
    except AttributeError:  # not a ThreadPoolExecutor of this CPython's kind
        return False


async def yield_turn() -> None:
    """Let the other tasks run, and a busy worker thread take the GIL."""
    if threads_busy():
        time.sleep(THREAD_HANDOFF)  # noqa: ASYNC251 (on purpose: releases the GIL, no loop turn)
    await asyncio.sleep(0)
