"""A busy job leaves worker threads their turn (``runtime.tasks.fairness``).

Before ``yield_turn``, a chained source running flat out kept the GIL from worker
threads: a thread hop took seconds (2.6 s median, 19 s at worst, on a 2-core machine),
and a checkpoint's file writes, hence a stop-with-savepoint, stalled past the tests'
deadline. Here 100 hops must complete while such a job runs (the test deadline, 60 s,
bounds them; before the fix they needed minutes).
"""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread

from runtime import StreamEnvironment
from runtime.tasks.fairness import threads_busy

HUGE = 10**12


async def test_thread_hops_complete_while_a_chained_source_runs_flat_out() -> None:
    env = StreamEnvironment(parallelism=1)
    (
        env.from_sequence(0, HUGE, uid="numbers")
        .map(lambda x: x, name="identity", uid="identity")
        .sink_to(lambda batch: None, uid="drop")
    )
    client = await env.start("busy")

    def records() -> int:
        return client.metrics()["identity"].records_in

    while records() < 10_000:  # noqa: ASYNC110 (a metric: nothing to wait on)
        await asyncio.sleep(0.001)
    before = records()
    for _ in range(50):
        await anyio.to_thread.run_sync(threading.get_ident)
        await asyncio.to_thread(threading.get_ident)
    during = records() - before
    client.cancel()
    await client.wait()
    assert during > 0, "the job did not run while the threads worked"


async def test_threads_busy_sees_anyio_and_default_executor_hops() -> None:
    assert not threads_busy()
    for hop in (anyio.to_thread.run_sync, asyncio.to_thread):
        started = threading.Event()
        release = threading.Event()

        def work(started: threading.Event = started, release: threading.Event = release) -> None:
            started.set()
            release.wait(30)

        pending = asyncio.ensure_future(hop(work))
        while not started.is_set():  # noqa: ASYNC110 (a threading.Event, set in a thread)
            await asyncio.sleep(0.001)
        assert threads_busy(), hop
        release.set()
        await pending
    # The default executor's thread is idle again once its call returned (it counts
    # itself idle just after it handed the result over: wait for that).
    while threads_busy():  # noqa: ASYNC110 (executor internals: nothing to wait on)
        await asyncio.sleep(0.001)
    assert not anyio.to_thread.current_default_thread_limiter().borrowed_tokens
