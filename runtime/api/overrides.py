"""Process-wide defaults set by the ``weir`` command line, and the registry of jobs.

``weir run JOB.py -p 4 --checkpoint-dir DIR --from-savepoint PATH`` cannot reach into
the job script, so it sets ``OVERRIDES`` before running it, as Flink's CLI does with
its ``-p`` and ``-s`` options:

* ``parallelism``: the default parallelism of every ``StreamEnvironment`` made
  without an explicit one;
* ``checkpoint_dir``: checkpoint storage for jobs that enable checkpointing without a
  ``storage`` option;
* ``restore_from`` / ``allow_non_restored_state``: what ``execute`` / ``start`` restore
  from when the script does not say.

``JOBS`` holds the running and finished jobs of this process (by id), so the command
line's HTTP API can list and control them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution


@dataclass(slots=True)
class ExecutionOverrides:
    """Defaults the command line imposes on every job of the process (None: none)."""

    parallelism: int | None = None
    checkpoint_dir: str | None = None
    restore_from: str | None = None
    allow_non_restored_state: bool = False

    def clear(self) -> None:
        """Forget every override."""
        self.parallelism = None
        self.checkpoint_dir = None
        self.restore_from = None
        self.allow_non_restored_state = False


@dataclass(slots=True)
class JobRegistry:
    """The jobs of this process, by job id, in start order."""

    executions: dict[str, JobExecution] = field(default_factory=dict)

    def register(self, execution: JobExecution) -> None:
        """Add a job (called when it is started)."""
        self.executions[execution.job_id] = execution

    def get(self, job_id: str) -> JobExecution | None:
        """The job with id ``job_id`` (a unique prefix is enough), or None."""
        if job_id in self.executions:
            return self.executions[job_id]
        matches = [e for i, e in self.executions.items() if i.startswith(job_id)]
        return matches[0] if len(matches) == 1 else None


OVERRIDES = ExecutionOverrides()
JOBS = JobRegistry()
