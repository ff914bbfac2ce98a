"""Samples of a running job's subtasks: records, busy / idle / backpressured time, levels.

Nothing here is measured on the hot path: the numbers are the counters the runtime
already keeps (each operator's ``records_in`` / ``records_out``, each actor's time
accounting from :meth:`actors.Actor.statistics`, each channel's
:class:`actors.ChannelStatistics`, the bytes that worker processes' data connections
carried, as their heartbeats report them), read when someone asks (the HTTP API, ``/metrics``,
the dashboard). :func:`sample_job` reads them for the job's current attempt, grouped by
vertex (operator chain) and subtask. :class:`LoadTracker` turns the cumulative times
into Flink's per-second ratios (``busyTimeMsPerSecond`` and friends) over the time
between two samples, and :func:`backpressure_level` into Flink's levels: a ratio of
backpressured time up to 0.10 is ``ok``, up to 0.5 ``low``, above that ``high``.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = [
    "BackpressureLevel",
    "LoadTracker",
    "SubtaskLoad",
    "SubtaskSample",
    "VertexSample",
    "backpressure_level",
    "sample_job",
]

LOW_THRESHOLD = 0.10
"""Backpressured time ratios above this are ``low`` (Flink's threshold)."""
HIGH_THRESHOLD = 0.5
"""Backpressured time ratios above this are ``high`` (Flink's threshold)."""
MIN_WINDOW_SECONDS = 1.0
"""The shortest time a :class:`LoadTracker` measures ratios over."""


class BackpressureLevel(enum.Enum):
    """Flink's backpressure levels."""

    OK = "ok"
    LOW = "low"
    HIGH = "high"


def backpressure_level(ratio: float) -> BackpressureLevel:
    """The level of a backpressured-time ratio (0..1), with Flink's thresholds."""
    if ratio > HIGH_THRESHOLD:
        return BackpressureLevel.HIGH
    if ratio > LOW_THRESHOLD:
        return BackpressureLevel.LOW
    return BackpressureLevel.OK


@dataclass(slots=True, frozen=True)
class SubtaskSample:
    """One subtask's counters now (cumulative over its attempt).

    Attributes:
        subtask: its index (0-based).
        name: the actor's name, e.g. ``"sum -> sink (2/2)"``.
        state: the actor's lifecycle state.
        records_in: records its chain's first operator took in.
        records_out: records its chain's last operator emitted.
        busy_seconds: time it ran.
        idle_seconds: time it waited for input.
        backpressured_seconds: time it waited for room in an output.
        attempt: the attempt it belongs to (0, then the restart number).
        bytes_in: bytes its input channels read from other worker processes (whole
            frames; 0 in one process, where channels carry objects).
        bytes_out: bytes its output channels wrote to other worker processes.
        bytes_complete: whether its byte counters are known (false for a subtask of a
            worker not heard from yet).
    """

    subtask: int
    name: str
    state: str
    records_in: int
    records_out: int
    busy_seconds: float
    idle_seconds: float
    backpressured_seconds: float
    attempt: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_complete: bool = True


@dataclass(slots=True)
class VertexSample:
    """One vertex (operator chain) of the job graph, with its subtasks' samples.

    Attributes:
        id: the vertex's id in the job graph (as a string, like Flink's vertex ids).
        name: the chain's name (``"map -> filter"``).
        operators: the chain's operators: ``(name, uid)``.
        parallelism: its number of subtasks.
        inputs: the ids of the vertices it reads, with each edge's partitioning.
        subtasks: the current attempt's subtasks (empty before deployment).
        queued_in: buffers waiting in its input channels now.
        capacity_in: how many buffers its input channels hold at most.
    """

    id: str
    name: str
    operators: list[tuple[str, str]]
    parallelism: int
    inputs: list[tuple[str, str]]
    subtasks: list[SubtaskSample] = field(default_factory=list)
    queued_in: int = 0
    capacity_in: int = 0

    @property
    def records_in(self) -> int:
        """Records in over the current attempt's subtasks."""
        return sum(s.records_in for s in self.subtasks)

    @property
    def records_out(self) -> int:
        """Records out over the current attempt's subtasks."""
        return sum(s.records_out for s in self.subtasks)

    @property
    def bytes_in(self) -> int:
        """Bytes in over the current attempt's subtasks."""
        return sum(s.bytes_in for s in self.subtasks)

    @property
    def bytes_out(self) -> int:
        """Bytes out over the current attempt's subtasks."""
        return sum(s.bytes_out for s in self.subtasks)


def _uid(node: Any) -> str:
    uid = getattr(node, "uid", None)
    return str(uid) if uid else str(getattr(node, "name", "?"))


def sample_job(execution: JobExecution) -> list[VertexSample]:
    """The job's vertices with their subtasks' counters now. Never blocks.

    Args:
        execution: the job (any status; a job that is not deployed has no subtasks).

    Returns:
        One sample per vertex, in topological order (empty for a job without a graph).
    """
    graph = getattr(execution, "graph", None)
    if graph is None:
        return []
    vertices: dict[int, VertexSample] = {}
    for vertex in graph.vertices:
        vertices[vertex.id] = VertexSample(
            id=str(vertex.id),
            name=vertex.name,
            operators=[(node.name, _uid(node)) for node in vertex.nodes],
            parallelism=vertex.parallelism,
            inputs=[(str(edge.source.id), str(edge.partitioning)) for edge in vertex.inputs],
        )
    deployment = getattr(execution, "deployment", None)
    if deployment is None:
        return list(vertices.values())
    # Worker processes report bytes (runtime.cluster.master.ClusterDeployment); in one
    # process channels carry objects: 0 bytes, known.
    reported = getattr(deployment, "network_bytes", None)
    network = reported() if reported is not None else None
    for task, (vertex, subtask, operators) in zip(
        deployment.tasks, deployment.operators, strict=False
    ):
        sample = vertices.get(vertex.id)
        if sample is None:
            continue
        stats = task.statistics()
        counted = (0, 0, True) if network is None else network.get((vertex.id, subtask))
        bytes_in, bytes_out, complete = (0, 0, False) if counted is None else counted
        sample.subtasks.append(
            SubtaskSample(
                subtask=subtask,
                name=stats.name,
                state=stats.state.value,
                records_in=operators[0].records_in if operators else 0,
                records_out=operators[-1].records_out if operators else 0,
                busy_seconds=stats.busy_seconds,
                idle_seconds=stats.idle_seconds,
                backpressured_seconds=stats.backpressured_seconds,
                attempt=getattr(deployment, "attempt", 0),
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                bytes_complete=complete,
            )
        )
    for edge in graph.edges:
        target = vertices.get(edge.target.id)
        matrix = deployment.channels.get(id(edge), {})
        if target is None:
            continue
        for channel in matrix.values():
            stats = channel.statistics()
            target.queued_in += stats.queued
            target.capacity_in += stats.capacity
    return list(vertices.values())


@dataclass(slots=True, frozen=True)
class SubtaskLoad:
    """Ratios of one subtask's time over a recent window (they add up to about 1).

    Attributes:
        busy: share of the window it ran.
        idle: share it waited for input.
        backpressured: share it waited for room in an output.
        records_in_per_second: records in per second over the window.
        records_out_per_second: records out per second over the window.
    """

    busy: float
    idle: float
    backpressured: float
    records_in_per_second: float
    records_out_per_second: float

    @property
    def level(self) -> BackpressureLevel:
        """Flink's backpressure level of the backpressured ratio."""
        return backpressure_level(self.backpressured)


@dataclass(slots=True)
class _Mark:
    at: float
    sample: SubtaskSample


class LoadTracker:
    """Per-second ratios and rates of each subtask, over the time between two reads.

    Keeps, per subtask, the sample it measured from; a read at least
    :data:`MIN_WINDOW_SECONDS` later measures over the window and starts a new one, an
    earlier read answers the last window's figures (the first read of a subtask: the
    ratios since it started, no rates). Plain bookkeeping, no task: call it from one
    event loop.

    Args:
        clock: seconds (monotonic), injected for tests.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._marks: dict[tuple[str, str, int], _Mark] = {}
        self._loads: dict[tuple[str, str, int], SubtaskLoad] = {}

    def load(self, job_id: str, vertex_id: str, sample: SubtaskSample) -> SubtaskLoad:
        """The subtask's load over the latest window (see the class docstring)."""
        key = (job_id, vertex_id, sample.subtask)
        now = self._clock()
        mark = self._marks.get(key)
        previous = self._loads.get(key)
        if mark is None or mark.sample.attempt != sample.attempt:
            # First sight, or a new attempt restarted the counters: ratios since its start.
            self._marks[key] = _Mark(now, sample)
            load = self._ratios(sample, None, 0.0)
            self._loads[key] = load
            return load
        elapsed = now - mark.at
        if elapsed < MIN_WINDOW_SECONDS and previous is not None:
            return previous
        load = self._ratios(sample, mark.sample, elapsed)
        self._marks[key] = _Mark(now, sample)
        self._loads[key] = load
        return load

    @staticmethod
    def _ratios(sample: SubtaskSample, base: SubtaskSample | None, elapsed: float) -> SubtaskLoad:
        busy, idle, bp = sample.busy_seconds, sample.idle_seconds, sample.backpressured_seconds
        rate_in = rate_out = 0.0
        if base is not None:
            # Busy time is what is left of the elapsed time once the waits are counted,
            # and a wait is counted when it ends: over a window, one can move to another.
            busy = max(0.0, busy - base.busy_seconds)
            idle = max(0.0, idle - base.idle_seconds)
            bp = max(0.0, bp - base.backpressured_seconds)
            if elapsed > 0:
                rate_in = (sample.records_in - base.records_in) / elapsed
                rate_out = (sample.records_out - base.records_out) / elapsed
        total = busy + idle + bp
        if total <= 0:
            return SubtaskLoad(0.0, 1.0, 0.0, rate_in, rate_out)
        return SubtaskLoad(
            max(0.0, busy / total),
            max(0.0, idle / total),
            max(0.0, bp / total),
            rate_in,
            rate_out,
        )

    def forget(self, job_id: str) -> None:
        """Drop what is kept of a job (it ended and is no longer listed)."""
        for key in [k for k in self._marks if k[0] == job_id]:
            self._marks.pop(key, None)
            self._loads.pop(key, None)
