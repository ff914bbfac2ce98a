"""``AsyncWaitOperator``: async I/O with many calls in flight per subtask (``async_map``).

After Flink's ``AsyncWaitOperator``. For each input record the operator starts one call
of the user's async function as an asyncio task and keeps an entry for it in its
``InFlightQueue`` (``runtime.tasks.async_queue``), ordered or unordered. It never awaits
a call on the record path: a completed call wakes the subtask's task (its ``waker``),
and the task emits the results it polls (``poll``) when it next looks, between buffers
or while it waits. The operator is always alone in its chain (``Transformation.chainable``
is False), so its task only ever has this one operator to feed and to poll.

Its host is the ``Task`` running it (``bind_host``), which provides:

* ``waker``: woken when a call completes (or fails);
* ``wait_operator(ready)``: wait until ``ready()`` while emitting completed results,
  sending outputs (waiting for room: backpressure), sending partial buffers past the
  buffer timeout, and handling control messages and priority events (an unaligned
  barrier is snapshotted at once, while calls are in flight).

Backpressure: an entry keeps its slot until its results are emitted, so when
``capacity`` calls are in flight (or emitted results cannot be sent) the operator waits
in ``process_batch_async`` and the task reads no more input.

Checkpoints do not wait for the calls. The synchronous part of a snapshot stores, in the
split list state ``_async_wait_operator_state_``, every entry not yet emitted: the input
record of a call in flight (and of a record handed over but not started yet), and the
output records of a completed call. On restore (rescaled like any list state) completed
entries are emitted in their place and the others are called again, before any new
input: calls are at-least-once after a failure, state and output exactly-once.

End of input (``finish``): waits for every call to complete and emits the results, as
Flink's ``endInput`` does. A failing call (after its retries) fails the subtask with an
``OperatorError`` naming the operator, the subtask and the record.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from actors.waker import Waker
from runtime.errors import OperatorError
from runtime.tasks.async_io import AsyncOptions, timeout_hook
from runtime.tasks.async_queue import Entry, InFlightQueue
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import Adapted, maybe_await
from runtime.tasks.operators import OperatorSnapshot, UserFunctionOperator
from storage import ListStateDescriptor, serializer_for
from storage.errors import SerializationError

STATE_NAME = "_async_wait_operator_state_"
"""The operator list state holding the entries not yet emitted (Flink's name)."""

_CALL = 0
_DONE = 1

logger = logging.getLogger("weir.async_io")


class _Completed:
    """A restored entry whose call had completed: its results, to emit in its place."""

    __slots__ = ("results",)

    def __init__(self, results: list[Any]) -> None:
        self.results = results


class AsyncHost(Protocol):
    """What the operator needs of the task that runs it."""

    waker: Waker

    async def wait_operator(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``, emitting results and handling urgent events meanwhile."""


class AsyncWaitOperator(UserFunctionOperator):
    """``async_map``: calls ``function`` per record, up to ``capacity`` at once.

    Args:
        name: the operator's name.
        uid: its stable id.
        function: the adapted ``async def`` or ``AsyncFunction.async_invoke``.
        options: capacity, ordering, timeout and retry strategy (validated).
    """

    is_async = True

    def __init__(self, name: str, uid: str, function: Adapted, options: AsyncOptions) -> None:
        super().__init__(name, uid, function)
        self.is_async = True
        self.options = options
        self.queue = InFlightQueue(options.capacity, options.ordered)
        self.host: AsyncHost | None = None
        self._unstarted: deque[Any] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: OperatorError | None = None
        self._state: Any = None
        self._timeout_hook = timeout_hook(function.owner)
        self._closed = False

    # -- life -----------------------------------------------------------------------------

    def bind_host(self, host: AsyncHost) -> None:
        """Run in ``host`` (its task): called by the task before ``open``."""
        self.host = host

    def setup(self, ctx: RuntimeContext) -> None:
        """Bind to the subtask and register the list state of the entries not emitted."""
        super().setup(ctx)
        self._state = ctx.get_list_state(ListStateDescriptor(STATE_NAME))

    async def open(self) -> None:
        """Open the function, then queue the restored entries before any new input."""
        await super().open()
        restored = self._state.get()
        self._state.clear()
        for item in restored:
            kind, payload = item[0], item[1]
            if kind == _DONE:
                self._unstarted.append(_Completed(payload))
            else:
                self._unstarted.append(payload)
        if restored:
            logger.info(
                "operator %r (subtask %d): calling %d restored records again",
                self.name,
                self.context.subtask_index + 1,
                sum(1 for item in restored if item[0] == _CALL),
            )
        self._start_unstarted()

    async def close(self) -> None:
        """Cancel the calls still in flight (failure or cancellation), then close."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.queue.clear()
        await super().close()

    # -- records --------------------------------------------------------------------------

    def process_batch(self, batch: list[Any]) -> list[Any]:  # pragma: no cover - is_async
        """Not used: the operator is always run with ``process_batch_async``."""
        raise AssertionError("AsyncWaitOperator runs asynchronously")

    async def process_batch_async(self, batch: list[Any]) -> list[Any]:
        """Start a call per record, waiting for a free slot when ``capacity`` are in flight.

        Returns nothing: results leave through ``poll``. While it waits, the task handles
        control messages and priority events; a snapshot then stores the records of
        ``batch`` not started yet along with the calls in flight.
        """
        self._unstarted.extend(batch)
        self.records_in += len(batch)
        self._start_unstarted()
        if self._unstarted or self._failure is not None:
            host = self.host
            assert host is not None, "AsyncWaitOperator used outside a task"
            await host.wait_operator(self._all_started)
            if self._failure is not None:
                raise self._failure
        return []

    def _all_started(self) -> bool:
        self._start_unstarted()
        return not self._unstarted or self._failure is not None

    def _start_unstarted(self) -> None:
        unstarted = self._unstarted
        queue = self.queue
        while unstarted and not queue.is_full:
            item = unstarted.popleft()
            if item.__class__ is _Completed:
                queue.add_completed(None, item.results)
                if self.host is not None:
                    self.host.waker.wake()
                continue
            self._start(item)

    @property
    def has_ready(self) -> bool:
        """Whether ``poll`` has something to give: results, or a failure to raise."""
        return self.queue.has_ready or self._failure is not None

    @property
    def busy(self) -> bool:
        """Whether entries remain (in flight, completed but not emitted, or not started)."""
        return bool(len(self.queue) or self._unstarted)

    def poll(self) -> list[Any]:
        """The results that may be emitted now, in order; starts waiting records.

        Raises:
            OperatorError: a call failed (after its retries) or timed out without a
                ``timeout`` hook; names the operator, the subtask and the record.
        """
        if self._failure is not None:
            raise self._failure
        out = self.queue.pop_ready()
        if self._unstarted:
            self._start_unstarted()
        self.records_out += len(out)
        return out

    def end_input(self) -> list[Any]:
        """Nothing now: ``finish`` waits for the calls in flight."""
        return []

    async def finish(self) -> None:
        """Wait for every call to complete and emit its results, then ``finish()``."""
        if self.busy or self._failure is not None:
            host = self.host
            assert host is not None, "AsyncWaitOperator used outside a task"
            await host.wait_operator(self._drained)
        if self._failure is not None:
            raise self._failure
        await super().finish()

    def _drained(self) -> bool:
        self._start_unstarted()
        return self._failure is not None or not self.busy

    # -- calls ----------------------------------------------------------------------------

    def _start(self, record: Any) -> None:
        entry = self.queue.add(record)
        task = asyncio.get_running_loop().create_task(self._call(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, entry: Entry) -> None:
        record = entry.record
        timeout = self.options.timeout
        try:
            if timeout is None:
                results = await self._attempts(record)
            else:
                try:
                    async with asyncio.timeout(timeout) as scope:
                        results = await self._attempts(record)
                except TimeoutError:
                    if not scope.expired():
                        raise  # the function's own TimeoutError
                    results = await self._on_timeout(record)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(error, record)
            return
        if self._closed:
            return
        self.queue.complete(entry, results)
        host = self.host
        if host is not None:
            host.waker.wake()

    async def _attempts(self, record: Any) -> list[Any]:
        call = self.function.call
        retry = self.options.retry
        attempt = 1
        while True:
            try:
                pending = call(record)
                if not inspect.isawaitable(pending):
                    raise TypeError(
                        f"the async_map function returned {type(pending).__name__}, not an "
                        f"awaitable; make it async def"
                    )
                result = await pending
            except Exception as error:
                if (
                    retry is not None
                    and retry.can_retry(attempt)
                    and retry.should_retry_exception(error)
                ):
                    await asyncio.sleep(retry.delay(attempt))
                    attempt += 1
                    continue
                raise
            if retry is not None and retry.can_retry(attempt) and retry.should_retry_result(result):
                await asyncio.sleep(retry.delay(attempt))
                attempt += 1
                continue
            return as_results(result)

    async def _on_timeout(self, record: Any) -> list[Any]:
        hook = self._timeout_hook
        if hook is None:
            raise TimeoutError(
                f"the call did not complete within timeout={self.options.timeout} s (retries "
                f"included); "
                f"raise the timeout, or give the function a timeout(value) hook"
            )
        return as_results(await maybe_await(hook(record)))

    def _fail(self, error: BaseException, record: Any) -> None:
        if self._failure is None and not self._closed:
            self._failure = self.error(error, record)
            self._failure.__cause__ = error
            if self.host is not None:
                self.host.waker.wake()

    # -- checkpoints ----------------------------------------------------------------------

    def snapshot_state(self, checkpoint_id: int, *, canonical: bool = False) -> OperatorSnapshot:
        """Store every entry not emitted (records in flight, results not emitted); no wait.

        Raises:
            SerializationError: an entry cannot be encoded; names the operator and the
                record (the task declines the checkpoint with it).
        """
        items: list[list[Any]] = []
        for entry in self.queue.entries():
            if entry.done:
                items.append([_DONE, entry.results])
            else:
                items.append([_CALL, entry.record])
        for item in self._unstarted:
            if item.__class__ is _Completed:
                items.append([_DONE, item.results])
            else:
                items.append([_CALL, item])
        self._state.update(items)
        try:
            return super().snapshot_state(checkpoint_id, canonical=canonical)
        except SerializationError as error:
            raise SerializationError(self._unencodable(items, canonical, error)) from error
        finally:
            self._state.clear()

    def _unencodable(self, items: list[list[Any]], canonical: bool, error: Exception) -> str:
        backend = self.context.operator_backend
        allow_pickle = bool(getattr(backend, "allow_pickle", True)) and not canonical
        encode = serializer_for(None, allow_pickle, "an async_map record").encode
        for kind, payload in items:
            try:
                encode([kind, payload])
            except Exception as cause:
                what = "results of a completed call" if kind == _DONE else "record in flight"
                return (
                    f"operator {self.name!r} (subtask {self.context.subtask_index + 1}/"
                    f"{self.context.parallelism}) cannot store its {what} {payload!r:.200} "
                    f"in the checkpoint: {cause}; make records msgspec-encodable (or "
                    f"picklable, with pickle allowed)"
                )
        return f"operator {self.name!r} cannot store its calls in flight: {error}"


def as_results(result: Any) -> list[Any]:
    """A call's return value as output records: a list is many, anything else one."""
    if result.__class__ is list:
        return result
    return [result]
