"""``JobKit``: what a job factory builds a checked job on, and ``KitOptions``, its size.

The harness (``runtime.testing.harness``) makes a ``StreamEnvironment`` with the
options' buffer, channel and checkpoint settings, wraps it in a ``JobKit`` with the run's
``FailureSchedule``, and hands the kit to the user's job factory. The factory reads from
``kit.source(name)`` (a ``TaggedSequenceSource`` with a failure point of the same name
chained to it), may put ``kit.failure_point(stream, name)`` anywhere, and returns the
stream to validate; the harness attaches the sink.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.api.datastream import DataStream
from runtime.api.environment import StreamEnvironment
from runtime.errors import ConfigError
from runtime.tasks.functions import MapFunction
from runtime.testing.failures import FailureSchedule
from runtime.testing.injection import FailingIdentity
from runtime.testing.sources import TaggedSequenceSource
from runtime.testing.tagged import RecordId

SINK_POINT = "sink"
"""The failure point name of the sink the harness attaches."""


@dataclass(frozen=True, slots=True)
class KitOptions:
    """The size and pace of a checked job; the defaults make a run last ~0.1 s.

    Attributes:
        splits: splits per tagged source.
        records_per_split: records per split.
        keys: distinct keys of the records.
        records_per_second: rate limit of each tagged source (None: no limit; the
            input may then end before the first checkpoint).
        interval: seconds between checkpoints.
        buffer_size: records per buffer (small: barriers meet data in flight).
        channel_capacity: buffers per channel (small: backpressure).
        buffer_timeout: seconds a partial buffer may wait.
        max_parallelism: key groups.
        storage: checkpoint storage, ``"memory"`` or ``"file:///dir"``.
        sink_yields: times the sink's chain yields to the event loop per record (an
            ``async`` identity map chained to the sink): a slow sink backpressures its
            inputs, so that barriers meet data in flight (unaligned checkpoints then
            persist it as channel state). 0: a sink as fast as it goes.
        timeout: seconds a run may take before the check fails.
        state_backend: the keyed state backend, ``"heap"`` or ``"rocksdb"``.
        changelog: wrap it in the changelog state backend (needs a ``file://`` storage);
            uploads and materializations are made frequent, so that a short run has both.
    """

    splits: int = 4
    records_per_split: int = 250
    keys: int = 8
    records_per_second: float | None = 20_000.0
    interval: float = 0.01
    buffer_size: int = 8
    channel_capacity: int = 2
    buffer_timeout: float = 0.005
    max_parallelism: int = 128
    storage: str = "memory"
    sink_yields: int = 0
    timeout: float = 30.0
    state_backend: str = "heap"
    changelog: bool = False


class JobKit:
    """What a job factory builds on: the environment, tagged sources, failure points.

    Args:
        env: the environment to build the job on (checkpointing is configured).
        schedule: the run's failures (empty for the reference run).
        options: sizes of the sources.

    Attributes:
        env: the environment.
        schedule: the run's failure schedule.
        sources: the tagged sources added so far, by name.
        points: the failure points added so far (sources' included), in order.
    """

    def __init__(
        self, env: StreamEnvironment, schedule: FailureSchedule, options: KitOptions
    ) -> None:
        self.env = env
        self.schedule = schedule
        self.options = options
        self.sources: dict[str, TaggedSequenceSource] = {}
        self.points: list[str] = []

    @property
    def parallelism(self) -> int:
        """The environment's default parallelism."""
        return self.env.parallelism

    def source(
        self,
        name: str = "source",
        *,
        splits: int | None = None,
        records_per_split: int | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """A ``TaggedSequenceSource`` named ``name`` and, chained to it, failure point ``name``.

        Args:
            name: the source's name and uid, its splits' prefix and its failure point.
            splits: splits of this source (the kit's default if None).
            records_per_split: records per split (the kit's default if None).
            parallelism: the source's parallelism (the environment's if None).
        """
        options = self.options
        if name in self.sources:
            raise ConfigError(f"JobKit.source: a source named {name!r} exists already")
        source = TaggedSequenceSource(
            options.splits if splits is None else splits,
            options.records_per_split if records_per_split is None else records_per_split,
            keys=options.keys,
            name=name,
            records_per_second=options.records_per_second,
        )
        self.sources[name] = source
        stream = self.env.from_source(source, name=name, uid=name, parallelism=parallelism)
        return self.failure_point(stream, name, parallelism=parallelism)

    def failure_point(
        self, stream: DataStream, name: str, *, parallelism: int | None = None
    ) -> DataStream:
        """``stream`` through failure point ``name`` (an identity map, chained if it can)."""
        if name not in self.points:
            self.points.append(name)
        return stream.map(
            FailingIdentity(self.schedule, name),
            name=f"{name} (failure point)",
            uid=f"failure-point-{name}",
            parallelism=parallelism,
        )

    def expected(self, copies: int = 1) -> Counter[RecordId]:
        """Every record of every tagged source, once per copy number ``0..copies-1``."""
        expected: Counter[RecordId] = Counter()
        for source in self.sources.values():
            expected.update(source.expected(copies))
        return expected


class SlowIdentity(MapFunction[Any, Any]):
    """An ``async`` identity map that yields to the event loop ``yields`` times per record.

    Args:
        yields: how many times to yield per record.
    """

    def __init__(self, yields: int) -> None:
        self.yields = yields

    async def map(self, value: Any) -> Any:
        """Yield, then pass ``value`` on."""
        for _ in range(self.yields):
            await asyncio.sleep(0)
        return value


JobFactory = Callable[[JobKit], DataStream]
"""Builds a job on ``kit.env`` from ``kit.source(...)``; returns the stream to validate."""
