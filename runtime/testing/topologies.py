"""Job shapes to check the runtime with: the kit's own job factories.

Each ``Topology`` is a job factory (``topology(kit)`` builds the job and returns the
stream to validate) with the names of its failure points and the records it delivers.
Together they cover the ways records meet barriers:

==================  ===================================================================
topology            job
==================  ===================================================================
``pipeline``        source -> map -> sink, all chained (forward edges)
``rebalance``       source -> rebalance -> map -> sink (an all-to-all exchange)
``keyed``           source -> key_by -> running count per key (keyed state) -> sink
``union``           two sources -> union -> map -> sink (a task with two inputs)
``two_inputs``      source ``a`` -> map, source ``b`` -> key_by -> running count, their
                    union -> sink: two differently processed streams into one
                    operator (there is no connect / co-process operator yet)
``broadcast``       source -> broadcast -> copy number -> sink: every record once per
                    consumer subtask
==================  ===================================================================

The running count puts its state in the records (``Tagged.value``), so the harness can
compare state between runs. Failure points are named after the operator they follow;
``"sink"`` is always one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.api.datastream import DataStream
from runtime.tasks.context import RuntimeContext
from runtime.tasks.functions import KeyedProcessFunction, MapFunction
from runtime.testing.kit import SINK_POINT, JobKit
from runtime.testing.tagged import RecordId, Tagged
from storage import ValueStateDescriptor


class RunningCount(KeyedProcessFunction[Tagged, Tagged]):
    """Counts records per key in keyed state; each record leaves with its key's count."""

    def open(self, ctx: RuntimeContext) -> None:
        """Register the count."""
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0, type=int))

    def process_element(self, value: Tagged, ctx: RuntimeContext) -> list[Tagged]:
        """Count the record; emit it with the new count as its value."""
        count: int = self.count.value() + 1
        self.count.update(count)
        return [value.with_value(count)]


class CopyNumber(MapFunction[Tagged, Tagged]):
    """Numbers the copies of a broadcast record by the subtask that received it."""

    def __init__(self) -> None:
        self.copy = 0

    def open(self, ctx: RuntimeContext) -> None:
        """Learn the subtask index."""
        self.copy = ctx.subtask_index

    def map(self, value: Tagged) -> Tagged:
        """The record as copy number ``subtask index``."""
        return value.with_copy(self.copy)


def _touch(record: Tagged) -> Tagged:
    return record


@dataclass(frozen=True, slots=True)
class Topology:
    """A job factory with what the kit needs to know about it.

    Attributes:
        name: a short name (test ids).
        build: the job factory.
        points: its failure points, ``"sink"`` included.
        fan_out: whether each record is delivered once per consumer subtask.
    """

    name: str
    build: Callable[[JobKit], DataStream]
    points: tuple[str, ...]
    fan_out: bool = False

    def __call__(self, kit: JobKit) -> DataStream:
        """Build the job on ``kit``."""
        return self.build(kit)

    def expected(self, kit: JobKit) -> Counter[RecordId]:
        """The records a run without failures delivers."""
        return kit.expected(copies=kit.parallelism if self.fan_out else 1)

    def __repr__(self) -> str:
        return f"Topology({self.name!r})"


def _pipeline(kit: JobKit) -> DataStream:
    return kit.failure_point(kit.source().map(_touch, name="map"), "map")


def _rebalance(kit: JobKit) -> DataStream:
    return kit.failure_point(kit.source().rebalance().map(_touch, name="map"), "map")


def _keyed(kit: JobKit) -> DataStream:
    counted = kit.source().key_by(_key).process(RunningCount(), name="count", uid="count")
    return kit.failure_point(counted, "count")


def _union(kit: JobKit) -> DataStream:
    merged = kit.source("a").union(kit.source("b")).map(_touch, name="map")
    return kit.failure_point(merged, "map")


def _two_inputs(kit: JobKit) -> DataStream:
    mapped = kit.source("a").map(_touch, name="map")
    counted = kit.source("b").key_by(_key).process(RunningCount(), name="count", uid="count")
    return kit.failure_point(mapped.union(counted), "merge")


def _broadcast(kit: JobKit) -> DataStream:
    copies = kit.source().broadcast().map(CopyNumber(), name="copies", uid="copies")
    return kit.failure_point(copies, "copies")


def _key(record: Any) -> int:
    key: int = record.key
    return key


PIPELINE = Topology("pipeline", _pipeline, ("source", "map", SINK_POINT))
REBALANCE = Topology("rebalance", _rebalance, ("source", "map", SINK_POINT))
KEYED = Topology("keyed", _keyed, ("source", "count", SINK_POINT))
UNION = Topology("union", _union, ("a", "b", "map", SINK_POINT))
TWO_INPUTS = Topology("two_inputs", _two_inputs, ("a", "b", "merge", SINK_POINT))
BROADCAST = Topology("broadcast", _broadcast, ("source", "copies", SINK_POINT), fan_out=True)

TOPOLOGIES: tuple[Topology, ...] = (PIPELINE, REBALANCE, KEYED, UNION, TWO_INPUTS, BROADCAST)
"""Every topology of the kit."""
