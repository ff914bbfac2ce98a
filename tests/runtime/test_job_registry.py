"""A finished job holds no state: its tasks are dropped, and the registry is bounded."""

from __future__ import annotations

import gc
import weakref

import pytest

from runtime import StreamEnvironment
from runtime.api import overrides
from runtime.api.overrides import JOBS, JobRegistry


def keyed_job() -> StreamEnvironment:
    env = StreamEnvironment(parallelism=2)
    (
        env.from_collection([(i % 10, 1) for i in range(200)])
        .key_by(lambda r: r[0])
        .sum(1, name="sum")
        .collect(name="out")
    )
    return env


async def test_a_finished_job_releases_its_tasks_and_state() -> None:
    client = await keyed_job().start("release")
    execution = JOBS.get(client.job_id)
    assert execution is not None and execution.deployment is not None
    deployment = weakref.ref(execution.deployment)
    tasks = [weakref.ref(task) for task in execution.deployment.tasks]
    result = await client.wait()
    assert len(result.collected["out"]) == 200
    assert result.records_in("sum") == 200  # metrics survive the release
    assert execution.deployment is None
    gc.collect()
    assert deployment() is None
    assert all(task() is None for task in tasks)


async def test_the_registry_keeps_the_newest_finished_jobs_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = JobRegistry()
    monkeypatch.setattr(overrides, "FINISHED_JOBS_KEPT", 2)
    monkeypatch.setattr(overrides, "JOBS", registry)
    monkeypatch.setattr("runtime.api.environment.JOBS", registry)
    ids = []
    for _ in range(4):
        client = await keyed_job().start("bounded")
        ids.append(client.job_id)
        await client.wait()
    running = await keyed_job().start("still running")
    # Registering the fifth forgot the two oldest finished ones; the running one stays.
    assert list(registry.executions) == [ids[2], ids[3], running.job_id]
    await running.wait()
    assert registry.get(ids[0]) is None
