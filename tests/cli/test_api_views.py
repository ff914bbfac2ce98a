"""The HTTP API's JSON, Flink-shaped, against golden files; its errors; ``/metrics``.

The API is served in process (httpx's ASGI transport) over a registry holding the fake
job of ``fake_job.py`` (fixed graph, counters and checkpoint statistics) and a load
tracker on a manual clock, so every body is the same on every run. Fields that carry
the wall-clock time of the answer (``now``, ``end-timestamp``) and the installed version
are set to 0 before comparing. ``WEIR_UPDATE_GOLDEN=1`` rewrites the golden files (then
review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_job import JOB_ID, fake_job
from prometheus_client.parser import text_string_to_metric_families

from runtime.api.overrides import JobRegistry
from runtime.cli.api import create_app
from runtime.cli.guard import RequestGuard
from runtime.cli.targets import SavepointTargets
from runtime.metrics import BackpressureLevel, LoadTracker, SubtaskSample, backpressure_level
from runtime.metrics.prometheus import METRICS

GOLDEN = Path(__file__).parent / "golden"
PORT = 8081
BASE = f"http://127.0.0.1:{PORT}"


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _client(tmp_path: Path, job: Any, tracker: LoadTracker | None = None) -> httpx.AsyncClient:
    registry = JobRegistry(executions={job.job_id: job})
    app = create_app(SavepointTargets.from_options([str(tmp_path)]), registry, tracker)
    guard = RequestGuard(app, "127.0.0.1", PORT)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url=BASE)


_VARYING = ("now", "end-timestamp", "weir-version")
"""Fields whose value is the time of the answer or the installed version."""


def _normalized(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: 0 if k in _VARYING else _normalized(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_normalized(v) for v in body]
    return body


def _golden(name: str, body: Any) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(_normalized(body), indent=2, sort_keys=True) + "\n"
    if os.environ.get("WEIR_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}: run with WEIR_UPDATE_GOLDEN=1"
    assert json.loads(text) == json.loads(path.read_text()), f"{name} differs from {path}"


GOLDEN_PATHS = {
    "overview": "/overview",
    "jobs": "/jobs",
    "job": f"/jobs/{JOB_ID}",
    "vertex": f"/jobs/{JOB_ID}/vertices/0",
    "backpressure": f"/jobs/{JOB_ID}/vertices/0/backpressure",
    "exceptions": f"/jobs/{JOB_ID}/exceptions",
    "checkpoints": f"/jobs/{JOB_ID}/checkpoints",
    "checkpoint_details": f"/jobs/{JOB_ID}/checkpoints/details/2",
    "checkpoint_subtasks": f"/jobs/{JOB_ID}/checkpoints/details/1/subtasks/1",
    "checkpoint_config": f"/jobs/{JOB_ID}/checkpoints/config",
}


@pytest.mark.parametrize("name", sorted(GOLDEN_PATHS))
async def test_bodies_match_golden_files(tmp_path: Path, name: str) -> None:
    async with _client(tmp_path, fake_job(), LoadTracker(ManualClock())) as client:
        response = await client.get(GOLDEN_PATHS[name])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    _golden(name, response.json())


async def test_job_vertices_have_flink_fields_and_levels(tmp_path: Path) -> None:
    async with _client(tmp_path, fake_job(), LoadTracker(ManualClock())) as client:
        job = (await client.get(f"/jobs/{JOB_ID}")).json()
    source, count = job["vertices"]
    # The sources waited 5 of 8 s for room (ratio 0.625): high. The counter never did.
    assert source["backpressure-level"] == "high"
    assert count["backpressure-level"] == "ok"
    assert source["metrics"]["write-records"] == 8100
    assert count["metrics"]["read-records"] == 8050
    # Bytes over the channels between the two workers: out at the sender, in at the reader.
    assert source["metrics"]["write-bytes"] == count["metrics"]["read-bytes"] == 52_650
    assert source["metrics"]["read-bytes"] == count["metrics"]["write-bytes"] == 0
    assert source["metrics"]["write-bytes-complete"] is True
    assert count["metrics"]["queued-in-buffers"] == 3 + 3 + 4 + 4
    assert [op["uid"] for op in count["operators"]] == ["count", "sink"]
    assert job["plan"]["nodes"][1]["inputs"] == [
        {"num": 0, "id": "0", "ship_strategy": "REBALANCE"}
    ]


async def test_bytes_of_a_subtask_not_heard_from_are_incomplete(tmp_path: Path) -> None:
    job = fake_job()
    assert job.deployment is not None
    del job.deployment.network[1, 1]  # its worker has not reported yet
    async with _client(tmp_path, job, LoadTracker(ManualClock())) as client:
        source, count = (await client.get(f"/jobs/{JOB_ID}")).json()["vertices"]
        subtasks = (await client.get(f"/jobs/{JOB_ID}/vertices/1")).json()["subtasks"]
        scraped = (await client.get("/metrics")).text
    assert source["metrics"]["write-bytes-complete"] is True
    assert count["metrics"]["read-bytes-complete"] is False
    assert count["metrics"]["write-bytes-complete"] is False
    assert count["metrics"]["read-bytes"] == 26_650  # what was reported
    assert [s["metrics"]["read-bytes-complete"] for s in subtasks] == [True, False]
    assert [s["metrics"]["read-bytes"] for s in subtasks] == [26_650, 0]
    reported = {
        (s.labels["task_name"], s.labels["subtask_index"])
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "weir_taskmanager_job_task_numBytesIn"
    }
    # No figure rather than a wrong 0 for the subtask not heard from.
    assert ("count -> sink", "1") not in reported
    assert ("count -> sink", "0") in reported


async def test_checkpoint_history_is_newest_first_in_milliseconds(tmp_path: Path) -> None:
    async with _client(tmp_path, fake_job()) as client:
        stats = (await client.get(f"/jobs/{JOB_ID}/checkpoints")).json()
    assert [h["id"] for h in stats["history"]] == [5, 4, 3, 2, 1]
    assert [h["status"] for h in stats["history"]] == [
        "IN_PROGRESS",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
        "COMPLETED",
    ]
    assert stats["latest"]["completed"]["id"] == 2
    assert stats["latest"]["savepoint"]["id"] == 3
    assert stats["latest"]["failed"]["failure_message"].startswith("checkpoint expired")
    second = stats["history"][3]
    assert second["checkpoint_type"] == "UNALIGNED_CHECKPOINT"
    assert second["end_to_end_duration"] == 100
    assert second["persisted_data"] == 512 * (1 + 2 + 3 + 4)
    assert stats["summary"]["end_to_end_duration"] == {
        "min": 50,
        "max": 150,
        "avg": 100,
        "p50": 100,
    }


def test_load_tracker_measures_over_windows() -> None:
    clock = ManualClock()
    tracker = LoadTracker(clock)

    def sample(busy: float, idle: float, bp: float, out: int, attempt: int = 0) -> SubtaskSample:
        return SubtaskSample(0, "t (1/1)", "running", 0, out, busy, idle, bp, attempt)

    first = tracker.load("job", "0", sample(1.0, 1.0, 2.0, 100))
    assert (first.busy, first.idle, first.backpressured) == (0.25, 0.25, 0.5)
    assert first.records_out_per_second == 0.0  # no window yet
    clock.now += 0.5  # shorter than a window: the same answer
    assert tracker.load("job", "0", sample(1.5, 1.0, 2.0, 150)) == first
    clock.now += 1.5  # 2 s since the mark: 0.2 s busy, 1.8 s backpressured, 300 records
    second = tracker.load("job", "0", sample(1.2, 1.0, 3.8, 400))
    assert second.busy == pytest.approx(0.1) and second.backpressured == pytest.approx(0.9)
    assert second.records_out_per_second == pytest.approx(150.0)
    assert second.level is BackpressureLevel.HIGH
    # A restarted attempt's counters start again from zero: ratios since its start.
    third = tracker.load("job", "0", sample(0.5, 0.5, 0.0, 10, attempt=1))
    assert third.level is BackpressureLevel.OK and third.busy == 0.5


@pytest.mark.parametrize(
    ("ratio", "level"),
    [(0.0, "ok"), (0.1, "ok"), (0.11, "low"), (0.5, "low"), (0.51, "high"), (1.0, "high")],
)
def test_backpressure_levels_use_flinks_thresholds(ratio: float, level: str) -> None:
    assert backpressure_level(ratio).value == level


async def test_metrics_in_prometheus_format(tmp_path: Path) -> None:
    async with _client(tmp_path, fake_job(), LoadTracker(ManualClock())) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (
            s.name,
            s.labels.get("task_name"),
            s.labels.get("subtask_index"),
            s.labels.get("operator_name"),
        ): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    names = {name for name, *_ in samples}
    assert names == set(METRICS), set(METRICS) ^ names
    assert samples[("weir_jobmanager_job_numRestarts", None, None, None)] == 1
    assert samples[("weir_jobmanager_job_numberOfCompletedCheckpoints", None, None, None)] == 3
    assert samples[("weir_jobmanager_job_numberOfFailedCheckpoints", None, None, None)] == 1
    assert samples[("weir_jobmanager_job_lastCheckpointDuration", None, None, None)] == (
        pytest.approx(150)  # the savepoint, 3: the latest completed
    )
    task = "weir_taskmanager_job_task_"
    assert samples[(f"{task}numRecordsOut", "readings", "1", None)] == 4100
    assert samples[(f"{task}numBytesOut", "readings", "1", None)] == 26_650
    assert samples[(f"{task}numBytesIn", "count -> sink", "0", None)] == 26_650
    assert samples[(f"{task}numBytesIn", "readings", "0", None)] == 0
    assert samples[(f"{task}accumulateBackPressuredTimeMs", "readings", "0", None)] == 3000
    assert samples[(f"{task}backPressuredTimeMsPerSecond", "readings", "0", None)] == 750
    op = "weir_taskmanager_job_task_operator_numRecordsIn"
    assert samples[(op, None, None, "count")] == 8050


# -- bad input: Flink's error JSON, the right status, nothing changes ----------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/nowhere", 404, "Not Found: GET /nowhere"),
        ("GET", f"/jobs/{JOB_ID}/vertices/9", 404, "has no vertex '9' (its vertices: 0, 1)"),
        ("GET", f"/jobs/{JOB_ID}/vertices/9/backpressure", 404, "has no vertex '9'"),
        ("GET", f"/jobs/{JOB_ID}/checkpoints/details/99", 404, "has no checkpoint 99"),
        ("GET", f"/jobs/{JOB_ID}/checkpoints/details/x", 400, "must be a number, got 'x'"),
        ("GET", f"/jobs/{JOB_ID}/checkpoints/details/1/subtasks/7", 404, "has no vertex '7'"),
        ("GET", "/jobs/ffffffffffff/exceptions", 404, "job ffffffffffff not found"),
        ("GET", "/jobs/0123/checkpoints/config", 400, "at least 8 of its characters"),
        ("GET", "/dashboard/secret.py", 404, "no dashboard file 'secret.py'"),
        ("GET", "/dashboard/__init__.py", 404, "no dashboard file"),
        ("POST", "/metrics", 405, "Method Not Allowed"),
        ("DELETE", f"/jobs/{JOB_ID}/exceptions", 405, "Method Not Allowed"),
    ],
)
async def test_bad_requests_get_flink_errors(
    tmp_path: Path, method: str, path: str, status: int, fragment: str
) -> None:
    job = fake_job()
    async with _client(tmp_path, job) as client:
        response = await client.request(method, path)
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1 and fragment in errors[0], errors
    assert not job.cancelled and job.status.value == "running"


async def test_config_of_a_job_without_checkpointing_is_404(tmp_path: Path) -> None:
    job = fake_job()
    job.checkpoint_config = None
    async with _client(tmp_path, job) as client:
        response = await client.get(f"/jobs/{JOB_ID}/checkpoints/config")
    assert response.status_code == 404
    assert response.json() == {"errors": [f"checkpointing is not enabled for job {JOB_ID}"]}


async def test_dashboard_is_served_at_the_root(tmp_path: Path) -> None:
    async with _client(tmp_path, fake_job()) as client:
        page = await client.get("/")
        script = await client.get("/dashboard/dashboard.js")
        style = await client.get("/dashboard/dashboard.css")
        config = await client.get("/config")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/dashboard/dashboard.js"></script>' in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert "textContent" in script.text
    assert style.headers["content-type"].startswith("text/css")
    assert config.json()["refresh-interval"] == 1000


@pytest.mark.parametrize("path", ["/", "/metrics", "/overview", f"/jobs/{JOB_ID}/exceptions"])
async def test_new_paths_refuse_a_rebound_host(tmp_path: Path, path: str) -> None:
    async with _client(tmp_path, fake_job()) as client:
        response = await client.get(path, headers={"Host": f"evil.example:{PORT}"})
    assert response.status_code == 421
    assert "not for host 'evil.example:8081'" in response.json()["errors"][0]


async def test_dashboard_origin_may_change_jobs_and_another_may_not(tmp_path: Path) -> None:
    job = fake_job()
    async with _client(tmp_path, job) as client:
        forged = await client.patch(
            f"/jobs/{JOB_ID}?mode=cancel", headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403 and not job.cancelled
        own = await client.patch(f"/jobs/{JOB_ID}?mode=cancel", headers={"Origin": BASE})
    assert own.status_code == 202 and job.cancelled
