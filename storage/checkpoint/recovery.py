"""Choosing the checkpoint to restore: the recovery planner.

One planner for every restore: ``restore_from=`` a job's folder, a restart inside a
running job (the job master, ``runtime.scheduler.executor``), ``weir info`` and
:func:`find_latest_valid`. :class:`RecoveryPlanner` is pure: it is given the candidate
checkpoints and a policy, hands them out newest first, and is told which ones failed to
verify (:meth:`~RecoveryPlanner.reject`) until one is accepted
(:meth:`~RecoveryPlanner.choose`); the caller runs the verifier (blocking here, in a
worker thread in the job master: :func:`~storage.checkpoint.verification.verify_checkpoint`
and the state files' reads). The planner returns a :class:`RecoveryDecision` naming the
checkpoint chosen and every one skipped, or raises:

* :class:`RestoreRefusedError` when the checkpoint it would choose is older than one
  whose completion may already have been notified to two-phase-commit sinks (their
  output for the checkpoints in between is committed, and restoring the older one would
  write it again), unless the sinks skip what they committed after the restored
  checkpoint (``sinks_skip_committed``: ``FileSink`` does) or the caller forces it
  (``allow_older_than_committed``). The error names both checkpoints and the option.
* :class:`NoValidCheckpointError` when every candidate failed: one error naming every
  file that failed and why.

Which checkpoints were notified: a checkpoint with a ``_metadata`` file completed, and
the coordinator notifies the tasks right after it writes that file, so every completed
checkpoint counts (a broken newer one included); the job folder's record
(:mod:`storage.checkpoint.job_record`) adds what the folder no longer shows (a
synchronous savepoint, a checkpoint deleted since). Conservative by design: a
checkpoint whose notification was lost to a crash still counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from storage.checkpoint.errors import CheckpointNotFoundError, StorageError
from storage.checkpoint.layout import checkpoint_dir_name
from storage.checkpoint.metadata import CheckpointMetadata
from storage.checkpoint.scan import completed_checkpoint_ids, load_metadata_file
from storage.checkpoint.verification import verify_checkpoint

__all__ = [
    "FORCE_OPTION",
    "Candidate",
    "CheckpointScan",
    "NoValidCheckpointError",
    "RecoveryDecision",
    "RecoveryPlanner",
    "RestoreRefusedError",
    "SkippedCheckpoint",
    "completed_checkpoint_ids",
    "find_latest_valid",
    "load_metadata_file",
    "plan_recovery",
]

FORCE_OPTION = "allow_older_than_committed=True (weir run --allow-older-than-committed)"
"""How a refused restore is forced, as the messages say it."""

T = TypeVar("T")


class Candidate(NamedTuple):
    """A completed checkpoint that may be restored.

    Attributes:
        checkpoint_id: Its id.
        pointer: Its folder (or the pointer its storage gave).
    """

    checkpoint_id: int
    pointer: str


class SkippedCheckpoint(NamedTuple):
    """A candidate that failed to verify, and why (the message names the file)."""

    candidate: Candidate
    reason: str

    @property
    def message(self) -> str:
        """``skipped checkpoint <n>: <reason>``."""
        return f"skipped checkpoint {self.candidate.checkpoint_id}: {self.reason}"


class RestoreRefusedError(StorageError):
    """Restoring would go back past output that two-phase-commit sinks committed.

    Attributes:
        chosen: The older checkpoint that would be restored (None: no checkpoint, the
            job would start from nothing).
        committed: The newest checkpoint whose completion may have been notified.
        committed_pointer: Where that checkpoint is, if known.
    """

    def __init__(
        self,
        chosen: Candidate | None,
        committed: int,
        committed_pointer: str | None,
        skipped: Iterable[SkippedCheckpoint] = (),
    ) -> None:
        """Build the error; the message names both checkpoints and how to force it."""
        self.chosen = chosen
        self.committed = committed
        self.committed_pointer = committed_pointer
        self.skipped = tuple(skipped)
        where = f" ({committed_pointer})" if committed_pointer else ""
        why = "".join(
            f"; checkpoint {s.candidate.checkpoint_id} cannot be used: {s.reason}"
            for s in self.skipped
            if s.candidate.checkpoint_id >= committed
        )
        older = (
            "starting from no checkpoint"
            if chosen is None
            else f"restoring checkpoint {chosen.checkpoint_id} ({chosen.pointer})"
        )
        super().__init__(
            f"refusing {older}: checkpoint {committed}{where} completed after it and "
            f"its completion may have been notified to the job's two-phase-commit sinks, "
            f"which then committed their output up to it; the restored job would write "
            f"that output again{why}. Repair checkpoint {committed} or restore it, or "
            f"force the older one with {FORCE_OPTION} (output committed after it may "
            f"then be written twice)"
        )

    def __reduce__(self) -> tuple[type[RestoreRefusedError], tuple[object, ...]]:  # type: ignore[override]
        return (
            type(self),
            (self.chosen, self.committed, self.committed_pointer, self.skipped),
        )


class NoValidCheckpointError(StorageError):
    """Every candidate checkpoint failed to verify; the message names every file.

    Attributes:
        where: The job folder (or job) whose checkpoints were tried.
        skipped: Each checkpoint and why it failed, newest first.
    """

    def __init__(self, where: str, skipped: Iterable[SkippedCheckpoint]) -> None:
        """Build the error."""
        self.where = where
        self.skipped = tuple(skipped)
        reasons = "; ".join(
            f"checkpoint {s.candidate.checkpoint_id}: {s.reason}" for s in self.skipped
        )
        super().__init__(
            f"no valid checkpoint at {where}: every one failed to verify: {reasons}; "
            f"restore from a savepoint or an intact copy of a checkpoint"
        )

    def __reduce__(self) -> tuple[type[NoValidCheckpointError], tuple[object, ...]]:  # type: ignore[override]
        return (type(self), (self.where, self.skipped))


@dataclass(frozen=True, slots=True)
class RecoveryDecision:
    """The planner's answer.

    Attributes:
        chosen: The checkpoint to restore, or None (no candidate at all).
        skipped: The newer candidates that failed to verify, newest first.
        committed: The newest checkpoint whose completion may have been notified.
        older_than_committed: Whether ``chosen`` is older than ``committed`` (allowed
            because the sinks skip what they committed, or forced).
        forced: Whether it was allowed only because the caller forced it.
    """

    chosen: Candidate | None
    skipped: tuple[SkippedCheckpoint, ...]
    committed: int | None
    older_than_committed: bool = False
    forced: bool = False

    def warnings(self) -> list[str]:
        """One line per skipped checkpoint, and one if the choice goes back past output."""
        lines = [f"{s.message}; trying an older one" for s in self.skipped]
        if self.older_than_committed and self.chosen is not None:
            chosen = self.chosen.checkpoint_id
            if self.forced:
                note = (
                    f"restoring checkpoint {chosen}, older than checkpoint {self.committed} "
                    f"whose completion may have been notified (forced with "
                    f"allow_older_than_committed): two-phase-commit sinks that cannot "
                    f"skip their committed output write it again"
                )
            else:
                note = (
                    f"restoring checkpoint {chosen}, older than checkpoint {self.committed} "
                    f"whose completion may have been notified: the job's two-phase-commit "
                    f"sinks, if any, set aside the output they committed after checkpoint "
                    f"{chosen} (FileSink: into its .superseded folder) and write it again "
                    f"once"
                )
            # One warning per skipped checkpoint: the note goes with the last one.
            if lines:
                lines[-1] = f"{lines[-1]}; {note}"
            else:
                lines.append(note)
        return lines


class RecoveryPlanner:
    """Chooses the newest candidate that verifies, within the committed-output policy.

    Pure: no I/O. Hand out candidates with :meth:`candidates`, report failures with
    :meth:`reject`, accept one with :meth:`choose`, or call :meth:`give_up` when none is
    left.

    Args:
        candidates: The completed checkpoints that may be restored (any order).
        committed: The newest checkpoint whose completion may have been notified (None:
            none, or unknown); see :func:`committed_bound`.
        committed_pointer: Where that checkpoint is, for messages.
        sinks_skip_committed: Whether every two-phase-commit sink of the job skips the
            output it committed after the restored checkpoint (then going back is safe).
        allow_older_than_committed: Go back past notified output anyway.
        where: The folder or job the candidates belong to, for messages.
    """

    def __init__(
        self,
        candidates: Iterable[Candidate],
        *,
        committed: int | None = None,
        committed_pointer: str | None = None,
        sinks_skip_committed: bool = False,
        allow_older_than_committed: bool = False,
        where: str = "",
    ) -> None:
        self._candidates = sorted(set(candidates), key=lambda c: c.checkpoint_id, reverse=True)
        newest = self._candidates[0].checkpoint_id if self._candidates else None
        bounds = [n for n in (committed, newest) if n is not None]
        self.committed = max(bounds) if bounds else None
        if committed_pointer is None or (committed is not None and self.committed != committed):
            committed_pointer = next(
                (c.pointer for c in self._candidates if c.checkpoint_id == self.committed), None
            )
        self.committed_pointer = committed_pointer
        self.sinks_skip_committed = sinks_skip_committed
        self.allow_older_than_committed = allow_older_than_committed
        self.where = where
        self._skipped: list[SkippedCheckpoint] = []

    def candidates(self) -> list[Candidate]:
        """The candidates, newest first."""
        return list(self._candidates)

    def reject(self, candidate: Candidate, reason: str) -> None:
        """``candidate`` failed to verify; ``reason`` names the file and what failed."""
        self._skipped.append(SkippedCheckpoint(candidate, reason))

    def choose(self, candidate: Candidate) -> RecoveryDecision:
        """Accept ``candidate`` (it verified), if the policy allows it.

        Raises:
            RestoreRefusedError: It is older than a checkpoint whose completion may have
                been notified, and neither the sinks nor the caller allow that.
        """
        return self._decide(candidate)

    def give_up(self) -> RecoveryDecision:
        """No candidate verified (or there was none).

        Returns:
            A decision with ``chosen=None`` when there were no candidates and nothing
            was committed (start from nothing).

        Raises:
            NoValidCheckpointError: Candidates existed and every one failed; names each.
            RestoreRefusedError: Nothing to restore, but output was committed already.
        """
        if self._skipped and not self.allow_older_than_committed:
            raise NoValidCheckpointError(self.where, self._skipped)
        return self._decide(None)

    def _decide(self, chosen: Candidate | None) -> RecoveryDecision:
        committed = self.committed
        older = committed is not None and (chosen is None or chosen.checkpoint_id < committed)
        forced = False
        if older:
            # Sinks can skip their committed output only when they restore state.
            skips = self.sinks_skip_committed and chosen is not None
            if not skips:
                if not self.allow_older_than_committed:
                    assert committed is not None
                    raise RestoreRefusedError(
                        chosen, committed, self.committed_pointer, self._skipped
                    )
                forced = True
        return RecoveryDecision(chosen, tuple(self._skipped), committed, older, forced)


def plan_recovery(
    planner: RecoveryPlanner, verify: Callable[[Candidate], T]
) -> tuple[RecoveryDecision, T | None]:
    """Run ``planner`` with a blocking verifier: newest first until one verifies.

    Args:
        planner: The planner, with its candidates and policy.
        verify: Checks one candidate and returns what it loaded; raises a
            :class:`~storage.checkpoint.errors.StorageError` naming the file if it fails.
            A candidate deleted meanwhile (``CheckpointNotFoundError`` of its metadata)
            is passed over silently, as a concurrent discard.

    Returns:
        The decision and what ``verify`` returned for the chosen checkpoint.

    Raises:
        RestoreRefusedError: See :meth:`RecoveryPlanner.choose`.
        NoValidCheckpointError: See :meth:`RecoveryPlanner.give_up`.
    """
    for candidate in planner.candidates():
        try:
            loaded = verify(candidate)
        except CheckpointNotFoundError as error:
            if error.what == "checkpoint metadata":
                continue  # deleted since the listing: a concurrent discard
            planner.reject(candidate, str(error))
            continue
        except StorageError as error:
            planner.reject(candidate, str(error))
            continue
        return planner.choose(candidate), loaded
    return planner.give_up(), None


def job_candidates(job_dir: str | os.PathLike[str]) -> list[Candidate]:
    """The completed (``_metadata``) checkpoints of a job's folder. Blocks on a scan."""
    root = Path(job_dir)
    return [
        Candidate(n, str(root / checkpoint_dir_name(n))) for n in completed_checkpoint_ids(root)
    ]


class CheckpointScan(NamedTuple):
    """What :func:`find_latest_valid` found.

    Attributes:
        latest: The newest usable checkpoint's folder and metadata, or None.
        skipped: One message per newer checkpoint that was skipped because it failed to
            verify, newest first; each names the file and what failed.
    """

    latest: tuple[Path, CheckpointMetadata] | None
    skipped: tuple[str, ...]


def find_latest_valid(
    job_dir: str | os.PathLike[str], *, checksums: bool = False
) -> CheckpointScan:
    """Find the newest checkpoint of a job that verifies. Blocks on file I/O.

    The planner's choice without the committed-output policy (it lists; it does not
    restore). Skips silently the folders without ``_metadata`` (never completed); skips
    and reports those that fail :func:`~storage.checkpoint.verification.verify_checkpoint`
    (metadata, state file sizes, ``shared/`` files with their crc32; with
    ``checksums``, the state files' crc32 and frames too).

    Args:
        job_dir: The job's folder, ``<checkpoint dir>/<job id>``.
        checksums: Also read and checksum the state files (what a restore does).

    Returns:
        The newest usable checkpoint (or None) and a message per checkpoint skipped.
    """
    planner = RecoveryPlanner(job_candidates(job_dir), allow_older_than_committed=True)

    def verify(candidate: Candidate) -> CheckpointMetadata:
        return verify_checkpoint(candidate.pointer, candidate.checkpoint_id, checksums=checksums)

    decision, metadata = plan_recovery(planner, verify)
    skipped = tuple(s.message for s in decision.skipped)
    if decision.chosen is None or metadata is None:
        return CheckpointScan(None, skipped)
    return CheckpointScan((Path(decision.chosen.pointer), metadata), skipped)
