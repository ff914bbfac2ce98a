"""Jobs in worker processes (``workers=2``): results, exactly-once after failures and
worker kills at deterministic records, bad input, and no orphaned workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runtime import StreamEnvironment
from runtime.errors import ConfigError
from runtime.scheduler.restart import FixedDelayRestart

KEYS = 5


def _counts(out: list[Any]) -> dict[int, int]:
    final: dict[int, int] = {}
    for key, count in out:
        final[key] = max(final.get(key, 0), count)
    return final


def _job(
    tmp_path: Path,
    n: int,
    *,
    unaligned: bool = False,
    backend: str = "heap",
    fail_at: int | None = None,
    kill_at: int | None = None,
    stop_at: int | None = None,
    aligned_timeout: float | None = None,
) -> StreamEnvironment:
    env = StreamEnvironment(
        parallelism=2, workers=2, state_backend=backend, buffer_size=16, channel_capacity=2
    )
    env.enable_checkpointing(
        0.02,
        unaligned=unaligned,
        aligned_timeout=aligned_timeout,
        storage=(tmp_path / "chk").as_uri(),
    )
    env.set_restart_strategy(FixedDelayRestart(3, 0.0))
    marker = tmp_path / "failed-once"

    def work(x: int) -> tuple[int, int]:
        if x in (fail_at, kill_at, stop_at) and not marker.exists():
            marker.write_text("x")
            if x == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # this worker dies here
            if x == stop_at:
                os.kill(os.getpid(), signal.SIGSTOP)  # this worker hangs here
            raise RuntimeError(f"planned failure at record {x}")
        return (x % KEYS, 1)

    (
        env.from_collection(range(n))
        .map(work, uid="work")
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="count")
        .collect(name="out")
    )
    return env


def _expected(n: int) -> dict[int, int]:
    return {k: len(range(k, n, KEYS)) for k in range(KEYS)}


async def test_two_workers_compute_what_one_process_does(tmp_path: Path) -> None:
    result = await _job(tmp_path, 3000).execute("two workers")
    assert result.status.value == "finished"
    assert _counts(result.collected["out"]) == _expected(3000)
    assert len(result.collected["out"]) == 3000


@pytest.mark.parametrize(
    ("unaligned", "aligned_timeout", "backend"),
    [(False, None, "heap"), (True, None, "heap"), (True, 0.001, "rocksdb")],
)
async def test_exactly_once_after_a_task_failure(
    tmp_path: Path, unaligned: bool, aligned_timeout: float | None, backend: str
) -> None:
    result = await _job(
        tmp_path,
        4000,
        unaligned=unaligned,
        aligned_timeout=aligned_timeout,
        backend=backend,
        fail_at=2500,
    ).execute("task failure")
    assert result.restarts == 1
    assert "planned failure at record 2500" in result.failures[0]
    assert _counts(result.collected["out"]) == _expected(4000)


# Kill points: the record at which a worker SIGKILLs itself (deterministic, never a time).
KILL_POINTS = [1500]  # more under stress and in test_crash_workers.py


@pytest.mark.parametrize("kill_at", KILL_POINTS)
@pytest.mark.parametrize("unaligned", [False, True])
async def test_exactly_once_after_a_worker_is_killed(
    tmp_path: Path, kill_at: int, unaligned: bool
) -> None:
    result = await _job(tmp_path, 3000, unaligned=unaligned, kill_at=kill_at).execute("kill")
    assert result.restarts == 1
    assert "died" in result.failures[0] or "closed" in result.failures[0]
    assert _counts(result.collected["out"]) == _expected(3000)


async def test_a_hung_worker_is_found_by_its_missing_heartbeats(tmp_path: Path) -> None:
    """SIGSTOP: the process lives but says nothing; the master kills it and restarts."""
    result = await _job(tmp_path, 3000, stop_at=1200).execute("hung")
    assert result.restarts == 1
    assert "sent no heartbeat" in result.failures[0], result.failures
    assert _counts(result.collected["out"]) == _expected(3000)


@pytest.mark.stress
@pytest.mark.parametrize("kill_at", range(250, 3000, 500))
@pytest.mark.parametrize("backend", ["heap", "rocksdb"])
async def test_exactly_once_after_a_worker_is_killed_stress(
    tmp_path: Path, kill_at: int, backend: str
) -> None:
    result = await _job(
        tmp_path, 3000, unaligned=kill_at % 300 == 100, backend=backend, kill_at=kill_at
    ).execute("kill")
    assert result.restarts == 1
    assert _counts(result.collected["out"]) == _expected(3000)


def test_workers_must_be_positive_and_at_most_parallelism() -> None:
    with pytest.raises(ConfigError, match="workers"):
        StreamEnvironment(parallelism=2, workers=0)
    with pytest.raises(ConfigError, match="workers 3 is greater than parallelism 2"):
        StreamEnvironment(parallelism=2, workers=3)


async def test_an_unpicklable_operator_is_named(tmp_path: Path) -> None:
    import threading

    lock = threading.Lock()
    env = StreamEnvironment(parallelism=2, workers=2)
    env.from_collection(range(10)).map(lambda x: (lock, x)[1], name="locked").collect(name="o")
    with pytest.raises(Exception) as caught:
        await env.execute("unpicklable")
    error: BaseException | None = caught.value
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    assert any("operator 'locked' cannot be shipped" in m and "lock" in m for m in messages)


MASTER = """
import asyncio
from runtime import StreamEnvironment

def slow(x):
    import time
    time.sleep(0.01)
    return x

async def main():
    env = StreamEnvironment(parallelism=2, workers=2)
    env.from_collection(range(10**6)).map(slow).collect(name="o")
    await env.execute("orphans")

asyncio.run(main())
"""


def test_workers_exit_when_the_master_is_killed(tmp_path: Path) -> None:
    """The master is SIGKILLed; its workers notice the closed connection and exit."""
    script = tmp_path / "master.py"
    script.write_text(MASTER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    master = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        workers = _wait_for_children(master.pid, 2)
    finally:
        master.kill()
        master.wait()
    deadline = time.monotonic() + 10
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        time.sleep(0.02)  # polling the process table, with a deadline
    assert not alive, f"worker processes {sorted(alive)} outlived their master"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _wait_for_children(pid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) >= n:
            return children
        time.sleep(0.02)
    raise AssertionError(f"master {pid} did not start {n} workers")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"


CLI_JOB = """
import asyncio
from runtime import StreamEnvironment

async def main():
    env = StreamEnvironment(parallelism=2)
    env.from_collection(range(100)).map(lambda x: x * 2).collect(name="out")
    result = await env.execute("cli")
    print("workers", env.config.workers, len(result.collected["out"]), result.status.value)

asyncio.run(main())
"""


def test_weir_run_workers_sets_the_default(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(CLI_JOB)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = [sys.executable, "-m", "runtime.cli", "run", "--no-rest"]
    ok = subprocess.run(
        [*run, "--workers", "2", str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert "workers 2 100 finished" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [*run, "--workers", "3", str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert bad.returncode != 0
    assert "workers 3 is greater than parallelism 2" in bad.stderr


class _ImportsInWorkers:
    """A function whose unpickling fails in a worker as a missing dependency would."""

    def __init__(self) -> None:
        self.state = "some"  # pickle calls __setstate__ only for a non-empty state

    def __call__(self, x: int) -> int:
        return x

    def __setstate__(self, state: dict[str, Any]) -> None:
        if os.environ.get("WEIR_WORKER_INDEX") is not None:
            raise ImportError("No module named 'a_dependency_only_the_master_has'")


async def test_a_worker_that_cannot_build_its_subtasks_fails_the_job() -> None:
    env = StreamEnvironment(parallelism=2, workers=2)
    env.from_collection(range(10)).map(_ImportsInWorkers(), name="needs").collect(name="o")
    with pytest.raises(Exception) as caught:
        await env.execute("cannot start")
    error: BaseException | None = caught.value
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    assert any(
        "cannot build its subtasks" in m and "a_dependency_only_the_master_has" in m
        for m in messages
    ), messages
