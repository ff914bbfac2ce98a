"""``JobExecution``: deploys a ``JobGraph`` as actors on this event loop and runs it.

Deployment, per job vertex and subtask: create the channels of every edge (a full
producer x consumer matrix, or ``i -> i`` for forward edges), then per subtask the
operators (through each node's factory, so every subtask has its own), their
``RuntimeContext`` with state backends for keyed operators (the subtask's key-group
range), the ``RecordWriter`` of each outgoing edge, the ``OperatorChain``, and the task
actor: a ``SourceTask`` with its reader and assigned splits, or a ``StreamTask`` with an
``InputGate`` over its input channels. All tasks run under one ``Supervisor``: the first
failure cancels them all and fails the job.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from actors import Actor, ActorFailedError, Channel, InputGate, Supervisor
from runtime.api.result import JobResult, JobStatus, OperatorMetrics
from runtime.checkpoint.config import CheckpointConfig, ExternalizedCheckpointRetention
from runtime.checkpoint.coordinator import CheckpointCoordinator, OperatorInfo
from runtime.checkpoint.ids import task_id
from runtime.config import ExecutionConfig
from runtime.connectors.sinks import CollectSink
from runtime.errors import JobFailedError, OperatorError
from runtime.graph.job_graph import JobEdge, JobGraph, JobVertex
from runtime.graph.partitioning import PartitionKind
from runtime.graph.transformations import NodeKind
from runtime.tasks.chain import OperatorChain
from runtime.tasks.context import RuntimeContext
from runtime.tasks.operators import SinkOperator, StreamOperator
from runtime.tasks.record_writer import RecordWriter
from runtime.tasks.snapshot import TaskCheckpointing
from runtime.tasks.source_task import SourceOperator, SourceTask
from runtime.tasks.stream_task import StreamTask
from runtime.tasks.task import Task
from storage import HeapKeyedStateBackend, KeyGroupRange, OperatorStateBackend
from storage.checkpoint import CheckpointStorage, resolve_storage

ChannelMatrix = dict[tuple[int, int], Channel[Any]]


class JobExecution:
    """One run of a job graph.

    Args:
        graph: the validated plan.
        config: the record-path options.
        job_name: the job's name.
    """

    def __init__(
        self,
        graph: JobGraph,
        config: ExecutionConfig,
        job_name: str,
        checkpoint_config: CheckpointConfig | None = None,
    ) -> None:
        self.graph = graph
        self.config = config
        self.job_name = job_name
        self.job_id = uuid.uuid4().hex
        self.checkpoint_config = (
            checkpoint_config
            if checkpoint_config is not None and checkpoint_config.enabled
            else None
        )
        self.storage: CheckpointStorage | None = None
        self.coordinator: CheckpointCoordinator | None = None
        self.status = JobStatus.CREATED
        self.tasks: list[Task] = []
        self.channels: dict[int, ChannelMatrix] = {}
        self._operators: list[tuple[JobVertex, int, list[StreamOperator]]] = []
        self._supervisor: Supervisor | None = None
        self._assignments: dict[int, list[list[Any]]] = {}
        self._deployed = False
        self._cancel_requested = False

    # -- deployment -----------------------------------------------------------------------

    def deploy(self) -> None:
        """Create every channel and task actor (nothing runs yet). Idempotent."""
        if self._deployed:
            return
        self._deployed = True
        for edge in self.graph.edges:
            self.channels[id(edge)] = self._make_channels(edge)
        for vertex in self.graph.vertices:
            for subtask in range(vertex.parallelism):
                self.tasks.append(self._make_task(vertex, subtask))
        if self.checkpoint_config is not None:
            self._deploy_checkpointing(self.checkpoint_config)

    def _deploy_checkpointing(self, config: CheckpointConfig) -> None:
        storage = resolve_storage(config.storage, self.job_id)
        self.storage = storage
        mailboxes = {task.task_id: task.mailbox for task in self.tasks}
        sources = [task.task_id for task in self.tasks if isinstance(task, SourceTask)]
        operators = [
            OperatorInfo(
                node.uid or node.name, node.name, vertex.parallelism, self.graph.max_parallelism
            )
            for vertex in self.graph.vertices
            for node in vertex.nodes
        ]
        coordinator = CheckpointCoordinator(
            config, storage, mailboxes, sources, operators, self.job_id
        )
        self.coordinator = coordinator
        for task, (vertex, subtask, ops) in zip(self.tasks, self._operators, strict=True):
            checkpointing = TaskCheckpointing(
                task.task_id,
                task.name,
                ops,
                storage,
                coordinator.mailbox,
                allow_pickle=self.config.allow_pickle,
                spawn=task.spawn,
            )
            targets = []
            for edge in vertex.outputs:
                matrix = self.channels[id(edge)]
                consumers = [j for j in range(edge.target.parallelism) if (subtask, j) in matrix]
                targets.append((edge.target.head.uid or edge.target.head.name, consumers))
            task.enable_checkpointing(checkpointing, coordinator.mailbox, targets)

    def _make_channels(self, edge: JobEdge) -> ChannelMatrix:
        capacity = self.config.channel_capacity
        up, down = edge.source, edge.target
        matrix: ChannelMatrix = {}
        for i in range(up.parallelism):
            targets = (
                [i] if edge.partitioning.kind is PartitionKind.FORWARD else range(down.parallelism)
            )
            for j in targets:
                matrix[i, j] = Channel(
                    capacity,
                    name=f"{up.name} ({i + 1}/{up.parallelism}) -> "
                    f"{down.name} ({j + 1}/{down.parallelism})",
                )
        return matrix

    def _make_task(self, vertex: JobVertex, subtask: int) -> Task:
        graph, config = self.graph, self.config
        p = vertex.parallelism
        operators: list[StreamOperator] = []
        for node in vertex.nodes:
            uid = node.uid or node.name
            keyed = None
            if node.key_selector is not None:
                keyed = HeapKeyedStateBackend(
                    graph.max_parallelism,
                    KeyGroupRange.for_operator(graph.max_parallelism, p, subtask),
                )
            ctx = RuntimeContext(
                operator_name=node.name,
                subtask_index=subtask,
                parallelism=p,
                max_parallelism=graph.max_parallelism,
                job_name=self.job_name,
                keyed_backend=keyed,
                operator_backend=OperatorStateBackend(allow_pickle=config.allow_pickle),
            )
            if node.kind is NodeKind.SOURCE:
                source_operator = SourceOperator(node.name, uid)
                source_operator.allow_pickle = config.allow_pickle
                operator: StreamOperator = source_operator
            else:
                assert node.factory is not None
                operator = node.factory(node.name, uid)
            operator.setup(ctx)
            operators.append(operator)
        self._operators.append((vertex, subtask, operators))

        tail = operators[-1]
        writers = []
        for edge in vertex.outputs:
            matrix = self.channels[id(edge)]
            channels = [
                matrix[subtask, j] for j in range(edge.target.parallelism) if (subtask, j) in matrix
            ]

            def key_error(
                error: BaseException,
                record: Any,
                tail: StreamOperator = tail,
                target: str = edge.target.name,
            ) -> BaseException:
                return OperatorError(
                    f"key_by before {target!r}",
                    subtask,
                    p,
                    error,
                    record=record,
                    has_record=True,
                )

            writers.append(
                RecordWriter(
                    channels,
                    edge.partitioning,
                    config.buffer_size,
                    graph.max_parallelism,
                    subtask,
                    key_error,
                )
            )
        chain = OperatorChain(operators, writers)
        name = f"{vertex.name} ({subtask + 1}/{p})"
        tid = task_id(vertex.id, subtask)
        if vertex.is_source:
            source = vertex.head.source
            assert source is not None
            splits = self._split_assignment(vertex)
            reader = source.create_reader(subtask)
            reader.add_splits(splits[subtask])
            rate = getattr(source, "records_per_second", None)
            return SourceTask(
                name,
                chain,
                reader,
                buffer_size=config.buffer_size,
                buffer_timeout=config.buffer_timeout,
                records_per_second=None if rate is None else rate / p,
                task_id=tid,
            )
        inputs: list[Channel[Any]] = []
        input_sources: list[tuple[str, int]] = []
        for edge in vertex.inputs:
            matrix = self.channels[id(edge)]
            producer = edge.source.nodes[-1]
            for i in range(edge.source.parallelism):
                if (i, subtask) in matrix:
                    inputs.append(matrix[i, subtask])
                    input_sources.append((producer.uid or producer.name, i))
        return StreamTask(
            name,
            chain,
            InputGate(inputs),
            buffer_timeout=config.buffer_timeout,
            input_sources=input_sources,
            task_id=tid,
        )

    def _split_assignment(self, vertex: JobVertex) -> list[list[Any]]:
        cache = self._assignments
        if vertex.id not in cache:
            source = vertex.head.source
            assert source is not None
            cache[vertex.id] = source.create_enumerator().assign_splits(vertex.parallelism)
        assignment: list[list[Any]] = cache[vertex.id]
        return assignment

    # -- running --------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the job. Never blocks."""
        self._cancel_requested = True
        if self.status is JobStatus.RUNNING:
            self.status = JobStatus.CANCELLING
        if self._supervisor is not None:
            self._supervisor.cancel()

    async def run(self) -> JobResult:
        """Deploy and run the job to its end.

        Raises:
            JobFailedError: a subtask failed; every other subtask was cancelled first.
        """
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            self.deploy()
            actors: list[Actor] = list(self.tasks)
            if self.coordinator is not None:
                actors.append(self.coordinator)
            self._supervisor = Supervisor(actors)
            if self._cancel_requested:
                self._supervisor.cancel()
            if self.status is JobStatus.CREATED:
                self.status = JobStatus.RUNNING
            await self._supervisor.run()
        except ActorFailedError as error:
            failure = error.__cause__ or error
        except Exception as error:
            # Deployment errors: a reader that could not be created, a bad split...
            failure = error
        if failure is not None:
            self.status = JobStatus.FAILED
        elif self._cancel_requested:
            self.status = JobStatus.CANCELED
        else:
            self.status = JobStatus.FINISHED
        await self._clean_up_checkpoints()
        result = self._result(time.perf_counter() - started, failure)
        if failure is not None:
            raise JobFailedError(self.job_name, result, failure)
        return result

    async def _clean_up_checkpoints(self) -> None:
        """Honour the retention policy (Flink's checkpoint properties per policy).

        RETAIN_ON_CANCELLATION keeps completed checkpoints whatever the end;
        DELETE_ON_CANCELLATION deletes them when the job finishes or is cancelled and
        keeps them when it failed; NO_EXTERNALIZED_CHECKPOINTS always deletes them.
        """
        config, coordinator, storage = self.checkpoint_config, self.coordinator, self.storage
        if config is None or coordinator is None or storage is None:
            return
        retention = config.retention
        if retention is ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION:
            return
        if (
            retention is ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION
            and self.status is JobStatus.FAILED
        ):
            return
        for completed in coordinator.completed:
            # Best effort: the job's outcome stands even if a deletion fails.
            with contextlib.suppress(Exception):
                await storage.discard(completed.checkpoint_id)

    # -- results --------------------------------------------------------------------------

    def operator_metrics(self) -> dict[str, OperatorMetrics]:
        """Records in and out per operator, summed over subtasks."""
        metrics: dict[str, OperatorMetrics] = {}
        for vertex, _subtask, operators in self._operators:
            for operator in operators:
                m = metrics.get(operator.name)
                if m is None:
                    m = metrics[operator.name] = OperatorMetrics(
                        operator.name, operator.uid, vertex.parallelism
                    )
                m.records_in += operator.records_in
                m.records_out += operator.records_out
                m.subtasks.append((operator.records_in, operator.records_out))
        return metrics

    def collected(self) -> dict[str, list[Any]]:
        """The records of every collect sink, by sink name, subtask by subtask."""
        out: dict[str, list[Any]] = {}
        for _vertex, _subtask, operators in self._operators:
            for operator in operators:
                if isinstance(operator, SinkOperator):
                    owner = operator.function.owner
                    if isinstance(owner, CollectSink):
                        out.setdefault(operator.name, []).extend(owner.items)
        return out

    def _result(self, duration: float, failure: BaseException | None) -> JobResult:
        channels = {}
        for matrix in self.channels.values():
            for channel in matrix.values():
                channels[channel.name] = channel.statistics()
        return JobResult(
            job_name=self.job_name,
            job_id=self.job_id,
            status=self.status,
            duration=duration,
            operators=self.operator_metrics(),
            collected=self.collected(),
            tasks=[task.statistics() for task in self.tasks],
            channels=channels,
            error=None if failure is None else str(failure),
            checkpoints=None
            if self.coordinator is None
            else self.coordinator.statistics_snapshot(),
        )
