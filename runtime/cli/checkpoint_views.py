"""Flink's checkpoint JSON bodies, from a job's ``CheckpointStatistics``.

The HTTP API (:mod:`runtime.cli.api`) answers ``/jobs/{id}/checkpoints``,
``/jobs/{id}/checkpoints/details/{cid}`` (and ``.../subtasks/{vid}``) and
``/jobs/{id}/checkpoints/config`` with these views. Field names and units are Flink's:
durations in milliseconds, timestamps in milliseconds since the epoch, sizes in bytes,
``status`` in capitals. Weir adds what its dashboard charts and Flink's overview lacks:
each checkpoint's longest ``sync_duration``, ``async_duration``, ``alignment_duration``
and ``start_delay`` over its subtasks. ``processed_data`` and ``alignment_buffered`` are
not measured (0), nor is a subtask's acknowledgement time (null).

The statistics are the coordinator's (read through ``statistics_snapshot``): a
bounded history of the newest checkpoints; details of older ones are gone (404).
"""

from __future__ import annotations

from typing import Any

from runtime.checkpoint import CheckpointStatistics, CheckpointStats
from runtime.checkpoint.config import CheckpointConfig, ExternalizedCheckpointRetention
from runtime.checkpoint.events import SubtaskCheckpointMetrics
from runtime.checkpoint.ids import TaskId

__all__ = [
    "checkpoint_config_view",
    "checkpoint_details_view",
    "checkpoint_statistics_view",
    "subtask_details_view",
]

_CLASS = {
    "completed": ".CompletedCheckpointStatistics",
    "failed": ".FailedCheckpointStatistics",
    "in_progress": ".PendingCheckpointStatistics",
}


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _kind(stats: CheckpointStats) -> str:
    if stats.is_savepoint:
        return "SAVEPOINT"
    return "UNALIGNED_CHECKPOINT" if stats.unaligned else "CHECKPOINT"


def _summary_entry(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"min": 0, "max": 0, "avg": 0}
    ordered = sorted(values)
    middle = ordered[len(ordered) // 2]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "avg": round(sum(ordered) / len(ordered)),
        "p50": middle,
    }


def checkpoint_view(stats: CheckpointStats, num_subtasks: int) -> dict[str, Any]:
    """One checkpoint as Flink's history lists it (``num_subtasks``: the job's subtasks)."""
    status = stats.status.value
    end_to_end = _ms(stats.end_to_end_duration)
    trigger = round(stats.trigger_time * 1000)
    return {
        "className": _CLASS.get(status, ".CheckpointStatistics"),
        "id": stats.checkpoint_id,
        "status": status.upper(),
        "is_savepoint": stats.is_savepoint,
        "checkpoint_type": _kind(stats),
        "trigger_timestamp": trigger,
        "latest_ack_timestamp": None if end_to_end is None else trigger + end_to_end,
        "end_to_end_duration": end_to_end,
        "state_size": stats.state_size,
        "checkpointed_size": stats.state_size,
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": stats.in_flight_bytes,
        "num_subtasks": num_subtasks,
        "num_acknowledged_subtasks": len(stats.subtasks),
        "unaligned": stats.unaligned,
        "sync_duration": _ms(stats.max_sync_duration),
        "async_duration": _ms(stats.max_async_duration),
        "alignment_duration": _ms(stats.max_alignment_duration),
        "start_delay": _ms(stats.max_start_delay),
        "external_path": stats.external_pointer,
        "discarded": False,
        "failure_message": stats.failure,
        "failure_timestamp": (
            trigger + end_to_end if status == "failed" and end_to_end is not None else None
        ),
    }


def checkpoint_statistics_view(
    statistics: CheckpointStatistics | None, num_subtasks: int = 0
) -> dict[str, Any]:
    """Flink's ``/jobs/{id}/checkpoints`` body (all zeros when checkpointing is off)."""
    if statistics is None:
        counts = {
            "total": 0,
            "triggered": 0,
            "in_progress": 0,
            "completed": 0,
            "failed": 0,
            "restored": 0,
        }
        latest: dict[str, Any] = {
            "completed": None,
            "savepoint": None,
            "failed": None,
            "restored": None,
        }
        return {"counts": counts, "summary": _summary([]), "latest": latest, "history": []}
    c = statistics.counts
    history = list(statistics.history)

    def newest(status: str, savepoint: bool | None = None) -> dict[str, Any] | None:
        for stats in reversed(history):
            if stats.status.value == status and savepoint in (None, stats.is_savepoint):
                return checkpoint_view(stats, num_subtasks)
        return None

    restored = statistics.restored_from
    return {
        "counts": {
            "total": c.triggered,
            "triggered": c.triggered,
            "in_progress": c.in_progress,
            "completed": c.completed,
            "failed": c.failed,
            "restored": c.restored,
        },
        "summary": _summary([s for s in history if s.status.value == "completed"]),
        "latest": {
            "completed": newest("completed", False),
            "savepoint": newest("completed", True),
            "failed": newest("failed"),
            "restored": None if restored is None else {"external_path": restored},
        },
        "history": [checkpoint_view(s, num_subtasks) for s in reversed(history)],
    }


def _summary(completed: list[CheckpointStats]) -> dict[str, Any]:
    return {
        "checkpointed_size": _summary_entry([s.state_size for s in completed]),
        "state_size": _summary_entry([s.state_size for s in completed]),
        "end_to_end_duration": _summary_entry([_ms(s.end_to_end_duration) or 0 for s in completed]),
        "alignment_buffered": _summary_entry([]),
        "processed_data": _summary_entry([]),
        "persisted_data": _summary_entry([s.in_flight_bytes for s in completed]),
    }


def _subtask_view(index: int, metrics: SubtaskCheckpointMetrics | None) -> dict[str, Any]:
    if metrics is None:
        return {"index": index, "status": "pending_or_failed"}
    sync, async_ = _ms(metrics.sync_duration), _ms(metrics.async_duration)
    return {
        "index": index,
        "status": "completed",
        "ack_timestamp": None,
        "end_to_end_duration": None,
        "state_size": metrics.state_size,
        "checkpointed_size": metrics.state_size,
        "checkpoint": {"sync": sync, "async": async_},
        "alignment": {
            "buffered": 0,
            "processed": 0,
            "persisted": metrics.in_flight_bytes,
            "duration": _ms(metrics.alignment_duration),
        },
        "start_delay": _ms(metrics.start_delay),
        "unaligned_checkpoint": metrics.unaligned,
        "aborted": False,
    }


def subtask_details_view(
    stats: CheckpointStats, vertex_id: str, name: str, parallelism: int
) -> dict[str, Any]:
    """One vertex's part of a checkpoint, per subtask (Flink's ``.../subtasks/{vid}``)."""
    subtasks = [
        _subtask_view(i, stats.subtasks.get(TaskId(f"{vertex_id}:{i}"))) for i in range(parallelism)
    ]
    done = [s for s in subtasks if s["status"] == "completed"]
    return {
        "id": vertex_id,
        "name": name,
        "status": stats.status.value.upper(),
        "state_size": sum(s["state_size"] for s in done),
        "checkpointed_size": sum(s["state_size"] for s in done),
        "persisted_data": sum(s["alignment"]["persisted"] for s in done),
        "num_subtasks": parallelism,
        "num_acknowledged_subtasks": len(done),
        "summary": {
            "state_size": _summary_entry([s["state_size"] for s in done]),
            "checkpoint_duration": {
                "sync": _summary_entry([s["checkpoint"]["sync"] for s in done]),
                "async": _summary_entry([s["checkpoint"]["async"] for s in done]),
            },
            "alignment": {
                "duration": _summary_entry([s["alignment"]["duration"] for s in done]),
                "persisted": _summary_entry([s["alignment"]["persisted"] for s in done]),
            },
            "start_delay": _summary_entry([s["start_delay"] for s in done]),
        },
        "subtasks": subtasks,
    }


def checkpoint_details_view(
    stats: CheckpointStats, vertices: list[tuple[str, str, int]]
) -> dict[str, Any]:
    """Flink's ``/checkpoints/details/{cid}``: the checkpoint, per vertex and subtask.

    Args:
        stats: the checkpoint.
        vertices: the job's vertices: ``(id, name, parallelism)``.
    """
    body = checkpoint_view(stats, sum(p for _, _, p in vertices))
    body["tasks"] = {
        vid: subtask_details_view(stats, vid, name, parallelism)
        for vid, name, parallelism in vertices
    }
    return body


def checkpoint_config_view(config: CheckpointConfig, state_backend: str) -> dict[str, Any]:
    """Flink's ``/jobs/{id}/checkpoints/config`` body."""
    retention = config.retention
    return {
        "mode": config.mode.value,
        "interval": _ms(config.interval),
        "timeout": _ms(config.timeout),
        "min_pause": _ms(config.min_pause),
        "max_concurrent": config.max_concurrent,
        "externalization": {
            "enabled": retention is not ExternalizedCheckpointRetention.NO_EXTERNALIZED_CHECKPOINTS,
            "delete_on_cancellation": retention
            is ExternalizedCheckpointRetention.DELETE_ON_CANCELLATION,
        },
        "state_backend": state_backend,
        "checkpoint_storage": config.storage,
        "unaligned_checkpoints": config.unaligned,
        "aligned_checkpoint_timeout": _ms(config.aligned_timeout),
        "tolerable_failed_checkpoints": config.tolerable_failures,
        "checkpoints_after_tasks_finish": True,
        "retained": config.retained,
    }
