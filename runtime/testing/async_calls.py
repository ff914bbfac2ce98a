"""Failures while async I/O calls are in flight, and the kit's ``async_io`` job shape.

``FailingAsyncCall(schedule, name)`` is an ``AsyncFunction`` for ``async_map`` that
echoes each record after a short, record-dependent latency (so calls overlap and
complete out of order, and checkpoints find calls in flight), and raises the schedule's
failures for failure point ``name``:

* ``PROCESSING`` inside the call itself, while the other calls are in flight;
* ``SNAPSHOT`` in the synchronous part of a snapshot, which stores the calls in flight;
* ``AFTER_ACK``, ``BEFORE_NOTIFY`` and ``AFTER_NOTIFY`` after a checkpoint was taken,
  with the calls started since then in flight;
* ``RESTORE`` when a restored subtask opens, before it calls the stored records again.

``ASYNC_IO`` is the topology ``source -> async_map (ordered) -> sink`` with failure
points ``"source"``, ``"enrich"`` (the call) and ``"sink"``; add it to the topologies a
property test draws from (``job_cases(topology_choices=[ASYNC_IO])``).
``ASYNC_IO_UNORDERED`` is the same with ``ordered=False`` (records leave as their calls
complete: check it with ``order="none"``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.api.datastream import DataStream
from runtime.tasks.async_io import AsyncFunction
from runtime.tasks.context import RuntimeContext
from runtime.testing.failures import FailureSchedule, InjectedFailureError, Phase
from runtime.testing.injection import _Site
from runtime.testing.kit import SINK_POINT, JobKit
from runtime.testing.topologies import Topology

LATENCY_STEP = 0.0005
"""Seconds of simulated service latency per step (a record waits 0 to 3 steps)."""


class FailingAsyncCall(AsyncFunction[Any, Any]):
    """An echo service call that raises the schedule's failures for point ``name``.

    Args:
        schedule: the failures (shared by every copy).
        name: the failure point's name.
        latency_step: seconds per latency step; a record waits ``seq % 4`` steps (0:
            a few event-loop turns only), so completions overtake each other.
    """

    def __init__(
        self, schedule: FailureSchedule, name: str, latency_step: float = LATENCY_STEP
    ) -> None:
        self.site = _Site(schedule, name)
        self.latency_step = latency_step

    def initialize_state(self, ctx: RuntimeContext) -> None:
        """Learn the subtask and attempt; ``RESTORE`` fires here on a restored subtask."""
        self.site.bind(ctx)
        if ctx.is_restored:
            self.site.fail_if(Phase.RESTORE)

    async def async_invoke(self, value: Any) -> Any:
        """Echo ``value`` after its latency, unless a ``PROCESSING`` failure fires on it."""
        _passed, fired = self.site.admit(1)
        if fired is not None:
            raise InjectedFailureError(fired)
        steps = getattr(value, "seq", 0) % 4
        if steps:
            await asyncio.sleep(steps * self.latency_step)
        else:
            for _ in range(3):
                await asyncio.sleep(0)
        return value

    def snapshot_state(self, checkpoint_id: int) -> None:
        """``SNAPSHOT`` fires here, with calls in flight."""
        self.site.fail_if(Phase.SNAPSHOT, checkpoint_id)

    def after_acknowledge(self, checkpoint_id: int) -> None:
        """``AFTER_ACK`` fires here."""
        self.site.fail_if(Phase.AFTER_ACK, checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """``BEFORE_NOTIFY`` and then ``AFTER_NOTIFY`` fire here (nothing in between)."""
        self.site.fail_if(Phase.BEFORE_NOTIFY, checkpoint_id)
        self.site.notified(checkpoint_id)
        self.site.fail_if(Phase.AFTER_NOTIFY, checkpoint_id)


ASYNC_CAPACITY = 16
"""Calls in flight per subtask in the ``async_io`` topology."""


def _async_io(kit: JobKit, ordered: bool = True) -> DataStream:
    return kit.source().async_map(
        FailingAsyncCall(kit.schedule, "enrich"),
        capacity=ASYNC_CAPACITY,
        ordered=ordered,
        name="enrich",
        uid="enrich",
    )


def _async_io_unordered(kit: JobKit) -> DataStream:
    return _async_io(kit, ordered=False)


ASYNC_IO = Topology("async_io", _async_io, ("source", "enrich", SINK_POINT))
"""source -> async_map (ordered, calls overlapping) -> sink."""

ASYNC_IO_UNORDERED = Topology(
    "async_io_unordered", _async_io_unordered, ("source", "enrich", SINK_POINT)
)
"""The same with ``ordered=False``: check it with ``order="none"``."""
