"""``JobStatus``, ``JobResult`` and ``JobFailedError``: what a job ends with.

``await env.execute(name)`` returns a ``JobResult`` (or raises ``JobFailedError``, which
carries one). The scheduler builds them; ``runtime.api.client.JobClient`` hands them out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors import ActorStatistics, ChannelStatistics
from runtime.checkpoint.stats import CheckpointStatistics
from runtime.errors import WeirError

if TYPE_CHECKING:
    pass


class SavepointFormat(enum.Enum):
    """How a savepoint stores state.

    ``CANONICAL``: msgspec only, independent of the state backend, readable without
    running user code or unpickling. ``NATIVE``: the state backend's own format (the
    one its checkpoints use), fastest to write and restore.
    """

    CANONICAL = "canonical"
    NATIVE = "native"


class JobStatus(enum.Enum):
    """A job's state, with Flink's names."""

    CREATED = "created"
    RUNNING = "running"
    FAILING = "failing"
    RESTARTING = "restarting"
    CANCELLING = "cancelling"
    CANCELED = "canceled"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the job is over."""
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)


@dataclass(slots=True)
class OperatorMetrics:
    """Records through one operator, summed over its subtasks and per subtask.

    Attributes:
        name: the operator's name.
        uid: its uid.
        parallelism: its number of subtasks.
        records_in: records it took in (sources: 0).
        records_out: records it emitted (sinks: 0).
        subtasks: ``(records_in, records_out)`` per subtask.
    """

    name: str
    uid: str
    parallelism: int
    records_in: int = 0
    records_out: int = 0
    subtasks: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class JobResult:
    """The outcome of a job.

    Attributes:
        job_name: the name given to ``execute``.
        job_id: a 32-hex-digit id, unique per run.
        status: ``FINISHED``, ``FAILED`` or ``CANCELED``.
        duration: seconds from start to end.
        operators: metrics per operator name.
        collected: records of each ``collect()`` sink, by sink name.
        tasks: time accounting of every subtask actor.
        channels: counters of every channel, by channel name.
        error: the failure's message, if the job failed.
        checkpoints: checkpoint statistics, if checkpointing was on.
        restarts: how many times the job restarted after a failure.
        failures: the failures that caused restarts (and the last one), oldest first.
    """

    job_name: str
    job_id: str
    status: JobStatus
    duration: float
    operators: dict[str, OperatorMetrics]
    collected: dict[str, list[Any]]
    tasks: list[ActorStatistics]
    channels: dict[str, ChannelStatistics]
    error: str | None = None
    checkpoints: CheckpointStatistics | None = None
    restarts: int = 0
    failures: list[str] = field(default_factory=list)

    def records_in(self, operator: str) -> int:
        """Records taken in by ``operator`` (all subtasks)."""
        return self.operators[operator].records_in

    def records_out(self, operator: str) -> int:
        """Records emitted by ``operator`` (all subtasks)."""
        return self.operators[operator].records_out

    def summary(self) -> str:
        """A short table of the job: status, duration, records per operator."""
        restarts = f", {self.restarts} restarts" if self.restarts else ""
        lines = [
            f"job {self.job_name!r} {self.status.value} in {self.duration:.3f} s{restarts}",
            f"  {'operator':<24} {'p':>3} {'records in':>12} {'records out':>12}",
        ]
        for metrics in self.operators.values():
            lines.append(
                f"  {metrics.name:<24} {metrics.parallelism:>3} "
                f"{metrics.records_in:>12,} {metrics.records_out:>12,}"
            )
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.checkpoints is not None:
            lines.append(self.checkpoints.summary())
        return "\n".join(lines)


class JobFailedError(WeirError):
    """The job failed. ``result`` holds its final ``JobResult``.

    Defined here, beside the ``JobResult`` it carries, so that ``runtime.errors`` imports
    nothing; it is part of the tree drawn in ``runtime.errors``.
    """

    def __init__(self, job_name: str, result: JobResult, cause: BaseException) -> None:
        super().__init__(f"job {job_name!r} failed: {cause}")
        self.result = result
        self.__cause__ = cause
