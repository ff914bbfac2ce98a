"""Shared machinery of the actor kernel's tests.

Every async test in this directory runs under a deadline stricter than the suite's (see
``tests/conftest.py``; the wrappers nest and the shortest wins): the
``pytest_runtest_call`` hook below wraps the test coroutine in
``anyio.fail_after(DEADLINE_SECONDS)``, so a hang fails with ``TimeoutError`` within
seconds. The deadline is applied inside the test's own task (an async fixture runs in a
different task under pytest-asyncio, and a cancel scope cannot span two tasks). The same
wrapper checks, when the test passed, that the test left no task behind: the kernel's
promise is that no task outlives ``Supervisor.run``, and ``asyncio.Runner`` would
otherwise cancel leftovers silently when it closes the loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import anyio
import pytest

DEADLINE_SECONDS = 5.0
"""How long any one async test in ``tests/actors`` may run before it fails."""

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _under_deadline(test: AsyncTest) -> AsyncTest:
    @functools.wraps(test)
    async def run_under_deadline(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(DEADLINE_SECONDS):
            result = await test(*args, **kwargs)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"the test left tasks behind: {leftover!r}"
        return result

    return run_under_deadline


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if not (isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj)):
        return (yield)
    original = item.obj
    # pytest-asyncio reads ``item.obj`` inside ``runtest`` (which runs after this point)
    # and drives whatever coroutine function it finds there on the event loop.
    item.obj = _under_deadline(original)
    try:
        return (yield)
    finally:
        item.obj = original


@pytest.fixture
def spin() -> Callable[[int], Coroutine[Any, Any, None]]:
    """Yield to the event loop ``n`` times: lets ready tasks take their next step.

    Not a "let things settle" sleep: a bounded number of loop iterations, used where a
    test must show that a task is (still) suspended.
    """

    async def spin(n: int = 5) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    return spin
