"""``JobExecution``: the job master. Runs a job's attempts, restarts, and reports.

One ``JobExecution`` per ``execute`` / ``start``. It

1. optionally loads the checkpoint or savepoint to start from (``restore_from``: a
   ``chk-<n>`` or savepoint folder, its ``_metadata``, or a job's checkpoint folder, in
   which case the recovery planner (``storage.checkpoint.recovery``) chooses the newest
   checkpoint whose every file verifies, falling back past broken ones with a
   ``RestoreWarning`` that names each file skipped, and never silently past output that
   two-phase-commit sinks committed; see ``runtime.scheduler.recovery``);
2. deploys an attempt (``runtime.scheduler.deployment``) and runs its tasks and the
   checkpoint coordinator under one ``Supervisor``;
3. when a task fails: asks the restart strategy, waits its delay (status
   ``RESTARTING``), and deploys a new attempt from the newest retained checkpoint that
   verifies, chosen by the same planner (channel state replayed first, sources seeking
   to their stored positions); or, if the strategy gives up, fails the job with the
   first error;
4. honours the checkpoint retention policy at the end, records in the job's folder how
   the job ended, and builds the ``JobResult``.

Job status follows Flink's: created, running, (failing, restarting,) and then
finished, failed or canceled.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio

from actors import Actor, ActorFailedError, Supervisor
from runtime.checkpoint.config import CheckpointConfig, ExternalizedCheckpointRetention
from runtime.checkpoint.coordinator import CheckpointCoordinator
from runtime.checkpoint.stats import CheckpointStatistics
from runtime.config import ExecutionConfig
from runtime.graph.job_graph import JobGraph
from runtime.scheduler.deployment import Deployment, uid_of
from runtime.scheduler.recovery import (
    RestorePlanning,
    RestoreWarning,
    finish_job_folder,
    sinks_skip_committed,
)
from runtime.scheduler.restart import RestartStrategy, default_restart_strategy
from runtime.scheduler.restore import RestoredCheckpoint
from runtime.scheduler.result import JobFailedError, JobResult, JobStatus, OperatorMetrics
from runtime.tasks.gc_freezer import STATE_FREEZER
from storage.checkpoint import CheckpointStorage, StorageNotWritableError, resolve_storage
from storage.errors import PickleForbiddenError

__all__ = ["JobExecution", "NetworkBytes", "RestoreWarning"]


@dataclass(slots=True)
class NetworkBytes:
    """Bytes a vertex's subtasks read and wrote over data connections between processes.

    Flink's ``read-bytes`` / ``write-bytes``. In one process, channels pass Python objects
    and serialize nothing: 0 bytes, complete. With worker processes, the frames of the
    channels between workers (``runtime.cluster``).

    Attributes:
        bytes_in: bytes its subtasks read, over every attempt so far.
        bytes_out: bytes its subtasks wrote, over every attempt so far.
        complete: whether every subtask of every attempt reported its counters (false
            for a subtask not heard from yet, or whose attempt failed before its final
            counters arrived).
    """

    bytes_in: int = 0
    bytes_out: int = 0
    complete: bool = True


def _add_network_bytes(totals: dict[int, NetworkBytes], deployment: Deployment) -> None:
    """Add an attempt's bytes per vertex to ``totals`` (by vertex id).

    A deployment whose subtasks run in worker processes has ``network_bytes()``
    (``runtime.cluster.master.ClusterDeployment``); one without it runs in this process.
    """
    reported = getattr(deployment, "network_bytes", None)
    counters = reported() if reported is not None else None
    for vertex, subtask, _operators in deployment.operators:
        total = totals.get(vertex.id)
        if total is None:
            total = totals[vertex.id] = NetworkBytes()
        if counters is None:
            continue
        found = counters.get((vertex.id, subtask))
        if found is None:
            total.complete = False
            continue
        total.bytes_in += found[0]
        total.bytes_out += found[1]
        total.complete = total.complete and found[2]


_logger = logging.getLogger("weir.scheduler")
_restore_logger = logging.getLogger("weir.restore")


def _never_recovers(failure: BaseException) -> bool:
    """Whether a failure would come back at every restart (so none is tried).

    State that may not be unpickled (a canonical savepoint holding pickle, or a job that
    forbids pickle restoring pickled state) is the same state at every attempt.
    """
    seen: set[int] = set()
    error: BaseException | None = failure
    while error is not None and id(error) not in seen:
        if isinstance(error, PickleForbiddenError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


class JobExecution:
    """One run of a job graph, with its restarts.

    Args:
        graph: the validated plan.
        config: the record-path options.
        job_name: the job's name.
        checkpoint_config: checkpointing options (used if enabled).
        restart_strategy: what to do when a task fails; Flink's default if None.
        restore_from: a checkpoint or savepoint to start from.
        allow_non_restored_state: skip state of operators the job no longer has.
        allow_older_than_committed: let recovery restore a checkpoint older than one
            whose completion was notified to two-phase-commit sinks that cannot skip
            their committed output (their output after it is then written again).
    """

    def __init__(
        self,
        graph: JobGraph,
        config: ExecutionConfig,
        job_name: str,
        checkpoint_config: CheckpointConfig | None = None,
        *,
        restart_strategy: RestartStrategy | None = None,
        restore_from: str | None = None,
        allow_non_restored_state: bool = False,
        allow_older_than_committed: bool = False,
        deployment_class: type[Deployment] = Deployment,
    ) -> None:
        self.graph = graph
        # ``runtime.cluster.master.ClusterDeployment`` for worker processes: chosen by the
        # caller (the api), since the cluster sits above the scheduler.
        self.deployment_class = deployment_class
        self.config = config
        self.job_name = job_name
        self.job_id = uuid.uuid4().hex
        self.checkpoint_config = (
            checkpoint_config
            if checkpoint_config is not None and checkpoint_config.enabled
            else None
        )
        self.restart_strategy = restart_strategy or default_restart_strategy(
            self.checkpoint_config is not None
        )
        self.restore_from = restore_from
        self.allow_non_restored_state = allow_non_restored_state
        self.allow_older_than_committed = allow_older_than_committed
        self.status = JobStatus.CREATED
        self.restarts = 0
        self.failures: list[str] = []
        self.storage: CheckpointStorage | None = None
        self.coordinator: CheckpointCoordinator | None = None
        self.deployment: Deployment | None = None
        self._absorbed: Deployment | None = None
        self._restore: RestoredCheckpoint | None = None
        self._supervisor: Supervisor | None = None
        self._cancel_requested = False
        self._cancel_event = anyio.Event()
        self._prepared = False
        self.result: JobResult | None = None
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self._metrics: dict[str, OperatorMetrics] = {}
        self._network: dict[int, NetworkBytes] = {}
        self._collected: dict[str, list[Any]] = {}

    @property
    def tasks(self) -> list[Any]:
        """The current attempt's task actors."""
        return [] if self.deployment is None else self.deployment.tasks

    # -- preparing ------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the state to start from and make the coordinator. Idempotent.

        Raises:
            ConfigError: ``restore_from`` does not fit the job (names path and operator).
            StorageError: ``restore_from`` cannot be read (names the file).
            StorageNotWritableError: the checkpoint storage cannot be written (names the
                folder): the job fails now rather than in a restart loop.
        """
        if self._prepared:
            return
        self._prepared = True
        if self.restore_from is not None:
            self._restore = await self._planning().restore_from(self.restore_from)
            _restore_logger.info(
                "job %r restores from %s (checkpoint %d)",
                self.job_name,
                self._restore.pointer,
                self._restore.checkpoint_id,
            )
        # A coordinator always runs: without periodic checkpoints it still takes
        # savepoints and manual checkpoints.
        config = self.checkpoint_config or CheckpointConfig()
        first_id = 1 if self._restore is None else self._restore.checkpoint_id + 1
        self.storage = resolve_storage(config.storage, self.job_id)
        self.coordinator = CheckpointCoordinator(
            config,
            self.storage,
            {},
            [],
            [],
            self.job_id,
            first_checkpoint_id=first_id,
        )
        if self._restore is not None:
            self.coordinator.record_restore(self._restore.pointer)
        if self.checkpoint_config is not None:
            # The coordinator initializes it again each attempt; a storage that cannot
            # be written fails each of them, so find out once, before anything runs.
            try:
                await self.storage.initialize()
            except StorageNotWritableError as error:
                _logger.error("job %r cannot run: %s", self.job_name, error)
                raise

    async def deploy_first_attempt(self) -> None:
        """Deploy the first attempt (idempotent). User code runs here: readers are made.

        Raises:
            Exception: whatever a source raised while making its reader (``run`` then
                fails the job with it).
        """
        if self.deployment is None:
            await self._deploy(0, self._restore)

    def _planning(self) -> RestorePlanning:
        """The recovery planner's view of this job (policy, graph, options)."""
        uids = {uid_of(node): node.name for vertex in self.graph.vertices for node in vertex.nodes}
        return RestorePlanning(
            job_id=self.job_id,
            job_name=self.job_name,
            uids=uids,
            max_parallelism=self.graph.max_parallelism,
            allow_pickle=self.config.allow_pickle,
            allow_non_restored_state=self.allow_non_restored_state,
            allow_older_than_committed=self.allow_older_than_committed,
            sinks_skip_committed=sinks_skip_committed(self.graph),
        )

    async def _deploy(self, attempt: int, restore: RestoredCheckpoint | None) -> None:
        deployment = self.deployment_class(
            self.graph,
            self.config,
            self.job_name,
            attempt,
            restore,
            checkpointing=self.checkpoint_config is not None,
        )
        if self.checkpoint_config is not None:
            for task in deployment.tasks:
                task.wait_for_final = True
        if self.coordinator is not None and self.storage is not None:
            await self.coordinator.prepare_attempt(
                {task.task_id: task.mailbox for task in deployment.tasks},
                deployment.source_task_ids(),
                deployment.operator_infos(),
            )
            deployment.enable_checkpointing(self.coordinator, self.storage)
        self.deployment = deployment

    # -- running --------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel the job. Never blocks."""
        self._cancel_requested = True
        self._cancel_event.set()
        if not self.status.is_terminal:
            self.status = JobStatus.CANCELLING
        if self._supervisor is not None:
            self._supervisor.cancel()

    async def run(self) -> JobResult:
        """Run the job, with restarts, to its end.

        Raises:
            JobFailedError: the job failed and the restart strategy gave up.
        """
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            await self.prepare()
            await self.deploy_first_attempt()
            failure = await self._run_attempts()
        except Exception as error:
            # Deployment failed: a reader that could not be created, a checkpoint that
            # cannot be restored...
            failure = error
            if not isinstance(error, StorageNotWritableError):  # prepare logged it
                _logger.error("job %r cannot run: %s", self.job_name, error)
        if failure is not None and not self._cancel_requested:
            self.status = JobStatus.FAILED
        elif self._cancel_requested:
            self.status = JobStatus.CANCELED
            failure = None
        else:
            self.status = JobStatus.FINISHED
        await self._clean_up_checkpoints()
        await self._finish_job_folder()
        # The job's state may be frozen out of the collector's walks: let it be reclaimed.
        STATE_FREEZER.on_job_end()
        result = self._result(time.perf_counter() - started, failure)
        self.result = result
        self._release()
        self.done.set()
        if failure is not None:
            self.error = JobFailedError(self.job_name, result, failure)
            raise self.error
        return result

    def _release(self) -> None:
        """Drop what only a running job needs: its tasks, their state, the restored files.

        The result, the statistics and the coordinator's records stay; a finished job
        kept by a client or by the process's job registry then holds no state.
        """
        self.deployment = None
        self._absorbed = None
        self._restore = None
        self._supervisor = None

    async def _run_attempts(self) -> BaseException | None:
        while True:
            failure = await self._run_attempt()
            if failure is None or self._cancel_requested:
                return None
            self.failures.append(f"{type(failure).__name__}: {failure}")
            self.status = JobStatus.FAILING
            _logger.error(
                "job %r, attempt %d, failed: %s",
                self.job_name,
                self.restarts + 1,
                failure,
                exc_info=(type(failure), failure, failure.__traceback__),
            )
            if _never_recovers(failure):
                _logger.error(
                    "job %r fails without a restart: its state cannot be restored", self.job_name
                )
                return failure
            decision = self.restart_strategy.on_failure(time.monotonic())
            if not decision.restart:
                _logger.error("job %r fails: %s", self.job_name, decision.reason)
                return failure
            self.status = JobStatus.RESTARTING
            self.restarts += 1
            _logger.warning(
                "job %r restarts in %.3gs (restart %d, restart strategy %s)",
                self.job_name,
                decision.delay,
                self.restarts,
                self.restart_strategy.describe(),
            )
            with anyio.move_on_after(decision.delay):
                await self._cancel_event.wait()
            if self._cancel_requested:
                return None
            restore = await self._restart_checkpoint()
            if restore is not None and self.coordinator is not None:
                self.coordinator.record_restore(restore.pointer)
            if restore is not None:
                _restore_logger.info(
                    "job %r, restart %d, restores checkpoint %d from %s",
                    self.job_name,
                    self.restarts,
                    restore.checkpoint_id,
                    restore.pointer,
                )
            await self._deploy(self.restarts, restore)

    async def _run_attempt(self) -> BaseException | None:
        deployment = self.deployment
        assert deployment is not None
        actors: list[Actor] = list(deployment.tasks)
        actors.extend(getattr(deployment, "extra_actors", ()))  # worker processes
        if self.coordinator is not None:
            actors.append(self.coordinator)
        self._supervisor = Supervisor(actors)
        if self._cancel_requested:
            self._supervisor.cancel()
        if self.status in (JobStatus.CREATED, JobStatus.RESTARTING):
            self.status = JobStatus.RUNNING
        failure: BaseException | None = None
        try:
            await self._supervisor.run()
        except ActorFailedError as error:
            failure = error.__cause__ or error
        finally:
            self._absorb(deployment)
        return failure

    async def _restart_checkpoint(self) -> RestoredCheckpoint | None:
        """The checkpoint a restart restores: the newest retained one that verifies.

        Falls back past broken ones (logged), to the checkpoint the run was restored
        from, and refuses (``RestoreRefusedError``, which fails the job) to go back past
        a checkpoint whose completion was notified unless the sinks skip their committed
        output or ``allow_older_than_committed`` was given.
        """
        coordinator, storage = self.coordinator, self.storage
        if coordinator is None or storage is None:
            return self._restore
        return await self._planning().restart(
            storage,
            coordinator.store.all(),
            [completed.checkpoint_id for completed in coordinator.completed],
            self._restore,
        )

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
            try:
                await storage.discard(completed.checkpoint_id)
            except Exception as error:
                _logger.warning(
                    "job %r: could not delete checkpoint %d: %s",
                    self.job_name,
                    completed.checkpoint_id,
                    error,
                )

    async def _finish_job_folder(self) -> None:
        """Record how the job ended in its folder; leave no empty folders behind."""
        storage, coordinator = self.storage, self.coordinator
        if storage is None:
            return
        completed = [] if coordinator is None else coordinator.completed
        notified = max((c.checkpoint_id for c in completed), default=None)
        # Best effort: the job's outcome stands even if the folder cannot be written.
        try:
            await finish_job_folder(storage, self.status.value, notified)
        except Exception as error:
            _logger.warning(
                "job %r: could not record its end in its folder: %s", self.job_name, error
            )

    # -- results --------------------------------------------------------------------------

    def _absorb(self, deployment: Deployment) -> None:
        """Add an attempt's records and collected results to the job's totals."""
        for name, items in deployment.collected().items():
            self._collected.setdefault(name, []).extend(items)
        for vertex, _subtask, operators in deployment.operators:
            for operator in operators:
                metrics = self._metrics.get(operator.name)
                if metrics is None:
                    metrics = self._metrics[operator.name] = OperatorMetrics(
                        operator.name, operator.uid, vertex.parallelism
                    )
                metrics.records_in += operator.records_in
                metrics.records_out += operator.records_out
                metrics.subtasks.append((operator.records_in, operator.records_out))
        _add_network_bytes(self._network, deployment)
        self._absorbed = deployment

    def operator_metrics(self) -> dict[str, OperatorMetrics]:
        """Records in and out per operator over every attempt so far."""
        metrics = {
            name: OperatorMetrics(
                m.name, m.uid, m.parallelism, m.records_in, m.records_out, list(m.subtasks)
            )
            for name, m in self._metrics.items()
        }
        deployment = self.deployment
        if deployment is not None and self._absorbed is not deployment:
            for vertex, _subtask, operators in deployment.operators:
                for operator in operators:
                    m = metrics.get(operator.name)
                    if m is None:
                        m = metrics[operator.name] = OperatorMetrics(
                            operator.name, operator.uid, vertex.parallelism
                        )
                    m.records_in += operator.records_in
                    m.records_out += operator.records_out
        return metrics

    def network_bytes(self) -> dict[int, NetworkBytes]:
        """Bytes in and out per vertex id over every attempt so far (see ``NetworkBytes``).

        Never blocks; a vertex of an attempt not deployed yet is absent.
        """
        totals = {
            vertex: NetworkBytes(b.bytes_in, b.bytes_out, b.complete)
            for vertex, b in self._network.items()
        }
        deployment = self.deployment
        if deployment is not None and self._absorbed is not deployment:
            _add_network_bytes(totals, deployment)
        return totals

    def _checkpoint_statistics(self) -> CheckpointStatistics | None:
        coordinator = self.coordinator
        if coordinator is None:
            return None
        statistics = coordinator.statistics_snapshot()
        if self.checkpoint_config is None and statistics.counts.triggered == 0:
            return None  # checkpointing off and no savepoint taken
        return statistics

    def _result(self, duration: float, failure: BaseException | None) -> JobResult:
        channels = {}
        tasks = []
        if self.deployment is not None:
            tasks = [task.statistics() for task in self.deployment.tasks]
            for matrix in self.deployment.channels.values():
                for channel in matrix.values():
                    channels[channel.name] = channel.statistics()
        return JobResult(
            job_name=self.job_name,
            job_id=self.job_id,
            status=self.status,
            duration=duration,
            operators=self.operator_metrics(),
            collected=dict(self._collected),
            tasks=tasks,
            channels=channels,
            error=None if failure is None else str(failure),
            checkpoints=self._checkpoint_statistics(),
            restarts=self.restarts,
            failures=list(self.failures),
        )
