"""Driving the ``weir`` command line in subprocesses (helpers of ``tests/cli``).

Every command runs as ``python -m runtime.cli ...`` with this repository first on
``PYTHONPATH``, with a timeout. ``LiveJob`` runs ``weir run --rest-port 0`` in the
background and reads the port it prints on standard error; a reader thread keeps
draining standard error, so the job never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMMAND_SECONDS = 30.0
"""Timeout of one CLI command."""
START_SECONDS = 30.0
"""How long a `weir run` may take to print its port and start its job."""

UNBOUNDED_JOB = """
import asyncio
from runtime import ExternalizedCheckpointRetention, StreamEnvironment


def reading(i):
    return (f"sensor-{i % 7}", 1)


async def slow_sink(value):
    await asyncio.sleep(0.005)  # slower than the source: backpressure


async def main():
    env = StreamEnvironment(parallelism=2, buffer_size=16, channel_capacity=4)
    # Manual checkpoints only (the interval is long), unaligned (they capture in-flight
    # data), kept after the job ends.
    env.enable_checkpointing(
        3600,
        unaligned=True,
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
        retained=50,
    )
    (
        env.generate(reading, None, records_per_second=2000, uid="readings")
        .key_by(lambda r: r[0])
        .sum(1, uid="sum")
        .sink_to(slow_sink, uid="sink")
    )
    result = await env.execute("cli test job")
    print(result.status.value, flush=True)


asyncio.run(main())
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "200"  # rich tables on one line each
    return env


def weir_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.cli", *args]


@dataclass
class Outcome:
    """What a finished command did."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_weir(*args: str, cwd: Path, timeout: float = COMMAND_SECONDS) -> Outcome:
    done = subprocess.run(
        weir_command(*args),
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@dataclass
class LiveJob:
    """A ``weir run`` in the background."""

    process: subprocess.Popen[str]
    cwd: Path
    stdout_path: Path
    address: str = ""
    job_id: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, cwd: Path, *args: str) -> LiveJob:
        stdout_path = cwd / f"weir-run-{time.monotonic_ns()}.out"
        with stdout_path.open("w") as stdout:
            process = subprocess.Popen(
                weir_command("run", "--rest-port", "0", *args),
                cwd=cwd,
                env=environment(),
                stdout=stdout,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        job = cls(process, cwd, stdout_path)
        threading.Thread(target=job._drain, daemon=True).start()
        try:
            job.address = job._wait_for_address()
            job.job_id = job._wait_for_running()
        except BaseException:
            job.kill()
            raise
        return job

    def _drain(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                self.stderr_lines.append(line)
                self._lines.put(line)
        self._lines.put(None)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            match = re.search(r"HTTP API on (http://127\.0\.0\.1:\d+)", line)
            if match:
                return match.group(1)
        raise AssertionError(f"weir run printed no address: {''.join(self.stderr_lines)}")

    def _wait_for_running(self) -> str:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            outcome = self.weir("list", "--json")
            assert outcome.returncode == 0, outcome.stderr
            running = [j for j in outcome.json()["jobs"] if j["status"] == "RUNNING"]
            if running:
                return str(running[0]["id"])
            time.sleep(0.1)
        raise AssertionError("the job did not start running")

    def weir(self, *args: str, timeout: float = COMMAND_SECONDS) -> Outcome:
        """Run a client command against this job's API."""
        return run_weir(*args, "--address", self.address, cwd=self.cwd, timeout=timeout)

    def wait(self, timeout: float = COMMAND_SECONDS) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=COMMAND_SECONDS)
