"""The live progress line of ``weir run`` on a terminal: records/s, checkpoints, backpressure.

While the script's jobs run, one line per running job on standard error, redrawn every
second (rich ``Live``): records per second out of its sources and into its sinks,
checkpoints completed and failed, and the vertex with the highest backpressure level.
It runs as a task in the jobs' event loop (started when the first job registers, like
the HTTP API) and reads what the API reads (:mod:`runtime.metrics`). Log records go
through the same console, above the line. Only on a terminal: elsewhere (a pipe, a file,
CI) ``weir run`` prints exactly what it printed without it; ``--no-progress`` turns it
off on a terminal too.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from runtime.api.overrides import JOBS, JobRegistry
from runtime.metrics import BackpressureLevel, LoadTracker, sample_job

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = ["REFRESH_SECONDS", "RunProgress", "progress_line"]

REFRESH_SECONDS = 1.0
"""How often the line is redrawn."""

_COLOURS = {"ok": "green", "low": "yellow", "high": "red"}


def _flows(execution: JobExecution) -> tuple[int, int]:
    """Records out of the job's sources and into its sinks so far (every attempt)."""
    graph = getattr(execution, "graph", None)
    if graph is None:
        return 0, 0
    metrics = execution.operator_metrics()
    out = sum(
        metrics[v.nodes[0].name].records_out
        for v in graph.vertices
        if not v.inputs and v.nodes[0].name in metrics
    )
    into = sum(
        metrics[v.nodes[-1].name].records_in
        for v in graph.vertices
        if not v.outputs and v.nodes[-1].name in metrics
    )
    return out, into


def progress_line(
    execution: JobExecution, tracker: LoadTracker, rates: tuple[float, float] | None
) -> Text:
    """One job's line: status, records/s, checkpoints, the worst backpressure.

    Args:
        execution: the job.
        tracker: the backpressure ratios' windows.
        rates: records/s out of its sources and into its sinks (None: not measured yet).
    """
    levels = list(BackpressureLevel)
    worst: tuple[int, str, str] = (-1, "", "ok")
    for vertex in sample_job(execution):
        for sample in vertex.subtasks:
            level = tracker.load(execution.job_id, vertex.id, sample).level
            if levels.index(level) > worst[0]:
                worst = (levels.index(level), vertex.name, level.value)
    line = Text()
    line.append(f"{execution.job_name} ", style="bold")
    line.append(f"{execution.status.value}")
    if rates is not None:
        line.append(f" · sources {rates[0]:,.0f} rec/s · sinks {rates[1]:,.0f} rec/s")
    coordinator = getattr(execution, "coordinator", None)
    if coordinator is not None:
        counts = coordinator.statistics_snapshot().counts
        line.append(f" · checkpoints {counts.completed} completed")
        if counts.failed:
            line.append(f", {counts.failed} failed", style="red")
    if execution.restarts:
        line.append(f" · {execution.restarts} restarts", style="yellow")
    if worst[0] >= 0:
        line.append(" · backpressure ")
        line.append(worst[2], style=_COLOURS[worst[2]])
        if worst[2] != "ok":
            line.append(f" at {worst[1]!r}")
    return line


class RunProgress:
    """Draws :func:`progress_line` for every running job while the script runs.

    Args:
        console: the terminal's stderr console (shared with the log handler).
        registry: the jobs.
    """

    def __init__(self, console: Console, registry: JobRegistry = JOBS) -> None:
        self.console = console
        self.registry = registry
        self.tracker = LoadTracker()
        self._flows: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_job_registered(self, execution: JobExecution) -> None:
        """Start drawing in the running loop, unless already drawing there. Never blocks."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        self._loop = loop
        self._task = loop.create_task(self._draw(), name="weir progress")

    def running(self) -> list[JobExecution]:
        """The jobs that have not ended."""
        return [e for e in self.registry.executions.values() if not e.status.is_terminal]

    def _rate(self, execution: JobExecution) -> tuple[float, float] | None:
        now = time.monotonic()
        out, into = _flows(execution)
        last = self._flows.get(execution.job_id)
        if last is None or now - last[0] >= REFRESH_SECONDS * 0.9:
            if last is not None:
                elapsed = now - last[0]
                self._rates[execution.job_id] = (
                    max(0, out - last[1]) / elapsed,
                    max(0, into - last[2]) / elapsed,
                )
            self._flows[execution.job_id] = (now, out, into)
        return self._rates.get(execution.job_id)

    def render(self) -> Group:
        """The lines of the running jobs now."""
        return Group(*(progress_line(e, self.tracker, self._rate(e)) for e in self.running()))

    async def _draw(self) -> None:
        # Ends when no job runs (a job registering later starts it again), or is
        # cancelled when the script's main() returns: leaving the Live clears the line.
        # The script's prints go above the line only when stdout is this terminal too
        # (redirecting a piped stdout would send it to stderr).
        with Live(
            self.render(),
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        ) as live:
            live.refresh()
            while self.running():
                await asyncio.sleep(REFRESH_SECONDS)
                live.update(self.render(), refresh=True)
