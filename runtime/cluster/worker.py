"""A worker process: builds its share of an attempt's subtasks and runs them.

Started by the job master (``python -m runtime.cluster.worker HOST PORT INDEX``). It
connects to the master's control server, says ``Hello`` with the port of its own data
server, receives ``Deploy`` (the cloudpickled graph and restore), builds the subtasks
it owns (subtask ``s`` of every vertex lives on worker ``s % workers``, so each worker
holds a slice of every operator and forward edges stay local), connects to every other
worker (one connection per pair, channels multiplexed), reports ``Ready`` and runs its
subtasks on its own event loop when told ``Start``. Checkpoint messages go to the
coordinator over the control connection; state files go straight to checkpoint storage.
Its subtasks' counters (records per operator, bytes over the data connections) go to the
master with every heartbeat, with ``WorkerDone``, and once more, final, when it is told
to ``Exit`` (``WorkerExiting``).

A worker never outlives its master: when the control connection closes, it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import cloudpickle

from actors import ActorFailedError, Channel, Supervisor
from actors.actor import Mailbox
from actors.waker import Waker
from runtime.checkpoint.events import NotifyCheckpointComplete
from runtime.cluster.control import (
    Deploy,
    Exit,
    Heartbeat,
    Hello,
    Ready,
    Start,
    ToCoordinator,
    ToTasks,
    WorkerDone,
    WorkerExiting,
    WorkerFailed,
    decode_message,
    encode_message,
    read_message,
    write_message,
)
from runtime.cluster.network import CREDIT, PeerLink
from runtime.cluster.remote_channel import RemoteReceiver, RemoteSender
from runtime.config import ExecutionConfig
from runtime.graph.job_graph import JobEdge, JobGraph
from runtime.scheduler.deployment import ChannelMatrix, Deployment
from runtime.scheduler.restore import RestoredCheckpoint
from runtime.tasks.partitioning import PartitionKind
from storage.checkpoint import CheckpointStorage

HEARTBEAT_INTERVAL = 0.25
WORKER_INDEX_VARIABLE = "WEIR_WORKER_INDEX"
"""Environment variable holding a worker process's index (0..workers-1)."""
ATTEMPT_VARIABLE = "WEIR_ATTEMPT"
"""Environment variable holding the attempt a worker process runs (0: the first)."""
_PEER = struct.Struct("!I")


@dataclass
class DeploySpec:
    """What a worker needs to build its subtasks of one attempt (cloudpickled)."""

    graph: JobGraph
    config: ExecutionConfig
    job_name: str
    attempt: int
    restore: RestoredCheckpoint | None
    checkpointing: bool
    wait_for_final: bool
    storage: CheckpointStorage | None
    workers: int


def worker_of(subtask: int, workers: int) -> int:
    """The worker that hosts ``subtask`` of any vertex."""
    return subtask % workers


class _ForwardingMailbox(Mailbox[object]):
    """The coordinator's mailbox as seen from a worker: puts go to the master."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(Waker())
        self._writer = writer

    def put(self, message: object) -> None:
        write_message(self._writer, ToCoordinator(encode_message(message)))  # type: ignore[arg-type]


class _CoordinatorLink:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.mailbox = _ForwardingMailbox(writer)


class WorkerDeployment(Deployment):
    """The subtasks of one attempt that live on worker ``worker``, with their channels."""

    def __init__(self, spec: DeploySpec, worker: int) -> None:
        self.worker = worker
        self.workers = spec.workers
        self.senders: dict[int, tuple[int, RemoteSender]] = {}
        self.receivers: dict[int, tuple[int, RemoteReceiver]] = {}
        # Channel id -> (vertex id, subtask) of the end that lives here.
        self._producers: dict[int, tuple[int, int]] = {}
        self._consumers: dict[int, tuple[int, int]] = {}
        self._next_channel = 0
        self.notified = 0  # the newest checkpoint whose completion reached this worker
        # Deployment.__init__ builds every subtask: build only ours.
        self.graph = spec.graph
        self.checkpointing = spec.checkpointing
        self.config = spec.config
        self.job_name = spec.job_name
        self.attempt = spec.attempt
        self.restore = spec.restore
        self.tasks = []
        self.operators = []
        self.channels = {}
        self._assignments = {}
        for edge in self.graph.edges:
            self.channels[id(edge)] = self._make_channels(edge)
        for vertex in self.graph.vertices:
            for subtask in range(vertex.parallelism):
                if worker_of(subtask, self.workers) == worker:
                    self.tasks.append(self._make_task(vertex, subtask))

    def _make_channels(self, edge: JobEdge) -> ChannelMatrix:
        capacity = self.config.channel_capacity
        up, down = edge.source, edge.target
        matrix: ChannelMatrix = {}
        forward = edge.partitioning.kind is PartitionKind.FORWARD
        for i in range(up.parallelism):
            for j in [i] if forward else range(down.parallelism):
                channel_id = self._next_channel
                self._next_channel += 1
                wi, wj = worker_of(i, self.workers), worker_of(j, self.workers)
                name = (
                    f"{up.name} ({i + 1}/{up.parallelism}) -> "
                    f"{down.name} ({j + 1}/{down.parallelism})"
                )
                if wi == self.worker and wj == self.worker:
                    matrix[i, j] = Channel(capacity, name=name)
                elif wi == self.worker:
                    sender = RemoteSender(
                        capacity, name=name, channel_id=channel_id, notified=self._notified
                    )
                    self.senders[channel_id] = (wj, sender)
                    self._producers[channel_id] = (up.id, i)
                    matrix[i, j] = sender
                elif wj == self.worker:
                    receiver = RemoteReceiver(
                        capacity, name=name, channel_id=channel_id, notified=self._notified
                    )
                    self.receivers[channel_id] = (wi, receiver)
                    self._consumers[channel_id] = (down.id, j)
                    matrix[i, j] = receiver
        return matrix

    def _notified(self) -> int:
        return self.notified

    def on_notified(self, checkpoint_id: int) -> None:
        """A completion notification for ``checkpoint_id`` reached this worker."""
        if checkpoint_id > self.notified:
            self.notified = checkpoint_id
            for _other, receiver in self.receivers.values():
                receiver.on_notified(checkpoint_id)

    def metrics(self) -> list[tuple[int, int, int, int, int]]:
        """Every operator's record counters, for the master."""
        return [
            (vertex.id, subtask, index, operator.records_in, operator.records_out)
            for vertex, subtask, operators in self.operators
            for index, operator in enumerate(operators)
        ]

    def network_metrics(self) -> list[tuple[int, int, int, int]]:
        """Every subtask's bytes in and out over the data connections, for the master.

        One entry per subtask of this worker, ``(vertex id, subtask, bytes in, bytes
        out)``: whole ``DATA`` and ``PRIORITY`` frames its channels to other workers read
        and wrote (``PeerLink.bytes_received`` / ``bytes_sent``); channels within this
        worker carry objects, no bytes.
        """
        counts = {(vertex.id, subtask): [0, 0] for vertex, subtask, _ in self.operators}
        for channel, (_other, receiver) in self.receivers.items():
            link = receiver.link
            if link is not None:
                counts[self._consumers[channel]][0] += link.bytes_received.get(channel, 0)
        for channel, (_other, sender) in self.senders.items():
            link = sender.link
            if link is not None:
                counts[self._producers[channel]][1] += link.bytes_sent.get(channel, 0)
        return [(vertex, subtask, bi, bo) for (vertex, subtask), (bi, bo) in counts.items()]

    def on_frame(self, kind: int, channel: int, item: Any) -> None:
        """Route a frame read from a peer to its channel end."""
        if kind == CREDIT:
            entry = self.senders.get(channel)
            if entry is not None:
                entry[1].grant(item)
            return
        found = self.receivers.get(channel)
        if found is not None:
            found[1].on_frame(kind, item)


async def _connect_peers(
    index: int,
    ports: list[int],
    server_links: asyncio.Queue[tuple[int, asyncio.StreamReader, asyncio.StreamWriter]],
) -> dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One connection per pair: connect to lower indexes, accept from higher ones."""
    peers: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    for other in range(index):
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[other])
        writer.write(_PEER.pack(index))
        peers[other] = (reader, writer)
    while len(peers) < len(ports) - 1:
        other, reader, writer = await server_links.get()
        peers[other] = (reader, writer)
    return peers


async def run_worker(host: str, port: int, index: int) -> None:
    """The worker's life (see the module's docstring)."""
    control_reader, control = await asyncio.open_connection(host, port)
    accepted: asyncio.Queue[tuple[int, asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.Queue()

    async def on_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        other = _PEER.unpack(await reader.readexactly(_PEER.size))[0]
        await accepted.put((other, reader, writer))

    server = await asyncio.start_server(on_peer, "127.0.0.1", 0)
    data_port = server.sockets[0].getsockname()[1]
    write_message(control, Hello(index, data_port, os.getpid()))
    deploy = await read_message(control_reader)
    if not isinstance(deploy, Deploy):
        return  # the master went away
    # Job code may look (e.g. when it is unpickled) at where it runs.
    os.environ[WORKER_INDEX_VARIABLE] = str(index)
    os.environ[ATTEMPT_VARIABLE] = str(deploy.attempt)
    try:
        spec: DeploySpec = cloudpickle.loads(deploy.payload)
        deployment = WorkerDeployment(spec, index)
        if spec.storage is not None:
            deployment.enable_checkpointing(_CoordinatorLink(control), spec.storage)  # type: ignore[arg-type]
        for task in deployment.tasks:
            task.wait_for_final = spec.wait_for_final
    except BaseException as error:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        write_message(
            control, WorkerFailed(index, f"worker {index} cannot build its subtasks: {detail}")
        )
        await control.drain()
        return
    peers = await _connect_peers(index, deploy.peer_ports, accepted)
    links = {
        other: PeerLink(reader, writer, deployment.on_frame)
        for other, (reader, writer) in peers.items()
    }
    readers = [asyncio.ensure_future(link.read_forever()) for link in links.values()]
    for other, receiver in deployment.receivers.values():
        receiver.attach(links[other])
    for other, sender in deployment.senders.values():
        sender.attach(links[other])
    tasks_by_id = {task.task_id: task for task in deployment.tasks}
    started = asyncio.Event()
    exiting = asyncio.Event()

    async def read_control() -> None:
        while True:
            message = await read_message(control_reader)
            if message is None:
                os._exit(3)  # the master is gone: never outlive it
            if isinstance(message, ToTasks):
                notified = 0
                for one in message.messages:
                    task = tasks_by_id.get(one.task)  # type: ignore[call-overload]
                    if task is not None:
                        command = decode_message(one.message)
                        task.mailbox.put(command)
                        if isinstance(command, NotifyCheckpointComplete):
                            notified = max(notified, command.checkpoint_id)
                if notified:
                    deployment.on_notified(notified)
            elif isinstance(message, Start):
                started.set()
            elif isinstance(message, Exit):
                exiting.set()
                return

    async def beat() -> None:
        while True:
            write_message(
                control, Heartbeat(index, deployment.metrics(), deployment.network_metrics())
            )
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    control_task = asyncio.ensure_future(read_control())
    heart = asyncio.ensure_future(beat())
    write_message(control, Ready(index))
    await started.wait()
    error: str | None = None
    try:
        await Supervisor(deployment.tasks).run()
    except ActorFailedError as failed:
        cause = failed.__cause__ or failed
        error = f"{type(cause).__name__}: {cause}"
    try:
        collected = pickle.dumps(deployment.collected(), protocol=5)
    except Exception as failure:
        error = error or f"collected records cannot be sent to the master: {failure}"
        collected = b""
    write_message(
        control,
        WorkerDone(index, error, collected, deployment.metrics(), deployment.network_metrics()),
    )
    await control.drain()
    await exiting.wait()
    heart.cancel()
    # Every worker's subtasks ended, so every consumer read all it will read: a sender
    # whose producer ended first sent its last items since WorkerDone. Final counts now.
    write_message(control, WorkerExiting(index, deployment.metrics(), deployment.network_metrics()))
    with contextlib.suppress(ConnectionError):  # the master stopped waiting for it
        await control.drain()
    for reader_task in readers:
        reader_task.cancel()
    control_task.cancel()
    for link in links.values():
        link.close()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m runtime.cluster.worker HOST PORT INDEX``."""
    args = sys.argv[1:] if argv is None else argv
    host, port, index = args[0], int(args[1]), int(args[2])
    asyncio.run(run_worker(host, port, index))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
