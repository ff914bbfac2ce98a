"""Per-split watermarks: a source subtask's watermark from the splits it reads.

Flink's FLIP-27 per-split watermarks (``SourceOutput`` per split, combined by a
``WatermarkOutputMultiplexer``). A source subtask that reads several splits (files,
byte ranges of files, Redis streams, number ranges) gives each split its own
``WatermarkGenerator`` from the source's ``WatermarkStrategy``, so a fast split's
timestamps do not push the watermark past a slow split's records.

* ``WatermarkOutputMultiplexer`` is the pure combining rule: each registered split has
  a watermark and an idle flag; the output is the minimum over the splits that are not
  idle, emitted only when it advances (it never goes back). When every split is idle
  the output is idle; a split that is active again counts again (it holds the output
  until it catches up, as in Flink's ``CombinedWatermarkStatus``). A split that
  finished is unregistered and no longer holds anything back.
* ``SplitWatermarkGenerator`` is a ``WatermarkGenerator`` made of one generator and one
  idleness clock per split, combined by a multiplexer. It is the reader's split listener
  (``split_added``, ``split_finished``: ``runtime.tasks.source.SplitAwareReader``) and
  is told which split each buffer came from (``select``) by the ``SourceTask`` before
  the buffer runs through the chain. The ``TimestampsAndWatermarksOperator`` chained
  after the source feeds it buffers and polls it, as it would a single generator.

Owner: the source subtask (``runtime.tasks.source_task.SourceTask`` installs it when the
chain has a watermark strategy right after a reader that reports its splits). Output:
what ``on_periodic_emit`` returns goes to the chain (``ChainTime.poll_generators``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.time.watermarks import (
    ACTIVE,
    IDLE,
    MIN_WATERMARK,
    WatermarkGenerator,
    WatermarkStatus,
    WatermarkStrategy,
)

__all__ = ["SplitWatermarkGenerator", "WatermarkOutputMultiplexer"]


@dataclass(slots=True)
class _Output:
    watermark: float = MIN_WATERMARK
    idle: bool = False


@dataclass(slots=True)
class WatermarkOutputMultiplexer:
    """Combines per-split watermarks and idleness; see the module docstring.

    Every method returns what the subtask emits now: a new watermark, ``IDLE`` or
    ``ACTIVE``, in order (possibly nothing).

    Attributes:
        watermark: the last watermark emitted (``MIN_WATERMARK`` at first).
        idle: whether the last status emitted was idle.
    """

    watermark: float = MIN_WATERMARK
    idle: bool = False
    _outputs: dict[str, _Output] = field(default_factory=dict)

    def __contains__(self, split_id: str) -> bool:
        return split_id in self._outputs

    def __len__(self) -> int:
        return len(self._outputs)

    def register(self, split_id: str) -> list[float | WatermarkStatus]:
        """A split to read: it holds the output back until it has a watermark.

        It stays at ``MIN_WATERMARK`` until its generator gives one, or it goes idle.
        Registering a known split changes nothing.
        """
        if split_id in self._outputs:
            return []
        self._outputs[split_id] = _Output()
        return self._update()

    def unregister(self, split_id: str) -> list[float | WatermarkStatus]:
        """A split finished: it no longer holds the output back."""
        if self._outputs.pop(split_id, None) is None:
            return []
        return self._update()

    def on_watermark(self, split_id: str, watermark: float) -> list[float | WatermarkStatus]:
        """Split ``split_id``'s generator gave ``watermark`` (a split's never goes back)."""
        output = self._outputs.get(split_id)
        if output is None:
            return []
        if watermark > output.watermark:
            output.watermark = watermark
        return self._update()

    def on_status(self, split_id: str, idle: bool) -> list[float | WatermarkStatus]:
        """Split ``split_id`` became idle (no records for the idleness timeout) or active."""
        output = self._outputs.get(split_id)
        if output is None or output.idle == idle:
            return []
        output.idle = idle
        return self._update()

    def _update(self) -> list[float | WatermarkStatus]:
        outputs = self._outputs
        if not outputs:
            # No split to read (all finished, or none yet): nothing to say. The
            # subtask's end of input sends MAX_WATERMARK; idleness without splits is
            # the generator's business.
            return []
        low = math.inf
        for output in outputs.values():
            if not output.idle and output.watermark < low:
                low = output.watermark
        out: list[float | WatermarkStatus] = []
        if low == math.inf:  # every split idle
            if not self.idle:
                self.idle = True
                out.append(IDLE)
            return out
        if self.idle:
            self.idle = False
            out.append(ACTIVE)
        if low > self.watermark:
            self.watermark = low
            out.append(low)
        return out


@dataclass(slots=True)
class _Split:
    generator: WatermarkGenerator
    last_event: float
    seen: bool = False
    idle: bool = False


class SplitWatermarkGenerator(WatermarkGenerator):
    """One generator and idleness clock per split, combined; see the module docstring.

    Not thread-safe; called by the source subtask's loop only (``select`` and the
    listener calls between reads, ``on_batch`` and ``on_periodic_emit`` from the chain).

    Args:
        make_generator: a new generator (without idleness) for a split.
        idleness: processing seconds without records before a split is idle, or None.
        clock: the processing clock (``time.monotonic``; a manual one in tests).
    """

    def __init__(
        self,
        make_generator: Callable[[], WatermarkGenerator],
        idleness: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.make_generator = make_generator
        self.idleness = idleness
        self.clock = clock
        self.multiplexer = WatermarkOutputMultiplexer()
        self.splits: dict[str, _Split] = {}
        self.current: _Split | None = None
        # Statuses and watermarks the multiplexer produced between two polls (a split
        # added or finished between reads); handed out by the next poll.
        self._pending: list[float | WatermarkStatus] = []
        self._last_event = clock()  # any split's last record: idleness without splits
        self._seen = False
        self._idle_without_splits = False

    @classmethod
    def for_strategy(
        cls, strategy: WatermarkStrategy, clock: Callable[[], float]
    ) -> SplitWatermarkGenerator:
        """Per-split generators of ``strategy`` (its kind, out-of-orderness, idleness)."""
        plain = WatermarkStrategy(strategy.kind, strategy.max_out_of_orderness)
        return cls(lambda: plain.create_generator(clock), strategy.idleness, clock)

    # -- the reader's split listener ----------------------------------------------------

    def split_added(self, split_id: str) -> None:
        """The reader holds ``split_id`` now (assigned, restored or discovered)."""
        if split_id in self.splits:
            return
        self.splits[split_id] = _Split(self.make_generator(), self.clock())
        self._pending.extend(self.multiplexer.register(split_id))

    def split_finished(self, split_id: str) -> None:
        """The reader handed out ``split_id``'s last record."""
        split = self.splits.pop(split_id, None)
        if split is None:
            return
        if self.current is split:
            self.current = None
        self._pending.extend(self.multiplexer.unregister(split_id))

    # -- records ------------------------------------------------------------------------

    def select(self, split_id: str | None) -> None:
        """The next buffer's records come from ``split_id`` (None: the reader did not say).

        An unknown split is registered on the spot; None keeps the last selection (a
        reader that reports splits tags every buffer, so this is only a fallback).
        """
        if split_id is None:
            return
        split = self.splits.get(split_id)
        if split is None:
            self.split_added(split_id)
            split = self.splits[split_id]
        self.current = split

    def on_event(self, timestamp: float) -> None:  # noqa: D102
        self.on_batch([timestamp])

    def on_batch(self, timestamps: list[float]) -> None:  # noqa: D102
        if not timestamps:
            return
        split = self.current
        if split is None:
            # Records of no known split (a reader that did not tag its buffer): they
            # hold the watermark like a split of their own.
            self.select("")
            split = self.current
            assert split is not None
        split.seen = True
        self._seen = True
        split.generator.on_batch(timestamps)

    def on_periodic_emit(self, now: float) -> float | WatermarkStatus | None:
        """Poll every split's generator; the combined output (at most one event).

        A status change and a new watermark in the same poll: the watermark is returned
        (``ChainTime`` sends ``ACTIVE`` before a watermark while it is idle), or the
        status alone when the watermark did not move.
        """
        multiplexer = self.multiplexer
        out = self._pending
        self._pending = []
        timeout = self.idleness
        # Statuses first, then watermarks: a split active again holds the output
        # before any other split's new watermark is combined in this poll.
        for split_id, split in self.splits.items():
            if split.seen:
                split.seen = False
                split.last_event = now
                if split.idle:
                    split.idle = False
                    out.extend(multiplexer.on_status(split_id, False))
            elif timeout is not None and not split.idle and now - split.last_event >= timeout:
                split.idle = True
                out.extend(multiplexer.on_status(split_id, True))
        for split_id, split in self.splits.items():
            if split.idle:
                continue
            produced = split.generator.on_periodic_emit(now)
            if produced is not None and produced.__class__ is not WatermarkStatus:
                out.extend(multiplexer.on_watermark(split_id, produced))  # type: ignore[arg-type]
        if self._seen:
            self._seen = False
            self._last_event = now
            if self._idle_without_splits:
                self._idle_without_splits = False
                out.append(ACTIVE)
        elif (
            not self.splits
            and timeout is not None
            and not self._idle_without_splits
            and now - self._last_event >= timeout
        ):
            # No split left to read (continuous file monitoring between files): the
            # subtask goes idle as a whole-subtask generator would.
            self._idle_without_splits = True
            out.append(IDLE)
        return self._one_event(out)

    def _one_event(self, out: list[float | WatermarkStatus]) -> float | WatermarkStatus | None:
        """The one event a poll returns: the newest watermark, else the last status.

        A status that came with a watermark is kept for the next poll (``ChainTime``
        drops a status that changes nothing), so neither is lost.
        """
        if not out:
            return None
        watermark: float | None = None
        status: WatermarkStatus | None = None
        for event in out:
            if event.__class__ is WatermarkStatus:
                status = event
            else:
                watermark = event  # type: ignore[assignment]
        if watermark is None:
            return status
        if status is not None:
            self._pending.append(status)
        return watermark
