"""``BackgroundWriter``: a sink's writes in one worker thread, one at a time, in order.

Used by the sinks whose client blocks (psycopg, redis-py's blocking client): a sink
hands a full batch to the worker from its synchronous ``write_batch`` and goes on; the
checkpoint's synchronous step waits for the worker (``wait``) before it flushes the rest
and pre-commits. Keeping ``write_batch`` synchronous keeps the sink's chain on the
runtime's batch path, and no snapshot can run while a write of the sink is half done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["BackgroundWriter"]

logger = logging.getLogger("weir.connectors")


class BackgroundWriter:
    """One write at a time in a worker thread, so the event loop does not wait for it.

    ``submit`` first waits for the write before it (blocking the loop only when the
    server is slower than the job: that is the sink's backpressure), so at most one
    write is in flight and writes keep their order. ``wait`` blocks until the last one
    is done and raises its error. Only the loop's thread calls these.
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Start ``write`` in the worker once the previous write is done."""
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="weir-sink-writer")
        self._pending = self._executor.submit(write)

    def wait(self) -> None:
        """Block until the write in flight is done; raise its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in flight (ignoring its error) and stop the worker."""
        try:
            self.wait()
        except Exception as error:  # the caller is closing after a failure it reports
            logger.debug("background write failed while closing: %s", error)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
