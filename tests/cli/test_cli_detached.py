"""``weir run -d``: a job that outlives the command that started it.

``weir run -d`` must return while the job runs on in its own process, print Flink's
``Job has been submitted with JobID <id>`` and the API's address, and the client commands
must reach the job there: ``status``, then ``stop`` with a savepoint, after which the
background process ends by itself (waited for with a deadline). Bad uses are one line
and exit status 2.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from cli_driver import COMMAND_SECONDS, Outcome

START_SECONDS = 90.0
"""``weir run -d`` waits for the job (a loaded machine imports slowly)."""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + COMMAND_SECONDS
    while not _gone(pid):
        assert time.monotonic() < deadline, f"the detached job (pid {pid}) did not end"
        time.sleep(0.05)  # polling another session's process: no event to wait on


def test_detached_job_outlives_its_command_and_stops(
    weir: Callable[..., Outcome], tmp_path: Path, job_script: Path
) -> None:
    (tmp_path / "savepoints").mkdir()
    log = tmp_path / "job.log"
    started = weir(
        "run",
        "-d",
        "--rest-port",
        "0",
        "--checkpoint-dir",
        "checkpoints",
        "--savepoint-dir",
        "savepoints",
        "--log-file",
        str(log),
        str(job_script),
        timeout=START_SECONDS,
    )
    assert started.returncode == 0, started.stderr
    job_id = re.fullmatch(r"Job has been submitted with JobID ([0-9a-f]{32})\n", started.stdout)
    assert job_id is not None, started.stdout
    job_id_text = job_id.group(1)
    address = re.search(r"job HTTP API on (http://127\.0\.0\.1:\d+)", started.stderr)
    pid = re.search(r"runs detached \(pid (\d+)\)", started.stderr)
    assert address and pid, started.stderr
    assert f"log: {log}" in started.stderr
    pid_number = int(pid.group(1))
    try:
        status = weir("status", job_id_text[:8], "--address", address.group(1), "--json")
        assert status.returncode == 0, status.stderr
        assert status.json()["job"]["state"] == "RUNNING"
        stopped = weir("stop", job_id_text, "--address", address.group(1), "--json")
        assert stopped.returncode == 0, stopped.stderr
        savepoint = Path(stopped.json()["location"])
        assert savepoint.parent == tmp_path / "savepoints"
        assert (savepoint / "_metadata").is_file()
        _wait_gone(pid_number)
    finally:
        if not _gone(pid_number):
            os.kill(pid_number, 9)
    assert log.read_text().strip().splitlines()[-1] == "finished"


def test_detached_refuses_no_rest_and_a_stray_log_file(
    weir: Callable[..., Outcome], job_script: Path
) -> None:
    no_rest = weir("run", "-d", "--no-rest", str(job_script))
    assert no_rest.returncode == 2
    assert no_rest.stderr.strip().splitlines() == [
        "weir: error: weir run -d: a detached job is reached through its HTTP API; drop --no-rest"
    ]
    stray = weir("run", "--log-file", "x.log", str(job_script))
    assert stray.returncode == 2
    assert "--log-file goes with -d/--detached" in stray.stderr


def test_detached_script_that_fails_says_where_its_log_is(
    weir: Callable[..., Outcome], tmp_path: Path
) -> None:
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit('no input given')\n")
    log = tmp_path / "broken.log"
    outcome = weir("run", "-d", "--rest-port", "0", "--log-file", str(log), str(script))
    assert outcome.returncode == 1
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    ended = "the job script ended before it started a job (exit status 1)"
    assert f"{ended}; its log: {log}" in lines[0]
    assert "no input given" in lines[0]
