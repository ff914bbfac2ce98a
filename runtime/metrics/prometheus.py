"""``/metrics``: the jobs of this process in Prometheus's text format, Flink's names.

A ``prometheus_client`` collector that reads the jobs of a
:class:`~runtime.api.overrides.JobRegistry` when it is scraped (nothing is counted on the
record path: it reads the counters :mod:`runtime.metrics.sampling` reads). Names follow
Flink's Prometheus reporter with ``weir`` in place of ``flink``: job-level metrics are
``weir_jobmanager_job_<name>`` (labels ``job_id``, ``job_name``), subtask-level ones
``weir_taskmanager_job_task_<name>`` (plus ``task_name``, the vertex, and
``subtask_index``), operator totals ``weir_taskmanager_job_task_operator_<name>``
(plus ``operator_name``). :data:`METRICS` lists every name with its meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.checkpoint.events import SubtaskCheckpointMetrics
from runtime.checkpoint.ids import TaskId
from runtime.metrics.sampling import LoadTracker, sample_job

if TYPE_CHECKING:
    from runtime.api.overrides import JobRegistry
    from runtime.scheduler.executor import JobExecution

__all__ = ["CONTENT_TYPE", "METRICS", "JobsCollector", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of Prometheus's text format."""

JOB = "weir_jobmanager_job_"
TASK = "weir_taskmanager_job_task_"
OPERATOR = "weir_taskmanager_job_task_operator_"

METRICS: dict[str, str] = {
    f"{JOB}numRestarts": "restarts of the job after failures",
    f"{JOB}totalNumberOfCheckpoints": "checkpoints triggered (savepoints included)",
    f"{JOB}numberOfCompletedCheckpoints": "checkpoints completed",
    f"{JOB}numberOfFailedCheckpoints": "checkpoints failed",
    f"{JOB}numberOfInProgressCheckpoints": "checkpoints in progress",
    f"{JOB}lastCheckpointDuration": "end-to-end duration of the latest completed checkpoint (ms)",
    f"{JOB}lastCheckpointSize": "state size of the latest completed checkpoint (bytes)",
    f"{JOB}lastCheckpointPersistedData": "in-flight data the latest completed checkpoint "
    "persisted (bytes, unaligned)",
    f"{JOB}lastCheckpointAlignmentTime": "longest alignment of the latest completed "
    "checkpoint (ms)",
    f"{TASK}numRecordsIn": "records the subtask's first operator took in (this attempt)",
    f"{TASK}numRecordsOut": "records the subtask's last operator emitted (this attempt)",
    f"{TASK}numBytesIn": "bytes the subtask read from other worker processes: whole frames "
    "of buffers and events (this attempt; 0 in one process, where channels carry objects)",
    f"{TASK}numBytesOut": "bytes the subtask wrote to other worker processes: whole frames "
    "of buffers and events (this attempt; 0 in one process)",
    f"{TASK}accumulateBusyTimeMs": "time the subtask ran (ms, this attempt)",
    f"{TASK}accumulateIdleTimeMs": "time the subtask waited for input (ms, this attempt)",
    f"{TASK}accumulateBackPressuredTimeMs": "time the subtask waited for room in an output "
    "(ms, this attempt)",
    f"{TASK}busyTimeMsPerSecond": "busy ms per second over the latest window (about 1 s)",
    f"{TASK}idleTimeMsPerSecond": "idle ms per second over the latest window",
    f"{TASK}backPressuredTimeMsPerSecond": "backpressured ms per second over the latest window",
    f"{TASK}checkpointAlignmentTime": "alignment of the subtask in the latest completed "
    "checkpoint (ns)",
    f"{TASK}checkpointStartDelayNanos": "delay from trigger to the first barrier at the "
    "subtask in the latest completed checkpoint (ns)",
    f"{OPERATOR}numRecordsIn": "records the operator took in, over every attempt",
    f"{OPERATOR}numRecordsOut": "records the operator emitted, over every attempt",
}
"""Every metric ``/metrics`` exports, with its meaning."""

_JOB_LABELS = ["job_id", "job_name"]
_TASK_LABELS = [*_JOB_LABELS, "task_name", "subtask_index"]
_OPERATOR_LABELS = [*_JOB_LABELS, "operator_name"]


def _gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name], labels=labels)


class JobsCollector(Collector):
    """Collects :data:`METRICS` of every job in ``registry`` at each scrape.

    Args:
        registry: the jobs.
        tracker: where the per-second ratios come from (shared with the HTTP API, so
            that ``/metrics`` and the backpressure view agree).
    """

    def __init__(self, registry: JobRegistry, tracker: LoadTracker) -> None:
        self.registry = registry
        self.tracker = tracker

    def collect(self) -> Iterator[Metric]:
        """The metric families now (runs in the scraping request's handler)."""
        families = {
            name: _gauge(
                name,
                _JOB_LABELS
                if name.startswith(JOB)
                else _OPERATOR_LABELS
                if name.startswith(OPERATOR)
                else _TASK_LABELS,
            )
            for name in METRICS
        }
        for execution in list(self.registry.executions.values()):
            self._collect_job(execution, families)
        yield from families.values()

    def _collect_job(self, execution: JobExecution, families: dict[str, GaugeMetricFamily]) -> None:
        job = [execution.job_id, execution.job_name]
        families[f"{JOB}numRestarts"].add_metric(job, execution.restarts)
        latest_subtasks: dict[TaskId, SubtaskCheckpointMetrics] = {}
        coordinator = getattr(execution, "coordinator", None)
        if coordinator is not None:
            statistics = coordinator.statistics_snapshot()
            counts = statistics.counts
            families[f"{JOB}totalNumberOfCheckpoints"].add_metric(job, counts.triggered)
            families[f"{JOB}numberOfCompletedCheckpoints"].add_metric(job, counts.completed)
            families[f"{JOB}numberOfFailedCheckpoints"].add_metric(job, counts.failed)
            families[f"{JOB}numberOfInProgressCheckpoints"].add_metric(job, counts.in_progress)
            latest = statistics.latest_completed
            if latest is not None:
                duration = (latest.end_to_end_duration or 0.0) * 1000
                families[f"{JOB}lastCheckpointDuration"].add_metric(job, duration)
                families[f"{JOB}lastCheckpointSize"].add_metric(job, latest.state_size)
                families[f"{JOB}lastCheckpointPersistedData"].add_metric(
                    job, latest.in_flight_bytes
                )
                families[f"{JOB}lastCheckpointAlignmentTime"].add_metric(
                    job, latest.max_alignment_duration * 1000
                )
                latest_subtasks = latest.subtasks
        for vertex in sample_job(execution):
            for sample in vertex.subtasks:
                labels = [*job, vertex.name, str(sample.subtask)]
                load = self.tracker.load(execution.job_id, vertex.id, sample)
                values = {
                    "numRecordsIn": sample.records_in,
                    "numRecordsOut": sample.records_out,
                    "accumulateBusyTimeMs": sample.busy_seconds * 1000,
                    "accumulateIdleTimeMs": sample.idle_seconds * 1000,
                    "accumulateBackPressuredTimeMs": sample.backpressured_seconds * 1000,
                    "busyTimeMsPerSecond": load.busy * 1000,
                    "idleTimeMsPerSecond": load.idle * 1000,
                    "backPressuredTimeMsPerSecond": load.backpressured * 1000,
                }
                if sample.bytes_complete:  # unknown (its worker not heard from): no figure
                    values["numBytesIn"] = sample.bytes_in
                    values["numBytesOut"] = sample.bytes_out
                metrics = latest_subtasks.get(TaskId(f"{vertex.id}:{sample.subtask}"))
                if metrics is not None:
                    values["checkpointAlignmentTime"] = metrics.alignment_duration * 1e9
                    values["checkpointStartDelayNanos"] = metrics.start_delay * 1e9
                for name, value in values.items():
                    families[f"{TASK}{name}"].add_metric(labels, value)
        for operator in execution.operator_metrics().values():
            labels = [*job, operator.name]
            families[f"{OPERATOR}numRecordsIn"].add_metric(labels, operator.records_in)
            families[f"{OPERATOR}numRecordsOut"].add_metric(labels, operator.records_out)


def exposition(registry: JobRegistry, tracker: LoadTracker) -> bytes:
    """The body of ``GET /metrics``: every job of ``registry``, in the text format."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(JobsCollector(registry, tracker))
    return generate_latest(collectors)
