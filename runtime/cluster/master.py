"""The job master's side of worker processes: spawn, ship, watch, and tear down.

``ClusterDeployment`` stands in for ``Deployment`` when ``workers > 1``: its ``tasks`` are
``RemoteTask`` proxies whose mailboxes forward the coordinator's messages (its
``SendToTasks``) to the subtasks over their worker's control connection, so the
coordinator and the executor are unchanged. Its one extra actor, ``WorkerGroup``,
starts the worker processes (``python -m runtime.cluster.worker``), ships them the
cloudpickled graph, relays the subtasks' reports to the coordinator's mailbox, and
watches the workers: a worker that exits, or sends no heartbeat for ``HEARTBEAT_TIMEOUT``
seconds, fails the attempt (the executor restarts the job from its latest checkpoint,
with new processes; the old ones are killed, so no frame of an old attempt arrives).
Workers exit when the master's connection closes: they never outlive it.

Metrics: the workers' heartbeats carry their operators' record counters and their
subtasks' bytes over the data connections; ``ClusterDeployment`` keeps the latest as the
executor and the HTTP API read them (``operators``, ``network_bytes``). When every
worker's subtasks have ended, the master tells them to exit and waits (at most
``EXIT_GRACE``) for their final counters: only then are the bytes out of a channel that
sent its last items after its producer ended counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import time
from typing import Any

import cloudpickle

from actors import Actor
from actors.actor import Mailbox
from runtime.checkpoint.coordinator import CheckpointCoordinator
from runtime.checkpoint.ids import TaskId, task_id
from runtime.cluster.control import (
    Deploy,
    Exit,
    Heartbeat,
    Hello,
    Ready,
    Start,
    ToCoordinator,
    ToTask,
    ToTasks,
    WorkerDone,
    WorkerExiting,
    WorkerFailed,
    decode_message,
    encode_message,
    read_message,
    write_message,
)
from runtime.cluster.worker import DeploySpec, worker_of
from runtime.config import ExecutionConfig
from runtime.errors import ConfigError
from runtime.graph.job_graph import JobGraph
from runtime.scheduler.deployment import Deployment, uid_of
from runtime.scheduler.restore import RestoredCheckpoint
from storage.checkpoint import CheckpointStorage, MemoryCheckpointStorage

logger = logging.getLogger("weir.cluster")

HEARTBEAT_TIMEOUT = 1.5
"""Seconds without a heartbeat after which a worker is taken for dead."""
EXIT_GRACE = 2.0
"""Seconds the workers of a finished attempt have to exit before they are killed."""
START_TIMEOUT = 60.0
"""Seconds a worker may take to start and build its subtasks."""


class WorkerLostError(RuntimeError):
    """A worker process died or stopped answering heartbeats."""


class WorkerStartError(RuntimeError):
    """A worker could not start or build its subtasks (the error says why)."""


class RemoteTaskError(RuntimeError):
    """A subtask in a worker process failed (the message carries its error)."""


def check_shippable(graph: JobGraph) -> None:
    """Raise ``ConfigError`` naming the operator whose function cannot be pickled."""
    try:
        cloudpickle.dumps(graph)
        return
    except Exception as error:
        whole = error
    for vertex in graph.vertices:
        for node in vertex.nodes:
            try:
                cloudpickle.dumps(node)
            except Exception as error:
                raise ConfigError(
                    f"operator {node.name!r} cannot be shipped to worker processes: "
                    f"{type(error).__name__}: {error}; make its function and what it "
                    "captures picklable (open connections and locks in open(), not in "
                    "__init__), or run with workers=1"
                ) from error
    raise ConfigError(
        f"the job graph cannot be shipped to worker processes: {whole}; run with workers=1"
    ) from whole


class _RemoteMailbox(Mailbox[object]):
    """A subtask's mailbox seen from the master: puts go to its worker."""

    def __init__(self, group: WorkerGroup, worker: int, task: TaskId) -> None:
        super().__init__(group.waker)
        self._group = group
        self._worker = worker
        self._task = task

    def put(self, message: object) -> None:
        """Send ``message`` to the subtask (with the others of this loop turn)."""
        self._group.send_to_task(self._worker, ToTask(self._task, encode_message(message)))  # type: ignore[arg-type]


class RemoteTask(Actor):
    """A subtask running in a worker process, as the executor and coordinator see it."""

    def __init__(self, name: str, tid: TaskId, worker: int, group: WorkerGroup) -> None:
        super().__init__(name)
        self.task_id = tid
        self.worker = worker
        self.wait_for_final = False
        self.mailbox = _RemoteMailbox(group, worker, tid)
        self._group = group

    async def run(self) -> None:
        """Wait until the workers' subtasks all ended."""
        await self._group.finished.wait()


class WorkerGroup(Actor):
    """The worker processes of one attempt (see the module's docstring)."""

    def __init__(self, deployment: ClusterDeployment) -> None:
        super().__init__(f"workers (attempt {deployment.attempt})")
        self.deployment = deployment
        self.workers = deployment.workers
        self.finished = asyncio.Event()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._pending: dict[int, list[Any]] = {i: [] for i in range(self.workers)}
        self._started = False
        self._outbox: dict[int, list[ToTask]] = {}
        self._flush_scheduled = False
        self._inbox: asyncio.Queue[tuple[int | None, Any]] = asyncio.Queue()
        self._beats: dict[int, float] = {}
        self._done: dict[int, WorkerDone] = {}
        self.collected: dict[str, list[Any]] = {}
        self.start_seconds: float | None = None
        self.final_reports: set[int] = set()
        """The workers whose final counters (``WorkerExiting``) arrived."""
        self.ended = False
        """Whether the attempt is over (its counters will not change any more)."""

    def send_to_task(self, worker: int, message: ToTask) -> None:
        """Queue a subtask's message; the turn's messages go to each worker together."""
        self._outbox.setdefault(worker, []).append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_outbox)

    def _flush_outbox(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        for worker, messages in outbox.items():
            self.send(worker, ToTasks(messages))

    def send(self, worker: int, message: Any) -> None:
        """Send a control message to ``worker`` (queued until it runs)."""
        writer = self._writers.get(worker)
        if writer is None or not self._started:
            self._pending[worker].append(message)
        else:
            write_message(writer, message)

    async def run(self) -> None:
        """Start, ship, watch, and stop the workers."""
        started = time.perf_counter()
        server = await asyncio.start_server(self._on_worker, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            for index in range(self.workers):
                self.processes.append(
                    subprocess.Popen(  # noqa: ASYNC220 - returns at once
                        [
                            sys.executable,
                            "-m",
                            "runtime.cluster.worker",
                            "127.0.0.1",
                            str(port),
                            str(index),
                        ],
                        env=env,
                        stdin=subprocess.DEVNULL,
                    )
                )
            self.pids = [p.pid for p in self.processes]
            logger.debug("spawned workers %s", self.pids)
            hellos = await self._collect(Hello, "start")
            logger.debug("workers said hello")
            payload = self.deployment.payload()
            ports = [hellos[i].data_port for i in range(self.workers)]
            for index in range(self.workers):
                write_message(self._writers[index], Deploy(self.deployment.attempt, payload, ports))
            await self._collect(Ready, "build its subtasks")
            logger.debug("workers ready")
            self._started = True
            for index in range(self.workers):
                write_message(self._writers[index], Start())
                for message in self._pending[index]:
                    write_message(self._writers[index], message)
                self._pending[index].clear()
            self.start_seconds = time.perf_counter() - started
            await self._watch()
            for index in range(self.workers):
                try:
                    write_message(self._writers[index], Exit())
                except Exception as error:  # the worker is gone already
                    logger.debug("worker %d: cannot send Exit: %s", index, error)
            await self._collect_final_reports(EXIT_GRACE)
            self.finished.set()
            await self._wait_exits(EXIT_GRACE)
        finally:
            self.ended = True
            self._kill()
            server.close()

    async def _collect_final_reports(self, grace: float) -> None:
        """Take each worker's final counters, waiting at most ``grace`` seconds."""
        deadline = time.monotonic() + grace
        waiting = set(range(self.workers))
        while waiting:
            try:
                worker, message = await asyncio.wait_for(
                    self._inbox.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                logger.warning(
                    "job %r: workers %s sent no final counters within %.1fs: their bytes "
                    "in and out are the last heartbeat's (marked incomplete)",
                    self.deployment.job_name,
                    sorted(waiting),
                    grace,
                )
                return
            if isinstance(message, WorkerExiting):
                self.deployment.update_metrics(message.metrics)
                self.deployment.update_network(message.network)
                self.final_reports.add(message.worker)
                waiting.discard(message.worker)
            elif message is None:
                waiting.discard(worker)

    async def _wait_exits(self, grace: float) -> None:
        """Give the workers ``grace`` seconds to exit by themselves (then they are killed)."""
        await asyncio.to_thread(self._join, time.monotonic() + grace)

    def _join(self, deadline: float) -> None:
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))

    def on_cancel(self) -> None:
        """Kill the workers (the attempt is cancelled or failed)."""
        self._kill()

    def _kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except Exception as error:
                logger.warning("worker process %d did not exit: %s", process.pid, error)
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()

    async def _on_worker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker: int | None = None
        while True:
            message = await read_message(reader)
            if message is None:
                await self._inbox.put((worker, None))
                return
            if isinstance(message, Hello):
                worker = message.worker
                self._writers[worker] = writer
            if isinstance(message, Heartbeat):
                self._beats[message.worker] = time.monotonic()
                self.deployment.update_metrics(message.metrics)
                self.deployment.update_network(message.network)
                continue
            if isinstance(message, ToCoordinator):
                coordinator = self.deployment.coordinator
                if coordinator is not None:
                    coordinator.mailbox.put(decode_message(message.message))
                continue
            await self._inbox.put((worker, message))

    def _check_processes(self) -> None:
        for index, process in enumerate(self.processes):
            code = process.poll()
            if code is not None and index not in self._done:
                raise WorkerLostError(
                    f"worker {index} (pid {process.pid}) of job {self.deployment.job_name!r} "
                    f"died (exit code {code})"
                )

    async def _collect(self, kind: type[Any], what: str) -> dict[int, Any]:
        got: dict[int, Any] = {}
        deadline = time.monotonic() + START_TIMEOUT
        while len(got) < self.workers:
            try:
                worker, message = await asyncio.wait_for(self._inbox.get(), 0.1)
            except TimeoutError:
                self._check_processes()
                if time.monotonic() > deadline:
                    raise WorkerStartError(
                        f"workers of job {self.deployment.job_name!r} did not {what} "
                        f"within {START_TIMEOUT}s"
                    ) from None
                continue
            if isinstance(message, WorkerFailed):
                raise WorkerStartError(message.error)
            if message is None:
                self._check_processes()
                raise WorkerLostError(f"worker {worker} closed its connection")
            if isinstance(message, kind):
                got[message.worker] = message
                self._beats[message.worker] = time.monotonic()
        return got

    async def _watch(self) -> None:
        while len(self._done) < self.workers:
            try:
                worker, message = await asyncio.wait_for(self._inbox.get(), 0.1)
            except TimeoutError:
                worker, message = None, False
            if isinstance(message, WorkerDone):
                self._done[message.worker] = message
                self.deployment.update_metrics(message.metrics)
                self.deployment.update_network(message.network)
                if message.collected:
                    for name, items in pickle.loads(message.collected).items():
                        self.collected.setdefault(name, []).extend(items)
                if message.error is not None:
                    raise RemoteTaskError(message.error)
                continue
            if message is None and worker not in self._done:
                self._check_processes()
                raise WorkerLostError(f"worker {worker} closed its control connection")
            self._check_processes()
            now = time.monotonic()
            for index in range(self.workers):
                if (
                    index not in self._done
                    and now - self._beats.get(index, now) > HEARTBEAT_TIMEOUT
                ):
                    raise WorkerLostError(
                        f"worker {index} (pid {self.pids[index]}) sent no heartbeat for "
                        f"{HEARTBEAT_TIMEOUT}s"
                    )


class OperatorView:
    """An operator of a subtask in a worker, as the master's metrics see it."""

    __slots__ = ("name", "records_in", "records_out", "uid")

    def __init__(self, name: str, uid: str) -> None:
        self.name = name
        self.uid = uid
        self.records_in = 0
        self.records_out = 0


class ClusterDeployment(Deployment):
    """One attempt whose subtasks run in worker processes (``config.workers > 1``)."""

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
        self.config = config
        self.job_name = job_name
        self.attempt = attempt
        self.restore = restore
        self.checkpointing = checkpointing
        self.workers = config.workers
        self.operators = []
        self.channels = {}
        self._assignments = {}
        self.coordinator: CheckpointCoordinator | None = None
        self.storage: CheckpointStorage | None = None
        check_shippable(graph)
        self.group = WorkerGroup(self)
        self.extra_actors = [self.group]
        self.tasks = []
        self._sources: list[TaskId] = []
        self._views: dict[tuple[int, int], list[OperatorView]] = {}
        self._network: dict[tuple[int, int], tuple[int, int]] = {}
        for vertex in graph.vertices:
            for subtask in range(vertex.parallelism):
                views = [OperatorView(node.name, uid_of(node)) for node in vertex.nodes]
                self._views[vertex.id, subtask] = views
                self.operators.append((vertex, subtask, views))  # type: ignore[arg-type]
                tid = task_id(vertex.id, subtask)
                name = f"{vertex.name} ({subtask + 1}/{vertex.parallelism})"
                self.tasks.append(
                    RemoteTask(name, tid, worker_of(subtask, self.workers), self.group)
                )
                if vertex.is_source:
                    self._sources.append(tid)

    def update_metrics(self, metrics: list[tuple[int, int, int, int, int]]) -> None:
        """Take a worker's operator counters (they only grow within an attempt)."""
        for vertex, subtask, index, records_in, records_out in metrics:
            views = self._views.get((vertex, subtask))
            if views is not None and index < len(views):
                views[index].records_in = records_in
                views[index].records_out = records_out

    def update_network(self, network: list[tuple[int, int, int, int]]) -> None:
        """Take a worker's byte counters: ``(vertex id, subtask, bytes in, bytes out)``."""
        for vertex, subtask, bytes_in, bytes_out in network:
            self._network[vertex, subtask] = (bytes_in, bytes_out)

    def network_bytes(self) -> dict[tuple[int, int], tuple[int, int, bool]]:
        """Bytes each subtask read and wrote over the data connections to other workers.

        Whole ``DATA`` and ``PRIORITY`` frames (``runtime.cluster.network``); channels
        between subtasks of one worker carry objects and count nothing. Never blocks.

        Returns:
            ``(vertex id, subtask) -> (bytes in, bytes out, complete)`` for each subtask
            whose worker reported; ``complete`` is false once the attempt ended without
            the worker's final counters (a failure: the figures are its last heartbeat's).
        """
        group = self.group
        return {
            (vertex, subtask): (
                bytes_in,
                bytes_out,
                not group.ended or worker_of(subtask, self.workers) in group.final_reports,
            )
            for (vertex, subtask), (bytes_in, bytes_out) in self._network.items()
        }

    def source_task_ids(self) -> list[Any]:
        """The ids of the source tasks."""
        return list(self._sources)

    def enable_checkpointing(
        self, coordinator: CheckpointCoordinator, storage: CheckpointStorage
    ) -> None:
        """Let the workers' subtasks report to ``coordinator`` and write to ``storage``."""
        if self.checkpointing and isinstance(storage, MemoryCheckpointStorage):
            raise ConfigError(
                "checkpoints of a job with workers > 1 need a file storage that every "
                "worker process can write: pass storage='file:///some/folder' to "
                "enable_checkpointing, or run with workers=1"
            )
        self.coordinator = coordinator
        self.storage = storage

    def payload(self) -> bytes:
        """The cloudpickled ``DeploySpec`` of this attempt."""
        spec = DeploySpec(
            graph=self.graph,
            config=self.config,
            job_name=self.job_name,
            attempt=self.attempt,
            restore=self.restore,
            checkpointing=self.checkpointing,
            wait_for_final=any(task.wait_for_final for task in self.tasks),
            storage=self.storage,
            workers=self.workers,
        )
        return cloudpickle.dumps(spec)

    def collected(self) -> dict[str, list[Any]]:
        """What the workers' collect sinks gathered."""
        return {name: list(items) for name, items in self.group.collected.items()}
