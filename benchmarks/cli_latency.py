"""How long the ``weir`` command takes: ``weir --help`` and ``weir status`` of a running job.

Issue goals: ``weir --help`` <= 150 ms and ``weir status JOB_ID`` against a running job
<= 200 ms. Each is timed as a whole process (start to exit), ``--runs`` times, and the
median is reported beside the median of ``python -c pass`` (the interpreter's own
start, the floor) measured in the same run. The job is a ``weir run --rest-port 0`` of
an unbounded, rate-limited sequence job in a temporary folder, stopped at the end.

    python -m benchmarks.cli_latency [--runs 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = """
import asyncio

from runtime import StreamEnvironment

env = StreamEnvironment(parallelism=2)
env.enable_checkpointing(1.0)
env.generate(lambda i: (i % 7, 1), None, records_per_second=2000, uid="readings").key_by(
    lambda r: r[0]
).sum(1, uid="sums").sink_to(lambda batch: None, uid="drop")
asyncio.run(env.execute("cli latency job"))
"""

HELP_GOAL = 0.150
STATUS_GOAL = 0.200


def weir(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.cli", *args]


def timed(command: list[str], runs: int, cwd: Path) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return times


def start_job(folder: Path) -> tuple[subprocess.Popen[str], str, str]:
    script = folder / "job.py"
    script.write_text(JOB)
    process = subprocess.Popen(
        weir("run", "--rest-port", "0", str(script)),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    address = None
    deadline = time.monotonic() + 60
    while address is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if match := re.search(r"HTTP API on (http://127\.0\.0\.1:\d+)", line):
            address = match.group(1)
    if address is None:
        process.kill()
        raise SystemExit("weir run did not print its HTTP API's address")
    while time.monotonic() < deadline:
        listed = subprocess.run(
            weir("list", "--json", "--address", address), capture_output=True, text=True
        )
        jobs = json.loads(listed.stdout or "{}").get("jobs", [])
        if jobs and jobs[0]["status"] == "RUNNING":
            return process, address, jobs[0]["id"]
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the job did not start running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command [20]")
    parser.add_argument("--quick", action="store_true", help="3 runs of each (a smoke run)")
    parser.add_argument("--out", type=Path, help="write cli_latency.json there")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    with tempfile.TemporaryDirectory(prefix="weir-cli-") as name:
        folder = Path(name)
        floor = timed([sys.executable, "-c", "pass"], args.runs, folder)
        help_times = timed(weir("--help"), args.runs, folder)
        process, address, job_id = start_job(folder)
        try:
            status_times = timed(weir("status", job_id, "--address", address), args.runs, folder)
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "runs": args.runs,
        "python_start_s": statistics.median(floor),
        "help_s": statistics.median(help_times),
        "status_s": statistics.median(status_times),
        "help_goal_s": HELP_GOAL,
        "status_goal_s": STATUS_GOAL,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"python -c pass {result['python_start_s'] * 1000:.0f} ms | "
        f"weir --help {result['help_s'] * 1000:.0f} ms (goal {HELP_GOAL * 1000:.0f}) | "
        f"weir status {result['status_s'] * 1000:.0f} ms (goal {STATUS_GOAL * 1000:.0f}) | "
        f"medians of {args.runs}, load {result['load_average']:.1f}"
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cli_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
