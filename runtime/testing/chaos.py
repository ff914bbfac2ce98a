"""``NotificationChaos``: lose, repeat and delay a sink's checkpoint-complete notifications.

Flink's contract for ``notify_checkpoint_complete`` (and Weir's, see DESIGN.md) is weak
on purpose: a notification may be lost (a later one subsumes it, or a restore recovers
what it would have committed) or arrive twice, and a sink must still commit each
transaction exactly once. ``NotificationChaos(drop=..., repeat=..., delay=..., seed=...)``
wraps a sink (``chaos.wrap(sink)``) and, for each notification, with the given
probabilities:

* **drops** it: the wrapped sink never hears of that checkpoint;
* **delays** it: holds it back and delivers it just before the next one that is
  delivered (never after a newer one: notifications never go backwards, as Flink
  guarantees);
* **repeats** it: delivers it twice in a row.

When the subtask closes after the end of its input, the wrapper delivers what it held
back, and the newest notification it dropped if nothing newer was delivered: the
runtime guarantees that the final checkpoint completed before a subtask that ended its
input closes (as Flink's tasks wait for it), so losing that one would test the runtime,
not the sink. (``finish`` is too early for that: a sink chained to its source finishes
before the final checkpoint.) After a failure, held and dropped notifications are
simply lost, as they would be.

A sink that hears no notification keeps its transactions pending (in its state) until
one comes: with ``drop + delay`` near 1 and frequent checkpoints, that state, and the
synchronous part of every snapshot, grows with each checkpoint. Keep some notifications
flowing unless that is what you want to test.

Decisions come from a ``random.Random`` seeded with ``seed``, the subtask and the
attempt: a run is reproducible. ``chaos.stats`` counts what was done over every subtask
copy (the ``NotificationChaos`` is shared by them; ``__deepcopy__`` returns it).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError
from runtime.tasks.context import RuntimeContext
from runtime.testing.injection import SinkWrapper


@dataclass(slots=True)
class ChaosStatistics:
    """What a ``NotificationChaos`` did, over every subtask and attempt.

    Attributes:
        seen: notifications the runtime sent.
        delivered: notifications handed to the wrapped sink (repeats included).
        dropped: notifications dropped.
        delayed: notifications held back.
        repeated: notifications delivered a second time.
        redelivered_at_end: dropped notifications delivered when the subtask closed
            after the end of its input.
    """

    seen: int = 0
    delivered: int = 0
    dropped: int = 0
    delayed: int = 0
    repeated: int = 0
    redelivered_at_end: int = 0


class NotificationChaos:
    """How to mistreat notifications; ``wrap(sink)`` applies it to a sink.

    Args:
        drop: probability of dropping a notification.
        repeat: probability of delivering a notification twice.
        delay: probability of holding a notification back until the next one.
        seed: seeds the decisions (with the subtask and attempt).

    Raises:
        ConfigError: a probability is not within [0, 1], or drop + delay > 1.
    """

    def __init__(
        self, *, drop: float = 0.0, repeat: float = 0.0, delay: float = 0.0, seed: int = 0
    ) -> None:
        for option, value in (("drop", drop), ("repeat", repeat), ("delay", delay)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 <= value <= 1)
            ):
                raise ConfigError(
                    f"NotificationChaos: {option} must be a probability in [0, 1], got {value!r}"
                )
        if drop + delay > 1:
            raise ConfigError("NotificationChaos: drop + delay must be <= 1")
        self.drop = float(drop)
        self.repeat = float(repeat)
        self.delay = float(delay)
        self.seed = seed
        self.stats = ChaosStatistics()

    def __deepcopy__(self, memo: dict[int, Any]) -> NotificationChaos:
        return self

    def __repr__(self) -> str:
        return (
            f"NotificationChaos(drop={self.drop:g}, repeat={self.repeat:g}, "
            f"delay={self.delay:g}, seed={self.seed})"
        )

    def wrap(self, sink: Any) -> ChaosSink:
        """``sink`` with its notifications mistreated by this chaos."""
        return ChaosSink(sink, self)


class ChaosSink(SinkWrapper):
    """A sink whose ``notify_checkpoint_complete`` goes through a ``NotificationChaos``.

    Args:
        sink: the sink to wrap.
        chaos: the probabilities and the seed (shared by every copy).
    """

    def __init__(self, sink: Any, chaos: NotificationChaos) -> None:
        super().__init__(sink)
        if not isinstance(chaos, NotificationChaos):
            raise ConfigError(f"ChaosSink: chaos must be a NotificationChaos, got {chaos!r}")
        self.chaos = chaos
        self._random = random.Random(chaos.seed)
        self._held: list[int] = []
        self._dropped = 0
        self._delivered = 0
        self._finished = False

    def _copy_args(self, memo: dict[int, Any]) -> tuple[Any, ...]:
        return (copy.deepcopy(self.sink, memo), self.chaos)

    async def initialize_state(self, ctx: RuntimeContext) -> None:
        """Seed this copy's decisions with the subtask and attempt; delegate."""
        self._random = random.Random(f"{self.chaos.seed}/{ctx.subtask_index}/{ctx.attempt}")
        self._held = []
        self._dropped = 0
        self._delivered = 0
        self._finished = False
        await super().initialize_state(ctx)

    def _deliver(self, checkpoint_id: int) -> None:
        self.chaos.stats.delivered += 1
        self._delivered = max(self._delivered, checkpoint_id)
        super().notify_checkpoint_complete(checkpoint_id)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Drop, hold back, deliver, or deliver twice (held ones first)."""
        chaos, stats = self.chaos, self.chaos.stats
        stats.seen += 1
        roll = self._random.random()
        if roll < chaos.drop:
            stats.dropped += 1
            self._dropped = max(self._dropped, checkpoint_id)
            return
        if roll < chaos.drop + chaos.delay:
            stats.delayed += 1
            self._held.append(checkpoint_id)
            return
        self._release_held()
        self._deliver(checkpoint_id)
        if self._random.random() < chaos.repeat:
            stats.repeated += 1
            self._deliver(checkpoint_id)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for checkpoint_id in held:
            self._deliver(checkpoint_id)

    def finish(self) -> Awaitable[None] | None:
        """The input ended (never called after a failure); delegate."""
        self._finished = True
        return super().finish()

    def close(self) -> Awaitable[None] | None:
        """After the end of input: deliver what was held and the newest drop; delegate.

        After a failure (``finish`` was not called) held notifications are lost.
        """
        if self._finished:
            self._release_held()
            if self._dropped > self._delivered:
                self.chaos.stats.redelivered_at_end += 1
                self._deliver(self._dropped)
        self._held = []
        return super().close()
