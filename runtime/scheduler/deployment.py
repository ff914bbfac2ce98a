"""``Deployment``: one attempt of a job, as actors on this event loop.

Per job vertex and subtask: the channels of every edge (a full producer x consumer
matrix, or ``i -> i`` for forward edges); the operators (through each node's factory, so
every subtask has its own) with their ``RuntimeContext`` and state backends (keyed ones
for the subtask's key-group range); the ``RecordWriter`` of each outgoing edge; the
``OperatorChain``; and the task actor: a ``SourceTask`` with its reader and splits, or a
``StreamTask`` with an ``InputGate`` over its input channels.

With a ``RestoredCheckpoint``, each subtask gets its part before it runs: keyed state by
key-group range, operator state, source splits (instead of the enumerator's
assignment), output channel state queued ahead of any new output, and input channel
state that the task processes before it reads its inputs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from actors import Channel, InputGate
from runtime.checkpoint.coordinator import CheckpointCoordinator, OperatorInfo
from runtime.checkpoint.ids import TaskId, task_id
from runtime.config import ExecutionConfig
from runtime.connectors.sinks import CollectSink
from runtime.errors import OperatorError
from runtime.graph.job_graph import JobEdge, JobGraph, JobVertex
from runtime.graph.transformations import NodeKind, Transformation
from runtime.scheduler.restore import RestoredCheckpoint, TaskRestoreState
from runtime.tasks.chain import OperatorChain
from runtime.tasks.context import RuntimeContext
from runtime.tasks.operators import SinkOperator, StreamOperator
from runtime.tasks.partitioning import PartitionKind
from runtime.tasks.record_writer import RecordWriter
from runtime.tasks.snapshot import ChannelStateKey, TaskCheckpointing
from runtime.tasks.source_task import SourceOperator, SourceTask
from runtime.tasks.stream_task import StreamTask
from runtime.tasks.task import Task
from storage import KeyGroupRange, OperatorStateBackend
from storage.backend import KeyedStateBackend, create_keyed_backend, restore_keyed_backend
from storage.checkpoint import CheckpointStorage
from storage.checkpoint.metadata import declares_canonical
from storage.errors import PickleForbiddenError, SerializationError

ChannelMatrix = dict[tuple[int, int], Channel[Any]]

logger = logging.getLogger("weir.restore")


def key_group_file(restore: RestoredCheckpoint, uid: str, key_group: int) -> str:
    """The state file that holds ``key_group`` of operator ``uid``, for messages."""
    for operator in restore.metadata.operators:
        if operator.uid != uid:
            continue
        for subtask in operator.subtasks:
            start, end = subtask.key_group_start, subtask.key_group_end
            if (
                subtask.handle is not None
                and start is not None
                and end is not None
                and start <= key_group <= end
            ):
                return f"{restore.pointer}/{subtask.handle.path}"
    return restore.pointer


def restore_error(
    restore: RestoredCheckpoint, name: str, uid: str, error: SerializationError
) -> SerializationError:
    """The error of state that cannot be restored, of the same type as ``error``.

    It names the operator and the checkpoint, and says what to do.
    """
    where = f"cannot restore operator {name!r} (uid {uid!r}) from {restore.pointer}"
    if not isinstance(error, PickleForbiddenError):
        message = f"{where}: {error}"
    elif declares_canonical(restore.metadata):
        message = (
            f"{where}: the savepoint declares the canonical format (data only, never "
            f"unpickled), but {error}; it was not written as a canonical savepoint (crafted "
            "or altered): do not restore it"
        )
    else:
        message = (
            f"{where}: {error}, since the job forbids pickle (allow_pickle=False); "
            "unpickling runs code the file names: only if you trust this checkpoint, "
            "restore it with StreamEnvironment(allow_pickle=True), or restore from a "
            "canonical savepoint"
        )
    logger.error("%s", message)
    return type(error)(message)


def uid_of(node: Transformation) -> str:
    """The uid that matches an operator's state across runs (its name if none given)."""
    return node.uid or node.name


class Deployment:
    """The channels and task actors of one attempt.

    Args:
        graph: the validated plan.
        config: the record-path options.
        job_name: the job's name.
        attempt: 0 for the first attempt, then the restart number.
        restore: the checkpoint to start from, if any.
        checkpointing: whether the job takes checkpoints.
    """

    def __init__(
        self,
        graph: JobGraph,
        config: ExecutionConfig,
        job_name: str,
        attempt: int = 0,
        restore: RestoredCheckpoint | None = None,
        *,
        checkpointing: bool = False,
    ) -> None:
        self.graph = graph
        self.checkpointing = checkpointing
        self.config = config
        self.job_name = job_name
        self.attempt = attempt
        self.restore = restore
        self.tasks: list[Task] = []
        self.operators: list[tuple[JobVertex, int, list[StreamOperator]]] = []
        self.channels: dict[int, ChannelMatrix] = {}
        self._assignments: dict[int, list[list[Any]]] = {}
        for edge in graph.edges:
            self.channels[id(edge)] = self._make_channels(edge)
        for vertex in graph.vertices:
            for subtask in range(vertex.parallelism):
                self.tasks.append(self._make_task(vertex, subtask))

    # -- checkpointing --------------------------------------------------------------------

    def operator_infos(self) -> list[OperatorInfo]:
        """Every operator, for the checkpoint metadata."""
        return [
            OperatorInfo(uid_of(node), node.name, vertex.parallelism, self.graph.max_parallelism)
            for vertex in self.graph.vertices
            for node in vertex.nodes
        ]

    def source_task_ids(self) -> list[Any]:
        """The ids of the source tasks."""
        return [task.task_id for task in self.tasks if isinstance(task, SourceTask)]

    def enable_checkpointing(
        self, coordinator: CheckpointCoordinator, storage: CheckpointStorage
    ) -> None:
        """Let every task take part in checkpoints coordinated by ``coordinator``."""
        for task, (vertex, subtask, ops) in zip(self.tasks, self.operators, strict=True):
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
                targets.append((uid_of(edge.target.head), consumers))
            task.enable_checkpointing(checkpointing, coordinator.mailbox, targets)

    # -- building -------------------------------------------------------------------------

    def _make_channels(self, edge: JobEdge) -> ChannelMatrix:
        capacity = self.config.channel_capacity
        up, down = edge.source, edge.target
        matrix: ChannelMatrix = {}
        forward = edge.partitioning.kind is PartitionKind.FORWARD
        for i in range(up.parallelism):
            for j in [i] if forward else range(down.parallelism):
                matrix[i, j] = Channel(
                    capacity,
                    name=f"{up.name} ({i + 1}/{up.parallelism}) -> "
                    f"{down.name} ({j + 1}/{down.parallelism})",
                )
        return matrix

    def _make_task(self, vertex: JobVertex, subtask: int) -> Task:
        p = vertex.parallelism
        key_groups = KeyGroupRange.for_operator(self.graph.max_parallelism, p, subtask)
        restored = self._restored_state(vertex, subtask, key_groups)
        operators: list[StreamOperator] = []
        for node in vertex.nodes:
            operators.append(self._make_operator(node, subtask, p, key_groups, restored))
        self.operators.append((vertex, subtask, operators))
        chain = OperatorChain(operators, self._make_writers(vertex, subtask, restored))
        name = f"{vertex.name} ({subtask + 1}/{p})"
        tid = task_id(vertex.id, subtask)
        if vertex.is_source:
            return self._make_source_task(vertex, subtask, name, tid, chain, restored)
        return self._make_stream_task(vertex, subtask, name, tid, chain, restored)

    def _restored_state(
        self, vertex: JobVertex, subtask: int, key_groups: KeyGroupRange
    ) -> TaskRestoreState | None:
        """The part of the restored checkpoint that ``subtask`` of ``vertex`` gets."""
        restore = self.restore
        if restore is None:
            return None
        keyed = any(node.key_selector is not None for node in vertex.nodes)
        input_key_selectors = {
            uid_of(edge.source.nodes[-1]): edge.partitioning.key_selector for edge in vertex.inputs
        }
        output_rescaled = {
            uid_of(edge.target.head): restore.old_parallelism(uid_of(edge.target.head))
            not in (None, edge.target.parallelism)
            for edge in vertex.outputs
        }
        try:
            return restore.for_task(
                [uid_of(node) for node in vertex.nodes],
                subtask,
                vertex.parallelism,
                key_groups if keyed else None,
                input_key_selectors,
                output_rescaled,
                self.graph.max_parallelism,
            )
        except SerializationError as error:
            raise restore_error(restore, vertex.name, uid_of(vertex.head), error) from error

    def _make_writers(
        self, vertex: JobVertex, subtask: int, restored: TaskRestoreState | None
    ) -> list[RecordWriter]:
        """One record writer per outgoing edge, with its restored output channel state."""
        graph, p = self.graph, vertex.parallelism
        writers = []
        for edge in vertex.outputs:
            matrix = self.channels[id(edge)]
            channels = [
                matrix[subtask, j] for j in range(edge.target.parallelism) if (subtask, j) in matrix
            ]
            target = edge.target.name

            def key_error(error: BaseException, record: Any, target: str = target) -> BaseException:
                return OperatorError(
                    f"key_by before {target!r}", subtask, p, error, record=record, has_record=True
                )

            writer = RecordWriter(
                channels,
                edge.partitioning,
                self.config.buffer_size,
                graph.max_parallelism,
                subtask,
                key_error,
            )
            writer.side_tag = edge.target.head.side_tag  # type: ignore[attr-defined]
            if restored is not None:
                consumer_uid = uid_of(edge.target.head)
                consumers = [j for j in range(edge.target.parallelism) if (subtask, j) in matrix]
                for index, consumer in enumerate(consumers):
                    key = ChannelStateKey.output(consumer_uid, consumer)
                    records = restored.output_channels.get(key)
                    if records:
                        writer.restore_pending(index, records)
                again = restored.output_records.get(consumer_uid)
                if again:
                    writer.write(again)  # partitioned again for the new parallelism
            writers.append(writer)
        return writers

    def _make_source_task(
        self,
        vertex: JobVertex,
        subtask: int,
        name: str,
        tid: TaskId,
        chain: OperatorChain,
        restored: TaskRestoreState | None,
    ) -> SourceTask:
        source = vertex.head.source
        assert source is not None
        reader = source.create_reader(subtask)
        splits = None if restored is None else restored.splits.get(uid_of(vertex.head))
        if splits is None:
            splits = self._split_assignment(vertex)[subtask]
        reader.add_splits(splits)
        rate = getattr(source, "records_per_second", None)
        return SourceTask(
            name,
            chain,
            reader,
            buffer_size=self.config.buffer_size,
            buffer_timeout=self.config.buffer_timeout,
            records_per_second=None if rate is None else rate / vertex.parallelism,
            task_id=tid,
        )

    def _make_stream_task(
        self,
        vertex: JobVertex,
        subtask: int,
        name: str,
        tid: TaskId,
        chain: OperatorChain,
        restored: TaskRestoreState | None,
    ) -> StreamTask:
        inputs: list[Channel[Any]] = []
        input_sources: list[tuple[str, int]] = []
        for edge in vertex.inputs:
            matrix = self.channels[id(edge)]
            producer = uid_of(edge.source.nodes[-1])
            for i in range(edge.source.parallelism):
                if (i, subtask) in matrix:
                    inputs.append(matrix[i, subtask])
                    input_sources.append((producer, i))
        task = StreamTask(
            name,
            chain,
            InputGate(inputs),
            buffer_timeout=self.config.buffer_timeout,
            input_sources=input_sources,
            task_id=tid,
        )
        if restored is not None:
            task.restored_input = [records for records in restored.input_records if records]
        return task

    def _make_operator(
        self,
        node: Transformation,
        subtask: int,
        parallelism: int,
        key_groups: KeyGroupRange,
        restored: TaskRestoreState | None,
    ) -> StreamOperator:
        graph, config = self.graph, self.config
        uid = uid_of(node)
        keyed = self._make_keyed_backend(node, key_groups, restored)
        operator_backend = OperatorStateBackend(allow_pickle=config.allow_pickle)
        if restored is not None and uid in restored.operator:
            assert self.restore is not None
            try:
                operator_backend.restore(
                    restored.operator[uid], allow_pickle=self.restore.allow_pickle
                )
            except SerializationError as error:
                raise restore_error(self.restore, node.name, uid, error) from error
        ctx = RuntimeContext(
            operator_name=node.name,
            subtask_index=subtask,
            parallelism=parallelism,
            max_parallelism=graph.max_parallelism,
            job_name=self.job_name,
            attempt=self.attempt,
            keyed_backend=keyed,  # type: ignore[arg-type]  # any KeyedStateBackend
            operator_backend=operator_backend,
            is_restored=restored is not None,
            checkpointing_enabled=self.checkpointing,
        )
        if node.kind is NodeKind.SOURCE:
            source_operator = SourceOperator(node.name, uid)
            source_operator.allow_pickle = config.allow_pickle
            operator: StreamOperator = source_operator
        else:
            assert node.factory is not None
            operator = node.factory(node.name, uid)
        operator.setup(ctx)
        return operator

    def _make_keyed_backend(
        self, node: Transformation, key_groups: KeyGroupRange, restored: TaskRestoreState | None
    ) -> KeyedStateBackend | None:
        """The keyed state backend of a keyed operator (None otherwise), restored if any."""
        if node.key_selector is None:
            return None
        graph, config = self.graph, self.config
        uid = uid_of(node)
        keyed = create_keyed_backend(
            config.state_backend,
            graph.max_parallelism,
            key_groups,
            allow_pickle=config.allow_pickle,
            state_dir=config.state_dir,
            incremental=config.incremental_checkpoints,
            local_recovery=config.local_recovery,
            # The changelog needs checkpoints (it is uploaded to their storage).
            changelog=config.changelog if self.checkpointing else None,
        )
        if restored is not None and uid in restored.keyed:
            restore = self.restore
            assert restore is not None
            # A RocksDB restore (links, copies, crc32, open) is left to the task,
            # which runs it in a worker thread before it opens its operators.
            try:
                restore_keyed_backend(
                    keyed,
                    restored.keyed[uid],
                    restore.pointer,
                    deferred=True,
                    allow_pickle=restore.allow_pickle,
                    native=not declares_canonical(restore.metadata),
                    describe=functools.partial(key_group_file, restore, uid),
                )
            except SerializationError as error:
                raise restore_error(restore, node.name, uid, error) from error
        return keyed

    def _split_assignment(self, vertex: JobVertex) -> list[list[Any]]:
        if vertex.id not in self._assignments:
            source = vertex.head.source
            assert source is not None
            self._assignments[vertex.id] = source.create_enumerator().assign_splits(
                vertex.parallelism
            )
        return self._assignments[vertex.id]

    # -- results --------------------------------------------------------------------------

    def collected(self) -> dict[str, list[Any]]:
        """The records of every collect sink, by sink name, subtask by subtask."""
        out: dict[str, list[Any]] = {}
        for _vertex, _subtask, operators in self.operators:
            for operator in operators:
                if isinstance(operator, SinkOperator):
                    owner = operator.function.owner
                    if isinstance(owner, CollectSink):
                        out.setdefault(operator.name, []).extend(owner.items)
        return out
