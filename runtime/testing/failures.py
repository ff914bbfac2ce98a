"""``FailureSchedule``: deterministic failures to inject into a job, each fired once.

A schedule is a list of ``InjectedFailure``s. Each names a **failure point** (by the
name it was given: ``failure_point(schedule, "count")``, or ``"sink"`` for a sink
wrapped with ``FailingSink``), optionally one subtask of it, a **phase**, and when in
that phase it fires:

=================  =========================================================
phase              the failure point raises
=================  =========================================================
``PROCESSING``     on a record, once ``after_records`` records went through
                   this subtask in this attempt (0 or None: on the first)
``SNAPSHOT``       in ``snapshot_state(n)`` (the checkpoint's synchronous
                   part; a sink has pre-committed its transaction already)
``AFTER_ACK``      in ``after_acknowledge(n)``: the subtask's state reached
                   the coordinator, which may complete the checkpoint anyway
``BEFORE_NOTIFY``  in ``notify_checkpoint_complete(n)``, before the sink
                   commits
``AFTER_NOTIFY``   in ``notify_checkpoint_complete(n)``, after it committed
``RESTORE``        in ``initialize_state`` of a restored subtask (after a
                   sink recovered its pending transactions)
=================  =========================================================

``checkpoint`` narrows a checkpoint phase to checkpoint ids ``>= checkpoint`` (and a
``PROCESSING`` failure to records after that checkpoint completed); ``after_records``
narrows any phase but ``RESTORE`` to moments after that many records went through.

Two rules make the number of restarts known in advance:

* every failure fires **at most once over the whole run**, whichever subtask copy and
  attempt reach it first (the schedule is shared by all of them: the runtime deep-copies
  function objects per subtask and attempt, and ``__deepcopy__`` returns the schedule
  itself);
* at most **one failure per attempt**: once one fired, the others wait for the next
  attempt (two failures racing in one attempt would cost one restart, not two).

So a job with a fixed-delay restart strategy restarts exactly ``len(schedule.fired)``
times; a failure whose moment never comes (a subtask that gets fewer records, a
checkpoint id never reached) does not fire and is listed in ``schedule.unfired``.

The schedule is a plain synchronous object (no I/O): ``check`` takes the site and the
moment and returns the failure to fire, if any; the wrappers in
``runtime.testing.injection`` raise ``InjectedFailureError`` for it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from runtime.errors import ConfigError


class Phase(enum.Enum):
    """When, in a subtask's life, an injected failure fires."""

    PROCESSING = "processing"
    SNAPSHOT = "snapshot"
    AFTER_ACK = "after_ack"
    BEFORE_NOTIFY = "before_notify"
    AFTER_NOTIFY = "after_notify"
    RESTORE = "restore"

    @property
    def is_checkpoint_phase(self) -> bool:
        """Whether the phase belongs to one checkpoint (``checkpoint`` bounds its id)."""
        return self in (
            Phase.SNAPSHOT,
            Phase.AFTER_ACK,
            Phase.BEFORE_NOTIFY,
            Phase.AFTER_NOTIFY,
        )


def _check_count(what: str, value: object, minimum: int) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < minimum
    ):
        raise ConfigError(f"InjectedFailure: {what} must be None or an int >= {minimum}")


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    """One failure to inject.

    Args:
        point: the failure point's name (``failure_point(..., name)``, ``"sink"``...).
        subtask: which subtask of it fails; None for whichever gets there first.
        phase: when it fails (see the module docstring).
        after_records: only once this many records went through the subtask in the
            current attempt (``PROCESSING``: that many pass, the next one fails).
        checkpoint: checkpoint phases: only for checkpoint ids ``>=`` this;
            ``PROCESSING``: only once that checkpoint completed.

    Raises:
        ConfigError: an argument is out of range, or does not apply to the phase.
    """

    point: str
    subtask: int | None = None
    phase: Phase = Phase.PROCESSING
    after_records: int | None = None
    checkpoint: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.point, str) or not self.point:
            raise ConfigError(f"InjectedFailure: point must be a non-empty str, got {self.point!r}")
        if not isinstance(self.phase, Phase):
            raise ConfigError(f"InjectedFailure: phase must be a Phase, got {self.phase!r}")
        _check_count("subtask", self.subtask, 0)
        _check_count("after_records", self.after_records, 0)
        _check_count("checkpoint", self.checkpoint, 1)
        if self.phase is Phase.RESTORE and (
            self.after_records is not None or self.checkpoint is not None
        ):
            raise ConfigError(
                "InjectedFailure: a RESTORE failure fires when a subtask is restored; "
                "drop after_records and checkpoint"
            )

    def describe(self) -> str:
        """``"'sink' subtask 1, before_notify, checkpoint >= 3"``, for messages."""
        parts = [
            f"{self.point!r} "
            + ("any subtask" if self.subtask is None else f"subtask {self.subtask}"),
            self.phase.value,
        ]
        if self.after_records is not None:
            parts.append(f"after {self.after_records} records")
        if self.checkpoint is not None:
            parts.append(f"checkpoint >= {self.checkpoint}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class FiredFailure:
    """A failure that fired: where and when.

    Attributes:
        failure: the scheduled failure.
        subtask: the subtask that raised.
        attempt: the attempt it raised in (0 for the first run).
        checkpoint_id: the checkpoint of a checkpoint phase, else None.
        records: records the subtask had seen in that attempt.
    """

    failure: InjectedFailure
    subtask: int
    attempt: int
    checkpoint_id: int | None
    records: int


class InjectedFailureError(RuntimeError):
    """Raised by a failure point when a scheduled failure fires.

    Attributes:
        fired: what fired, where and when.
    """

    def __init__(self, fired: FiredFailure) -> None:
        failure = fired.failure
        at = "" if fired.checkpoint_id is None else f" of checkpoint {fired.checkpoint_id}"
        super().__init__(
            f"injected failure at {failure.point!r} subtask {fired.subtask}, "
            f"{failure.phase.value}{at}, attempt {fired.attempt}, "
            f"after {fired.records} records"
        )
        self.fired = fired


class FailureSchedule:
    """The failures to inject into one run of a job; shared by every subtask and attempt.

    Args:
        failures: the failures, in any order (each fires at most once).

    Attributes:
        failures: the scheduled failures.
        fired: the failures that fired, in the order they fired.
    """

    def __init__(self, failures: Iterable[InjectedFailure] = ()) -> None:
        self.failures = tuple(failures)
        for failure in self.failures:
            if not isinstance(failure, InjectedFailure):
                raise ConfigError(
                    f"FailureSchedule: expected InjectedFailure objects, got {failure!r}"
                )
        self.fired: list[FiredFailure] = []
        self._done: set[int] = set()
        self._attempts: set[int] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> FailureSchedule:
        # Shared by every per-subtask copy of the functions that hold it.
        return self

    def __len__(self) -> int:
        return len(self.failures)

    def __repr__(self) -> str:
        return f"FailureSchedule({list(self.failures)!r}, fired={len(self.fired)})"

    def __iter__(self) -> Iterator[InjectedFailure]:
        return iter(self.failures)

    @property
    def unfired(self) -> list[InjectedFailure]:
        """The failures that have not fired (yet)."""
        return [f for index, f in enumerate(self.failures) if index not in self._done]

    def points(self) -> set[str]:
        """The failure points the schedule names."""
        return {failure.point for failure in self.failures}

    def watches(self, point: str, subtask: int, phase: Phase) -> bool:
        """Whether an unfired failure may still fire at this site and phase."""
        return any(
            index not in self._done
            and failure.point == point
            and failure.phase is phase
            and (failure.subtask is None or failure.subtask == subtask)
            for index, failure in enumerate(self.failures)
        )

    def check(
        self,
        point: str,
        subtask: int,
        attempt: int,
        phase: Phase,
        *,
        records: int,
        checkpoint_id: int | None = None,
        completed: int = 0,
    ) -> FiredFailure | None:
        """Decide whether a failure fires now; if so, mark it fired and return it.

        Args:
            point: the failure point's name.
            subtask: its subtask index.
            attempt: the current attempt (``RuntimeContext.attempt``).
            phase: the phase the subtask is in.
            records: records that went through the subtask in this attempt.
            checkpoint_id: the checkpoint of a checkpoint phase.
            completed: the newest checkpoint the subtask was told completed.
        """
        if attempt in self._attempts:
            return None  # one failure per attempt
        for index, failure in enumerate(self.failures):
            if index in self._done or failure.point != point or failure.phase is not phase:
                continue
            if failure.subtask is not None and failure.subtask != subtask:
                continue
            if failure.after_records is not None and records < failure.after_records:
                continue
            if failure.checkpoint is not None:
                reached = checkpoint_id if phase.is_checkpoint_phase else completed
                if reached is None or reached < failure.checkpoint:
                    continue
            fired = FiredFailure(failure, subtask, attempt, checkpoint_id, records)
            self._done.add(index)
            self._attempts.add(attempt)
            self.fired.append(fired)
            return fired
        return None

    def describe(self) -> str:
        """One line per failure, marked with whether it fired."""
        lines = []
        for index, failure in enumerate(self.failures):
            mark = "fired" if index in self._done else "not fired"
            lines.append(f"{failure.describe()} ({mark})")
        return "\n".join(lines) or "no failures"
