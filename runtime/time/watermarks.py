"""Watermarks: how event time advances, and the strategies that generate it.

A watermark ``W`` is a promise in a stream: every record after it has an event
timestamp ``>= W`` (Flink's watermark ``w`` promises timestamps ``> w`` in milliseconds;
``W`` here is Flink's ``w + 1``, so both say the same in a continuous unit). Event time
is a number (``int`` or ``float``) in the user's unit: seconds as floats, or integer
milliseconds; window sizes, gaps, lateness and out-of-orderness use the same unit.

Watermarks travel in channels as ``Watermark`` events in the data lane, in order with
the records (``RecordWriter.emit_event``); ``WatermarkStatus`` marks a producer idle or
active again. A subtask's watermark is the minimum over its active inputs
(``runtime.time.valve``). Neither is kept in checkpoints or channel state (as in
Flink): after a restore every operator's watermark starts at ``MIN_WATERMARK``, and the
sources generate new ones from the records they read.

A ``WatermarkStrategy`` is attached to a source (``from_source(...,
watermark_strategy=)``) or a stream (``assign_timestamps_and_watermarks``); each subtask
creates its own ``WatermarkGenerator`` from it. A source subtask whose reader reports its
splits creates one per split instead, and emits the minimum over its active splits
(per-split watermarks: ``runtime.time.split_watermarks``); idleness then applies to
each split, and the subtask is idle when all of its splits are. Generators see every
record's timestamp (``on_event``) and are asked for a watermark every ``emit_interval``
seconds of processing time, after a buffer (``on_periodic_emit``), as Flink's periodic
generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from runtime.errors import ConfigError

__all__ = [
    "ACTIVE",
    "IDLE",
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "BoundedOutOfOrdernessGenerator",
    "IdlenessGenerator",
    "MonotonousGenerator",
    "NoWatermarksGenerator",
    "Watermark",
    "WatermarkGenerator",
    "WatermarkStatus",
    "WatermarkStrategy",
    "check_duration",
    "check_timestamp",
]

MIN_WATERMARK = -math.inf
"""The watermark before any was seen (and after a restore)."""

MAX_WATERMARK = math.inf
"""The watermark at the end of input: every event-time timer fires."""


class Watermark(msgspec.Struct, frozen=True):
    """Event: no later record on this channel has a timestamp below ``timestamp``."""

    timestamp: float


class WatermarkStatus(msgspec.Struct, frozen=True):
    """Event: the producer is idle (its watermark does not hold others back) or active."""

    idle: bool


IDLE = WatermarkStatus(True)
"""The producer has no data for a while."""

ACTIVE = WatermarkStatus(False)
"""The producer emits records (and watermarks) again."""


def check_timestamp(value: Any) -> float:
    """``value`` as an event timestamp, or TypeError/ValueError saying what is wrong."""
    if value.__class__ is int or value.__class__ is float:
        if value != value:
            raise ValueError("the timestamp assigner returned NaN; return a number")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"the timestamp assigner returned {type(value).__name__} {value!r}; "
            f"event timestamps are numbers (int or float)"
        )
    if value != value:
        raise ValueError("the timestamp assigner returned NaN; return a number")
    return float(value)


def check_duration(what: str, value: Any, *, positive: bool = True) -> float:
    """Validate a duration option (a number, > 0 or >= 0): ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if math.isinf(value):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{what} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise ConfigError(f"{what} must be >= 0, got {value!r}")
    return value


class WatermarkGenerator:
    """Generates one subtask's watermarks from the timestamps it sees (pure, no clock).

    ``on_event`` is called per record, ``on_periodic_emit`` after buffers at most every
    ``emit_interval`` seconds; both return a new watermark or None.
    """

    def on_event(self, timestamp: float) -> None:
        """A record with ``timestamp`` was seen."""

    def on_batch(self, timestamps: list[float]) -> None:
        """A buffer's timestamps were seen (default: ``on_event`` each)."""
        for timestamp in timestamps:
            self.on_event(timestamp)

    def on_periodic_emit(self, now: float) -> float | WatermarkStatus | None:
        """The current watermark (or a status change), ``now`` in processing seconds."""
        return None


class NoWatermarksGenerator(WatermarkGenerator):
    """Timestamps only; watermarks come from elsewhere (or only at the end of input)."""


class BoundedOutOfOrdernessGenerator(WatermarkGenerator):
    """Watermark = highest timestamp seen - ``max_out_of_orderness``."""

    def __init__(self, max_out_of_orderness: float) -> None:
        self.max_out_of_orderness = max_out_of_orderness
        self.max_timestamp = -math.inf

    def on_event(self, timestamp: float) -> None:  # noqa: D102
        if timestamp > self.max_timestamp:
            self.max_timestamp = timestamp

    def on_batch(self, timestamps: list[float]) -> None:  # noqa: D102
        if timestamps:
            highest = max(timestamps)
            if highest > self.max_timestamp:
                self.max_timestamp = highest

    def on_periodic_emit(self, now: float) -> float | WatermarkStatus | None:  # noqa: D102
        return self.max_timestamp - self.max_out_of_orderness


class MonotonousGenerator(BoundedOutOfOrdernessGenerator):
    """Ascending timestamps: watermark = highest timestamp seen."""

    def __init__(self) -> None:
        super().__init__(0)


class IdlenessGenerator(WatermarkGenerator):
    """Wraps a generator: idle after ``timeout`` seconds without records, active on one.

    Args:
        inner: the generator of watermarks while active.
        timeout: processing seconds without records before the subtask is idle.
        clock: the processing clock (``time.monotonic``).
    """

    def __init__(
        self, inner: WatermarkGenerator, timeout: float, clock: Callable[[], float]
    ) -> None:
        self.inner = inner
        self.timeout = timeout
        self.clock = clock
        self.last_event = clock()
        self.idle = False
        self._seen = False

    def on_event(self, timestamp: float) -> None:  # noqa: D102
        self._seen = True
        self.inner.on_event(timestamp)

    def on_batch(self, timestamps: list[float]) -> None:  # noqa: D102
        if timestamps:
            self._seen = True
            self.inner.on_batch(timestamps)

    def on_periodic_emit(self, now: float) -> float | WatermarkStatus | None:  # noqa: D102
        if self._seen:
            self._seen = False
            self.last_event = now
            if self.idle:
                self.idle = False
                return ACTIVE
            return self.inner.on_periodic_emit(now)
        if not self.idle and now - self.last_event >= self.timeout:
            self.idle = True
            return IDLE
        if self.idle:
            return None
        return self.inner.on_periodic_emit(now)


@dataclass(frozen=True, slots=True)
class WatermarkStrategy:
    """How a stream's records get timestamps and its watermarks are generated.

    Build one with ``for_bounded_out_of_orderness``, ``for_monotonous_timestamps`` or
    ``no_watermarks``, then ``with_timestamp_assigner(fn)`` (``fn(record)`` returns the
    record's event timestamp), optionally ``with_idleness(timeout)`` and
    ``with_emit_interval(seconds)``.

    Attributes:
        kind: ``"bounded"``, ``"monotonous"`` or ``"none"``.
        max_out_of_orderness: how far behind the highest timestamp a record may be.
        timestamp_assigner: ``fn(record) -> number``, or None.
        idleness: processing seconds without records before the subtask is idle.
        emit_interval: processing seconds between two watermarks (Flink's
            auto-watermark interval, 0.2 s); 0 emits after every buffer.
    """

    kind: str = "none"
    max_out_of_orderness: float = 0.0
    timestamp_assigner: Callable[[Any], Any] | None = None
    idleness: float | None = None
    emit_interval: float = 0.2

    @staticmethod
    def for_bounded_out_of_orderness(max_out_of_orderness: float) -> WatermarkStrategy:
        """Watermarks ``max_out_of_orderness`` behind the highest timestamp seen.

        Raises:
            ConfigError: not a number, or negative.
        """
        delay = check_duration(
            "WatermarkStrategy.for_bounded_out_of_orderness: max_out_of_orderness",
            max_out_of_orderness,
            positive=False,
        )
        return WatermarkStrategy("bounded", delay)

    @staticmethod
    def for_monotonous_timestamps() -> WatermarkStrategy:
        """Ascending timestamps: the watermark is the highest timestamp seen."""
        return WatermarkStrategy("monotonous")

    @staticmethod
    def no_watermarks() -> WatermarkStrategy:
        """Timestamps only (``MAX_WATERMARK`` still flows at the end of input)."""
        return WatermarkStrategy("none")

    def with_timestamp_assigner(self, fn: Callable[[Any], Any]) -> WatermarkStrategy:
        """``fn(record)`` gives each record's event timestamp (a number).

        Raises:
            ConfigError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise ConfigError(
                f"WatermarkStrategy.with_timestamp_assigner: expected a function of one "
                f"record, got {type(fn).__name__}"
            )
        return replace(self, timestamp_assigner=fn)

    def with_idleness(self, timeout: float) -> WatermarkStrategy:
        """Mark the subtask idle after ``timeout`` processing seconds without records.

        With per-split watermarks each split goes idle on its own (it no longer holds
        the others back), and the subtask is idle when all of its splits are.

        Raises:
            ConfigError: not a positive number.
        """
        check_duration("WatermarkStrategy.with_idleness: timeout", timeout)
        return replace(self, idleness=timeout)

    def with_emit_interval(self, seconds: float) -> WatermarkStrategy:
        """Processing seconds between two watermarks (0: after every buffer).

        Raises:
            ConfigError: not a number >= 0.
        """
        check_duration("WatermarkStrategy.with_emit_interval: seconds", seconds, positive=False)
        return replace(self, emit_interval=seconds)

    def create_generator(self, clock: Callable[[], float]) -> WatermarkGenerator:
        """A new generator for one subtask."""
        inner: WatermarkGenerator
        if self.kind == "bounded":
            inner = BoundedOutOfOrdernessGenerator(self.max_out_of_orderness)
        elif self.kind == "monotonous":
            inner = MonotonousGenerator()
        else:
            inner = NoWatermarksGenerator()
        if self.idleness is not None:
            return IdlenessGenerator(inner, self.idleness, clock)
        return inner
