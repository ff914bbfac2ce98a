"""The HTTP API a running job serves: Flink's REST paths over this process's jobs.

``weir run`` serves it (``runtime.cli.server``) in the event loop of the job script, so
every handler runs in the jobs' own loop and calls their ``JobClient`` directly. The jobs
are those of ``runtime.api.overrides.JOBS``; a job id is its 32 hex digits, or a prefix
of at least :data:`MIN_JOB_ID_PREFIX` of them that only one job has. Every answer is
JSON; every error is ``{"errors": [message]}`` as in Flink. Which requests are answered
at all (Host, Origin, Content-Type, token) is :mod:`runtime.cli.guard`'s decision.

=======  ==========================  ==================================================
method   path                        what
=======  ==========================  ==================================================
GET      /jobs                       ``{"jobs": [{"id", "name", "status"}]}``
GET      /jobs/{id}                  status, restarts, failures, operators' records
PATCH    /jobs/{id}?mode=cancel      cancel the job (202)
GET      /jobs/{id}/checkpoints      counts, latest, history (seconds, not Flink's ms)
POST     /jobs/{id}/checkpoints      trigger a checkpoint; answers when it completed
POST     /jobs/{id}/savepoints       ``{"target-directory", "format"}``: a savepoint
POST     /jobs/{id}/stop             ``{"targetDirectory", "drain"}``: stop with one
=======  ==========================  ==================================================

Flink answers a trigger with a request id to poll; the jobs here live in the server's
own process, so the POSTs wait for the outcome and answer with what that poll would give
(``{"status": {"id": "COMPLETED"}, "operation": {"checkpointId", "location"}}``).

Errors: 404 unknown job or path, 405 wrong method, 400 a malformed body or target
folder, 403 a target folder outside the allowed ones (``runtime.cli.targets``), 409 a job
that is not running, 500 a checkpoint or savepoint that failed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.api.overrides import JOBS, JobRegistry
from runtime.api.result import JobClient, JobStatus, SavepointFormat
from runtime.checkpoint import CheckpointError, CheckpointStatistics, CheckpointStats
from runtime.cli.targets import SavepointTargets, TargetRejected

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = ["MIN_JOB_ID_PREFIX", "ApiError", "checkpoint_statistics_view", "create_app"]

MIN_JOB_ID_PREFIX = 8
"""The shortest job id prefix the API accepts (a one-character prefix picked any job)."""


class ApiError(Exception):
    """An answer with an error status and ``{"errors": [message]}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- views ----------------------------------------------------------------------------------


def _job_overview(execution: JobExecution) -> dict[str, Any]:
    return {"id": execution.job_id, "name": execution.job_name, "status": execution.status.value}


def _job_details(execution: JobExecution) -> dict[str, Any]:
    return {
        "jid": execution.job_id,
        "name": execution.job_name,
        "state": execution.status.value,
        "restarts": execution.restarts,
        "failures": list(execution.failures),
        "vertices": [
            {
                "name": metrics.name,
                "uid": metrics.uid,
                "parallelism": metrics.parallelism,
                "metrics": {
                    "read-records": metrics.records_in,
                    "write-records": metrics.records_out,
                },
            }
            for metrics in execution.operator_metrics().values()
        ],
    }


def _checkpoint_view(stats: CheckpointStats) -> dict[str, Any]:
    return {
        "id": stats.checkpoint_id,
        "status": stats.status.value,
        "is_savepoint": stats.is_savepoint,
        "trigger_timestamp": stats.trigger_time,
        "end_to_end_duration": stats.end_to_end_duration,
        "sync_duration": stats.max_sync_duration,
        "async_duration": stats.max_async_duration,
        "alignment_duration": stats.max_alignment_duration,
        "start_delay": stats.max_start_delay,
        "state_size": stats.state_size,
        "persisted_data": stats.in_flight_bytes,
        "unaligned": stats.unaligned,
        "num_acknowledged_subtasks": len(stats.subtasks),
        "external_path": stats.external_pointer,
        "failure_message": stats.failure,
    }


def checkpoint_statistics_view(statistics: CheckpointStatistics | None) -> dict[str, Any]:
    """Flink's ``/jobs/{id}/checkpoints`` body for ``statistics`` (durations in seconds)."""
    if statistics is None:
        counts = {"triggered": 0, "in_progress": 0, "completed": 0, "failed": 0, "restored": 0}
        return {"counts": counts, "latest": {"completed": None, "restored": None}, "history": []}
    c = statistics.counts
    latest = statistics.latest_completed
    return {
        "counts": {
            "triggered": c.triggered,
            "in_progress": c.in_progress,
            "completed": c.completed,
            "failed": c.failed,
            "restored": c.restored,
        },
        "latest": {
            "completed": None if latest is None else _checkpoint_view(latest),
            "restored": (
                None
                if statistics.restored_from is None
                else {"external_path": statistics.restored_from}
            ),
        },
        "history": [_checkpoint_view(s) for s in reversed(statistics.history)],
    }


def _completed(checkpoint_id: int | None, location: str) -> dict[str, Any]:
    """The body of a completed asynchronous operation, as Flink's poll returns it."""
    return {
        "status": {"id": "COMPLETED"},
        "operation": {"checkpointId": checkpoint_id, "location": location},
    }


# -- request helpers ------------------------------------------------------------------------


def _registry(request: Request) -> JobRegistry:
    registry: JobRegistry = request.app.state.registry
    return registry


def _targets(request: Request) -> SavepointTargets:
    targets: SavepointTargets = request.app.state.targets
    return targets


def _execution(request: Request) -> JobExecution:
    job_id = request.path_params["job_id"]
    registry = _registry(request)
    if job_id not in registry.executions and len(job_id) < MIN_JOB_ID_PREFIX:
        raise ApiError(
            400,
            f"job id {job_id!r} is too short: give the full job id or at least "
            f"{MIN_JOB_ID_PREFIX} of its characters (see GET /jobs)",
        )
    execution = registry.get(job_id)
    if execution is None:
        raise ApiError(404, f"job {job_id} not found (see GET /jobs)")
    return execution


def _running(execution: JobExecution) -> JobClient:
    if execution.status is not JobStatus.RUNNING:
        raise ApiError(409, f"job {execution.job_id} is {execution.status.value}, not running")
    return JobClient(execution)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise ApiError(400, f"the request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _format(body: dict[str, Any]) -> SavepointFormat:
    raw = body.get("format", body.get("formatType", "canonical"))
    if isinstance(raw, str):
        for candidate in SavepointFormat:
            if candidate.value == raw.lower():
                return candidate
    raise ApiError(400, f"format must be 'canonical' or 'native', got {raw!r}")


def _target(request: Request, body: dict[str, Any], *keys: str) -> str:
    raw = next((body[key] for key in keys if key in body), None)
    try:
        return str(_targets(request).resolve(raw))
    except TargetRejected as rejected:
        raise ApiError(rejected.status, rejected.message) from None


def _failed(execution: JobExecution, what: str, error: CheckpointError) -> ApiError:
    if execution.status.is_terminal:
        return ApiError(409, f"job {execution.job_id} is {execution.status.value}: {error}")
    return ApiError(500, f"{what} of job {execution.job_id} failed: {error}")


# -- handlers -------------------------------------------------------------------------------


async def list_jobs(request: Request) -> Response:
    """GET /jobs."""
    jobs = [_job_overview(e) for e in _registry(request).executions.values()]
    return JSONResponse({"jobs": jobs})


async def job_details(request: Request) -> Response:
    """GET /jobs/{id}."""
    return JSONResponse(_job_details(_execution(request)))


async def cancel_job(request: Request) -> Response:
    """PATCH /jobs/{id}?mode=cancel: cancel the job; answers at once (202)."""
    execution = _execution(request)
    mode = request.query_params.get("mode")
    if mode != "cancel":
        raise ApiError(400, f"mode must be 'cancel', got {mode!r} (PATCH /jobs/{{id}}?mode=cancel)")
    if execution.status.is_terminal:
        raise ApiError(409, f"job {execution.job_id} is already {execution.status.value}")
    JobClient(execution).cancel()
    return JSONResponse({}, status_code=202)


async def checkpoint_statistics(request: Request) -> Response:
    """GET /jobs/{id}/checkpoints."""
    execution = _execution(request)
    return JSONResponse(checkpoint_statistics_view(JobClient(execution).checkpoint_stats()))


async def trigger_checkpoint(request: Request) -> Response:
    """POST /jobs/{id}/checkpoints: take a checkpoint now; answer when it completed."""
    execution = _execution(request)
    client = _running(execution)
    try:
        completed = await client.trigger_checkpoint()
    except CheckpointError as error:
        raise _failed(execution, "the checkpoint", error) from None
    return JSONResponse(_completed(completed.checkpoint_id, completed.pointer))


async def trigger_savepoint(request: Request) -> Response:
    """POST /jobs/{id}/savepoints: take a savepoint; answer with its folder."""
    execution = _execution(request)
    body = await _body(request)
    target = _target(request, body, "target-directory", "targetDirectory")
    savepoint_format = _format(body)
    client = _running(execution)
    try:
        location = await client.trigger_savepoint(target, format=savepoint_format)
    except CheckpointError as error:
        raise _failed(execution, "the savepoint", error) from None
    return JSONResponse(_completed(_savepoint_id(client, location), location))


async def stop_job(request: Request) -> Response:
    """POST /jobs/{id}/stop: stop with a savepoint (drained if asked); answer its folder."""
    execution = _execution(request)
    body = await _body(request)
    target = _target(request, body, "targetDirectory", "target-directory")
    drain = body.get("drain", False)
    if not isinstance(drain, bool):
        raise ApiError(400, f"drain must be true or false, got {drain!r}")
    savepoint_format = _format(body)
    client = _running(execution)
    try:
        location = await client.stop_with_savepoint(target, drain=drain, format=savepoint_format)
    except CheckpointError as error:
        raise _failed(execution, "stop with savepoint", error) from None
    return JSONResponse(_completed(_savepoint_id(client, location), location))


def _savepoint_id(client: JobClient, location: str) -> int | None:
    """The checkpoint id of the savepoint at ``location`` (None if out of the history)."""
    statistics = client.checkpoint_stats()
    if statistics is None:
        return None
    for stats in reversed(statistics.history):
        if stats.external_pointer == location:
            return stats.checkpoint_id
    return None


# -- the application ------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"errors": [exc.message]}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return JSONResponse({"errors": [message]}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    message = f"internal error: {type(exc).__name__}: {exc}"
    return JSONResponse({"errors": [message]}, status_code=500)


def create_app(targets: SavepointTargets, registry: JobRegistry = JOBS) -> Starlette:
    """The ASGI application over ``registry``'s jobs, writing savepoints within ``targets``."""
    routes = [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", job_details, methods=["GET"]),
        Route("/jobs/{job_id}", cancel_job, methods=["PATCH"]),
        Route("/jobs/{job_id}/checkpoints", checkpoint_statistics, methods=["GET"]),
        Route("/jobs/{job_id}/checkpoints", trigger_checkpoint, methods=["POST"]),
        Route("/jobs/{job_id}/savepoints", trigger_savepoint, methods=["POST"]),
        Route("/jobs/{job_id}/stop", stop_job, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.registry = registry
    app.state.targets = targets
    return app
