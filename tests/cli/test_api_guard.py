"""The HTTP API refuses what a web page (or another machine) could forge.

The API's application behind its :class:`~runtime.cli.guard.RequestGuard`, served in
process (httpx's ASGI transport) over a registry with one stub job that records whether
it was cancelled. Each refusal is one clear ``{"errors": [...]}`` answer, and the job is
untouched: a forged ``Host`` (DNS rebinding), a cross-origin ``POST`` / ``PATCH``, a body
sent as ``text/plain``, a job id prefix shorter than 8 characters, a missing or wrong
bearer token. The same requests done right are answered. Last, ``weir run`` refuses an
address that is not loopback without a token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.api.overrides import JobRegistry
from runtime.cli.api import MIN_JOB_ID_PREFIX, create_app
from runtime.cli.errors import UsageError
from runtime.cli.guard import RequestGuard, allowed_hosts
from runtime.cli.run import RunOptions, prepare_run
from runtime.cli.targets import SavepointTargets
from runtime.scheduler.result import JobStatus

PORT = 8081
JOB_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "01234567ffffffff0123456789abcdef"


@dataclass
class StubJob:
    """What the API reads of a job; ``cancel`` is what a forged request would do."""

    job_id: str
    job_name: str = "stub"
    status: JobStatus = JobStatus.RUNNING
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    cancelled: bool = False

    def operator_metrics(self) -> dict[str, Any]:
        return {}

    def network_bytes(self) -> dict[int, Any]:
        return {}

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def jobs() -> dict[str, StubJob]:
    return {JOB_ID: StubJob(JOB_ID), OTHER_ID: StubJob(OTHER_ID)}


def client(
    tmp_path: Path,
    jobs: dict[str, StubJob],
    *,
    address: str = "127.0.0.1",
    token: str | None = None,
    base: str = f"http://127.0.0.1:{PORT}",
) -> httpx.AsyncClient:
    registry = JobRegistry(executions=dict(jobs))  # type: ignore[arg-type]
    app = create_app(SavepointTargets.from_options([str(tmp_path)]), registry)
    guard = RequestGuard(app, address, PORT, token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url=base)


def errors_of(response: httpx.Response) -> str:
    body = response.json()
    assert list(body) == ["errors"] and len(body["errors"]) == 1, body
    return str(body["errors"][0])


def test_allowed_hosts_of_loopback_and_other_addresses() -> None:
    assert allowed_hosts("127.0.0.1", PORT) == {
        f"127.0.0.1:{PORT}",
        f"localhost:{PORT}",
        f"[::1]:{PORT}",
    }
    assert allowed_hosts("::1", 80) == {
        "127.0.0.1:80",
        "localhost:80",
        "[::1]:80",
        "127.0.0.1",
        "localhost",
        "[::1]",
    }
    assert allowed_hosts("10.1.2.3", PORT) == {f"10.1.2.3:{PORT}"}
    assert allowed_hosts("0.0.0.0", PORT) is None


async def test_requests_for_the_listening_address_are_answered(
    tmp_path: Path, jobs: dict[str, StubJob]
) -> None:
    for base in (f"http://127.0.0.1:{PORT}", f"http://localhost:{PORT}", f"http://[::1]:{PORT}"):
        async with client(tmp_path, jobs, base=base) as http:
            response = await http.get("/jobs")
            assert response.status_code == 200, response.text
            assert {job["id"] for job in response.json()["jobs"]} == {JOB_ID, OTHER_ID}


@pytest.mark.parametrize(
    "host",
    ["evil.example:8081", f"evil.example:{PORT}", "127.0.0.1:9999", "127.0.0.1", ""],
)
async def test_a_forged_host_is_refused(
    tmp_path: Path, jobs: dict[str, StubJob], host: str
) -> None:
    # DNS rebinding: a page's own name resolves to 127.0.0.1, its Host stays its name.
    async with client(tmp_path, jobs) as http:
        response = await http.patch(
            f"/jobs/{JOB_ID}", params={"mode": "cancel"}, headers={"Host": host}
        )
        assert response.status_code == 421, response.text
        assert "the API answers requests for 127.0.0.1:8081" in errors_of(response)
        listed = await http.get("/jobs", headers={"Host": host})
        assert listed.status_code == 421
    assert not jobs[JOB_ID].cancelled


@pytest.mark.parametrize("origin", ["http://evil.example", "null", f"http://localhost:{PORT + 1}"])
async def test_a_cross_origin_change_is_refused(
    tmp_path: Path, jobs: dict[str, StubJob], origin: str
) -> None:
    async with client(tmp_path, jobs) as http:
        cancel = await http.patch(
            f"/jobs/{JOB_ID}", params={"mode": "cancel"}, headers={"Origin": origin}
        )
        assert cancel.status_code == 403, cancel.text
        assert f"cross-origin PATCH from {origin!r} refused" in errors_of(cancel)
        savepoint = await http.post(
            f"/jobs/{JOB_ID}/savepoints", json={"format": "native"}, headers={"Origin": origin}
        )
        assert savepoint.status_code == 403
        # Reading is not a change: a page cannot read the answer anyway (no CORS).
        assert (await http.get("/jobs", headers={"Origin": origin})).status_code == 200
    assert not jobs[JOB_ID].cancelled


async def test_the_api_s_own_origin_may_change(tmp_path: Path, jobs: dict[str, StubJob]) -> None:
    async with client(tmp_path, jobs) as http:
        response = await http.patch(
            f"/jobs/{JOB_ID}",
            params={"mode": "cancel"},
            headers={"Origin": f"http://127.0.0.1:{PORT}"},
        )
    assert response.status_code == 202, response.text
    assert jobs[JOB_ID].cancelled


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
async def test_a_body_that_is_not_declared_json_is_refused(
    tmp_path: Path, jobs: dict[str, StubJob], content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with client(tmp_path, jobs) as http:
        response = await http.post(
            f"/jobs/{JOB_ID}/stop",
            content=b'{"targetDirectory": "/tmp", "drain": true}',
            headers=headers,
        )
    assert response.status_code == 415, response.text
    assert "must be sent as 'Content-Type: application/json'" in errors_of(response)


async def test_a_short_job_id_prefix_is_refused(tmp_path: Path, jobs: dict[str, StubJob]) -> None:
    async with client(tmp_path, jobs) as http:
        for prefix in ("0", JOB_ID[: MIN_JOB_ID_PREFIX - 1]):
            response = await http.patch(f"/jobs/{prefix}", params={"mode": "cancel"})
            assert response.status_code == 400, response.text
            assert f"job id {prefix!r} is too short" in errors_of(response)
        # Eight characters shared by two jobs: ambiguous, not found.
        ambiguous = await http.get(f"/jobs/{JOB_ID[:MIN_JOB_ID_PREFIX]}")
        assert ambiguous.status_code == 404
        # An unambiguous prefix of eight or more, and the full id, work.
        assert (await http.get(f"/jobs/{JOB_ID[:10]}")).json()["jid"] == JOB_ID
        assert (await http.get(f"/jobs/{JOB_ID}")).json()["jid"] == JOB_ID
    assert not any(job.cancelled for job in jobs.values())


async def test_a_token_is_required_when_one_is_set(
    tmp_path: Path, jobs: dict[str, StubJob]
) -> None:
    base = f"http://10.1.2.3:{PORT}"
    async with client(tmp_path, jobs, address="10.1.2.3", token="s3cret", base=base) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = await http.patch(
                f"/jobs/{JOB_ID}", params={"mode": "cancel"}, headers=headers
            )
            assert response.status_code == 401, (headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in errors_of(response)
        assert (await http.get("/jobs")).status_code == 401
        assert not jobs[JOB_ID].cancelled
        good = await http.patch(
            f"/jobs/{JOB_ID}",
            params={"mode": "cancel"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert good.status_code == 202, good.text
    assert jobs[JOB_ID].cancelled


async def test_listening_on_every_address_takes_any_host_but_needs_the_token(
    tmp_path: Path, jobs: dict[str, StubJob]
) -> None:
    base = f"http://weir-box.internal:{PORT}"
    async with client(tmp_path, jobs, address="0.0.0.0", token="s3cret", base=base) as http:
        assert (await http.get("/jobs")).status_code == 401
        ok = await http.get("/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_weir_run_needs_a_token_for_an_address_that_is_not_loopback(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("")
    with pytest.raises(UsageError, match=r"--rest-address 0\.0\.0\.0 is reachable from other"):
        prepare_run(RunOptions(job=job, rest_address="0.0.0.0", rest_port=0))
    with pytest.raises(UsageError, match="must not be empty"):
        prepare_run(RunOptions(job=job, rest_address="0.0.0.0", rest_port=0, rest_token=" "))
