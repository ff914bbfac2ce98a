"""The ``Waker``: wake before wait, coalescing, cancellation."""

from __future__ import annotations

import asyncio
import math

import anyio
import pytest

from actors import Waker


def returns_without_suspending(waker: Waker) -> bool:
    """Drive one ``waker.wait()`` by hand: True if it completed without suspending.

    Call it from a coroutine: a wait that suspends creates its future on the running loop.
    """
    coro = waker.wait()
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


async def test_async_tests_run_under_a_deadline() -> None:
    # The conftest hook wraps every async test in ``anyio.fail_after``.
    assert anyio.current_effective_deadline() < math.inf


async def test_wake_before_wait_makes_the_next_wait_return_at_once() -> None:
    waker = Waker()
    assert not waker.pending
    waker.wake()
    assert waker.pending
    assert returns_without_suspending(waker)
    assert not waker.pending
    # The wake-up was consumed: the following wait has to suspend.
    assert not returns_without_suspending(waker)


async def test_wake_ups_before_a_wait_coalesce_into_one() -> None:
    waker = Waker()
    for _ in range(5):
        waker.wake()
    assert returns_without_suspending(waker)
    assert not waker.pending
    assert not returns_without_suspending(waker)


async def test_wake_resumes_a_waiting_task(spin) -> None:
    waker = Waker()
    task = asyncio.create_task(waker.wait())
    await spin()
    assert not task.done()
    waker.wake()
    await task
    assert waker.wakeups == 1
    assert not waker.pending


async def test_wake_ups_while_waiting_resume_the_task_once(spin) -> None:
    waker = Waker()
    task = asyncio.create_task(waker.wait())
    await spin()
    for _ in range(5):
        waker.wake()
    await task
    assert waker.wakeups == 1
    # At most one wake-up may be left over for the next wait; never more.
    returns_without_suspending(waker)
    assert not returns_without_suspending(waker)


async def test_wakeups_counts_waits_that_were_woken(spin) -> None:
    waker = Waker()
    for expected in range(1, 4):
        task = asyncio.create_task(waker.wait())
        await spin()
        waker.wake()
        await task
        assert waker.wakeups == expected


async def test_cancelled_wait_leaves_the_waker_usable(spin) -> None:
    waker = Waker()
    task = asyncio.create_task(waker.wait())
    await spin()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not waker.pending
    # A wake-up with nobody waiting is kept (not dropped into the dead future)...
    waker.wake()
    assert waker.pending
    assert returns_without_suspending(waker)
    # ...and a later wait is woken normally.
    task = asyncio.create_task(waker.wait())
    await spin()
    assert not task.done()
    waker.wake()
    await task


async def test_wait_cancelled_by_an_anyio_scope_leaves_the_waker_usable(spin) -> None:
    waker = Waker()
    with anyio.move_on_after(0) as scope:
        await waker.wait()
    assert scope.cancelled_caught
    task = asyncio.create_task(waker.wait())
    await spin()
    waker.wake()
    await task


async def test_wake_that_raced_ahead_of_cancellation_is_kept(spin) -> None:
    waker = Waker()
    task = asyncio.create_task(waker.wait())
    await spin()
    waker.wake()  # resolves the wait's future...
    task.cancel()  # ...but the task is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waker.pending
    assert returns_without_suspending(waker)


async def test_wake_that_raced_behind_cancellation_is_kept(spin) -> None:
    waker = Waker()
    task = asyncio.create_task(waker.wait())
    await spin()
    task.cancel()  # cancels the wait's future; the task has not resumed yet
    waker.wake()  # e.g. a buffer arrives in the same loop iteration as a timeout
    with pytest.raises(asyncio.CancelledError):
        await task
    # The docstrings promise the wake-up is kept for the next wait.
    assert waker.pending
