"""Shared machinery of the whole test suite.

Every async test runs under a deadline: the ``pytest_runtest_call`` hook below wraps the
test coroutine function so that its body runs inside ``asyncio.timeout(DEADLINE_SECONDS)``
in the test's own task. A hang then fails with ``TimeoutError`` instead of stalling CI.
(An async autouse fixture would not do: under pytest-asyncio it runs in another task,
and a timeout cannot span two tasks.)

The same wrapper checks, when the test body returned, that it left no asyncio task
behind: every job must stop all of its actors before ``execute`` / ``wait`` returns, and
``asyncio.Runner`` would otherwise cancel the leftovers silently when it closes the loop.

Directories may add their own, stricter deadline (``tests/actors`` does); the wrappers
nest and the shortest one wins.

Hypothesis runs under the profile ``weir-ci`` unless ``--hypothesis-profile`` names
another: a fixed seed (``derandomize``) and no example database, so that every run of
the suite checks the same examples and a failure in CI fails again on any machine.
``weir-long`` draws new random examples (and keeps the database), for long runs such
as the README's ``WEIR_PROPERTY_EXAMPLES=1000 python -m pytest
tests/e2e/test_exactly_once_properties.py --hypothesis-profile=weir-long``. Profiles
set neither example counts nor deadlines: each test keeps its own.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("weir-ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("weir-long", derandomize=False, print_blob=True)
settings.load_profile("weir-ci")

DEADLINE_SECONDS = 60.0
"""How long any one async test may run before it fails."""

AsyncTest = Callable[..., Coroutine[Any, Any, Any]]


def _under_deadline(test: AsyncTest) -> AsyncTest:
    @functools.wraps(test)
    async def run_under_deadline(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(DEADLINE_SECONDS):
            result = await test(*args, **kwargs)
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
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
