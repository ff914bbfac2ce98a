"""Flink's job JSON bodies: overview, job, vertex, backpressure and exceptions.

Built from a job's graph and the samples of :mod:`runtime.metrics.sampling`.

A vertex is an operator chain (what runs as one subtask actor), its id is its index in
the job graph (``"0"``, ``"1"``...; Flink's are 32 hex digits). Records are the chain's
first operator's input and last operator's output: ``read-records`` / ``write-records``
of a vertex add up every attempt of the job, a subtask's count its current attempt
only. ``read-bytes`` / ``write-bytes`` are the bytes of whole frames (header and payload
of buffers and events; not credits) that a subtask's channels read from / wrote to
other worker processes, summed the same way; in one process channels pass Python
objects and serialize nothing, so they are 0 (as Flink's chained operators count no
network bytes). ``*-bytes-complete`` says whether every subtask reported its counters
(see :class:`~runtime.scheduler.executor.NetworkBytes`). Ratios and rates are over the
latest window of the :class:`~runtime.metrics.sampling.LoadTracker` (about a second
between two reads).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from runtime.metrics.sampling import (
    BackpressureLevel,
    LoadTracker,
    SubtaskLoad,
    VertexSample,
    sample_job,
)

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution, NetworkBytes

__all__ = [
    "backpressure_view",
    "exceptions_view",
    "job_details_view",
    "job_overview",
    "overview_view",
    "vertex_view",
]

_LEVELS = list(BackpressureLevel)


def _now_ms() -> int:
    return round(time.time() * 1000)


def job_overview(execution: JobExecution) -> dict[str, Any]:
    """One job as ``GET /jobs`` lists it."""
    return {"id": execution.job_id, "name": execution.job_name, "status": _state(execution)}


def _state(execution: JobExecution) -> str:
    return str(execution.status.value).upper()


def overview_view(executions: list[JobExecution], version: str) -> dict[str, Any]:
    """``GET /overview``: the counts of jobs by status (one process: one task manager)."""
    counts = {"running": 0, "finished": 0, "canceled": 0, "failed": 0}
    for execution in executions:
        status = execution.status.value
        if status in counts:
            counts[status] += 1
        elif not execution.status.is_terminal:
            counts["running"] += 1
    return {
        "taskmanagers": 1,
        "slots-total": 0,
        "slots-available": 0,
        "jobs-running": counts["running"],
        "jobs-finished": counts["finished"],
        "jobs-cancelled": counts["canceled"],
        "jobs-failed": counts["failed"],
        "weir-version": version,
    }


def _loads(
    execution: JobExecution, vertex: VertexSample, tracker: LoadTracker
) -> list[SubtaskLoad]:
    return [tracker.load(execution.job_id, vertex.id, s) for s in vertex.subtasks]


def _vertex_level(loads: list[SubtaskLoad]) -> str:
    if not loads:
        return BackpressureLevel.OK.value
    return max((load.level for load in loads), key=_LEVELS.index).value


def _vertex_status(execution: JobExecution, vertex: VertexSample) -> str:
    states = {s.state for s in vertex.subtasks}
    if not states:
        return _state(execution) if execution.status.is_terminal else "CREATED"
    for state in ("failed", "running", "created", "cancelled"):
        if state in states:
            return "CANCELED" if state == "cancelled" else state.upper()
    return "FINISHED"


def _task_counts(vertex: VertexSample) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sample in vertex.subtasks:
        state = "CANCELED" if sample.state == "cancelled" else sample.state.upper()
        counts[state] = counts.get(state, 0) + 1
    return counts


def _vertex_body(
    execution: JobExecution,
    vertex: VertexSample,
    totals: dict[str, tuple[int, int]],
    network: dict[int, NetworkBytes],
    tracker: LoadTracker,
) -> dict[str, Any]:
    loads = _loads(execution, vertex, tracker)
    head, tail = vertex.operators[0][0], vertex.operators[-1][0]
    read = totals.get(head, (vertex.records_in, 0))[0]
    write = totals.get(tail, (0, vertex.records_out))[1]
    moved = network.get(int(vertex.id))
    if moved is None:  # not deployed yet: what its subtasks (if any) report
        bytes_in, bytes_out = vertex.bytes_in, vertex.bytes_out
        bytes_complete = all(s.bytes_complete for s in vertex.subtasks)
    else:
        bytes_in, bytes_out, bytes_complete = moved.bytes_in, moved.bytes_out, moved.complete
    count = max(1, len(loads))
    return {
        "id": vertex.id,
        "name": vertex.name,
        "parallelism": vertex.parallelism,
        "maxParallelism": getattr(getattr(execution, "graph", None), "max_parallelism", None),
        "status": _vertex_status(execution, vertex),
        "start-time": -1,
        "end-time": -1,
        "duration": -1,
        "tasks": _task_counts(vertex),
        "operators": [{"name": name, "uid": uid} for name, uid in vertex.operators],
        "inputs": [{"id": vid, "ship_strategy": how.upper()} for vid, how in vertex.inputs],
        "metrics": {
            "read-bytes": bytes_in,
            "read-bytes-complete": bytes_complete,
            "write-bytes": bytes_out,
            "write-bytes-complete": bytes_complete,
            "read-records": read,
            "read-records-complete": True,
            "write-records": write,
            "write-records-complete": True,
            "records-in-per-second": round(sum(x.records_in_per_second for x in loads), 1),
            "records-out-per-second": round(sum(x.records_out_per_second for x in loads), 1),
            "busyRatio": round(sum(x.busy for x in loads) / count, 3),
            "idleRatio": round(sum(x.idle for x in loads) / count, 3),
            "backPressuredRatio": round(sum(x.backpressured for x in loads) / count, 3),
            "queued-in-buffers": vertex.queued_in,
            "input-capacity-buffers": vertex.capacity_in,
        },
        "backpressure-level": _vertex_level(loads),
    }


def job_details_view(execution: JobExecution, tracker: LoadTracker) -> dict[str, Any]:
    """``GET /jobs/{id}``: the job, its vertices with their metrics, and its plan."""
    totals = {m.name: (m.records_in, m.records_out) for m in execution.operator_metrics().values()}
    network = execution.network_bytes()
    vertices = [_vertex_body(execution, v, totals, network, tracker) for v in sample_job(execution)]
    status_counts: dict[str, int] = {}
    for vertex in vertices:
        status_counts[vertex["status"]] = status_counts.get(vertex["status"], 0) + 1
    return {
        "jid": execution.job_id,
        "name": execution.job_name,
        "state": _state(execution),
        "isStoppable": not execution.status.is_terminal,
        "now": _now_ms(),
        "restarts": execution.restarts,
        "failures": list(execution.failures),
        "vertices": vertices,
        "status-counts": status_counts,
        "plan": {
            "jid": execution.job_id,
            "name": execution.job_name,
            "nodes": [
                {
                    "id": v["id"],
                    "parallelism": v["parallelism"],
                    "operator": "",
                    "description": v["name"],
                    "inputs": [
                        {"num": i, "id": edge["id"], "ship_strategy": edge["ship_strategy"]}
                        for i, edge in enumerate(v["inputs"])
                    ],
                }
                for v in vertices
            ],
        },
    }


def vertex_view(
    execution: JobExecution, vertex: VertexSample, tracker: LoadTracker
) -> dict[str, Any]:
    """``GET /jobs/{id}/vertices/{vid}``: the vertex and each of its subtasks."""
    subtasks = []
    for sample, load in zip(vertex.subtasks, _loads(execution, vertex, tracker), strict=True):
        subtasks.append(
            {
                "subtask": sample.subtask,
                "name": sample.name,
                "status": "CANCELED" if sample.state == "cancelled" else sample.state.upper(),
                "attempt": execution.restarts,
                "host": "localhost",
                "metrics": {
                    "read-bytes": sample.bytes_in,
                    "read-bytes-complete": sample.bytes_complete,
                    "write-bytes": sample.bytes_out,
                    "write-bytes-complete": sample.bytes_complete,
                    "read-records": sample.records_in,
                    "write-records": sample.records_out,
                    "records-in-per-second": round(load.records_in_per_second, 1),
                    "records-out-per-second": round(load.records_out_per_second, 1),
                    "accumulated-busy-time": round(sample.busy_seconds * 1000),
                    "accumulated-idle-time": round(sample.idle_seconds * 1000),
                    "accumulated-backpressured-time": round(sample.backpressured_seconds * 1000),
                    "busyRatio": round(load.busy, 3),
                    "idleRatio": round(load.idle, 3),
                    "backPressuredRatio": round(load.backpressured, 3),
                },
                "backpressure-level": load.level.value,
            }
        )
    return {
        "id": vertex.id,
        "name": vertex.name,
        "parallelism": vertex.parallelism,
        "maxParallelism": getattr(getattr(execution, "graph", None), "max_parallelism", None),
        "now": _now_ms(),
        "operators": [{"name": name, "uid": uid} for name, uid in vertex.operators],
        "subtasks": subtasks,
    }


def backpressure_view(
    execution: JobExecution, vertex: VertexSample, tracker: LoadTracker
) -> dict[str, Any]:
    """``GET /jobs/{id}/vertices/{vid}/backpressure``, with Flink's levels and ratios."""
    loads = _loads(execution, vertex, tracker)
    level = _vertex_level(loads)
    return {
        "status": "ok",
        "backpressure-level": level,
        "backpressureLevel": level,
        "end-timestamp": _now_ms(),
        "subtasks": [
            {
                "subtask": sample.subtask,
                "attempt-number": execution.restarts,
                "backpressure-level": load.level.value,
                "backpressureLevel": load.level.value,
                "ratio": round(load.backpressured, 3),
                "backPressuredRatio": round(load.backpressured, 3),
                "idleRatio": round(load.idle, 3),
                "busyRatio": round(load.busy, 3),
            }
            for sample, load in zip(vertex.subtasks, loads, strict=True)
        ],
    }


def _exception_name(failure: str) -> str:
    head = failure.split(":", 1)[0].strip()
    return head if head.replace(".", "").replace("_", "").isalnum() and " " not in head else ""


def exceptions_view(execution: JobExecution) -> dict[str, Any]:
    """``GET /jobs/{id}/exceptions``: the failures that caused restarts, newest first.

    Weir keeps each failure's message, not when it happened nor its stack trace:
    ``timestamp`` is null, ``stacktrace`` the message.
    """
    failures = list(execution.failures)
    entries = [
        {
            "exceptionName": _exception_name(failure),
            "stacktrace": failure,
            "timestamp": None,
            "taskName": None,
            "location": None,
        }
        for failure in reversed(failures)
    ]
    return {
        "root-exception": failures[-1] if failures else None,
        "timestamp": None,
        "all-exceptions": [{"exception": e["stacktrace"], "task": None} for e in entries],
        "truncated": False,
        "restarts": execution.restarts,
        "exceptionHistory": {"entries": entries, "truncated": False},
    }
