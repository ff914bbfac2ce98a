"""A subtask's snapshot: the synchronous part, the channel state, the asynchronous part.

``TaskCheckpointing`` is the part of a task that takes checkpoints. The task calls it;
it never calls back into the task's loop.

* **Synchronous part** (``begin``): each operator's ``snapshot_state`` (user hooks,
  then a copy-on-write snapshot of its keyed state and an encoded copy of its
  operator state) and, for sources, the reader's split positions; then the size of
  the heap keyed state goes to the state freezer (:mod:`runtime.tasks.gc_freezer`), which
  keeps large state out of the cyclic garbage collector's walks. Its cost does not grow
  with the keyed state.
* **Channel state** (unaligned checkpoints): records the task adds with ``add_input``
  (input channel state, per input channel) and ``add_output`` (output channel state,
  per output channel), until ``input_complete``.
* **Asynchronous part** (``persist``): encode the state in chunks, yielding to the event
  loop between chunks, write one state file through the ``CheckpointStorage``, release
  the copy-on-write snapshots, and acknowledge to the coordinator (or decline, naming
  the task and the path, if anything failed).

State file frames (``storage.checkpoint.StateFrame``): ``keyed`` (operator uid, key
group, blob), ``operator`` (operator uid, encoded ``OperatorStateSnapshot``), ``splits``
(source uid, encoded splits), ``input`` (upstream uid, upstream subtask, records) and
``output`` (downstream uid, downstream subtask, records).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import msgspec

from actors import Mailbox
from runtime.checkpoint.events import (
    CheckpointAcknowledged,
    CheckpointBarrier,
    CheckpointDeclined,
    SubtaskCheckpointMetrics,
)
from runtime.checkpoint.ids import CheckpointId, TaskId
from runtime.tasks.fairness import yield_turn
from runtime.tasks.gc_freezer import STATE_FREEZER
from runtime.tasks.operators import OperatorSnapshot, StreamOperator
from storage import HeapSnapshot, serializer_for
from storage.backend import DeferredSnapshot, UploadingSnapshot
from storage.changelog import ChangelogKeyedStateBackend
from storage.checkpoint import (
    CheckpointStorage,
    SavepointStorage,
    StateFrame,
    StateHandle,
    encode_frame,
)
from storage.checkpoint.metadata import SharedFileHandle

ENCODE_CHUNK = 2048
"""Keyed state entries encoded between two yields to the event loop."""


@dataclass(frozen=True, slots=True)
class ChannelStateKey:
    """Which channel a piece of channel state belongs to, in restore-stable terms.

    Flink's ``InputChannelInfo`` / ``ResultSubpartitionInfo``, named by operator uid and
    subtask index so that they survive a change of the job graph's channel numbering.
    Written as a channel-state frame (``StateFrame(kind, operator_uid, subtask, data)``)
    and read back by ``runtime.scheduler.restore``.

    Attributes:
        kind: ``"input"`` or ``"output"``.
        operator_uid: input: the producing operator's uid; output: the consuming one's.
        subtask: the producing (input) or consuming (output) subtask's index.
    """

    kind: Literal["input", "output"]
    operator_uid: str
    subtask: int

    @classmethod
    def input(cls, producer_uid: str, producer_subtask: int) -> ChannelStateKey:
        """The key of in-flight records received from ``producer_uid``'s subtask."""
        return cls("input", producer_uid, producer_subtask)

    @classmethod
    def output(cls, consumer_uid: str, consumer_subtask: int) -> ChannelStateKey:
        """The key of in-flight records sent to ``consumer_uid``'s subtask."""
        return cls("output", consumer_uid, consumer_subtask)


@dataclass(slots=True)
class PendingSnapshot:
    """What a task holds for one checkpoint between its sync and async parts."""

    barrier: CheckpointBarrier
    unaligned: bool
    alignment_duration: float
    start_delay: float
    sync_duration: float = 0.0
    operators: list[OperatorSnapshot] = field(default_factory=list)
    channel_state: dict[ChannelStateKey, list[Any]] = field(default_factory=dict)
    aborted: bool = False
    # Keyed snapshots whose synchronous part runs in a worker thread (RocksDB), and
    # what it raised.
    deferred: list[DeferredSnapshot] = field(default_factory=list)
    take_error: Exception | None = None
    # Set once the operators' asynchronous snapshot work (``completion``) finished.
    completed: anyio.Event | None = None
    # Taken after the task ended its input (see CheckpointAcknowledged).
    after_end_of_input: bool = False

    @property
    def checkpoint_id(self) -> CheckpointId:
        """The checkpoint's id."""
        return self.barrier.checkpoint_id

    def release(self) -> None:
        """Let the state backends fold their copy-on-write overlays back."""
        for snapshot in self.operators:
            snapshot.release()


def _file_name(task_name: str, task: TaskId) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task_name).strip("_")[:80]
    return f"{safe}-{task.replace(':', '_')}.state"


class TaskCheckpointing:
    """Takes one subtask's snapshots and reports them to the coordinator.

    Args:
        task: the subtask's id.
        task_name: the subtask's name (for file names and messages).
        operators: the chain's operators, head first.
        storage: where state files are written.
        coordinator: the coordinator's mailbox.
        allow_pickle: whether records without a msgspec encoding may be pickled.
        spawn: starts a background job in the task's task group.
    """

    def __init__(
        self,
        task: TaskId,
        task_name: str,
        operators: list[StreamOperator],
        storage: CheckpointStorage,
        coordinator: Mailbox[object],
        *,
        allow_pickle: bool,
        spawn: Callable[..., None],
    ) -> None:
        self.task = task
        self.task_name = task_name
        self.operators = operators
        self.storage = storage
        self.coordinator = coordinator
        self.spawn = spawn
        self.pending: dict[CheckpointId, PendingSnapshot] = {}
        # Snapshots whose deferred synchronous part is still to run; set while a
        # _take_deferred job runs.
        self._untaken: list[PendingSnapshot] = []
        self._taken: anyio.Event | None = None
        self._records = serializer_for(None, allow_pickle=allow_pickle, what="record")
        self._file_name = _file_name(task_name, task)
        # Set by the task once its chain's input ended: later snapshots say so.
        self.input_ended = False

    def begin(
        self,
        barrier: CheckpointBarrier,
        *,
        unaligned: bool,
        alignment_duration: float = 0.0,
        start_delay: float = 0.0,
    ) -> PendingSnapshot:
        """The synchronous part: snapshot every operator now."""
        started = time.perf_counter()
        snapshot = PendingSnapshot(barrier, unaligned, alignment_duration, start_delay)
        snapshot.after_end_of_input = self.input_ended
        # A changelog backend takes a full snapshot for a savepoint (self-contained).
        changelogs = [
            keyed
            for operator in self.operators
            if isinstance(keyed := operator.context.keyed_backend, ChangelogKeyedStateBackend)
        ]
        try:
            canonical = barrier.options.is_savepoint and barrier.options.canonical
            for keyed in changelogs:
                keyed.full_snapshots = barrier.options.is_savepoint
            for operator in self.operators:
                snapshot.operators.append(
                    operator.snapshot_state(barrier.checkpoint_id, canonical=canonical)
                )
        except BaseException:
            snapshot.release()
            _close_completions(snapshot)
            raise
        finally:
            for keyed in changelogs:
                keyed.full_snapshots = False
        # Large heap state leaves the cyclic collector's walks (its overlays too, made
        # just now): see runtime.tasks.gc_freezer. O(states).
        STATE_FREEZER.on_snapshot(
            sum(
                op.keyed.table_entries()
                for op in snapshot.operators
                if isinstance(op.keyed, HeapSnapshot)
            )
        )
        snapshot.sync_duration = time.perf_counter() - started
        self.pending[barrier.checkpoint_id] = snapshot
        deferred: list[DeferredSnapshot] = []
        for op in snapshot.operators:
            later: object = op.keyed
            if isinstance(later, DeferredSnapshot) and not later.taken:
                deferred.append(later)
        if deferred:
            snapshot.deferred = deferred
            self._untaken.append(snapshot)
            if self._taken is None:
                self._taken = anyio.Event()
                self.spawn(self._take_deferred)
        completions = [
            (operator, op.completion)
            for operator, op in zip(self.operators, snapshot.operators, strict=True)
            if op.completion is not None
        ]
        if completions:
            # Started now (a sink's pre-commit I/O), awaited by persist before the ack.
            snapshot.completed = anyio.Event()
            self.spawn(self._complete, snapshot, completions)
        return snapshot

    async def _complete(
        self, snapshot: PendingSnapshot, completions: list[tuple[StreamOperator, Any]]
    ) -> None:
        """Await the operators' asynchronous snapshot work.

        A failure declines the checkpoint (``persist`` raises it) and fails the subtask:
        the work was the rest of a ``snapshot_state`` (a sink's pre-commit), so the
        operator's own bookkeeping already counts it done; only a restart from the
        latest completed checkpoint is sound.
        """
        try:
            for index, (operator, completion) in enumerate(completions):
                try:
                    await completion
                except Exception as error:
                    snapshot.take_error = error
                    for _, rest in completions[index + 1 :]:
                        _close(rest)
                    what = f"snapshot_state({snapshot.checkpoint_id}), its asynchronous part"
                    raise operator.phase_error(error, what) from error
        finally:
            assert snapshot.completed is not None
            snapshot.completed.set()

    @property
    def taking(self) -> bool:
        """Whether a snapshot's synchronous part runs in a worker thread now."""
        return self._taken is not None

    async def wait_taken(self) -> None:
        """Wait until no snapshot's synchronous part runs in a worker thread.

        The task awaits this before it processes a record (or ends its input): until
        then the state must not change, or the snapshot would not be the cut of its
        barrier.
        """
        while (taken := self._taken) is not None:
            await taken.wait()

    async def _take_deferred(self) -> None:
        """Take the deferred synchronous parts, oldest first, one thread hop at a time.

        One at a time: the backend's instance is used from one thread at once. A
        snapshot aborted meanwhile is skipped (its take() returns at once); an error is
        kept for ``persist``, which declines the checkpoint with it.
        """
        try:
            while self._untaken:
                snapshot = self._untaken[0]
                started = time.perf_counter()
                for keyed in snapshot.deferred:
                    try:
                        await keyed.take()
                    except Exception as error:  # declined by persist
                        snapshot.take_error = error
                        break
                snapshot.sync_duration += time.perf_counter() - started
                self._untaken.pop(0)
        finally:
            taken, self._taken = self._taken, None
            if taken is not None:
                taken.set()

    def add_channel_state(
        self, checkpoint_id: CheckpointId, key: ChannelStateKey, records: list[Any]
    ) -> None:
        """Append ``records`` to the channel state ``key`` of ``checkpoint_id``."""
        snapshot = self.pending.get(checkpoint_id)
        if snapshot is not None and records:
            snapshot.channel_state.setdefault(key, []).extend(records)

    def complete(self, checkpoint_id: CheckpointId) -> None:
        """The checkpoint's channel state is complete: start the asynchronous part."""
        snapshot = self.pending.get(checkpoint_id)
        if snapshot is not None:
            self.spawn(self.persist, snapshot)

    def abort(self, checkpoint_id: CheckpointId) -> None:
        """Drop what is held for ``checkpoint_id`` (an in-flight persist will not ack)."""
        snapshot = self.pending.pop(checkpoint_id, None)
        if snapshot is not None:
            snapshot.aborted = True
            snapshot.release()

    def abort_all(self) -> None:
        """Drop every pending snapshot (the task is stopping)."""
        for checkpoint_id in list(self.pending):
            self.abort(checkpoint_id)

    def _storage_for(self, barrier: CheckpointBarrier) -> CheckpointStorage:
        target = barrier.options.target
        if target is None:
            return self.storage
        # A savepoint: its files go into its own folder (created by the coordinator).
        return SavepointStorage(target, self.storage.job_id)

    async def persist(self, snapshot: PendingSnapshot) -> None:
        """The asynchronous part: encode, release, fold back, write, acknowledge.

        Or decline, naming the task and the path, if anything failed. Every step that
        grows with the state (encoding, folding the copy-on-write overlays back into the
        live tables) runs in bounded chunks with a yield to the event loop between them,
        so records keep flowing; the snapshot is released (and folded back) on every way
        out but cancellation, where ``abort_all`` releases it and the next snapshot's
        persist folds it.
        """
        started = time.perf_counter()
        checkpoint_id = snapshot.checkpoint_id
        shared: dict[int, list[SharedFileHandle]] = {}
        try:
            if snapshot.deferred:
                await self.wait_taken()
                if snapshot.take_error is not None:
                    raise snapshot.take_error
            frames: list[bytes] = []
            sizes: list[int] = []
            for index, op_snapshot in enumerate(snapshot.operators):
                size = await self._encode_operator(snapshot, index, op_snapshot, frames, shared)
                if size is None:  # aborted meanwhile, and released by abort()
                    await _fold_back(snapshot)
                    return
                sizes.append(size)
            in_flight = self._encode_channel_state(snapshot, frames)
            storage = self._storage_for(snapshot.barrier)
            handle = await storage.write_state(checkpoint_id, self._file_name, frames)
            if snapshot.completed is not None:
                # The operators' own asynchronous work (a sink's pre-commit) ran beside
                # the encoding and the write: the acknowledgement waits for it.
                await snapshot.completed.wait()
                if snapshot.take_error is not None:
                    raise snapshot.take_error
        except asyncio.CancelledError:
            raise
        except Exception as error:
            snapshot.release()
            self.pending.pop(checkpoint_id, None)
            if not snapshot.aborted:
                self._decline(checkpoint_id, error)
            await _fold_back(snapshot)
            return
        snapshot.release()
        self.pending.pop(checkpoint_id, None)
        if snapshot.aborted:
            await _fold_back(snapshot)
            return
        self._acknowledge(snapshot, handle, sizes, in_flight, shared, started)
        for operator in self.operators:
            operator.after_acknowledge(checkpoint_id)

    async def _encode_operator(
        self,
        snapshot: PendingSnapshot,
        index: int,
        op_snapshot: OperatorSnapshot,
        frames: list[bytes],
        shared: dict[int, list[SharedFileHandle]],
    ) -> int | None:
        """Append one operator's frames (uploading its shared files first); its size.

        None if the checkpoint was aborted while its keyed state was being encoded.
        """
        size = 0
        keyed = op_snapshot.keyed
        if keyed is not None:
            if isinstance(keyed, UploadingSnapshot):  # files first, then handles
                shared[index] = await keyed.upload(
                    self._storage_for(snapshot.barrier), snapshot.checkpoint_id
                )
                size += keyed.uploaded_bytes
            for chunk in keyed.encode_chunks(ENCODE_CHUNK):
                for key_group, blob in chunk:
                    frames.append(
                        encode_frame(StateFrame("keyed", op_snapshot.uid, key_group, blob))
                    )
                    size += len(blob)
                # Yield between chunks: processing goes on while state is encoded.
                await yield_turn()
                if snapshot.aborted:  # released by abort()
                    return None
            keyed.release()
            await _fold_back(snapshot)
        for kind, data in op_snapshot.frames:
            frames.append(encode_frame(StateFrame(kind, op_snapshot.uid, -1, data)))
            size += len(data)
        return size

    def _encode_channel_state(self, snapshot: PendingSnapshot, frames: list[bytes]) -> int:
        """Append the channel state's frames; their size in bytes."""
        in_flight = 0
        for key, records in snapshot.channel_state.items():
            data = self._records.encode(records)
            frames.append(encode_frame(StateFrame(key.kind, key.operator_uid, key.subtask, data)))
            in_flight += len(data)
        return in_flight

    def _decline(self, checkpoint_id: CheckpointId, error: Exception) -> None:
        self.coordinator.put(
            CheckpointDeclined(
                checkpoint_id,
                self.task,
                f"subtask {self.task_name!r} could not write its state to "
                f"{self.storage.description} ({self._file_name}): "
                f"{type(error).__name__}: {error}",
            )
        )

    def _acknowledge(
        self,
        snapshot: PendingSnapshot,
        handle: StateHandle,
        sizes: list[int],
        in_flight: int,
        shared: dict[int, list[SharedFileHandle]],
        started: float,
    ) -> None:
        """Report the written state: one handle per operator, all in the one file."""
        metrics = SubtaskCheckpointMetrics(
            sync_duration=snapshot.sync_duration,
            async_duration=time.perf_counter() - started,
            alignment_duration=snapshot.alignment_duration,
            start_delay=snapshot.start_delay,
            state_size=sum(sizes),
            in_flight_bytes=in_flight,
            unaligned=snapshot.unaligned,
        )
        # Every operator of the chain points at the task's one state file; the head
        # carries the channel state's size.
        reports = [
            op_snapshot.report(handle, size, in_flight if index == 0 else 0)
            for index, (op_snapshot, size) in enumerate(zip(snapshot.operators, sizes, strict=True))
        ]
        for index, files in shared.items():
            if files:  # the shared files an incremental RocksDB snapshot uses
                reports[index] = msgspec.structs.replace(
                    reports[index],
                    subtask=msgspec.structs.replace(reports[index].subtask, shared=files),
                )
        self.coordinator.put(
            CheckpointAcknowledged(
                snapshot.checkpoint_id,
                self.task,
                metrics,
                reports,
                after_end_of_input=snapshot.after_end_of_input,
            )
        )


def _close(completion: Any) -> None:
    """Close a coroutine that will not be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(completion):
        completion.close()


def _close_completions(snapshot: PendingSnapshot) -> None:
    for op in snapshot.operators:
        if op.completion is not None:
            _close(op.completion)
            op.completion = None


async def _fold_back(snapshot: PendingSnapshot) -> None:
    """Fold the snapshot's released tables back, a bounded number of entries per step.

    Folding all at once would stall processing for every key written meanwhile.
    """
    for op_snapshot in snapshot.operators:
        keyed = op_snapshot.keyed
        if keyed is not None:
            while True:
                await yield_turn()
                if keyed.fold_step():
                    break
