"""A running job, controlled through ``weir`` and its HTTP API, then inspected offline.

One ``weir run --rest-port 0`` runs an unbounded, rate-limited job for the whole module.
The tests first control it (list, status, checkpoint, savepoint, the API's errors), then
``test_stop_*`` stops it with a savepoint, and the tests after it inspect what it left:
``weir info``, ``weir checkpoints``, ``weir dispose``, and ``weir run --from-savepoint``.
They run in file order (pytest's default), which this module relies on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cli_driver import LiveJob, Outcome, run_weir

HTTP_SECONDS = 30.0
MAX_TRIGGERS = 100


@dataclass
class Scenario:
    job: LiveJob
    root: Path
    checkpoints: Path
    savepoints: Path
    script: Path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, job_script: Path) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("live")
    checkpoints, savepoints = root / "checkpoints", root / "savepoints"
    savepoints.mkdir()
    job = LiveJob.start(
        root,
        "--checkpoint-dir",
        str(checkpoints),
        "--savepoint-dir",
        str(savepoints),
        str(job_script),
    )
    try:
        yield Scenario(job, root, checkpoints, savepoints, job_script)
    finally:
        job.kill()


def api(scenario: Scenario, method: str, path: str, **kwargs: object) -> httpx.Response:
    with httpx.Client(base_url=scenario.job.address, timeout=HTTP_SECONDS) as client:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]


def offline(scenario: Scenario, *args: str) -> Outcome:
    """Run a command that needs no job (``info``, ``checkpoints``, ``dispose``)."""
    return run_weir(*args, cwd=scenario.root)


def failed(outcome: Outcome, *fragments: str) -> None:
    assert outcome.returncode == 1, (outcome.stdout, outcome.stderr)
    for fragment in fragments:
        assert fragment in outcome.stderr, outcome.stderr


# -- the running job ------------------------------------------------------------------------


def test_list_shows_the_running_job(scenario: Scenario) -> None:
    listed = scenario.job.weir("list", "--json").json()["jobs"]
    assert listed == [{"id": scenario.job.job_id, "name": "cli test job", "status": "RUNNING"}]
    table = scenario.job.weir("list")
    assert table.returncode == 0
    assert scenario.job.job_id in table.stdout and "RUNNING" in table.stdout


def test_status_shows_the_operators(scenario: Scenario) -> None:
    outcome = scenario.job.weir("status", scenario.job.job_id[:8], "--json")
    assert outcome.returncode == 0, outcome.stderr
    details = outcome.json()["job"]
    assert details["jid"] == scenario.job.job_id
    assert details["state"] == "RUNNING"
    # Flink's vertices are operator chains: the source alone, then sum and sink chained.
    uids = [[op["uid"] for op in v["operators"]] for v in details["vertices"]]
    assert uids == [["readings"], ["sum", "sink"]]
    assert all(v["parallelism"] == 2 for v in details["vertices"])
    assert [v["status"] for v in details["vertices"]] == ["RUNNING", "RUNNING"]
    assert all(v["backpressure-level"] in ("ok", "low", "high") for v in details["vertices"])


def test_checkpoint_is_triggered_and_completes(scenario: Scenario) -> None:
    outcome = scenario.job.weir("checkpoint", scenario.job.job_id, "--json")
    assert outcome.returncode == 0, outcome.stderr
    operation = outcome.json()
    location = Path(operation["location"])
    assert (
        location == scenario.checkpoints / scenario.job.job_id / f"chk-{operation['checkpointId']}"
    )
    assert (location / "_metadata").is_file()
    human = scenario.job.weir("checkpoint", scenario.job.job_id)
    assert human.returncode == 0 and "completed" in human.stdout

    stats = api(scenario, "GET", f"/jobs/{scenario.job.job_id}/checkpoints").json()
    assert stats["counts"]["completed"] >= 2
    assert stats["latest"]["completed"]["status"] == "COMPLETED"


def test_unaligned_checkpoints_under_backpressure_persist_in_flight_data(
    scenario: Scenario,
) -> None:
    # The sink is slower than the source: once the channels are full, an unaligned
    # checkpoint overtakes their buffers and persists them. Trigger until one has.
    path = f"/jobs/{scenario.job.job_id}/checkpoints"
    for _ in range(MAX_TRIGGERS):
        assert api(scenario, "POST", path).status_code == 200
        latest = api(scenario, "GET", path).json()["latest"]["completed"]
        if latest["persisted_data"] > 0:
            assert latest["unaligned"]
            return
    raise AssertionError(f"no checkpoint persisted in-flight data in {MAX_TRIGGERS} tries")


def test_advise_measures_the_running_job(scenario: Scenario) -> None:
    outcome = scenario.job.weir("advise", "--job", scenario.job.job_id, "--mtbf", "1h", "--json")
    assert outcome.returncode == 0, outcome.stderr
    advice = outcome.json()
    assert advice["samples"] >= 2
    assert advice["cost"] > 0
    assert 0 < advice["daly"]["interval"] <= advice["young"]["interval"]
    # The same from saved statistics.
    saved = scenario.root / "status.json"
    saved.write_text(scenario.job.weir("status", scenario.job.job_id, "--json").stdout)
    offline_advice = offline(scenario, "advise", "--from", str(saved), "--mtbf", "1h", "--json")
    assert offline_advice.returncode == 0, offline_advice.stderr
    assert offline_advice.json()["cost"] == advice["cost"]


def test_savepoint_into_an_allowed_folder(scenario: Scenario) -> None:
    target = scenario.savepoints / "manual"
    outcome = scenario.job.weir("savepoint", scenario.job.job_id, str(target), "--json")
    assert outcome.returncode == 0, outcome.stderr
    location = Path(outcome.json()["location"])
    assert location.parent == target and location.name.startswith("savepoint-")
    assert (location / "_metadata").is_file()
    # Without a folder, the first --savepoint-dir is the target.
    default = scenario.job.weir("savepoint", scenario.job.job_id, "--format", "native", "--json")
    assert default.returncode == 0, default.stderr
    assert Path(default.json()["location"]).parent == scenario.savepoints


def test_savepoint_outside_the_allowed_folders_is_forbidden(scenario: Scenario) -> None:
    job_id = scenario.job.job_id
    outside = scenario.root / "elsewhere"
    failed(scenario.job.weir("savepoint", job_id, str(outside)), "outside the folders", "403")
    as_json = scenario.job.weir("stop", job_id, "-p", str(outside), "--json")
    assert as_json.returncode == 1 and as_json.json()["status"] == 403
    # '..' and symlinks are resolved before the check.
    climbing = f"{scenario.savepoints}/../elsewhere"
    link = scenario.savepoints / "link"
    link.symlink_to(scenario.root, target_is_directory=True)
    for target in (climbing, str(link / "escaped"), "/"):
        response = api(
            scenario, "POST", f"/jobs/{job_id}/savepoints", json={"target-directory": target}
        )
        assert response.status_code == 403, response.text
        assert "outside the folders" in response.json()["errors"][0]
    assert not outside.exists() and not (scenario.root / "escaped").exists()
    # The job runs on.
    assert api(scenario, "GET", f"/jobs/{job_id}").json()["state"] == "RUNNING"


def test_unknown_job_is_not_found(scenario: Scenario) -> None:
    target = str(scenario.savepoints)
    failed(scenario.job.weir("savepoint", "0123abcd", target), "job 0123abcd not found", "404")
    as_json = scenario.job.weir("cancel", "0123abcd", "--json")
    assert as_json.returncode == 1
    assert as_json.json() == {
        "error": "job 0123abcd not found (see GET /jobs) (HTTP 404)",
        "status": 404,
    }
    for method, path in [
        ("GET", "/jobs/0123abcd"),
        ("GET", "/jobs/0123abcd/checkpoints"),
        ("POST", "/jobs/0123abcd/checkpoints"),
        ("POST", "/jobs/0123abcd/savepoints"),
        ("POST", "/jobs/0123abcd/stop"),
        ("PATCH", "/jobs/0123abcd?mode=cancel"),
    ]:
        response = api(scenario, method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"errors": ["job 0123abcd not found (see GET /jobs)"]}


def test_bad_paths_are_rejected(scenario: Scenario) -> None:
    job_id = scenario.job.job_id
    a_file = scenario.savepoints / "a-file"
    a_file.write_text("not a folder")
    failed(scenario.job.weir("savepoint", job_id, str(a_file)), "not a folder", "400")
    for body, message in [
        ({"target-directory": "relative/folder"}, "is relative"),
        ({"target-directory": ""}, "non-empty path"),
        ({"target-directory": 42}, "non-empty path"),
        ({"target-directory": "s3://bucket/savepoints"}, "not a local path"),
        ({"target-directory": "file://host/savepoints"}, "not a local path"),
        ({"target-directory": str(scenario.savepoints), "format": "zip"}, "format must be"),
    ]:
        response = api(scenario, "POST", f"/jobs/{job_id}/savepoints", json=body)
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["errors"][0]
    response = api(
        scenario,
        "POST",
        f"/jobs/{job_id}/stop",
        json={"targetDirectory": str(scenario.savepoints), "drain": "yes"},
    )
    assert response.status_code == 400 and "drain" in response.json()["errors"][0]
    assert api(scenario, "GET", f"/jobs/{job_id}").json()["state"] == "RUNNING"


def test_malformed_requests(scenario: Scenario) -> None:
    job_id = scenario.job.job_id
    not_json = api(
        scenario,
        "POST",
        f"/jobs/{job_id}/savepoints",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["errors"][0]
    not_object = api(scenario, "POST", f"/jobs/{job_id}/savepoints", json=[1, 2])
    assert not_object.status_code == 400
    no_mode = api(scenario, "PATCH", f"/jobs/{job_id}")
    assert no_mode.status_code == 400 and "mode" in no_mode.json()["errors"][0]
    unknown = api(scenario, "GET", "/nothing/here")
    assert unknown.status_code == 404 and unknown.json()["errors"]
    wrong_method = api(scenario, "DELETE", f"/jobs/{job_id}")
    assert wrong_method.status_code == 405 and wrong_method.json()["errors"]


def test_the_server_refuses_forged_requests(scenario: Scenario) -> None:
    # The guard (tests/cli/test_api_guard.py) is in front of the live server too.
    job_id = scenario.job.job_id
    rebound = api(scenario, "GET", "/jobs", headers={"Host": "evil.example:80"})
    assert rebound.status_code == 421, rebound.text
    cross = api(
        scenario,
        "PATCH",
        f"/jobs/{job_id}",
        params={"mode": "cancel"},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403, cross.text
    plain = api(
        scenario,
        "POST",
        f"/jobs/{job_id}/stop",
        content=b'{"drain": true}',
        headers={"Content-Type": "text/plain"},
    )
    assert plain.status_code == 415, plain.text
    short = api(scenario, "PATCH", f"/jobs/{job_id[:4]}", params={"mode": "cancel"})
    assert short.status_code == 400, short.text
    assert api(scenario, "GET", f"/jobs/{job_id}").json()["state"] == "RUNNING"


# -- stop, and what the job left ------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped(scenario: Scenario) -> Path:
    """Stop the job with a savepoint; return the savepoint's folder."""
    target = scenario.savepoints / "final"
    outcome = scenario.job.weir(
        "stop", scenario.job.job_id, "--savepoint-path", str(target), "--json"
    )
    assert outcome.returncode == 0, outcome.stderr
    assert scenario.job.wait() == 0, "".join(scenario.job.stderr_lines)
    location = Path(outcome.json()["location"])
    assert location.parent == target
    return location


def test_stop_with_savepoint_ends_the_job_and_its_server(scenario: Scenario, stopped: Path) -> None:
    assert (stopped / "_metadata").is_file()
    assert scenario.job.stdout.strip().splitlines()[-1] == "finished"
    gone = scenario.job.weir("list")
    failed(gone, f"no job server at {scenario.job.address}", "weir run")


def test_info_shows_the_savepoint(scenario: Scenario, stopped: Path) -> None:
    outcome = offline(scenario, "info", str(stopped), "--json")
    assert outcome.returncode == 0, outcome.stderr
    info = outcome.json()
    assert info["kind"] == "savepoint" and info["job_id"] == scenario.job.job_id
    operators = {op["uid"]: op for op in info["operators"]}
    assert set(operators) == {"readings", "sum", "sink"}
    keyed = operators["sum"]
    assert keyed["parallelism"] == 2 and keyed["max_parallelism"] == 128
    assert [s["key_groups"] for s in keyed["subtasks"]] == [[0, 63], [64, 127]]
    assert keyed["state_size"] > 0
    assert info["in_flight_bytes"] == 0  # savepoints are aligned
    human = offline(scenario, "info", str(stopped))
    assert (
        human.returncode == 0 and "0-63" in human.stdout and "max parallelism 128" in human.stdout
    )


def test_info_shows_a_checkpoint_and_its_channel_state(scenario: Scenario, stopped: Path) -> None:
    scan = offline(scenario, "checkpoints", str(scenario.checkpoints), "--json").json()
    with_data = [e for e in scan["checkpoints"] if e["in_flight_bytes"]]
    assert with_data, scan
    outcome = offline(scenario, "info", with_data[-1]["path"], "--json")
    assert outcome.returncode == 0, outcome.stderr
    info = outcome.json()
    assert info["kind"] == "checkpoint" and info["decoded"], info["notes"]
    assert info["in_flight_bytes"] == with_data[-1]["in_flight_bytes"] > 0
    channels = [
        (op["uid"], channel)
        for op in info["operators"]
        for subtask in op["subtasks"]
        for channel in subtask["channels"]
    ]
    assert sum(channel["records"] for _, channel in channels) > 0
    edges = {("readings", "sum"), ("sum", "readings"), ("sum", "sink"), ("sink", "sum")}
    for uid, channel in channels:
        assert channel["direction"] in {"input", "output"}
        assert (uid, channel["peer_uid"]) in edges
    human = offline(scenario, "info", with_data[-1]["path"])
    assert human.returncode == 0, human.stderr
    assert "in-flight data (channel state), per channel" in human.stdout
    # A job's folder stands for its newest valid checkpoint.
    newest = offline(scenario, "info", str(scenario.checkpoints / scenario.job.job_id), "--json")
    assert any("newest valid checkpoint" in note for note in newest.json()["notes"])


def test_checkpoints_lists_what_is_on_disk(scenario: Scenario, stopped: Path) -> None:
    outcome = offline(scenario, "checkpoints", str(scenario.root), "--json")
    assert outcome.returncode == 0, outcome.stderr
    entries = outcome.json()["checkpoints"]
    checkpoints = [e for e in entries if e["kind"] == "checkpoint"]
    savepoints = [e for e in entries if e["kind"] == "savepoint"]
    assert len(checkpoints) >= 2 and all(e["valid"] for e in entries)
    assert [e["latest"] for e in checkpoints] == [False] * (len(checkpoints) - 1) + [True]
    assert len(savepoints) == 3 and str(stopped) in {e["path"] for e in savepoints}
    human = offline(scenario, "checkpoints", str(scenario.root), "--verify")
    assert human.returncode == 0 and "(latest)" in human.stdout


def test_dispose_deletes_a_savepoint_and_refuses_a_checkpoint(
    scenario: Scenario, stopped: Path
) -> None:
    manual = next((scenario.savepoints / "manual").iterdir())
    outcome = offline(scenario, "dispose", str(manual), "--json")
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.json() == {"disposed": str(manual)}
    assert not manual.exists()
    failed(offline(scenario, "dispose", str(manual)), "no savepoint at")
    checkpoint = next((scenario.checkpoints / scenario.job.job_id).glob("chk-*"))
    failed(offline(scenario, "dispose", str(checkpoint)), "is a checkpoint, not a savepoint")
    assert (checkpoint / "_metadata").is_file()


def test_run_from_savepoint_resumes(scenario: Scenario, stopped: Path) -> None:
    # Without --savepoint-dir: only the current folder is allowed, and no default target.
    job = LiveJob.start(scenario.root, "--from-savepoint", str(stopped), str(scenario.script))
    try:
        status = job.weir("status", job.job_id, "--json").json()
        assert status["checkpoints"]["counts"]["restored"] == 1
        assert status["checkpoints"]["latest"]["restored"]["external_path"] == str(stopped)
        missing = job.weir("savepoint", job.job_id)
        failed(missing, "no target directory given", "400")
        cancelled = job.weir("cancel", job.job_id, "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert job.wait() == 0
        assert job.stdout.strip().splitlines()[-1] == "canceled"
    finally:
        job.kill()
    assert os.path.isdir(stopped)
