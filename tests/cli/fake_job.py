"""A job the HTTP API can read without running one: fixed graph, counters and statistics.

``fake_job()`` builds what the API reads of a ``JobExecution`` (its graph, the current
attempt's task actors, operators and channels, the coordinator's checkpoint statistics,
its configuration) from fixed numbers, so that the JSON the API answers is the same on
every run and can be compared with golden files. ``FakeTask.advance`` moves a subtask's
time accounting on, for the load tracker's windows. Its subtasks run in two worker
processes: ``Deployment.network`` holds the bytes each one's channels to the other
worker read and wrote, as heartbeats report them (a subtask left out has not reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors import ActorState, ActorStatistics, ChannelStatistics
from runtime.checkpoint.config import CheckpointConfig, ExternalizedCheckpointRetention
from runtime.checkpoint.events import SubtaskCheckpointMetrics
from runtime.checkpoint.ids import CheckpointId, task_id
from runtime.checkpoint.stats import CheckpointStatsTracker
from runtime.config import ExecutionConfig
from runtime.scheduler.executor import NetworkBytes
from runtime.scheduler.result import JobStatus, OperatorMetrics
from runtime.tasks.partitioning import FORWARD, REBALANCE

JOB_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0


@dataclass
class Node:
    name: str
    uid: str


@dataclass(eq=False)
class Vertex:
    id: int
    nodes: list[Node]
    parallelism: int
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " -> ".join(n.name for n in self.nodes)


@dataclass(eq=False)
class Edge:
    source: Vertex
    target: Vertex
    partitioning: Any


@dataclass
class Graph:
    vertices: list[Vertex]
    max_parallelism: int = 128

    @property
    def edges(self) -> list[Edge]:
        return [e for v in self.vertices for e in v.outputs]


@dataclass
class Operator:
    name: str
    uid: str
    records_in: int
    records_out: int


@dataclass
class FakeTask:
    name: str
    busy: float
    idle: float
    backpressured: float
    state: ActorState = ActorState.RUNNING

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(self.name, self.state, self.busy, self.idle, self.backpressured, 0)

    def advance(self, busy: float, idle: float, backpressured: float) -> None:
        self.busy += busy
        self.idle += idle
        self.backpressured += backpressured


@dataclass
class FakeChannel:
    queued: int
    capacity: int = 4

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self.capacity, self.queued, 0, self.capacity, 10, 0, 10, 0, False)


@dataclass
class Deployment:
    tasks: list[FakeTask]
    operators: list[tuple[Vertex, int, list[Operator]]]
    channels: dict[int, dict[tuple[int, int], FakeChannel]]
    network: dict[tuple[int, int], tuple[int, int, bool]] = field(default_factory=dict)

    def network_bytes(self) -> dict[tuple[int, int], tuple[int, int, bool]]:
        return dict(self.network)


class Coordinator:
    def __init__(self, tracker: CheckpointStatsTracker) -> None:
        self.tracker = tracker

    def statistics_snapshot(self) -> Any:
        return self.tracker.snapshot()


@dataclass
class FakeJob:
    job_id: str
    job_name: str
    graph: Graph
    deployment: Deployment | None
    coordinator: Coordinator | None
    checkpoint_config: CheckpointConfig | None
    config: ExecutionConfig
    status: JobStatus = JobStatus.RUNNING
    restarts: int = 1
    failures: list[str] = field(default_factory=list)
    cancelled: bool = False

    def operator_metrics(self) -> dict[str, OperatorMetrics]:
        metrics: dict[str, OperatorMetrics] = {}
        assert self.deployment is not None
        for vertex, _, operators in self.deployment.operators:
            for op in operators:
                m = metrics.setdefault(
                    op.name, OperatorMetrics(op.name, op.uid, vertex.parallelism)
                )
                m.records_in += op.records_in
                m.records_out += op.records_out
        return metrics

    def network_bytes(self) -> dict[int, NetworkBytes]:
        totals: dict[int, NetworkBytes] = {}
        assert self.deployment is not None
        network = self.deployment.network_bytes()
        for vertex, subtask, _ in self.deployment.operators:
            total = totals.setdefault(vertex.id, NetworkBytes())
            found = network.get((vertex.id, subtask))
            if found is None:
                total.complete = False
                continue
            total.bytes_in += found[0]
            total.bytes_out += found[1]
            total.complete = total.complete and found[2]
        return totals

    def cancel(self) -> None:
        self.cancelled = True


def _metrics(i: int, unaligned: bool) -> SubtaskCheckpointMetrics:
    return SubtaskCheckpointMetrics(
        sync_duration=0.001 * (i + 1),
        async_duration=0.010 * (i + 1),
        alignment_duration=0.0 if unaligned else 0.002 * (i + 1),
        start_delay=0.003,
        state_size=1000 * (i + 1),
        in_flight_bytes=512 * (i + 1) if unaligned else 0,
        unaligned=unaligned,
    )


def statistics() -> CheckpointStatsTracker:
    """Checkpoint 1 (aligned) and 2 (unaligned) completed, savepoint 3, 4 failed, 5 pending."""
    tracker = CheckpointStatsTracker()
    tracker.restored("/checkpoints/old-job/chk-7")
    tasks = [task_id(0, 0), task_id(0, 1), task_id(1, 0), task_id(1, 1)]
    for n, unaligned, savepoint in ((1, False, False), (2, True, False), (3, False, True)):
        cid = CheckpointId(n)
        tracker.triggered(cid, T0 + n, savepoint)
        for i, task in enumerate(tasks):
            tracker.acknowledged(cid, task, _metrics(i, unaligned))
        pointer = f"/savepoints/savepoint-012345-{n}" if savepoint else f"/ck/{JOB_ID}/chk-{n}"
        tracker.completed(cid, 0.05 * n, pointer)
    tracker.triggered(CheckpointId(4), T0 + 4, False)
    tracker.acknowledged(CheckpointId(4), tasks[0], _metrics(0, False))
    tracker.failed(CheckpointId(4), 0.5, "checkpoint expired before completing (timeout 0.5 s)")
    tracker.triggered(CheckpointId(5), T0 + 5, False)
    return tracker


def fake_job(job_id: str = JOB_ID) -> FakeJob:
    """A running job: source (p=2) -> rebalance -> count -> sink (p=2), one restart."""
    source = Vertex(0, [Node("readings", "readings")], 2)
    count = Vertex(1, [Node("count", "count"), Node("sink", "sink")], 2)
    edge = Edge(source, count, REBALANCE)
    source.outputs.append(edge)
    count.inputs.append(edge)
    assert FORWARD is not None
    graph = Graph([source, count])
    tasks = [
        FakeTask("readings (1/2)", busy=1.0, idle=0.0, backpressured=3.0),
        FakeTask("readings (2/2)", busy=2.0, idle=0.0, backpressured=2.0),
        FakeTask("count -> sink (1/2)", busy=3.5, idle=0.5, backpressured=0.0),
        FakeTask("count -> sink (2/2)", busy=3.8, idle=0.2, backpressured=0.0),
    ]
    operators = [
        (source, 0, [Operator("readings", "readings", 0, 4000)]),
        (source, 1, [Operator("readings", "readings", 0, 4100)]),
        (count, 0, [Operator("count", "count", 4050, 4050), Operator("sink", "sink", 4050, 0)]),
        (count, 1, [Operator("count", "count", 4000, 4000), Operator("sink", "sink", 4000, 0)]),
    ]
    channels = {id(edge): {(i, j): FakeChannel(queued=3 + i) for i in (0, 1) for j in (0, 1)}}
    # Worker 0 holds subtask 0 of both vertices, worker 1 subtask 1: half of the
    # rebalanced records cross to the other worker.
    network = {
        (0, 0): (0, 26_000, True),
        (0, 1): (0, 26_650, True),
        (1, 0): (26_650, 0, True),
        (1, 1): (26_000, 0, True),
    }
    config = CheckpointConfig(
        interval=10.0,
        unaligned=True,
        aligned_timeout=0.05,
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=3,
        storage="file:///ck",
    )
    return FakeJob(
        job_id=job_id,
        job_name="fake job",
        graph=graph,
        deployment=Deployment(tasks, operators, channels, network),
        coordinator=Coordinator(statistics()),
        checkpoint_config=config,
        config=ExecutionConfig(),
        failures=["OperatorError: count (1/2) failed: ValueError: bad record 17"],
    )
