"""Choosing and loading the checkpoint a job restores: the job master's recovery.

The job master (``runtime.scheduler.executor``) restores in two places, and both go
through the one recovery planner (:class:`storage.checkpoint.recovery.RecoveryPlanner`)
with the same verifier:

* ``restore_from=`` (:meth:`RestorePlanning.restore_from`): a ``chk-<n>`` or savepoint
  folder is loaded as it is (an error names the file if it is broken); a job's folder
  gives the planner its completed checkpoints, and the newest that verifies is chosen;
* a restart (:meth:`RestorePlanning.restart`): the retained checkpoints of the running
  job, then the checkpoint the run was restored from.

The verifier checks the metadata and every ``shared/`` file (size and crc32:
:func:`~storage.checkpoint.verification.verify_checkpoint`), then reads the state files
(:func:`~runtime.scheduler.restore.load_checkpoint`: size, crc32, frames) and checks
that the job can take the state. A checkpoint older than one whose completion may have
been notified to two-phase-commit sinks is chosen only if every such sink of the job
skips the output it committed after the restored checkpoint
(``TwoPhaseCommitSink.skips_committed_on_restore``, true for ``FileSink``) or
``allow_older_than_committed`` was given; otherwise the planner's
:class:`~storage.checkpoint.recovery.RestoreRefusedError` names both checkpoints.

What is skipped, and restores from a folder whose job finished or that a later run
already continued, are told as a :class:`RestoreWarning` (for ``restore_from``) and on
the ``weir.restore`` logger (always; a restart inside a running job only logs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread

from runtime.connectors.two_phase_commit import TwoPhaseCommitSink
from runtime.errors import ConfigError
from runtime.graph.job_graph import JobGraph
from runtime.graph.transformations import NodeKind
from runtime.scheduler.restore import RestoredCheckpoint, load_checkpoint
from storage.checkpoint import (
    METADATA_FILE,
    Candidate,
    CheckpointNotFoundError,
    CheckpointStorage,
    CheckpointVerificationError,
    FileCheckpointStorage,
    NoValidCheckpointError,
    RecoveryDecision,
    RecoveryPlanner,
    RetainedCheckpoint,
    StorageError,
    checkpoint_folder,
    verify_checkpoint,
)
from storage.checkpoint.filesystem import remove_empty_folders
from storage.checkpoint.job_record import (
    JOB_RECORD_FILE,
    add_restored_by,
    read_job_record,
    read_restored_by,
)
from storage.checkpoint.layout import parse_checkpoint_dir_name
from storage.checkpoint.recovery import job_candidates
from storage.checkpoint.scan import completed_checkpoint_ids

__all__ = [
    "RestoreFromError",
    "RestorePlanning",
    "RestoreWarning",
    "finish_job_folder",
    "sinks_skip_committed",
]

logger = logging.getLogger("weir.restore")


class RestoreFromError(ConfigError):
    """``restore_from`` names no usable checkpoint (every one failed, or none is there)."""


class RestoreWarning(UserWarning):
    """A restore skipped a checkpoint (names the file), or restores a stale one.

    Stale: from the folder of a job that finished (its newest checkpoint is its end, not
    a point to resume), or from a checkpoint a later run already continued from.
    """


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, RestoreWarning, stacklevel=4)


def sinks_skip_committed(graph: JobGraph) -> bool:
    """Whether every two-phase-commit sink of ``graph`` skips its committed output.

    A sink operator is made once per sink (as a subtask would be) to find its function.
    A job without two-phase-commit sinks commits nothing, so it is true. When a sink
    cannot be inspected, false (the conservative answer).
    """
    for vertex in graph.vertices:
        for node in vertex.nodes:
            if node.kind is not NodeKind.SINK or node.factory is None:
                continue
            try:
                operator = node.factory(node.name, node.uid or node.name)
            except Exception:
                return False
            owner = getattr(getattr(operator, "function", None), "owner", None)
            for _ in range(8):  # through wrappers (the testing kit's) that keep ``sink``
                if isinstance(owner, TwoPhaseCommitSink) or owner is None:
                    break
                owner = getattr(owner, "sink", None)
            if isinstance(owner, TwoPhaseCommitSink) and not owner.skips_committed_on_restore:
                return False
    return True


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "at an unknown time"
    return datetime.fromtimestamp(timestamp, UTC).strftime("at %Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class RestorePlanning:
    """What the planner needs to know about a job, and the loading it does for it.

    Attributes:
        job_id: The restoring job.
        job_name: Its name, for messages.
        uids: The job's operator uids, mapped to their names.
        max_parallelism: The job's max parallelism.
        allow_pickle: Whether restored state may use pickle.
        allow_non_restored_state: Skip state of operators the job no longer has.
        allow_older_than_committed: Go back past notified output anyway.
        sinks_skip_committed: Every two-phase-commit sink skips its committed output.
    """

    job_id: str
    job_name: str
    uids: dict[str, str]
    max_parallelism: int
    allow_pickle: bool
    allow_non_restored_state: bool
    allow_older_than_committed: bool
    sinks_skip_committed: bool

    # -- loading one checkpoint ----------------------------------------------------------

    async def _load(
        self, storage: CheckpointStorage, pointer: str, folder: Path | None
    ) -> RestoredCheckpoint:
        """Verify (metadata, ``shared/`` files), read and check one checkpoint."""
        if folder is not None:
            await anyio.to_thread.run_sync(
                functools.partial(verify_checkpoint, folder, checksums=False, state_files=False)
            )
        restored = await load_checkpoint(storage, pointer, allow_pickle=self.allow_pickle)
        restored.check_operators(self.uids, self.max_parallelism, self.allow_non_restored_state)
        return restored

    async def load_folder(self, folder: Path) -> RestoredCheckpoint:
        """Load a checkpoint or savepoint folder as it is; errors name the file."""
        reader = FileCheckpointStorage(folder.parent.parent, folder.parent.name or "job")
        return await self._load(reader, str(folder), folder)

    async def _plan(
        self,
        planner: RecoveryPlanner,
        load: Callable[[Candidate], Awaitable[RestoredCheckpoint]],
        folder_of: Callable[[Candidate], Path | None],
    ) -> tuple[RecoveryDecision, RestoredCheckpoint | None]:
        """Run ``planner`` newest first with the verifier ``load``.

        The async twin of :func:`storage.checkpoint.recovery.plan_recovery`.
        """
        for candidate in planner.candidates():
            try:
                restored = await load(candidate)
            except CheckpointNotFoundError as error:
                if error.what == "checkpoint metadata":
                    continue  # deleted since the listing: a concurrent discard
                planner.reject(candidate, await self._reason(candidate, error, folder_of))
                continue
            except StorageError as error:
                planner.reject(candidate, await self._reason(candidate, error, folder_of))
                continue
            return planner.choose(candidate), restored
        return planner.give_up(), None

    async def _reason(
        self,
        candidate: Candidate,
        error: StorageError,
        folder_of: Callable[[Candidate], Path | None],
    ) -> str:
        """Why ``candidate`` failed: every failing file, when a full check finds more."""
        folder = folder_of(candidate)
        if folder is None:
            return str(error)
        try:
            await anyio.to_thread.run_sync(
                functools.partial(verify_checkpoint, folder, checksums=True)
            )
        except CheckpointVerificationError as full:
            if len(full.problems) > 1:
                return str(full)
        except StorageError:
            pass
        return str(error)

    # -- restore_from --------------------------------------------------------------------

    async def restore_from(self, pointer: str) -> RestoredCheckpoint:
        """Load what ``restore_from`` names.

        Raises:
            ConfigError: no checkpoint there, every one failed (names each file), or the
                state does not fit the job.
            RestoreRefusedError: the newest one that verifies is older than one whose
                completion was notified, and the job's sinks cannot skip their output.
            StorageError: the named checkpoint or savepoint is broken (names the file).
        """
        try:
            target = checkpoint_folder(pointer)
        except ValueError as error:
            raise ConfigError(f"restore_from: {error}") from None
        if (target / METADATA_FILE).exists():
            restored = await self.load_folder(target)
            if parse_checkpoint_dir_name(target.name) is not None:
                await self._note_restore(target.parent, restored)
            return restored
        record = await anyio.to_thread.run_sync(read_job_record, target)
        candidates = await anyio.to_thread.run_sync(job_candidates, target)
        planner = RecoveryPlanner(
            candidates,
            committed=None if record is None else record.notified,
            committed_pointer=None if record is None else record.notified_pointer,
            sinks_skip_committed=self.sinks_skip_committed,
            allow_older_than_committed=self.allow_older_than_committed,
            where=str(target),
        )

        async def load(candidate: Candidate) -> RestoredCheckpoint:
            return await self.load_folder(Path(candidate.pointer))

        try:
            decision, restored = await self._plan(
                planner, load, lambda candidate: Path(candidate.pointer)
            )
        except NoValidCheckpointError as error:
            raise RestoreFromError(f"restore_from: {error}") from None
        if restored is None:
            raise RestoreFromError(
                f"restore_from: no valid checkpoint at {pointer}: give a chk-<n> or "
                f"savepoint folder (with a _metadata file) or a job's checkpoint folder"
            )
        for line in decision.warnings():
            _warn(f"restore_from {target}: {line}")
        if record is not None and record.status == "finished":
            _warn(
                f"restore_from {target}: its job {record.job_id} finished "
                f"{_when(record.ended_at)}: its checkpoints are what that run left at its "
                f"end, not a point to resume from (restoring checkpoint "
                f"{restored.checkpoint_id} runs what came after it again); name a "
                f"chk-<n> folder or a savepoint to restore a chosen state"
            )
        await self._note_restore(target, restored)
        return restored

    async def _note_restore(self, job_dir: Path, restored: RestoredCheckpoint) -> None:
        """Warn if a later run continued from the folder already; record this restore."""
        earlier = await anyio.to_thread.run_sync(read_restored_by, job_dir)
        checkpoint_id = restored.checkpoint_id
        continued = [r for r in earlier if r.checkpoint_id == checkpoint_id]
        if continued:
            last = continued[-1]
            where = f" (its checkpoints: {last.job_folder})" if last.job_folder else ""
            _warn(
                f"restore_from {restored.pointer}: run {last.job_id}{where} already "
                f"continued from checkpoint {last.checkpoint_id} of {job_dir} "
                f"{_when(last.at)}; this restore forks the job again: restore from that "
                f"run's folder to continue where it left off"
            )
        record = functools.partial(
            add_restored_by, job_dir, self.job_id, checkpoint_id, restored.pointer
        )
        with contextlib.suppress(OSError):  # a read-only folder: nothing to record
            await anyio.to_thread.run_sync(record)

    # -- restarts ------------------------------------------------------------------------

    async def restart(
        self,
        storage: CheckpointStorage,
        retained: Sequence[RetainedCheckpoint],
        completed_ids: Sequence[int],
        initial: RestoredCheckpoint | None,
    ) -> RestoredCheckpoint | None:
        """The checkpoint a restart restores, or None (start from nothing).

        Args:
            storage: The running job's checkpoint storage.
            retained: Its retained completed checkpoints.
            completed_ids: Every checkpoint the run completed (each was notified).
            initial: The checkpoint the run was restored from, the last fallback.

        Raises:
            RestoreRefusedError: Only an older checkpoint verifies (or none), and the
                job's sinks cannot skip the output they committed after it.
            NoValidCheckpointError: Every candidate failed; names each file.
        """
        candidates = [Candidate(r.checkpoint_id, r.pointer) for r in retained]
        initial_candidate = None
        if initial is not None and not any(
            c.checkpoint_id == initial.checkpoint_id for c in candidates
        ):
            initial_candidate = Candidate(initial.checkpoint_id, initial.pointer)
            candidates.append(initial_candidate)
        committed_ids = [*completed_ids, getattr(storage, "newest_notified", None)]
        committed = max((n for n in committed_ids if n is not None), default=None)
        file_storage = isinstance(storage, FileCheckpointStorage)
        planner = RecoveryPlanner(
            candidates,
            committed=committed,
            sinks_skip_committed=self.sinks_skip_committed,
            allow_older_than_committed=self.allow_older_than_committed,
            where=f"job {self.job_name!r} ({storage.description})",
        )

        def folder_of(candidate: Candidate) -> Path | None:
            if candidate == initial_candidate or not file_storage:
                return None
            return checkpoint_folder(candidate.pointer)

        async def load(candidate: Candidate) -> RestoredCheckpoint:
            if candidate == initial_candidate:
                assert initial is not None
                return initial
            return await self._load(storage, candidate.pointer, folder_of(candidate))

        decision, restored = await self._plan(planner, load, folder_of)
        for line in decision.warnings():
            logger.warning("restarting job %r: %s", self.job_name, line)
        return restored


async def finish_job_folder(storage: CheckpointStorage, status: str, notified: int | None) -> None:
    """At the end of a job: record how it ended, or remove its folder if it is empty.

    A folder that keeps checkpoints gets its ``_job`` record (``finished``, ``canceled``
    or ``failed``, and the newest notified checkpoint); ``shared/`` is removed if empty;
    a folder left with no checkpoint is removed (with its record) if nothing else is in
    it.
    """
    if not isinstance(storage, FileCheckpointStorage):
        return
    job_dir = storage.job_dir
    await anyio.to_thread.run_sync(remove_empty_folders, job_dir)
    if await anyio.to_thread.run_sync(completed_checkpoint_ids, job_dir):
        await storage.record_job_end(status, notified)
        return
    await anyio.to_thread.run_sync(_remove_if_empty, job_dir)


def _remove_if_empty(job_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (job_dir / JOB_RECORD_FILE).unlink(missing_ok=True)
        os.rmdir(job_dir)
