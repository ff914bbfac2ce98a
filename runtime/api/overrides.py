"""Process-wide defaults set by the ``weir`` command line, and the registry of jobs.

``weir run JOB.py -p 4 --checkpoint-dir DIR --from-savepoint PATH`` cannot reach into
the job script, so it sets ``OVERRIDES`` before running it, as Flink's CLI does with
its ``-p`` and ``-s`` options:

* ``parallelism``: the default parallelism of every ``StreamEnvironment`` made
  without an explicit one;
* ``workers``: the default number of worker processes (``--workers``);
* ``checkpoint_dir``: checkpoint storage for jobs that enable checkpointing without a
  ``storage`` option;
* ``restore_from`` / ``allow_non_restored_state``: what ``execute`` / ``start`` restore
  from when the script does not say;
* ``allow_older_than_committed``: let recovery go back past output that
  two-phase-commit sinks committed (``weir run --allow-older-than-committed``);
* ``config``: options set with ``-D key=value`` (and ``--checkpoint-interval``...), by
  option name, already parsed (``runtime.api.config_keys``): defaults of every
  environment; what the script sets explicitly wins, with a warning.

``JOBS`` holds the running and finished jobs of this process (by id), so the command
line's HTTP API can list and control them. ``JOBS.add_listener`` lets the command line
hear of each job as it registers, in the job's own event loop: ``weir run`` starts its
HTTP API that way, lazily, in the event loop of the script's first job (a job script
runs its own ``asyncio.run``, so no loop exists before it). The runtime never imports
the command line; it only calls what was registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

JobListener = Callable[["JobExecution"], None]
"""Called with each job as it registers, inside the job's running event loop."""


@dataclass(slots=True)
class ExecutionOverrides:
    """Defaults the command line imposes on every job of the process (None: none)."""

    parallelism: int | None = None
    workers: int | None = None
    checkpoint_dir: str | None = None
    restore_from: str | None = None
    allow_non_restored_state: bool = False
    allow_older_than_committed: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget every override."""
        self.parallelism = None
        self.workers = None
        self.checkpoint_dir = None
        self.restore_from = None
        self.allow_non_restored_state = False
        self.allow_older_than_committed = False
        self.config = {}


FINISHED_JOBS_KEPT = 100
"""How many ended jobs :class:`JobRegistry` keeps for listing (the newest)."""


@dataclass(slots=True)
class JobRegistry:
    """The jobs of this process, by job id, in start order."""

    executions: dict[str, JobExecution] = field(default_factory=dict)
    listeners: list[JobListener] = field(default_factory=list)

    def register(self, execution: JobExecution) -> None:
        """Add a job and tell the listeners (called by ``execute`` / ``start``).

        Runs in the job's event loop, before the job is deployed. A listener must not
        block; what it raises is raised to the caller of ``execute`` / ``start``. Of the
        jobs that have ended, the newest :data:`FINISHED_JOBS_KEPT` are kept (Flink's
        history keeps a bounded number too); older ones are forgotten.
        """
        self.executions[execution.job_id] = execution
        ended = [i for i, e in self.executions.items() if e.status.is_terminal]
        for job_id in ended[: max(0, len(ended) - FINISHED_JOBS_KEPT)]:
            del self.executions[job_id]
        for listener in list(self.listeners):
            listener(execution)

    def add_listener(self, listener: JobListener) -> None:
        """Call ``listener(execution)`` for every job registered from now on."""
        self.listeners.append(listener)

    def remove_listener(self, listener: JobListener) -> None:
        """Stop calling ``listener``; a listener never added is ignored."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def get(self, job_id: str) -> JobExecution | None:
        """The job with id ``job_id`` (a unique prefix is enough), or None."""
        if job_id in self.executions:
            return self.executions[job_id]
        matches = [e for i, e in self.executions.items() if i.startswith(job_id)]
        return matches[0] if len(matches) == 1 else None


OVERRIDES = ExecutionOverrides()
JOBS = JobRegistry()
