"""The HTTP API a running job serves: Flink's REST paths over this process's jobs.

``weir run`` serves it (``runtime.cli.server``) in the event loop of the job script, so
every handler runs in the jobs' own loop and calls their ``JobClient`` directly. The jobs
are those of ``runtime.api.overrides.JOBS``; a job id is its 32 hex digits, or a prefix
of at least :data:`MIN_JOB_ID_PREFIX` of them that only one job has. Every answer is
JSON; every error is ``{"errors": [message]}`` as in Flink. Which requests are answered
at all (Host, Origin, Content-Type, token) is :mod:`runtime.cli.guard`'s decision.

=======  =================================================  ==================================
method   path                                               what
=======  =================================================  ==================================
GET      /                                                  the dashboard (``dashboard/``)
GET      /overview                                          counts of jobs by status
GET      /config                                            the dashboard's refresh interval
GET      /metrics                                           Prometheus (``runtime.metrics``)
GET      /jobs                                              ``{"jobs": [{"id", "name",
                                                            "status"}]}``
GET      /jobs/{id}                                         the job, its vertices, its plan
PATCH    /jobs/{id}?mode=cancel                             cancel the job (202)
GET      /jobs/{id}/vertices/{vid}                          a vertex's subtasks
GET      /jobs/{id}/vertices/{vid}/backpressure             ok / low / high, ratios
GET      /jobs/{id}/exceptions                              failures and restarts
GET      /jobs/{id}/checkpoints                             counts, summary, latest, history
POST     /jobs/{id}/checkpoints                             trigger a checkpoint; answers when
                                                            it completed
GET      /jobs/{id}/checkpoints/config                      the checkpointing configuration
GET      /jobs/{id}/checkpoints/details/{cid}               one checkpoint, per vertex and
                                                            subtask
GET      /jobs/{id}/checkpoints/details/{cid}/subtasks/{v}  one vertex's subtasks in it
POST     /jobs/{id}/savepoints                              ``{"target-directory", "format"}``
POST     /jobs/{id}/stop                                    ``{"targetDirectory", "drain"}``
=======  =================================================  ==================================

Bodies are Flink's (:mod:`runtime.cli.job_views`, :mod:`runtime.cli.checkpoint_views`):
durations and timestamps in milliseconds.

Flink answers a trigger with a request id to poll; the jobs here live in the server's
own process, so the POSTs wait for the outcome and answer with what that poll would give
(``{"status": {"id": "COMPLETED"}, "operation": {"checkpointId", "location"}}``).

Errors: 404 unknown job, vertex, checkpoint or path, 405 wrong method, 400 a malformed
id, body or target folder, 403 a target folder outside the allowed ones
(``runtime.cli.targets``), 409 a job that is not running, 500 a checkpoint or savepoint
that failed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.api.client import JobClient
from runtime.api.overrides import JOBS, JobRegistry
from runtime.checkpoint import CheckpointError, CheckpointStats
from runtime.cli import checkpoint_views, job_views
from runtime.cli.dashboard import dashboard_asset
from runtime.cli.targets import SavepointTargets, TargetRejected
from runtime.errors import WeirError
from runtime.metrics import LoadTracker, VertexSample, sample_job
from runtime.metrics.prometheus import CONTENT_TYPE, exposition
from runtime.scheduler.result import JobStatus, SavepointFormat

if TYPE_CHECKING:
    from runtime.scheduler.executor import JobExecution

__all__ = ["DASHBOARD_REFRESH_SECONDS", "MIN_JOB_ID_PREFIX", "ApiError", "create_app"]

MIN_JOB_ID_PREFIX = 8
"""The shortest job id prefix the API accepts (a one-character prefix picked any job)."""

DASHBOARD_REFRESH_SECONDS = 1.0
"""How often the dashboard polls (``GET /config``'s ``refresh-interval``, in ms there)."""


class ApiError(WeirError):
    """An answer with an error status and ``{"errors": [message]}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def _tracker(request: Request) -> LoadTracker:
    tracker: LoadTracker = request.app.state.tracker
    return tracker


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("weir")
    except metadata.PackageNotFoundError:
        return "unknown"


def _vertex(request: Request, execution: JobExecution) -> VertexSample:
    vertex_id = request.path_params["vertex_id"]
    vertices = sample_job(execution)
    for vertex in vertices:
        if vertex.id == vertex_id:
            return vertex
    known = ", ".join(v.id for v in vertices) or "none"
    raise ApiError(
        404, f"job {execution.job_id} has no vertex {vertex_id!r} (its vertices: {known})"
    )


def _checkpoint(request: Request, execution: JobExecution) -> CheckpointStats:
    raw = request.path_params["checkpoint_id"]
    try:
        checkpoint_id = int(raw)
    except ValueError:
        raise ApiError(400, f"checkpoint id must be a number, got {raw!r}") from None
    statistics = JobClient(execution).checkpoint_stats()
    for stats in [] if statistics is None else statistics.history:
        if stats.checkpoint_id == checkpoint_id:
            return stats
    raise ApiError(
        404,
        f"job {execution.job_id} has no checkpoint {checkpoint_id} in its history "
        "(see GET /jobs/{id}/checkpoints)",
    )


def _num_subtasks(execution: JobExecution) -> int:
    graph = getattr(execution, "graph", None)
    return 0 if graph is None else sum(v.parallelism for v in graph.vertices)


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


async def dashboard(request: Request) -> Response:
    """GET / and GET /dashboard/{file}: the web dashboard's page and assets."""
    name = request.path_params.get("file", "index.html")
    asset = dashboard_asset(name)
    if asset is None:
        raise ApiError(404, f"no dashboard file {name!r}")
    body, media_type = asset
    return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})


async def overview(request: Request) -> Response:
    """GET /overview."""
    executions = list(_registry(request).executions.values())
    return JSONResponse(job_views.overview_view(executions, _version()))


async def web_config(request: Request) -> Response:
    """GET /config: what the dashboard needs to know (Flink's web UI config)."""
    return JSONResponse(
        {
            "refresh-interval": round(DASHBOARD_REFRESH_SECONDS * 1000),
            "weir-version": _version(),
            "features": {"web-submit": False, "web-cancel": True},
        }
    )


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus's text format."""
    body = exposition(_registry(request), _tracker(request))
    return Response(body, media_type=CONTENT_TYPE)


async def list_jobs(request: Request) -> Response:
    """GET /jobs."""
    jobs = [job_views.job_overview(e) for e in _registry(request).executions.values()]
    return JSONResponse({"jobs": jobs})


async def job_details(request: Request) -> Response:
    """GET /jobs/{id}."""
    return JSONResponse(job_views.job_details_view(_execution(request), _tracker(request)))


async def vertex_details(request: Request) -> Response:
    """GET /jobs/{id}/vertices/{vid}."""
    execution = _execution(request)
    vertex = _vertex(request, execution)
    return JSONResponse(job_views.vertex_view(execution, vertex, _tracker(request)))


async def vertex_backpressure(request: Request) -> Response:
    """GET /jobs/{id}/vertices/{vid}/backpressure."""
    execution = _execution(request)
    vertex = _vertex(request, execution)
    return JSONResponse(job_views.backpressure_view(execution, vertex, _tracker(request)))


async def job_exceptions(request: Request) -> Response:
    """GET /jobs/{id}/exceptions."""
    return JSONResponse(job_views.exceptions_view(_execution(request)))


async def checkpoint_details(request: Request) -> Response:
    """GET /jobs/{id}/checkpoints/details/{cid}."""
    execution = _execution(request)
    stats = _checkpoint(request, execution)
    vertices = [(v.id, v.name, v.parallelism) for v in sample_job(execution)]
    return JSONResponse(checkpoint_views.checkpoint_details_view(stats, vertices))


async def checkpoint_subtasks(request: Request) -> Response:
    """GET /jobs/{id}/checkpoints/details/{cid}/subtasks/{vid}."""
    execution = _execution(request)
    stats = _checkpoint(request, execution)
    vertex = _vertex(request, execution)
    return JSONResponse(
        checkpoint_views.subtask_details_view(stats, vertex.id, vertex.name, vertex.parallelism)
    )


async def checkpoint_config(request: Request) -> Response:
    """GET /jobs/{id}/checkpoints/config."""
    execution = _execution(request)
    config = getattr(execution, "checkpoint_config", None)
    if config is None:
        raise ApiError(404, f"checkpointing is not enabled for job {execution.job_id}")
    backend = getattr(getattr(execution, "config", None), "state_backend", "heap")
    return JSONResponse(checkpoint_views.checkpoint_config_view(config, str(backend)))


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
    return JSONResponse(
        checkpoint_views.checkpoint_statistics_view(
            JobClient(execution).checkpoint_stats(), _num_subtasks(execution)
        )
    )


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


def create_app(
    targets: SavepointTargets, registry: JobRegistry = JOBS, tracker: LoadTracker | None = None
) -> Starlette:
    """The ASGI application over ``registry``'s jobs, writing savepoints within ``targets``.

    Args:
        targets: where savepoints may be written.
        registry: the jobs.
        tracker: measures per-second ratios and rates (a new one: over wall time).
    """
    job = "/jobs/{job_id}"
    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/dashboard/{file}", dashboard, methods=["GET"]),
        Route("/overview", overview, methods=["GET"]),
        Route("/config", web_config, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/jobs", list_jobs, methods=["GET"]),
        Route(job, job_details, methods=["GET"]),
        Route(job, cancel_job, methods=["PATCH"]),
        Route(f"{job}/vertices/{{vertex_id}}", vertex_details, methods=["GET"]),
        Route(f"{job}/vertices/{{vertex_id}}/backpressure", vertex_backpressure, methods=["GET"]),
        Route(f"{job}/exceptions", job_exceptions, methods=["GET"]),
        Route(f"{job}/checkpoints", checkpoint_statistics, methods=["GET"]),
        Route(f"{job}/checkpoints", trigger_checkpoint, methods=["POST"]),
        Route(f"{job}/checkpoints/config", checkpoint_config, methods=["GET"]),
        Route(f"{job}/checkpoints/details/{{checkpoint_id}}", checkpoint_details, methods=["GET"]),
        Route(
            f"{job}/checkpoints/details/{{checkpoint_id}}/subtasks/{{vertex_id}}",
            checkpoint_subtasks,
            methods=["GET"],
        ),
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
    app.state.tracker = tracker or LoadTracker()
    return app
